"""Attribute probes: labels from scenes and caption text, and the probe itself."""

from __future__ import annotations

import numpy as np

from blip_core.data.world import lexicon as lx
from blip_core.eval.probe import caption_labels, fit_probe, scene_labels


def _scene(*objects):
    return {"background": "plain", "objects": [{"shape": s, "color": c, "size": "small", "row": 0, "col": 0}
                                               for c, s in objects]}  # fmt: skip


def test_scene_and_caption_labels():
    y = scene_labels([_scene(("red", "circle"), ("blue", "star")), _scene(("red", "star"))])
    assert y["color"][0].sum() == 2 and y["color"][1].sum() == 1
    assert y["shape"][0, lx.SHAPES.index("star")] == 1 and y["shape"][1, lx.SHAPES.index("circle")] == 0
    assert y["pair"][1].sum() == 1 and y["pair"].shape[1] == len(lx.COLORS) * len(lx.SHAPES)
    t = caption_labels(["two violet disks left of a star", "untitled"])
    assert t["color"][0, list(lx.COLORS).index("purple")] == 1
    assert t["shape"][0, lx.SHAPES.index("circle")] == 1 and t["shape"][0, lx.SHAPES.index("star")] == 1
    assert t["color"][1].sum() == 0 and t["shape"][1].sum() == 0


def test_probe_separates_informative_features_and_not_noise():
    rng = np.random.default_rng(0)
    y = (rng.random((400, 3)) < 0.4).astype(np.int64)
    informative = y + 0.1 * rng.normal(size=y.shape)
    noise = rng.normal(size=(400, 3))
    good = fit_probe(informative[:300], y[:300], informative[300:], y[300:])
    bad = fit_probe(noise[:300], y[:300], noise[300:], y[300:])
    assert good["f1"] > 0.95 and good["exact"] > 0.9
    assert bad["f1"] < 0.6
    # a label never positive in the training split is predicted constant, not an error
    y_const = y.copy()
    y_const[:300, 0] = 0
    assert 0.0 <= fit_probe(informative[:300], y_const[:300], informative[300:], y_const[300:])["f1"] <= 1.0


def test_region_metrics_read_each_object_at_its_box():
    """Per attribute, the share of ground-truth objects whose box the classifier reads right, and the
    share read right on every attribute at once."""
    from types import SimpleNamespace

    import torch

    from blip_core.data.loader import EvalSplit
    from blip_core.data.world.labels import region_classes
    from blip_core.eval.probe import region_metrics

    scenes = [
        {"background": "plain", "objects": [{"shape": "star", "color": "red", "size": "small", "row": 0, "col": 2},
                                            {"shape": "ring", "color": "blue", "size": "large", "row": 1, "col": 0}]},
        {"background": "plain", "objects": [{"shape": "cross", "color": "red", "size": "large", "row": 2, "col": 2}]},
    ]  # fmt: skip
    split = EvalSplit(["a", "b"], torch.zeros(2, 3, 64, 64), [[], []], scenes)
    vocab = {"shape": list(lx.SHAPES), "color": list(lx.COLORS), "size": list(lx.SIZES)}

    class Reader:
        """Reads the truth at each box, except the colour of the box in the top-right cell."""

        cfg = SimpleNamespace(classes={"region": region_classes()})
        region_groups = [(a, len(v) + 1) for a, v in vocab.items()]

        def predict_regions(self, images, boxes):
            out = {a: torch.full(boxes.shape[:2], len(v)) for a, v in vocab.items()}  # "none"
            for i, sc in enumerate(scenes):
                for j, o in enumerate(sc["objects"]):
                    assert torch.allclose(
                        boxes[i, j], torch.tensor([o["col"], o["row"], o["col"] + 1, o["row"] + 1]) / 3
                    )
                    for a in vocab:
                        out[a][i, j] = vocab[a].index(o[a]) if (a, o["row"], o["col"]) != ("color", 0, 2) else 0
            return out

    m = region_metrics(Reader(), split)
    assert m["region_shape"]["accuracy"] == 1.0 and m["region_size"]["accuracy"] == 1.0
    assert m["region_color"]["accuracy"] == 1.0  # "red" (index 0) read for a red star: still right
    scenes[0]["objects"][0]["color"] = "blue"
    m = region_metrics(Reader(), split)
    assert m["region_color"]["accuracy"] == 2 / 3 and m["region_object"]["accuracy"] == 2 / 3
