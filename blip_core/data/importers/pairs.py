"""Importers of image-caption data (COCO, Karpathy, BLIP json, img2dataset) into our shard format.

Supported sources:
- COCO captions json (`captions_train2017.json`) + image folder;
- Karpathy `dataset_coco.json` (one output folder per split: train, restval, val, test);
- BLIP annotation json (`[{"image": path, "caption": str | [str, ...]}]`, as in BLIP's
  `coco_karpathy_train.json` / `*_val.json`);
- existing img2dataset / webdataset shard folders: validated and indexed in place.

Every record that is not imported is listed with its reason in `<out>/_rejected.jsonl` and counted
in `_stats.json` (records read = written + rejected; a caption annotation that is rejected is
counted apart, under `annotations_rejected_by_reason`); nothing is dropped silently. Hostile
annotation files are refused before parsing when larger than `max_json_bytes`; split names and
image paths that would leave their root are rejected. The report, the json loader and the keys are
those of every importer (`blip_core.data.importers.common`).
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from blip_core.config.data import ReaderConfig
from blip_core.data.importers.common import MAX_JSON_BYTES, REJECTED_FILE, ImportReport, load_json, make_key
from blip_core.data.reader import (
    MEMBER_LEVEL_REASONS,
    TAR_LEVEL_REASONS,
    ReadStats,
    SkipSample,
    decode_image,
    iter_samples,
)
from blip_core.data.shards import ShardWriter, list_shards, manifest_path, write_manifest, write_stats

logger = logging.getLogger(__name__)


@dataclass
class _Record:
    key: str
    image_path: Path
    captions: list[str]
    meta: dict[str, Any]


_SAFE_SPLIT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def _clean_captions(raw: Any) -> list[str] | None:
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list):
        return None
    return [c.strip() for c in raw if isinstance(c, str) and c.strip()]


def _to_jpeg(path: Path, cfg: ReaderConfig) -> tuple[bytes, tuple[int, int]]:
    """Validated JPEG bytes of an image file (JPEGs are kept byte-for-byte, others re-encoded)."""
    data = path.read_bytes()
    img = decode_image(data, cfg)
    if data[:3] == b"\xff\xd8\xff":
        return data, img.size
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95)
    return buf.getvalue(), img.size


def write_records(
    records: Iterable[_Record],
    out_dir: Path,
    *,
    split: str,
    report: ImportReport,
    shard_size: int = 1000,
    reader_cfg: ReaderConfig | None = None,
    total: int | None = None,
    images_root: Path | None = None,
) -> None:
    """Validate each record's image and captions and write the good ones as shards. With
    `images_root`, an image path that resolves outside it (`../`, an absolute path, a symlink out)
    is rejected: an annotation file must not pull other files into a dataset."""
    cfg = reader_cfg or ReaderConfig()
    root = images_root.resolve() if images_root is not None else None
    out_dir.mkdir(parents=True, exist_ok=True)
    writer: ShardWriter | None = None
    shard_index = 0
    seen: set[str] = set()
    shards: list[dict[str, Any]] = []
    for rec in tqdm(records, total=total, desc=f"import {split}", unit="img"):
        report.num_records += 1
        ident = {"key": rec.key, "image": str(rec.image_path)}
        if rec.key in seen:
            report.reject(ident, "duplicate_image", "image already imported under this key")
            continue
        if not rec.captions:
            report.reject(ident, "no_caption", "no non-empty caption")
            continue
        if root is not None and not rec.image_path.resolve().is_relative_to(root):
            report.reject(ident, "image_outside_root", f"resolves outside {root}")
            continue
        if not rec.image_path.is_file():
            report.reject(ident, "missing_image", "file not found")
            continue
        try:
            jpeg, size = _to_jpeg(rec.image_path, cfg)
        except SkipSample as s:
            report.reject(ident, s.reason, s.detail)
            continue
        seen.add(rec.key)
        if writer is None:
            writer = ShardWriter(out_dir, shard_index, split=split)
        writer.write(rec.key, jpeg, rec.captions, source="human", meta=rec.meta, size=size)
        report.num_written += 1
        report.num_captions += len(rec.captions)
        if report.num_written % shard_size == 0:
            shards.append(writer.close().to_dict())
            writer, shard_index = None, shard_index + 1
    if writer is not None:
        shards.append(writer.close().to_dict())
    write_stats(
        out_dir,
        {
            "split": split,
            "num_samples": sum(s["num_samples"] for s in shards),
            "num_captions": sum(s["num_captions"] for s in shards),
            "num_shards": len(shards),
            "shards": shards,
            "import": report.to_dict(),
        },
    )
    with (out_dir / REJECTED_FILE).open("w") as f:
        for r in report.rejected:
            f.write(json.dumps(r, sort_keys=True) + "\n")
    report.outputs.append(str(out_dir))
    if report.rejected:
        logger.warning("%s: rejected %d records: %s", split, len(report.rejected), report.rejected_by_reason())


def import_coco(
    captions_json: str | Path,
    images_dir: str | Path,
    out_dir: str | Path,
    *,
    split: str = "coco",
    max_json_bytes: int = MAX_JSON_BYTES,
    **kw: Any,
) -> ImportReport:
    """COCO captions json (`images` + `annotations`) and its image folder."""
    captions_json, images_dir = Path(captions_json), Path(images_dir)
    data = load_json(captions_json, max_json_bytes)
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise ValueError(f"{captions_json} is not a COCO captions file (needs 'images' and 'annotations')")
    for key in ("images", "annotations"):
        if not isinstance(data[key], list):
            raise ValueError(f"{captions_json}: '{key}' must be a list, got {type(data[key]).__name__}")
    report = ImportReport(source=f"coco:{captions_json}")
    images = {}
    for im in data["images"]:
        if (not isinstance(im, dict) or not isinstance(im.get("id"), int | str)
                or not isinstance(im.get("file_name"), str)):  # fmt: skip
            report.num_records += 1
            report.reject(im, "bad_image_entry", "needs an int or string 'id' and a string 'file_name'")
            continue
        if im["id"] in images:
            report.num_records += 1
            report.reject(im, "duplicate_image_id", f"id {im['id']!r} already listed (the first entry is kept)")
            continue
        images[im["id"]] = im
    caps: dict[Any, list[str]] = {i: [] for i in images}
    for ann in data["annotations"]:
        image_id = ann.get("image_id") if isinstance(ann, dict) else None
        if not isinstance(image_id, int | str) or image_id not in images:
            report.reject(ann, "unknown_image_id", "annotation refers to no image entry", level="annotation")
            continue
        c = _clean_captions(ann.get("caption"))
        if not c:
            report.reject(ann, "empty_caption", "caption missing or empty", level="annotation")
            continue
        caps[image_id] += c

    def records() -> Iterator[_Record]:
        for image_id, im in images.items():
            yield _Record(
                make_key("coco", image_id),
                images_dir / im["file_name"],
                caps[image_id],
                {"image_id": str(image_id), "file_name": im["file_name"]},
            )

    write_records(records(), Path(out_dir), split=split, report=report, total=len(images), images_root=images_dir,
                  **kw)  # fmt: skip
    return report


def import_karpathy(
    dataset_json: str | Path,
    images_root: str | Path,
    out_dir: str | Path,
    *,
    max_json_bytes: int = MAX_JSON_BYTES,
    **kw: Any,
) -> ImportReport:
    """Karpathy `dataset_coco.json`; writes `out_dir/<split>/` for each split present."""
    dataset_json, images_root = Path(dataset_json), Path(images_root)
    data = load_json(dataset_json, max_json_bytes)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(f"{dataset_json} is not a Karpathy split file (needs an 'images' list)")
    report = ImportReport(source=f"karpathy:{dataset_json}")
    by_split: dict[str, list[_Record]] = {}
    for im in data["images"]:
        if not isinstance(im, dict) or not isinstance(im.get("filename"), str) or "split" not in im:
            report.num_records += 1
            report.reject(im, "bad_image_entry", "needs a string 'filename' and a 'split'")
            continue
        if not isinstance(im["split"], str) or not _SAFE_SPLIT.match(im["split"]):
            report.num_records += 1  # the split names an output folder: no path may come from the file
            report.reject(im, "bad_split", f"split {im['split']!r} is not a plain name (letters, digits, _ -)")
            continue
        sentences = im.get("sentences")
        raw = [s.get("raw") for s in sentences if isinstance(s, dict)] if isinstance(sentences, list) else []
        ident = im.get("cocoid", im.get("imgid", im["filename"]))
        filepath = im.get("filepath", "")
        rel = Path(filepath if isinstance(filepath, str) else "") / im["filename"]
        by_split.setdefault(im["split"], []).append(
            _Record(
                make_key("coco", ident),
                images_root / rel,
                _clean_captions(raw) or [],
                {"image_id": str(ident), "file_name": str(rel)},
            )
        )
    for split, recs in sorted(by_split.items()):
        write_records(iter(recs), Path(out_dir) / split, split=split, report=report, total=len(recs),
                      images_root=images_root, **kw)  # fmt: skip
    return report


def import_blip_json(
    ann_json: str | Path,
    images_root: str | Path,
    out_dir: str | Path,
    *,
    split: str = "train",
    max_json_bytes: int = MAX_JSON_BYTES,
    **kw: Any,
) -> ImportReport:
    """BLIP annotation json: a list of `{"image": path, "caption": str | list}`; rows of the same
    image are merged into one sample with several captions."""
    ann_json, images_root = Path(ann_json), Path(images_root)
    data = load_json(ann_json, max_json_bytes)
    if not isinstance(data, list):
        raise ValueError(f"{ann_json} is not a BLIP annotation file (needs a list of objects)")
    report = ImportReport(source=f"blip-json:{ann_json}")
    merged: dict[str, list[str]] = {}
    for row in data:
        if not isinstance(row, dict) or not isinstance(row.get("image"), str):
            report.num_records += 1
            report.reject(row, "bad_entry", "needs an 'image' path")
            continue
        c = _clean_captions(row.get("caption"))
        if c is None:
            report.num_records += 1
            report.reject(row, "empty_caption", "caption must be a string or a list of strings")
            continue
        merged.setdefault(row["image"], []).extend(c)

    def records() -> Iterator[_Record]:
        for image, caps in merged.items():
            ident = Path(image).stem
            yield _Record(make_key(split, ident), images_root / image, caps, {"image_id": ident, "file_name": image})

    write_records(records(), Path(out_dir), split=split, report=report, total=len(merged), images_root=images_root,
                  **kw)  # fmt: skip
    return report


def _lost_tail(folder: Path, tar: Path, stats) -> int:
    """Samples img2dataset reports writing into `tar` (its `<shard>_stats.json` "successes") that
    the reader neither read nor rejected: lost after a cut. 0 without img2dataset's stats."""
    own = folder / f"{tar.stem}_stats.json"
    try:
        written = int(json.loads(own.read_text())["successes"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0
    seen = stats.ok.get(tar.name, 0) + sum(
        n
        for (shard, reason), n in stats.skipped.items()
        if shard == tar.name and reason not in TAR_LEVEL_REASONS | MEMBER_LEVEL_REASONS
    )
    return max(0, written - seen)


def index_img2dataset(folder: str | Path, *, reader_cfg: ReaderConfig | None = None) -> ImportReport:
    """Validate an existing shard folder in place: read every sample with the guarded reader, write
    our per-shard manifest beside each tar (img2dataset's own files are left untouched) and a
    `_stats.json` with the valid and skipped counts per shard and reason."""
    import hashlib

    folder = Path(folder)
    tars = list_shards(folder)
    report = ImportReport(source=f"img2dataset:{folder}")
    stats = ReadStats()
    shards = []
    for tar in tqdm(tars, desc="index", unit="shard"):
        rows = []
        for s in iter_samples([tar], stats=stats, reader_cfg=reader_cfg, keep_bytes=True):
            w, h = s["image"].size
            rows.append(
                {
                    "key": s["key"],
                    "shard": tar.stem,
                    "width": w,
                    "height": h,
                    "caption": s["captions"][0],
                    "caption_len": len(s["captions"][0].split()),
                    "num_captions": len(s["captions"]),
                    "sha256": hashlib.sha256(s["image_bytes"]).hexdigest(),
                    "source": str(s["meta"].get("source", "web")),
                    "split": str(s["meta"].get("split", folder.name)),
                    "image_id": str(s["meta"].get("image_id", s["key"])),
                }
            )
        lost = _lost_tail(folder, tar, stats)
        if lost:  # img2dataset wrote more samples into this tar than it now holds
            stats.skipped[(tar.name, "lost_after_cut")] += lost
            stats.examples[(tar.name, "lost_after_cut")] = (
                f"img2dataset's {tar.stem}_stats.json lists {lost} more samples"
            )
            logger.warning("%s: %d samples img2dataset wrote are missing (the tar was cut)", tar, lost)
        write_manifest(rows, manifest_path(folder, tar.stem))
        shards.append(
            {"shard": tar.stem, "num_samples": len(rows), "num_captions": sum(r["num_captions"] for r in rows)}
        )
        report.num_written += len(rows)
        report.num_captions += sum(r["num_captions"] for r in rows)
    for (shard, reason), n in sorted(stats.skipped.items()):
        level = "shard" if reason in TAR_LEVEL_REASONS else "member" if reason in MEMBER_LEVEL_REASONS else "record"
        report.reject({"shard": shard, "count": n}, reason, stats.examples.get((shard, reason), ""), level=level)
    report.num_records = report.num_written + report.num_rejected
    write_stats(
        folder,
        {
            "split": folder.name,
            "num_samples": report.num_written,
            "num_captions": report.num_captions,
            "num_shards": len(shards),
            "shards": shards,
            "read": stats.to_dict(),
            "import": report.to_dict(),
        },
    )
    with (folder / REJECTED_FILE).open("w") as f:
        for r in report.rejected:
            f.write(json.dumps(r, sort_keys=True) + "\n")
    report.outputs.append(str(folder))
    return report
