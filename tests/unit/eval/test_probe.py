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
