"""A hostile corpus, built here, through the user's own commands (`blip import ...`).

Every case must end in a clear, counted, logged rejection (or, for odd but valid input, in a kept
sample): no crash, no write outside the output folder, no valid sample lost, and `_stats.json`
accounting for every input (kept + rejected = read).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from helpers import jpeg_bytes
from PIL import Image

from blip_core.data.shards import read_manifests

BLIP = [sys.executable, "-m", "flows.cli"]


def _blip(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*BLIP, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=300)


def _image(fmt: str, size=(24, 24)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 120, 200)).save(buf, format=fmt)
    return buf.getvalue()


def _bomb_jpeg(width: int = 10_000, height: int = 10_000) -> bytes:
    """A small JPEG whose header claims width x height (a decompression bomb: 100 megapixels)."""
    data = bytearray(jpeg_bytes((16, 16)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


class Corpus:
    """A tar being built: (name, bytes) members, link members, and what is expected of each sample."""

    def __init__(self) -> None:
        self.members: list[tarfile.TarInfo | tuple[str, bytes]] = []
        self.kept: list[str] = []
        self.samples = 0

    def sample(self, key: str, *, image: bytes | None = None, caption: bytes = b"a blue square", ext="jpg",
               meta: bytes | None = None, keep: bool = False) -> None:  # fmt: skip
        self.samples += 1
        self.members += [(f"{key}.{ext}", jpeg_bytes() if image is None else image), (f"{key}.txt", caption)]
        self.members.append((f"{key}.json", meta if meta is not None else json.dumps({"key": key}).encode()))
        if keep:
            self.kept.append(key)

    def link(self, name: str, target: str, *, hard: bool = False) -> None:
        info = tarfile.TarInfo(name)
        info.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
        info.linkname = target
        self.members.append(info)

    def write(self, path: Path) -> Path:
        with tarfile.open(path, "w") as tar:
            for m in self.members:
                if isinstance(m, tarfile.TarInfo):
                    tar.addfile(m)
                else:
                    info = tarfile.TarInfo(m[0])
                    info.size = len(m[1])
                    tar.addfile(info, io.BytesIO(m[1]))
        return path


def _snapshot(root: Path, skip: Path) -> set[str]:
    return {str(p) for p in root.rglob("*") if skip not in p.parents and p != skip}


def test_hostile_img2dataset_folder_is_read_with_every_input_accounted_for(tmp_path):
    folder = tmp_path / "web"
    folder.mkdir()
    a = Corpus()
    for i in range(6):
        a.sample(f"ok{i}", caption=f"a red circle number {i}".encode(), keep=True)
    a.sample("corrupt", image=b"\xff\xd8\xff\xe0 not really a jpeg")
    a.sample("truncatedjpeg", image=jpeg_bytes((64, 64))[:300])
    a.sample("zerobytes", image=b"")
    a.sample("onepixel", image=_image("PNG", (1, 1)))
    a.sample("bomb", image=_bomb_jpeg())
    a.sample("pngasjpg", image=_image("PNG"), keep=True)  # a valid image under the wrong extension
    a.sample("webpasjpg", image=_image("WEBP"), keep=True)
    a.sample("longcaption", caption=("word " * 2000).encode())
    a.sample("emptycaption", caption=b"   ", meta=json.dumps({"captions": [""]}).encode())
    a.sample("binarycaption", caption=b"\xff\xfe\x00\x81 caption", meta=b"\xff\xfe not utf-8")
    a.sample("binarytxt", caption=b"\xff\xfe\x00\x81 caption")
    a.sample("rtl", caption="مربع أزرق صغير".encode(), meta=json.dumps({"key": "rtl"}).encode(), keep=True)
    a.sample(
        "zerowidth",
        caption="\u200b\u200c\u200d\ufeff".encode(),
        meta=json.dumps({"captions": ["\u200b\u2060"]}).encode(),
    )
    a.sample("bidi", caption="a \u202egreen\u202c square".encode(), keep=True)
    a.sample("badjson", meta=b'{"captions": ["a square",')
    a.sample("wrongtypes", meta=json.dumps({"captions": {"not": "a list"}}).encode())
    a.sample("../escape")  # member names that climb out, or are absolute: never keys of an output path
    a.sample("/tmp/absolute")
    a.sample("linked", image=b"")  # its image member is replaced by a symlink to a file outside
    a.members = [m for m in a.members if not (isinstance(m, tuple) and m[0] == "linked.jpg")]
    a.link("linked.jpg", "/etc/passwd")
    a.link("hard.jpg", "ok0.jpg", hard=True)
    a.sample("ok6", keep=True)  # valid samples after the hostile ones are read too
    a.write(folder / "00000.tar")

    b = Corpus()  # cut in the middle of a member: the tail is counted as lost (img2dataset's stats)
    for i in range(8):
        b.sample(f"b{i}", keep=i < 3)
    full = b.write(folder / "00001.tar").read_bytes()
    (folder / "00001.tar").write_bytes(full[: full.index(b"b3.jpg") + 700])
    (folder / "00001_stats.json").write_text(json.dumps({"count": 8, "successes": 8}))
    (folder / "00002.tar").write_bytes(b"")  # an empty tar
    (folder / "00002_stats.json").write_text(json.dumps({"count": 0, "successes": 0}))
    c = Corpus()  # cut exactly at a member boundary: no read error at all, only a missing end marker
    for i in range(4):
        c.sample(f"c{i}", keep=i < 2)
    full = c.write(folder / "00003.tar").read_bytes()
    (folder / "00003.tar").write_bytes(full[: full.index(b"c2.jpg")])  # a header starts with its name
    (folder / "00003_stats.json").write_text(json.dumps({"count": 4, "successes": 4}))

    before = _snapshot(tmp_path, folder)
    r = _blip("import", "img2dataset", folder, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    assert _snapshot(tmp_path, folder) == before  # nothing written outside the folder
    assert not Path("/tmp/absolute.jpg").exists() and not (tmp_path / "escape.jpg").exists()

    kept = set(read_manifests(folder)["key"])
    assert kept == set(a.kept + b.kept + c.kept)  # no valid sample lost, no hostile one kept
    stats = json.loads((folder / "_stats.json").read_text())
    imp = stats["import"]
    assert imp["rejected_by_reason"] == {
        "bad_caption_encoding": 1,
        "bad_json": 3,  # badjson, wrongtypes, binarycaption's json
        "caption_too_long": 1,
        "corrupt_image": 3,
        "empty_caption": 2,  # emptycaption, zerowidth (nothing left once invisible characters go)
        "image_too_large": 1,
        "image_too_small": 1,
        "lost_after_cut": 5 + 2,
        "missing_image": 1,  # `linked`: its image was a symlink
        "unsafe_key": 2,
    }
    assert imp["also_rejected"] == {"member": {"link_member": 2}, "shard": {"empty_shard": 1, "truncated_tar": 2}}
    # every input accounted for: kept + rejected = read = what img2dataset wrote
    assert imp["num_written"] == len(kept)
    assert imp["num_records"] == imp["num_written"] + imp["num_rejected"] == a.samples + b.samples + c.samples
    captions = dict(zip(read_manifests(folder)["key"], read_manifests(folder)["caption"], strict=True))
    assert captions["rtl"] == "مربع أزرق صغير" and captions["bidi"] == "a green square"
    rejected = [json.loads(x) for x in (folder / "_rejected.jsonl").read_text().splitlines()]
    assert all(r["reason"] and r["detail"] for r in rejected)  # each with a reason and an example


@pytest.mark.parametrize(
    ("fmt", "doc", "message"),
    [
        ("coco", {"images": "nope", "annotations": []}, "'images' must be a list"),
        ("coco", {"images": []}, "is not a COCO captions file"),
        ("karpathy", {"images": {"a": 1}}, "needs an 'images' list"),
        ("blip-json", {"image": "x.jpg"}, "needs a list of objects"),
    ],
)
def test_malformed_annotation_files_are_one_line_errors(tmp_path, fmt, doc, message):
    (tmp_path / "ann.json").write_text(json.dumps(doc))
    r = _blip("import", fmt, tmp_path / "ann.json", "--images", tmp_path, "--out", tmp_path / "out", cwd=tmp_path)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr[-1000:]


def test_a_1gb_annotation_file_is_refused_by_size_before_parsing(tmp_path):
    big = tmp_path / "huge.json"
    with big.open("wb") as f:  # sparse: 1 GiB on paper, no disk used
        f.truncate(2**30)
    r = _blip("import", "blip-json", big, "--out", tmp_path / "out", cwd=tmp_path)
    assert (
        r.returncode == 2 and "1,024 MiB, over the 512 MiB limit" in r.stderr and "refused before parsing" in r.stderr
    )
    assert not (tmp_path / "out").exists()


def test_wrong_types_duplicates_and_escaping_paths_in_annotations_are_rejected_with_reasons(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("1.jpg", "2.jpg"):
        (images / name).write_bytes(jpeg_bytes())
    (tmp_path / "secret.jpg").write_bytes(jpeg_bytes())  # outside the image root: must not be imported
    os.symlink(tmp_path / "secret.jpg", images / "link.jpg")
    coco = {
        "images": [{"id": 1, "file_name": "1.jpg"}, {"id": 1, "file_name": "2.jpg"},
                   {"id": [3], "file_name": "2.jpg"}, {"id": 4, "file_name": 5},
                   {"id": 6, "file_name": "../secret.jpg"}, {"id": 7, "file_name": "link.jpg"},
                   {"id": 8, "file_name": str(tmp_path / "secret.jpg")}],
        "annotations": [{"image_id": 1, "caption": "one"}, {"image_id": 6, "caption": "six"},
                        {"image_id": 7, "caption": "seven"}, {"image_id": 8, "caption": "eight"},
                        {"image_id": [1], "caption": "bad id"}, {"image_id": 1, "caption": 5}, "not a dict"],
    }  # fmt: skip
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    r = _blip("import", "coco", tmp_path / "coco.json", "--images", images, "--out", tmp_path / "coco", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    imp = json.loads((tmp_path / "coco" / "_stats.json").read_text())["import"]
    assert set(read_manifests(tmp_path / "coco")["key"]) == {"coco-1"}
    assert imp["rejected_by_reason"] == {"bad_image_entry": 2, "duplicate_image_id": 1, "image_outside_root": 3}
    assert imp["also_rejected"] == {"annotation": {"empty_caption": 1, "unknown_image_id": 2}}
    assert imp["num_records"] == imp["num_written"] + imp["num_rejected"] == 7

    karpathy = {"images": [
        {"filename": "1.jpg", "split": "train", "sentences": [{"raw": "a cat"}], "cocoid": 1},
        {"filename": "2.jpg", "split": "../../escaped", "sentences": [{"raw": "a dog"}], "cocoid": 2},
        {"filename": "2.jpg", "split": 7, "sentences": [{"raw": "a dog"}], "cocoid": 3},
        {"filename": "2.jpg", "split": "val", "sentences": "not a list", "cocoid": 4},
        {"filename": ["2.jpg"], "split": "val"},
    ]}  # fmt: skip
    (tmp_path / "k.json").write_text(json.dumps(karpathy))
    r = _blip("import", "karpathy", tmp_path / "k.json", "--images", images, "--out", tmp_path / "k", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "k").iterdir()) == ["train", "val"]
    assert not (tmp_path.parent / "escaped").exists()
    assert set(read_manifests(tmp_path / "k" / "train")["key"]) == {"coco-1"}
    val = json.loads((tmp_path / "k" / "val" / "_stats.json").read_text())["import"]
    assert val["rejected_by_reason"] == {"bad_image_entry": 1, "bad_split": 2, "no_caption": 1}


def test_every_sample_key_that_reaches_an_output_path_is_safe(tmp_path):
    """Keys are file names inside a shard: a writer refuses one that is a path."""
    from blip_core.data.shards import ShardWriter

    w = ShardWriter(tmp_path / "out", 0, split="x")
    for bad in ("../x", "/abs", "a/b", "a.b"):
        with pytest.raises(ValueError, match="must not contain"):
            w.write(bad, jpeg_bytes(), ["c"], source="web")
    w.abort()
    assert list((tmp_path / "out").iterdir()) == []
