"""Training batches of label-only images: per-object boxes move with the crop and batch as tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from blip_core.data.labelled import LabelCollate
from blip_core.data.transforms import MEAN, STD, TrainTransform


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


def _char_processor(texts, prompt=False):
    """Captions as padded character codes: enough to compare batches (no tokenizer needed)."""
    n = max(len(t) for t in texts)
    ids = torch.tensor([[ord(c) for c in t] + [0] * (n - len(t)) for t in texts])
    return ids, (ids > 0).long()


def _epochs(data, n: int) -> list[list[dict]]:
    return [list(data.batches(e)) for e in range(n)]


def _same_batches(a: list[list[dict]], b: list[list[dict]]) -> None:
    assert len(a) == len(b)
    for ea, eb in zip(a, b, strict=True):
        assert len(ea) == len(eb) > 0
        for x, y in zip(ea, eb, strict=True):
            assert x.keys() == y.keys() and x["keys"] == y["keys"]
            for k, v in x.items():
                if isinstance(v, torch.Tensor):
                    assert torch.equal(v, y[k]), k
                elif isinstance(v, dict):
                    assert all(torch.equal(t, y[k][kk]) for kk, t in v.items()), k


@pytest.mark.parametrize("split", ["coco_train", "objects"])
def test_cached_epochs_are_the_epochs_read_from_disk(tiny_world, tmp_path, split):
    """The epochs after the first replay its reading from memory: the same batches and the same read
    counts as reading the shards every epoch, with the shards gone after the first epoch."""
    import shutil

    from blip_core.data.labelled import read_classes
    from blip_core.data.loader import TrainData

    shutil.copytree(tiny_world / split, tmp_path / split)
    classes = read_classes([tmp_path / split]) if split == "objects" else None
    kw = dict(batch_size=8, image_size=32, seed=3, crop_scale_min=0.8, shuffle_buffer=50, num_workers=0,
              classes=classes)  # fmt: skip
    streamed = TrainData([tmp_path / split], _char_processor, **kw)
    want = _epochs(streamed, 3)
    cached = TrainData([tmp_path / split], _char_processor, cache_bytes=64 * 2**20, **kw)
    got = [list(cached.batches(0))]
    assert cached.cache.raw is not None and cached.cache.decoded
    shutil.rmtree(tmp_path / split)  # later epochs cannot read the shards: they replay
    got += [list(cached.batches(e)) for e in (1, 2)]
    _same_batches(got, want)
    assert cached.stats.to_dict() == streamed.stats.to_dict()
    assert streamed.cache is None


def test_cache_budget_and_skips(tmp_path):
    """A budget too small keeps nothing; a sample skipped in decoding is counted again each epoch; a
    skip counted upstream of decoding (a duplicate key) keeps the pass from being replayed."""
    from helpers import sample_members, write_raw_tar

    from blip_core.data.loader import TrainData

    members = [m for i in range(12) for m in sample_members(f"s{i:02d}", f"caption {i}")]
    members += [("bad.jpg", b"not a jpeg"), ("bad.json", b'{"captions": ["x"]}')]
    from blip_core.data.shards import manifest_path, write_manifest

    for folder, extra in [("clean", []), ("dup", sample_members("s03", "again"))]:
        write_raw_tar(tmp_path / folder / "00000.tar", members + extra)
        rows = [{"key": f"s{i:02d}", "shard": "00000.tar", "width": 32, "height": 32, "caption": "c",
                 "caption_len": 1, "num_captions": 1, "sha256": "", "source": "web", "split": "web",
                 "image_id": f"s{i:02d}"} for i in range(13)]  # fmt: skip
        write_manifest(rows, manifest_path(tmp_path / folder, "00000.tar"))
    kw = dict(batch_size=4, image_size=16, seed=0, crop_scale_min=0.9, shuffle_buffer=5, num_workers=0)
    for folder in ("clean", "dup"):
        streamed = TrainData([tmp_path / folder], _char_processor, **kw)
        want = _epochs(streamed, 2)
        for budget, replays in [(64 * 2**20, folder == "clean"), (100, False)]:
            cached = TrainData([tmp_path / folder], _char_processor, cache_bytes=budget, **kw)
            _same_batches(_epochs(cached, 2), want)
            assert cached.stats.to_dict() == streamed.stats.to_dict()
            assert (cached.cache.raw is not None) == replays, (folder, budget)
        assert streamed.stats.by_reason()["corrupt_image"] == 2  # once per epoch
    assert streamed.stats.by_reason()["duplicate_key"] == 2


def test_captions_per_image_draws_that_many_captions_of_each_image_per_epoch(tiny_world):
    """BLIP-2's sampling: each image once per epoch with one of its captions, drawn anew per epoch
    and the same on a re-read (resume); steps per epoch count images, not captions."""
    from collections import Counter

    from blip_core.data.loader import TrainData, count_pairs
    from blip_core.data.shards import read_manifests

    folder = tiny_world / "coco_train"
    manifest = read_manifests(folder)
    kw = dict(batch_size=4, image_size=16, seed=0, crop_scale_min=0.9, shuffle_buffer=0, num_workers=0)
    one = TrainData([folder], _char_processor, captions_per_image=1, **kw)
    assert one.num_pairs == len(manifest) == count_pairs([folder], per_image=1)
    assert one.steps_per_epoch == len(manifest) // 4
    every = TrainData([folder], _char_processor, **kw)
    assert every.num_pairs == manifest["num_captions"].sum() > one.num_pairs
    epochs = [[k for b in one.batches(e) for k in b["keys"]] for e in (0, 1)]
    for pairs in epochs:
        images = Counter(p.rsplit("/", 1)[0] for p in pairs)
        assert max(images.values()) == 1 and len(images) == one.steps_per_epoch * 4
    assert epochs[0] != epochs[1]  # other captions drawn in epoch 1
    assert [k for b in TrainData([folder], _char_processor, captions_per_image=1, **kw).batches(1)
            for k in b["keys"]] == epochs[1]  # fmt: skip
    assert TrainData([folder], _char_processor, captions_per_image=2, **kw).num_pairs == manifest[
        "num_captions"].clip(upper=2).sum()  # fmt: skip


def test_count_statements_join_each_batch_the_same_on_a_reread(tiny_world):
    """k statements of label-only images after each batch of captions: written from the region
    labels, drawn anew per epoch, the same on a re-read and on a resumed epoch; misuse is refused."""
    from blip_core.data.loader import TrainData
    from blip_core.data.shards import read_manifests

    kw = dict(batch_size=4, image_size=16, seed=0, crop_scale_min=0.9, shuffle_buffer=20, num_workers=0,
              statement_dirs=[tiny_world / "objects"], statements_per_batch=3)  # fmt: skip
    data = TrainData([tiny_world / "coco_train"], _char_processor, **kw)
    epochs = _epochs(data, 2)
    plain = TrainData([tiny_world / "coco_train"], _char_processor, **{**kw, "statement_dirs": [],
                                                                         "statements_per_batch": 0})  # fmt: skip
    assert len(epochs[0]) == data.steps_per_epoch == plain.steps_per_epoch  # statements add rows, not steps
    for batch, caps in zip(epochs[0], plain.batches(0), strict=True):
        assert batch["images"].shape[0] == 7 and batch["keys"][:4] == caps["keys"]
        assert all(k.startswith("objects") and k.endswith("/statement") for k in batch["keys"][4:])
    statements = [[k for b in e for k in b["keys"][4:]] for e in epochs]
    one_pass = min(len(read_manifests(tiny_world / "objects")), len(statements[0]))  # then the split repeats
    assert statements[0] != statements[1] and len(set(statements[0][:one_pass])) == one_pass
    _same_batches(_epochs(TrainData([tiny_world / "coco_train"], _char_processor, **kw), 2), epochs)
    _same_batches([list(data.batches(1, skip=2))], [epochs[1][2:]])
    assert data.statement_stats.num_ok > 0 and data.statement_stats.num_skipped == 0
    with pytest.raises(ValueError, match="count statements need"):
        TrainData([tiny_world / "coco_train"], _char_processor, **{**kw, "statements_per_batch": 0})
