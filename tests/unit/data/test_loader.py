"""Training batches of label-only images: per-object boxes move with the crop and batch as tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from blip_core.data.loader import MEAN, STD, LabelCollate, TrainTransform


@pytest.mark.parametrize("key", ["a", "b", "c", "d", "e"])
def test_boxes_move_exactly_with_the_crop(key):
    """A white rectangle drawn at a box lands, after the training crop, on the moved box (to a pixel)."""
    side = 64
    box = [0.25, 0.375, 0.625, 0.8125]  # x0, y0, x1, y1
    arr = np.zeros((side, side, 3), np.uint8)
    arr[int(box[1] * side) : int(box[3] * side), int(box[0] * side) : int(box[2] * side)] = 255
    transform = TrainTransform(side, crop_scale_min=0.6, seed=7)
    (moved,) = transform.crop_boxes([box], side, side, key)
    out = transform(Image.fromarray(arr), key) * torch.tensor(STD)[:, None, None] + torch.tensor(MEAN)[:, None, None]
    ys, xs = np.nonzero(out.mean(0).numpy() > 0.5)
    found = [xs.min() / side, ys.min() / side, (xs.max() + 1) / side, (ys.max() + 1) / side]
    assert np.allclose(found, moved, atol=1.5 / side), (found, moved)
    assert not np.allclose(moved, box, atol=1 / side)  # the crop did move it


def test_region_labels_batch_as_padded_boxes_and_classes():
    classes = {"shape": ["circle", "star"], "region": ["shape:circle", "shape:star", "color:red", "color:blue"]}
    collate = LabelCollate(classes)
    items = [
        {"key": "x", "pair": "x", "tensor": torch.zeros(3, 8, 8), "labels": {"shape": ["circle", "star"]},
         "regions": [{"box": [0, 0, 0.5, 0.5], "shape": "star", "color": "red"},
                     {"box": [0.5, 0.5, 1, 1], "shape": "circle", "color": "blue"}]},
        {"key": "y", "pair": "y", "tensor": torch.zeros(3, 8, 8), "labels": {"shape": ["star"]},
         "regions": [{"box": [0, 0.5, 0.5, 1], "shape": "star", "color": "blue"}]},
    ]  # fmt: skip
    batch = collate(items)
    assert batch["labels"].tolist() == [[1, 1], [0, 1]]  # image-level groups only
    assert batch["regions"]["boxes"].tolist() == [[[0, 0, 0.5, 0.5], [0.5, 0.5, 1, 1]], [[0, 0.5, 0.5, 1], [-1] * 4]]
    assert batch["regions"]["classes"].tolist() == [[[1, 0], [0, 1]], [[1, 1], [-1, -1]]]
    items[1]["regions"][0]["color"] = "green"
    with pytest.raises(ValueError, match="unknown region color 'green'"):
        collate(items)
    items[1]["regions"] = None
    with pytest.raises(ValueError, match="no 'region' labels"):
        collate(items)


def test_relation_labels_batch_per_box_and_must_match_the_boxes():
    classes = {"region": ["shape:circle", "shape:star"], "relation": ["left_of", "right_of", "above"]}
    collate = LabelCollate(classes)
    items = [
        {"key": "x", "pair": "x", "tensor": torch.zeros(3, 8, 8), "labels": {},
         "regions": [{"box": [0, 0, 0.5, 0.5], "shape": "star"}, {"box": [0.5, 0, 1, 0.5], "shape": "circle"}],
         "relations": [["left_of"], ["right_of"]]},
        {"key": "y", "pair": "y", "tensor": torch.zeros(3, 8, 8), "labels": {},
         "regions": [{"box": [0, 0, 0.5, 0.5], "shape": "star"}], "relations": [[]]},
    ]  # fmt: skip
    batch = collate(items)
    assert batch["labels"].shape == (2, 0)  # no image-level group
    assert batch["regions"]["relations"].tolist() == [[[1, 0, 0], [0, 1, 0]], [[0, 0, 0], [0, 0, 0]]]
    items[1]["relations"] = [[], ["above"]]
    with pytest.raises(ValueError, match="one list per region box"):
        collate(items)
