"""Importers on fixtures built here: COCO, Karpathy, BLIP json, img2dataset folders."""

from __future__ import annotations

import json

import pytest
from helpers import jpeg_bytes, sample_members, write_raw_tar
from PIL import Image

from blip_core.data.importers import common, pairs
from blip_core.data.reader import iter_samples
from blip_core.data.shards import read_manifests


def _images(root, names, size=(40, 30)):
    for n in names:
        p = root / n
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, (90, 20, 200)).save(p)


def _rejected(folder):
    return [json.loads(line) for line in (folder / common.REJECTED_FILE).read_text().splitlines()]


def test_import_coco(tmp_path):
    img = tmp_path / "train2017"
    _images(img, ["1.jpg", "2.jpg", "3.png"])
    (img / "4.jpg").write_bytes(b"garbage")  # corrupt
    ann = {
        "images": [{"id": i, "file_name": f"{i}.jpg" if i != 3 else "3.png"} for i in (1, 2, 3, 4, 5)]
        + [{"file_name": "no_id.jpg"}],
        "annotations": [
            {"image_id": 1, "caption": "A cat."},
            {"image_id": 1, "caption": "A small cat"},
            {"image_id": 2, "caption": "a dog"},
            {"image_id": 3, "caption": "png image"},
            {"image_id": 4, "caption": "broken"},
            {"image_id": 5, "caption": "file missing"},
            {"image_id": 2, "caption": "   "},
            {"image_id": 99, "caption": "orphan"},
        ],
    }
    (tmp_path / "captions.json").write_text(json.dumps(ann))
    out = tmp_path / "out"
    report = pairs.import_coco(tmp_path / "captions.json", img, out)
    samples = {s["key"]: s for s in iter_samples(out)}
    assert set(samples) == {"coco-1", "coco-2", "coco-3"}
    assert samples["coco-1"]["captions"] == ["A cat.", "A small cat"]
    assert samples["coco-3"]["image"].size == (40, 30)  # png re-encoded as jpeg
    assert report.num_written == 3 and report.num_captions == 4
    assert report.rejected_by_reason() == {"bad_image_entry": 1, "corrupt_image": 1, "missing_image": 1}
    assert report.rejected_by_reason("annotation") == {"empty_caption": 1, "unknown_image_id": 1}
    assert report.num_records == report.num_written + report.num_rejected == 6  # every image entry accounted for
    reasons = {r["reason"]: r["record"] for r in _rejected(out)}
    assert reasons["missing_image"]["key"] == "coco-5"
    assert reasons["unknown_image_id"]["image_id"] == 99
    assert json.loads((out / "_stats.json").read_text())["import"]["num_rejected"] == 3
    assert list(read_manifests(out)["key"]) == ["coco-1", "coco-2", "coco-3"]


def test_import_karpathy_splits(tmp_path):
    _images(tmp_path / "val2014", ["a.jpg", "b.jpg", "c.jpg"])
    data = {
        "images": [
            {
                "filepath": "val2014",
                "filename": "a.jpg",
                "split": "train",
                "cocoid": 10,
                "sentences": [{"raw": "one"}, {"raw": "two"}],
            },
            {"filepath": "val2014", "filename": "b.jpg", "split": "test", "cocoid": 11, "sentences": [{"raw": "x"}]},
            {"filepath": "val2014", "filename": "c.jpg", "split": "test", "cocoid": 12, "sentences": []},
            {"filepath": "val2014", "filename": "d.jpg", "split": "val", "cocoid": 13, "sentences": [{"raw": "y"}]},
        ]
    }
    (tmp_path / "dataset_coco.json").write_text(json.dumps(data))
    report = pairs.import_karpathy(tmp_path / "dataset_coco.json", tmp_path, tmp_path / "out")
    assert [s["captions"] for s in iter_samples(tmp_path / "out" / "train")] == [["one", "two"]]
    assert [s["key"] for s in iter_samples(tmp_path / "out" / "test")] == ["coco-11"]
    assert not list((tmp_path / "out" / "val").glob("*.tar"))
    assert report.rejected_by_reason() == {"missing_image": 1, "no_caption": 1}


def test_import_blip_json_merges_captions_per_image(tmp_path):
    _images(tmp_path / "imgs", ["a.jpg", "b.jpg"])
    rows = [
        {"image": "imgs/a.jpg", "caption": "first"},
        {"image": "imgs/a.jpg", "caption": "second"},
        {"image": "imgs/b.jpg", "caption": ["c1", "c2"]},
        {"image": "imgs/zzz.jpg", "caption": "missing"},
        {"caption": "no image key"},
        {"image": "imgs/b.jpg", "caption": 5},
    ]
    (tmp_path / "ann.json").write_text(json.dumps(rows))
    report = pairs.import_blip_json(tmp_path / "ann.json", tmp_path, tmp_path / "out", split="train")
    got = {s["key"]: s["captions"] for s in iter_samples(tmp_path / "out")}
    assert got == {"train-a": ["first", "second"], "train-b": ["c1", "c2"]}
    assert report.rejected_by_reason() == {"bad_entry": 1, "empty_caption": 1, "missing_image": 1}


def test_index_img2dataset_in_place(tmp_path):
    folder = tmp_path / "shards"
    members = []
    for i in range(3):
        members += [
            (f"{i:09d}.jpg", jpeg_bytes()),
            (f"{i:09d}.txt", f"caption {i}".encode()),
            (f"{i:09d}.json", json.dumps({"key": f"{i:09d}", "caption": f"caption {i}", "url": "u"}).encode()),
        ]
    members += sample_members("000000009", image=b"broken")
    write_raw_tar(folder / "00000.tar", members)
    (folder / "00000.parquet").write_bytes(b"img2dataset's own parquet must stay untouched")
    write_raw_tar(folder / "00001.tar", sample_members("000000010"))
    report = pairs.index_img2dataset(folder)
    assert report.num_written == 4 and report.rejected_by_reason() == {"corrupt_image": 1}
    assert (folder / "00000.parquet").read_bytes().startswith(b"img2dataset's own")
    man = read_manifests(folder)
    assert list(man["key"]) == ["000000000", "000000001", "000000002", "000000010"]
    assert list(man["caption"])[:3] == ["caption 0", "caption 1", "caption 2"]
    stats = json.loads((folder / "_stats.json").read_text())
    assert stats["read"]["shards"]["00000.tar"] == {"ok": 3, "skipped": {"corrupt_image": 1}}


def test_index_img2dataset_counts_the_samples_lost_in_a_cut_tar(tmp_path):
    """img2dataset's <shard>_stats.json says how many samples it wrote: the ones after a cut are
    counted as lost, so kept + rejected = written."""
    folder = tmp_path / "shards"
    members = [m for i in range(5) for m in sample_members(f"{i:09d}")]
    full = write_raw_tar(folder / "00000.tar", members).read_bytes()
    (folder / "00000.tar").write_bytes(full[: full.index(b"000000003.jpg")])  # 3 whole samples left
    (folder / "00000_stats.json").write_text(json.dumps({"count": 5, "successes": 5, "failed_to_download": 0}))
    report = pairs.index_img2dataset(folder)
    assert report.num_written == 3
    assert report.rejected_by_reason() == {"lost_after_cut": 2}
    assert report.rejected_by_reason("shard") == {"truncated_tar": 1}
    assert report.num_records == 5
    stats = json.loads((folder / "_stats.json").read_text())
    assert stats["read"]["shards"]["00000.tar"] == {"ok": 3, "skipped": {"lost_after_cut": 2, "truncated_tar": 1}}


def test_bad_annotation_files_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="annotation file not found"):
        pairs.import_coco(tmp_path / "nope.json", tmp_path, tmp_path / "out")
    (tmp_path / "bad.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(ValueError, match="not valid UTF-8 JSON"):
        pairs.import_blip_json(tmp_path / "bad.json", tmp_path, tmp_path / "out")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(ValueError, match="not a COCO captions file"):
        pairs.import_coco(tmp_path / "list.json", tmp_path, tmp_path / "out")
