"""What the task importers (`vqa`, `nlvr`) share: the image encoder, the candidate item, the field
and argument checks, BLIP's list opener and the writer of task-item shards.

The safety rules are those of the image-caption importers (`blip_core.data.importers.pairs`): annotation
files over `max_json_bytes` are refused before parsing, images go through the reader's
decompression-bomb and size guards, an image path that resolves outside its root is rejected,
and every record not imported is counted by reason in `_stats.json` ("import") and listed in
`<out>/_rejected.jsonl`. A problem with a whole file (missing, not the expected layout) raises.
Images are re-encoded as RGB JPEG with the longer side at most `max_side` to keep shards small.
"""

from __future__ import annotations

import io
import json
import logging
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm import tqdm

from blip_core.config.data import ReaderConfig
from blip_core.data.importers.common import REJECTED_FILE, ImportReport, load_json
from blip_core.data.reader import SkipSample, decode_image
from blip_core.data.shards import write_stats
from blip_core.data.task_data import TaskItem, write_task_items
from blip_core.fileio import write_text

logger = logging.getLogger(__name__)

DEFAULT_MAX_SIDE = 384
"""Images are downscaled so that their longer side is at most this (BLIP finetunes VQA at 480 px
and NLVR2 at 384 px; 0 keeps the size)."""
MAX_IMAGE_BYTES = 64 * 2**20
"""Image files larger than this are rejected before reading (COCO and NLVR2 images are a few MB)."""


class ImageEncoder:
    """Validated, downscaled RGB JPEG bytes of image files under `root`. Recent results (bytes or
    the rejection) are cached: VQA asks several questions per image, NLVR2 writes several statements
    per image pair, and both list them next to each other."""

    def __init__(self, root: Path, cfg: ReaderConfig, max_side: int, cache_size: int = 64) -> None:
        self.root, self.cfg, self.max_side, self.cache_size = root.resolve(), cfg, max_side, cache_size
        self._cache: OrderedDict[Path, bytes | SkipSample] = OrderedDict()

    def __call__(self, path: Path) -> bytes:
        if path not in self._cache:
            try:
                self._cache[path] = self._encode(path)
            except SkipSample as s:
                self._cache[path] = s
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        self._cache.move_to_end(path)
        result = self._cache[path]
        if isinstance(result, SkipSample):
            raise result
        return result

    def _encode(self, path: Path) -> bytes:
        # a symlink (or `../` in an annotation path) must not pull other files into a dataset
        if not path.resolve().is_relative_to(self.root):
            raise SkipSample("image_outside_root", f"{path} resolves outside {self.root}")
        if not path.is_file():
            raise SkipSample("missing_image", f"{path}: file not found")
        if path.stat().st_size > MAX_IMAGE_BYTES:
            raise SkipSample("image_too_large", f"{path}: {path.stat().st_size} bytes > {MAX_IMAGE_BYTES}")
        img = decode_image(path.read_bytes(), self.cfg)  # pixel-count guard before decoding; RGB
        if self.max_side and max(img.size) > self.max_side:
            img.thumbnail((self.max_side, self.max_side), Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=90)
        return buf.getvalue()


@dataclass
class Candidate:
    """An item whose fields passed their checks; its images are read when it is written."""

    key: str
    image_paths: list[Path]
    fields: dict[str, Any]
    ident: dict[str, Any]
    """What `_rejected.jsonl` names the record by if an image fails."""


def field_error(row: Any, spec: dict[str, type | tuple[type, ...]]) -> tuple[str, str] | None:
    """(reason, detail) when `row` lacks a field of `spec` or has one of the wrong type, else None.
    A bool is no int here (JSON `true` is not a question id)."""
    if not isinstance(row, dict):
        return "bad_type", f"a record must be an object, got {type(row).__name__}"
    for name, kind in spec.items():
        if row.get(name) is None:
            return "missing_field", f"no '{name}'"
        value = row[name]
        if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _types(kind)):
            return "bad_type", f"'{name}' is {type(value).__name__}, expected {_type_names(kind)}"
    return None


def _types(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _type_names(kind: type | tuple[type, ...]) -> str:
    return " or ".join(t.__name__ for t in _types(kind))


def check_dir(path: Path, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    if not path.is_dir():
        raise NotADirectoryError(f"{what} is not a folder: {path}")
    return path


def check_args(max_side: int, limit: int) -> None:
    if max_side < 0:
        raise ValueError(f"max_side must be >= 0 (0: keep the size), got {max_side}")
    if limit < 0:
        raise ValueError(f"limit must be >= 0 (0: all), got {limit}")


def rows_to_read(rows: list[Any], limit: int, desc: str) -> Iterable[Any]:
    """The records to read (the first `limit`, 0 = all), with a progress bar."""
    rows = rows[:limit] if limit else rows
    return tqdm(rows, total=len(rows), desc=desc, unit="rec")


def open_blip_list(ann_json, images_root, what: str, root_label: str, max_side: int, limit: int,
                   max_json_bytes: int):  # fmt: skip
    """BLIP's annotation json of a task (`what`: VQA or NLVR), a list of objects, with its image root
    checked: (json path, image root, the list, the import report)."""
    check_args(max_side, limit)
    ann_json = Path(ann_json)
    images_root = check_dir(Path(images_root), root_label)
    data = load_json(ann_json, max_json_bytes)
    if not isinstance(data, list):
        raise ValueError(f"{ann_json} is not a BLIP {what} json (needs a list of objects)")
    return ann_json, images_root, data, ImportReport(source=f"blip-{what.lower()}-json:{ann_json}")


def write_candidates(
    candidates: Iterator[Candidate],
    out_dir: Path,
    *,
    task: str,
    split: str,
    report: ImportReport,
    encoder: ImageEncoder,
    shard_size: int,
) -> ImportReport:
    """Read each candidate's images, write the items that have all of theirs, then `_stats.json`
    (with the import summary) and `_rejected.jsonl`."""

    def items() -> Iterator[TaskItem]:
        for cand in candidates:
            try:
                images = [encoder(p) for p in cand.image_paths]
            except SkipSample as s:
                report.reject(cand.ident, s.reason, s.detail)
                continue
            report.num_written += 1
            yield TaskItem(cand.key, images, cand.fields)

    stats = write_task_items(out_dir, items(), task=task, split=split, shard_size=shard_size,
                             extra_stats={"source": report.source})  # fmt: skip
    # the counts are final only once `items()` is exhausted: the summary goes in afterwards
    write_stats(out_dir, stats | {"import": report.to_dict()})
    write_text(out_dir / REJECTED_FILE, "".join(json.dumps(r, sort_keys=True) + "\n" for r in report.rejected))
    report.outputs.append(str(out_dir))
    if report.rejected:
        logger.warning("%s: rejected %d of %d records: %s", split, report.num_rejected, report.num_records,
                       report.rejected_by_reason())  # fmt: skip
    if not report.num_written:
        logger.warning("%s: no item was imported (see %s in %s)", split, REJECTED_FILE, out_dir)
    return report
