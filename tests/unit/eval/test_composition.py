"""Binding, relation direction and count (blip_core.eval.composition): the cases it judges and the accuracy."""

from __future__ import annotations

import pytest
import torch

from blip_core.data.loader import EvalSplit
from blip_core.eval.composition import binding_pairs, count_pairs, direction_pairs, itm_composition


def _scene(*objects, background="plain") -> dict:
    return {"background": background, "objects": [dict(zip(("color", "shape", "size", "row", "col"), o, strict=True))
                                                  for o in objects]}  # fmt: skip


def test_pairs_are_unique_objects_in_one_direction():
    scenes = [
        _scene(("red", "circle", "big", 1, 0), ("blue", "square", "small", 1, 2), ("green", "star", "big", 0, 1)),
        _scene(("red", "circle", "big", 0, 0), ("red", "circle", "small", 2, 2), ("blue", "ring", "big", 2, 0)),
        None,  # an image without ground truth
    ]
    pairs = direction_pairs(scenes)
    assert (0, "a red circle to the left of a blue square", "a red circle to the right of a blue square",
            "left_of") in pairs  # fmt: skip
    assert (0, "a blue square to the right of a red circle", "a blue square to the left of a red circle",
            "right_of") in pairs  # fmt: skip
    # the star is diagonal to both (one row, one column away): it satisfies two directions, left out
    assert not any("star" in p[1] for p in pairs)
    # scene 1: the red circles are two, so no pair names one; the ring's pairs need a unique partner
    assert [p for p in pairs if p[0] == 1] == []
    assert len(pairs) == 2


def test_binding_cases_are_two_objects_differing_in_colour_and_shape():
    scenes = [
        _scene(("red", "circle", "big", 1, 0), ("blue", "square", "small", 1, 2)),
        _scene(("red", "circle", "big", 1, 0), ("red", "square", "small", 1, 2)),  # one colour: no case
        _scene(("red", "circle", "big", 1, 0), ("blue", "square", "small", 1, 2), ("green", "star", "big", 0, 1)),
    ]
    assert binding_pairs(scenes) == [(0, "a red circle and a blue square", "a blue circle and a red square")]


def test_count_cases_are_off_by_one_and_as_many_singles_as_plural_cases():
    scenes = [
        _scene(("red", "circle", "big", 0, 0), ("red", "circle", "small", 2, 2), ("blue", "ring", "big", 2, 0)),
        _scene(
            ("green", "star", "big", 0, 0),
            ("white", "cross", "big", 1, 1),
            ("white", "cross", "small", 2, 2),
            ("white", "cross", "big", 0, 2),
        ),
        _scene(("black", "square", "big", 0, 0), ("pink", "diamond", "big", 2, 2)),
    ]
    assert count_pairs(scenes) == [
        (0, "two red circles", "one red circle", 2),
        (0, "two red circles", "three red circles", 2),
        (1, "three white crosses", "two white crosses", 3),
        (1, "three white crosses", "four white crosses", 3),
        # four plural cases, so the first four groups of one (of five), each against two
        (0, "one blue ring", "two blue rings", 1),
        (1, "one green star", "two green stars", 1),
        (2, "one black square", "two black squares", 1),
        (2, "one pink diamond", "two pink diamonds", 1),
    ]


class _SaysOne:
    """A stand-in filter that believes every "one" caption: right on every group of one, wrong on
    every group of two or more; `count_acc` must call that chance (0.5), not 0.8."""

    def eval(self):
        return self

    def image_embeds(self, images):
        return images

    def score(self, image_embeds, ids, mask):
        return {"itm_prob": ids[:, 0].float()}


def test_count_accuracy_balances_groups_of_one_and_more():
    scenes = [_scene(("red", "circle", "big", 0, 0), ("red", "circle", "small", 2, 2), ("blue", "ring", "big", 2, 0),
                     ("green", "star", "big", 0, 2), ("pink", "cross", "big", 1, 1))]  # fmt: skip
    split = EvalSplit(["a"], torch.zeros(1, 3, 8, 8), [["x"]], scenes)

    def processor(texts):
        ids = torch.tensor([[1 if t.startswith("one") else 0] for t in texts])
        return ids, torch.ones_like(ids)

    out = itm_composition(_SaysOne(), split, processor, batch_size=3, device=torch.device("cpu"))
    assert out["itm_count_n"] == 4  # two against "two red circles", two groups of one
    assert out["itm_count_acc_single"] == 1.0 and out["itm_count_acc_plural"] == 0.0
    assert out["itm_count_acc"] == pytest.approx(0.5)


def test_vertical_phrases_and_the_disk_is_a_circle():
    pairs = direction_pairs([_scene(("white", "ring", "big", 0, 1), ("black", "cross", "big", 2, 1))])
    assert pairs == [(0, "a white ring above a black cross", "a white ring below a black cross", "above"),
                     (0, "a black cross below a white ring", "a black cross above a white ring", "below")]  # fmt: skip


class _ReadsLeft:
    """A stand-in filter whose ITM believes every "left" caption: right on horizontal pairs whose truth
    is "left of", wrong where it is "right of", and a tie (counted wrong) on vertical pairs."""

    def eval(self):
        return self

    def image_embeds(self, images):
        return images

    def score(self, image_embeds, ids, mask):
        return {"itm_prob": (ids[:, 0] == 1).float()}


def test_accuracy_by_axis_from_the_scores():
    scenes = [_scene(("red", "circle", "big", 1, 0), ("blue", "square", "small", 1, 2)),
              _scene(("white", "ring", "big", 0, 1), ("black", "cross", "big", 2, 1))]  # fmt: skip
    split = EvalSplit(["a", "b"], torch.zeros(2, 3, 8, 8), [["x"], ["y"]], scenes)

    def processor(texts):
        ids = torch.tensor([[1 if "left" in t else 0] for t in texts])
        return ids, torch.ones_like(ids)

    out = itm_composition(_ReadsLeft(), split, processor, batch_size=3, device=torch.device("cpu"))
    assert out["itm_relation_direction_n"] == 4 and out["itm_binding_n"] == 2
    assert out["itm_binding_acc"] == 0.0  # no "left" in either binding caption: ties, counted wrong
    assert out["itm_relation_direction_acc_horizontal"] == pytest.approx(0.5)  # left_of right, right_of wrong
    assert out["itm_relation_direction_acc_vertical"] == 0.0
    assert out["itm_relation_direction_acc"] == pytest.approx(0.25)


def test_caption_log_likelihood_scores_the_caption_after_the_prompt():
    from helpers import micro_config

    from blip_core.eval.composition import caption_log_likelihood
    from blip_core.models.blip.model import BlipCaptioner

    torch.manual_seed(0)
    model = BlipCaptioner(micro_config()).eval()

    class Processor:  # prompt: [CLS] 40 41, then the caption's ids
        prompt_length = 3

        def __call__(self, texts, prompt=False):
            rows = [[2, 40, 41, *map(int, t.split()), 3] for t in texts]
            ids = torch.zeros(len(rows), max(map(len, rows)), dtype=torch.long)
            for r, row in enumerate(rows):
                ids[r, : len(row)] = torch.tensor(row)
            return ids, (ids != 0).long()

    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        got = caption_log_likelihood(model, images, ["9 10 11", "12 13"], Processor(), torch.device("cpu"))
        for b, caption in enumerate(([9, 10, 11, 3], [12, 13, 3])):
            ids = torch.tensor([[5, 40, 41, *caption]])  # [DEC] replaces [CLS] as the decoder's first token
            logp = model(images[b : b + 1], ids, torch.ones_like(ids))["lm_logits"][0].log_softmax(-1)
            want = sum(float(logp[i - 1, ids[0, i]]) for i in range(3, ids.shape[1]))
            assert float(got[b]) == pytest.approx(want, abs=1e-4)
