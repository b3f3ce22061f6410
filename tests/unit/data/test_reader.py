"""Writer -> reader round trip and every bad-input case: skipped with a counted reason, never fatal,
and no valid sample lost."""

from __future__ import annotations

import hashlib
import io
import json

import pyarrow.parquet as pq
import pytest
import torch
from helpers import jpeg_bytes, sample_members, write_raw_tar
from PIL import Image

from blip_core.config.data import ReaderConfig
from blip_core.data.reader import ReadStats, build_pipeline, iter_samples
from blip_core.data.shards import MANIFEST_SCHEMA, ShardWriter, read_manifests


def test_round_trip_with_several_captions(tmp_path):
    images = {f"k{i}": jpeg_bytes((20 + i, 24), (10 * i, 50, 90)) for i in range(5)}
    with ShardWriter(tmp_path, 0, split="train") as w:
        for i, (k, b) in enumerate(images.items()):
            w.write(k, b, [f"caption {i}", f"second {i}"], source="human", meta={"image_id": f"img{i}", "x": i})
    stats = ReadStats()
    out = list(iter_samples(tmp_path, stats=stats, keep_bytes=True))
    assert [s["key"] for s in out] == list(images)
    for i, s in enumerate(out):
        assert s["captions"] == [f"caption {i}", f"second {i}"]
        assert s["meta"]["image_id"] == f"img{i}" and s["meta"]["x"] == i
        assert s["image_bytes"] == images[s["key"]] and s["image"].size == (20 + i, 24)
    assert stats.num_ok == 5 and stats.num_skipped == 0
    man = read_manifests(tmp_path)
    assert pq.read_schema(tmp_path / "00000.manifest.parquet").names == MANIFEST_SCHEMA.names
    assert list(man["key"]) == list(images)
    assert list(man["sha256"]) == [hashlib.sha256(b).hexdigest() for b in images.values()]
    assert list(man["num_captions"]) == [2] * 5 and list(man["width"]) == [20, 21, 22, 23, 24]


def test_writer_rejects_bad_keys_and_leaves_no_partial_shard(tmp_path):
    with pytest.raises(ValueError, match="duplicate key"), ShardWriter(tmp_path, 0, split="x") as w:
        w.write("a", jpeg_bytes(), ["c"], source="web")
        w.write("a", jpeg_bytes(), ["c"], source="web")
    assert list(tmp_path.iterdir()) == []
    with ShardWriter(tmp_path, 1, split="x") as w:
        with pytest.raises(ValueError, match="must not contain"):
            w.write("a.b", jpeg_bytes(), ["c"], source="web")
        with pytest.raises(ValueError, match="at least one caption"):
            w.write("b", jpeg_bytes(), [], source="web")


def test_world_shards_read_back_exactly(tiny_world):
    man = read_manifests(tiny_world / "coco_train")
    stats = ReadStats()
    got = {s["key"]: s for s in iter_samples(tiny_world / "coco_train", stats=stats, keep_bytes=True)}
    assert set(got) == set(man["key"]) and stats.num_skipped == 0
    for row in man.itertuples():
        s = got[row.key]
        assert hashlib.sha256(s["image_bytes"]).hexdigest() == row.sha256
        assert s["captions"][0] == row.caption and len(s["captions"]) == row.num_captions == 5


def _good(prefix: str, n: int) -> list[tuple[str, bytes]]:
    return [m for i in range(n) for m in sample_members(f"{prefix}{i}")]


def _read(folder, **kw):
    stats = ReadStats()
    keys = [s["key"] for s in iter_samples(folder, stats=stats, **kw)]
    return keys, stats


def test_bad_samples_are_skipped_with_reasons(tmp_path):
    big = io.BytesIO()
    Image.new("L", (5000, 5000)).save(big, format="PNG")  # small file, 25M pixels
    truncated = jpeg_bytes((64, 64))[:200]
    members = (
        _good("a", 2)
        + sample_members("corrupt", image=b"this is not a jpeg")
        + sample_members("trunc", image=truncated)
        + [("notxt.jpg", jpeg_bytes())]  # no caption at all
        + [("nojson.jpg", jpeg_bytes()), ("nojson.txt", b"a caption without json")]
        + [("noimg.txt", b"caption"), ("noimg.json", b"{}")]
        + [("empty.jpg", jpeg_bytes()), ("empty.txt", b"   "), ("empty.json", json.dumps({"captions": [" "]}).encode())]
        + [("badutf.jpg", jpeg_bytes()), ("badutf.txt", b"\xff\xfe caption")]
        + [("badjson.jpg", jpeg_bytes()), ("badjson.txt", b"ok"), ("badjson.json", b"{not json")]
        + sample_members("bomb", image=big.getvalue())
        + sample_members("tiny", image=jpeg_bytes((4, 4)))
        + _good("b", 2)
    )
    write_raw_tar(tmp_path / "00000.tar", members)
    keys, stats = _read(tmp_path, reader_cfg=ReaderConfig(max_image_pixels=10_000_000))
    assert keys == ["a0", "a1", "b0", "b1"]  # every valid sample kept, in order
    assert stats.by_reason() == {
        "bad_caption_encoding": 1,
        "bad_json": 1,
        "corrupt_image": 2,
        "empty_caption": 1,
        "image_too_large": 1,
        "image_too_small": 1,
        "missing_caption": 1,
        "missing_image": 1,
        "missing_json": 1,
    }
    assert stats.num_ok == 4 and stats.to_dict()["shards"]["00000.tar"]["ok"] == 4


def test_duplicate_keys_keep_first(tmp_path):
    members = _good("a", 2) + sample_members("a0", caption="again") + [("a1.jpg", jpeg_bytes())] + _good("c", 1)
    write_raw_tar(tmp_path / "00000.tar", members)
    stats = ReadStats()
    out = list(iter_samples(tmp_path, stats=stats))
    assert [s["key"] for s in out] == ["a0", "a1", "c0"]
    assert out[0]["captions"] == ["a red square"]
    assert stats.by_reason() == {"duplicate_key": 2}


def test_duplicate_member_within_sample_is_counted(tmp_path):
    members = sample_members("a") + [("a.txt", b"dup")] + _good("b", 1)
    # consecutive duplicate member names: webdataset raises, we count and continue
    members = [members[0], members[1], ("a.txt", b"dup"), members[2]] + _good("b", 1)
    write_raw_tar(tmp_path / "00000.tar", members)
    keys, stats = _read(tmp_path)
    assert "b0" in keys
    assert stats.by_reason().get("duplicate_file", 0) >= 1


def test_empty_and_truncated_shards_do_not_abort(tmp_path):
    write_raw_tar(tmp_path / "00000.tar", _good("a", 3))
    (tmp_path / "00001.tar").write_bytes(b"")  # 0-byte shard
    full = write_raw_tar(tmp_path / "tmp.tar", _good("t", 4)).read_bytes()
    (tmp_path / "tmp.tar").unlink()
    # 00002: cut inside t3's image data (tarfile raises); 00004: cut inside the header of t3's json
    # (tarfile sees a short archive). t0..t2 are complete and must survive both; t3 is counted.
    (tmp_path / "00002.tar").write_bytes(full[: full.index(b"t3.jpg") + 512 + 100])
    (tmp_path / "00004.tar").write_bytes(full[: full.index(b"t3.json") + 300])
    write_raw_tar(tmp_path / "00003.tar", _good("z", 2))
    keys, stats = _read(tmp_path)
    assert keys == ["a0", "a1", "a2", "t0", "t1", "t2", "z0", "z1", "t0", "t1", "t2"]
    reasons = stats.by_reason()
    assert reasons.get("empty_shard") == 1
    assert reasons.get("truncated_tar") == 2 and reasons.get("missing_json") == 1
    shards = stats.to_dict()["shards"]
    assert "empty_shard" in shards["00001.tar"]["skipped"]
    assert shards["00002.tar"] == {"ok": 3, "skipped": {"truncated_tar": 1}}  # cut once, counted once
    assert shards["00004.tar"] == {"ok": 3, "skipped": {"missing_json": 1, "truncated_tar": 1}}


def test_a_tar_cut_at_a_member_boundary_is_counted(tmp_path):
    """tarfile reads such a file without an error: only the missing end-of-archive marker tells."""
    full = write_raw_tar(tmp_path / "tmp.tar", _good("t", 4)).read_bytes()
    (tmp_path / "tmp.tar").unlink()
    (tmp_path / "00000.tar").write_bytes(full[: full.index(b"t2.jpg")])  # t0, t1 whole; t2, t3 gone
    write_raw_tar(tmp_path / "00001.tar", _good("z", 2))
    keys, stats = _read(tmp_path)
    assert keys == ["t0", "t1", "z0", "z1"]
    shards = stats.to_dict()["shards"]
    assert shards["00000.tar"] == {"ok": 2, "skipped": {"truncated_tar": 1}}
    assert shards["00001.tar"] == {"ok": 2, "skipped": {}}


def test_split_by_worker_reads_each_sample_once(tiny_world):
    pipe = build_pipeline(tiny_world / "web", split_by_node=True, split_by_worker=True, transform=lambda s: s["key"])
    loader = torch.utils.data.DataLoader(pipe, batch_size=None, num_workers=2)
    keys = list(loader)
    assert len(keys) == len(set(keys)) == 240


def test_shuffled_batches_are_seeded(tiny_world):
    def order(seed):
        pipe = build_pipeline(
            tiny_world / "web",
            shuffle_buffer=50,
            seed=seed,
            batch_size=16,
            split_by_node=False,
            transform=lambda s: s["key"],
        )
        return [k for batch in pipe for k in batch]

    a, b, c = order(1), order(1), order(2)
    assert a == b and a != c and sorted(a) == sorted(c) and len(a) == 240


def test_missing_shard_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="shard folder not found"):
        list(iter_samples(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="no .tar shards"):
        list(iter_samples(tmp_path))


def test_region_labels_are_read_and_bad_ones_are_counted_skips(tmp_path):
    """Per-object boxes (`region`) are read as given; a box outside the image, inverted, of the wrong
    length, or a non-string attribute is a `bad_labels` skip with its reason, never a crash later."""
    good = {"box": [0.0, 0.25, 0.5, 0.75], "shape": "star", "color": "red"}
    bad = [
        {"box": [0.0, 0.25, 1.5, 0.75], "shape": "star"},
        {"box": [0.5, 0.25, 0.4, 0.75], "shape": "star"},
        {"box": [0.0, 0.25, 0.5], "shape": "star"},
        {"box": [0.0, 0.25, 0.5, 0.75], "shape": 3},
        "star",
    ]
    members = []
    for i, region in enumerate([good, *bad]):
        meta = {"key": f"k{i}", "labels": {"shape": ["star"], "region": [region]}}
        members += [(f"k{i}.jpg", jpeg_bytes()), (f"k{i}.json", json.dumps(meta).encode())]
    write_raw_tar(tmp_path / "labels-000000.tar", members)
    stats = ReadStats()
    samples = list(iter_samples(tmp_path, labelled=True, stats=stats))
    assert [s["key"] for s in samples] == ["k0"] and samples[0]["labels"]["region"] == [good]
    assert stats.by_reason() == {"bad_labels": len(bad)}
