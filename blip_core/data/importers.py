"""Importers: bring real image-caption data into our shard format.

Supported sources:
- COCO captions json (`captions_train2017.json`) + image folder;
- Karpathy `dataset_coco.json` (one output folder per split: train, restval, val, test);
- BLIP annotation json (`[{"image": path, "caption": str | [str, ...]}]`, as in BLIP's
  `coco_karpathy_train.json` / `*_val.json`);
- existing img2dataset / webdataset shard folders: validated and indexed in place.

Every record that is not imported is listed with its reason in `<out>/_rejected.jsonl` and counted
in `_stats.json`; nothing is dropped silently.
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from blip_core.config import ReaderConfig
from blip_core.data.reader import TAR_LEVEL_REASONS, ReadStats, _Skip, decode_image, iter_samples
from blip_core.data.shards import ShardWriter, list_shards, manifest_path, write_manifest, write_stats

logger = logging.getLogger(__name__)

REJECTED_FILE = "_rejected.jsonl"


@dataclass
class ImportReport:
    """What an import did: counts, and every rejected record with its reason."""

    source: str
    num_records: int = 0
    num_written: int = 0
    num_captions: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)

    def reject(self, record: Any, reason: str, detail: str = "") -> None:
        self.rejected.append({"record": record, "reason": reason, "detail": detail})

    def rejected_by_reason(self) -> dict[str, int]:
        """Rejected records per reason (an entry standing for several, e.g. a shard's count, adds its count)."""
        counts: Counter[str] = Counter()
        for r in self.rejected:
            record = r["record"]
            counts[r["reason"]] += int(record.get("count", 1)) if isinstance(record, dict) else 1
        return dict(sorted(counts.items()))

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "num_records": self.num_records,
            "num_written": self.num_written,
            "num_captions": self.num_captions,
            "num_rejected": len(self.rejected),
            "rejected_by_reason": self.rejected_by_reason(),
            "outputs": self.outputs,
        }


@dataclass
class _Record:
    key: str
    image_path: Path
    captions: list[str]
    meta: dict[str, Any]


_KEY_BAD = re.compile(r"[^A-Za-z0-9_-]+")


def make_key(prefix: str, ident: Any) -> str:
    """A webdataset-safe key (no dots or slashes)."""
    return f"{prefix}-{_KEY_BAD.sub('_', str(ident))}"


def _load_json(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not valid UTF-8 JSON: {e}") from None


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
) -> None:
    """Validate each record's image and captions and write the good ones as shards."""
    cfg = reader_cfg or ReaderConfig()
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
        if not rec.image_path.is_file():
            report.reject(ident, "missing_image", "file not found")
            continue
        try:
            jpeg, size = _to_jpeg(rec.image_path, cfg)
        except _Skip as s:
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
    captions_json: str | Path, images_dir: str | Path, out_dir: str | Path, *, split: str = "coco", **kw: Any
) -> ImportReport:
    """COCO captions json (`images` + `annotations`) and its image folder."""
    captions_json, images_dir = Path(captions_json), Path(images_dir)
    data = _load_json(captions_json)
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise ValueError(f"{captions_json} is not a COCO captions file (needs 'images' and 'annotations')")
    report = ImportReport(source=f"coco:{captions_json}")
    images = {}
    for im in data["images"]:
        if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
            report.num_records += 1
            report.reject(im, "bad_image_entry", "needs 'id' and 'file_name'")
            continue
        images[im["id"]] = im
    caps: dict[Any, list[str]] = {i: [] for i in images}
    for ann in data["annotations"]:
        if not isinstance(ann, dict) or ann.get("image_id") not in images:
            report.reject(ann, "unknown_image_id", "annotation refers to no image entry")
            continue
        c = _clean_captions(ann.get("caption"))
        if not c:
            report.reject(ann, "empty_caption", "caption missing or empty")
            continue
        caps[ann["image_id"]] += c

    def records() -> Iterator[_Record]:
        for image_id, im in images.items():
            yield _Record(
                make_key("coco", image_id), images_dir / im["file_name"], caps[image_id],
                {"image_id": str(image_id), "file_name": im["file_name"]},
            )

    write_records(records(), Path(out_dir), split=split, report=report, total=len(images), **kw)
    return report


def import_karpathy(
    dataset_json: str | Path, images_root: str | Path, out_dir: str | Path, **kw: Any
) -> ImportReport:
    """Karpathy `dataset_coco.json`; writes `out_dir/<split>/` for each split present."""
    dataset_json, images_root = Path(dataset_json), Path(images_root)
    data = _load_json(dataset_json)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(f"{dataset_json} is not a Karpathy split file (needs an 'images' list)")
    report = ImportReport(source=f"karpathy:{dataset_json}")
    by_split: dict[str, list[_Record]] = {}
    for im in data["images"]:
        if not isinstance(im, dict) or "filename" not in im or "split" not in im:
            report.num_records += 1
            report.reject(im, "bad_image_entry", "needs 'filename' and 'split'")
            continue
        sentences = im.get("sentences", [])
        raw = [s.get("raw") for s in sentences if isinstance(s, dict)]
        ident = im.get("cocoid", im.get("imgid", im["filename"]))
        rel = Path(im.get("filepath", "")) / im["filename"]
        by_split.setdefault(im["split"], []).append(
            _Record(make_key("coco", ident), images_root / rel, _clean_captions(raw) or [],
                    {"image_id": str(ident), "file_name": str(rel)})
        )
    for split, recs in sorted(by_split.items()):
        write_records(iter(recs), Path(out_dir) / split, split=split, report=report, total=len(recs), **kw)
    return report


def import_blip_json(
    ann_json: str | Path, images_root: str | Path, out_dir: str | Path, *, split: str = "train", **kw: Any
) -> ImportReport:
    """BLIP annotation json: a list of `{"image": path, "caption": str | list}`; rows of the same
    image are merged into one sample with several captions."""
    ann_json, images_root = Path(ann_json), Path(images_root)
    data = _load_json(ann_json)
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

    write_records(records(), Path(out_dir), split=split, report=report, total=len(merged), **kw)
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
        n for (shard, reason), n in stats.skipped.items() if shard == tar.name and reason not in TAR_LEVEL_REASONS
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
                    "key": s["key"], "shard": tar.stem, "width": w, "height": h, "caption": s["captions"][0],
                    "caption_len": len(s["captions"][0].split()), "num_captions": len(s["captions"]),
                    "sha256": hashlib.sha256(s["image_bytes"]).hexdigest(),
                    "source": str(s["meta"].get("source", "web")), "split": str(s["meta"].get("split", folder.name)),
                    "image_id": str(s["meta"].get("image_id", s["key"])),
                }
            )
        lost = _lost_tail(folder, tar, stats)
        if lost:  # img2dataset wrote more samples into this tar than it now holds
            stats.skipped[(tar.name, "lost_after_cut")] += lost
            logger.warning("%s: %d samples img2dataset wrote are missing (the tar was cut)", tar, lost)
        write_manifest(rows, manifest_path(folder, tar.stem))
        shards.append({"shard": tar.stem, "num_samples": len(rows), "num_captions": sum(r["num_captions"] for r in rows)})
        report.num_written += len(rows)
        report.num_captions += sum(r["num_captions"] for r in rows)
    for (shard, reason), n in sorted(stats.skipped.items()):
        report.reject({"shard": shard, "count": n}, reason, stats.examples.get((shard, reason), ""))
    report.num_records = report.num_written + stats.num_skipped
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
