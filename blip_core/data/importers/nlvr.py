"""Importers of NLVR2 into task-item shards (`nlvr` items): the public NLVR2 layout and BLIP's NLVR json.

Supported sources:
- NLVR2: json-lines `train.json` / `dev.json` / `test1.json`, images `<id minus -N>-img0.png` and
  `-img1.png` found anywhere under the image root (train's images sit in numbered sub-folders);
- BLIP's NLVR json (`[{"images": [left, right], "sentence", "label": 0 | 1}]`).

The safety rules, the image encoding and the writing are those of `blip_core.data.importers.task_items`.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from blip_core.config.data import ReaderConfig
from blip_core.data.importers.common import MAX_JSON_BYTES, ImportReport, make_key
from blip_core.data.importers.task_items import (
    DEFAULT_MAX_SIDE,
    Candidate,
    ImageEncoder,
    check_args,
    check_dir,
    field_error,
    open_blip_list,
    rows_to_read,
    write_candidates,
)
from blip_core.data.task_data import SHARD_SIZE

_NLVR_IDENTIFIER = re.compile(r"^([A-Za-z0-9]+-\d+-\d+)-(\d+)$")  # <split>-<set>-<pair>-<sentence>
_IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})


def _parse_label(value: Any) -> bool | None:
    """NLVR2's "True"/"False" (any case), BLIP's 1/0, or a JSON bool; None for anything else."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def _index_images(root: Path) -> tuple[dict[str, Path], set[str]]:
    """Image file name -> path, over all of `root` (NLVR2's train images sit in `train/0/` ...
    `train/99/`), and the names found more than once (which one is meant is unknown)."""
    index: dict[str, Path] = {}
    ambiguous: set[str] = set()
    for folder, dirs, files in os.walk(root):  # symlinked folders are not followed
        dirs.sort()
        for name in sorted(files):
            if Path(name).suffix.lower() not in _IMAGE_SUFFIXES:
                continue
            if name in index:
                ambiguous.add(name)
            else:
                index[name] = Path(folder) / name
    if not index:
        raise ValueError(f"no image files ({', '.join(sorted(_IMAGE_SUFFIXES))}) under {root}")
    return index, ambiguous


def _read_json_lines(path: Path, max_bytes: int) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    if path.stat().st_size > max_bytes:
        raise ValueError(f"{path} is over the {max_bytes / 2**20:,.0f} MiB limit for an annotation file")
    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text: {e}") from None
    if lines and lines[0].lstrip().startswith("["):
        raise ValueError(f"{path} is one JSON list, not NLVR2 json-lines (BLIP's layout: import_blip_nlvr_json)")
    return lines


def _nlvr_fields(statement: Any, label: Any, identifier: str, names: list[str]) -> dict[str, Any] | tuple[str, str]:
    """An NLVR item's fields, or (reason, detail)."""
    if not isinstance(statement, str):
        return "bad_type", f"'sentence' is {type(statement).__name__}, expected str"
    if not statement.strip():
        return "empty_text", "empty sentence"
    parsed = _parse_label(label)
    if parsed is None:
        return "unknown_label", f"label {label!r} is not True/False (or 1/0)"
    return {"statement": statement.strip(), "label": parsed, "type": "nlvr2", "identifier": identifier,
            "image_ids": names}  # fmt: skip


def import_nlvr2(
    json_file: str | Path,
    images_dir: str | Path,
    out_dir: str | Path,
    *,
    split: str = "nlvr_dev",
    reader_cfg: ReaderConfig | None = None,
    max_side: int = DEFAULT_MAX_SIDE,
    limit: int = 0,
    max_json_bytes: int = MAX_JSON_BYTES,
    shard_size: int = SHARD_SIZE,
) -> ImportReport:
    """NLVR2 json-lines (`train.json`, `dev.json`, `test1.json`) and its images -> `nlvr` items.

    The images of identifier `dev-850-0-0` are `dev-850-0-img0.png` (left) and `dev-850-0-img1.png`
    (right), looked up by name anywhere under `images_dir`. One item per line, keyed
    `nlvr-<identifier>`, with fields statement, label (bool), type ("nlvr2"), identifier and
    image_ids ([left name, right name]).

    Args:
        limit: read only the first `limit` lines (0: all).
    """
    check_args(max_side, limit)
    json_file, out_dir = Path(json_file), Path(out_dir)
    images_dir = check_dir(Path(images_dir), "NLVR2 image folder")
    lines = _read_json_lines(json_file, max_json_bytes)
    index, ambiguous = _index_images(images_dir)
    report = ImportReport(source=f"nlvr2:{json_file}")

    def candidates() -> Iterator[Candidate]:
        seen: set[str] = set()
        for line in rows_to_read(lines, limit, f"import {split}"):
            report.num_records += 1
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                report.reject({"line": line}, "bad_json", str(e))
                continue
            error = field_error(row, {"identifier": str, "sentence": str, "label": (str, bool, int)})
            if error:
                report.reject(row, *error)
                continue
            identifier = row["identifier"]
            match = _NLVR_IDENTIFIER.match(identifier)
            if not match:
                report.reject(row, "bad_identifier", "expected <split>-<set>-<pair>-<sentence>, e.g. dev-850-0-0")
                continue
            names = [f"{match.group(1)}-img{i}.png" for i in (0, 1)]
            fields = _nlvr_fields(row["sentence"], row["label"], identifier, names)
            if isinstance(fields, tuple):
                report.reject(row, *fields)
                continue
            ident = {"identifier": identifier, "images": names}
            if identifier in seen:
                report.reject(ident, "duplicate_identifier", f"{identifier} already imported")
                continue
            lost = [n for n in names if n not in index or n in ambiguous]
            if lost:
                if lost[0] in ambiguous:
                    report.reject(ident, "ambiguous_image", f"several files named {lost[0]} under {images_dir}")
                else:
                    report.reject(ident, "missing_image", f"no file named {lost[0]} under {images_dir}")
                continue
            seen.add(identifier)
            yield Candidate(make_key("nlvr", identifier), [index[n] for n in names], fields, ident)

    encoder = ImageEncoder(images_dir, reader_cfg or ReaderConfig(), max_side)
    return write_candidates(candidates(), out_dir, task="nlvr", split=split, report=report, encoder=encoder,
                            shard_size=shard_size)  # fmt: skip


def import_blip_nlvr_json(
    ann_json: str | Path,
    images_root: str | Path,
    out_dir: str | Path,
    *,
    split: str = "nlvr_dev",
    reader_cfg: ReaderConfig | None = None,
    max_side: int = DEFAULT_MAX_SIDE,
    limit: int = 0,
    max_json_bytes: int = MAX_JSON_BYTES,
    shard_size: int = SHARD_SIZE,
) -> ImportReport:
    """BLIP's NLVR json (`nlvr_train.json`, `nlvr_dev.json`, `nlvr_test.json`): a list of
    `{"images": [left, right] (paths under images_root), "sentence", "label": 0 | 1}` -> `nlvr`
    items with the fields of `import_nlvr2`. The file has no identifiers: an item's is rebuilt from
    its left image (`dev-850-0-img0.png` -> `dev-850-0-<n>`, n counting that pair's sentences in
    file order), so it matches NLVR2's when BLIP kept their order; `row<i>` for other file names."""
    ann_json, images_root, data, report = open_blip_list(ann_json, images_root, "NLVR", "NLVR2 image root", max_side,
                                                         limit, max_json_bytes)  # fmt: skip
    out_dir = Path(out_dir)

    def candidates() -> Iterator[Candidate]:
        per_pair: Counter[str] = Counter()
        for i, row in enumerate(rows_to_read(data, limit, f"import {split}")):
            report.num_records += 1
            error = field_error(row, {"images": list, "sentence": str, "label": (int, str, bool)})
            if error:
                report.reject(row, *error)
                continue
            paths = row["images"]
            if len(paths) != 2 or not all(isinstance(p, str) for p in paths):
                report.reject(row, "bad_type", "'images' must be two paths (left, right)")
                continue
            names = [Path(p).name for p in paths]
            base = re.fullmatch(r"([A-Za-z0-9]+-\d+-\d+)-img0\.\w+", names[0])
            identifier = f"{base.group(1)}-{per_pair[base.group(1)]}" if base else f"row{i}"
            fields = _nlvr_fields(row["sentence"], row["label"], identifier, names)
            if isinstance(fields, tuple):
                report.reject(row, *fields)
                continue
            if base:
                per_pair[base.group(1)] += 1
            ident = {"identifier": identifier, "images": paths}
            yield Candidate(make_key("nlvr", identifier), [images_root / p for p in paths], fields, ident)

    encoder = ImageEncoder(images_root, reader_cfg or ReaderConfig(), max_side)
    return write_candidates(candidates(), out_dir, task="nlvr", split=split, report=report, encoder=encoder,
                            shard_size=shard_size)  # fmt: skip
