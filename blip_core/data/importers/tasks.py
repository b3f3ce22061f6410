"""Importers of the public VQA v2 and NLVR2 annotation layouts (and BLIP's json for both) into
task-item shards (`blip_core.data.task_data`), so the downstream tasks can run on real data from
local paths.

Supported sources:
- VQA v2: `v2_OpenEnded_mscoco_<subtype>_questions.json` and, optionally (test-dev has none),
  `v2_mscoco_<subtype>_annotations.json`, with a COCO image folder
  (`COCO_val2014_000000000042.jpg`; `000000000042.jpg` and `42.jpg` are accepted too);
- BLIP's VQA json (`data/vqa_*.json`: `[{"question_id", "question", "answer": [...], "image"}]`);
- NLVR2: json-lines `train.json` / `dev.json` / `test1.json`, images `<id minus -N>-img0.png` and
  `-img1.png` found anywhere under the image root (train's images sit in numbered sub-folders);
- BLIP's NLVR json (`[{"images": [left, right], "sentence", "label": 0 | 1}]`).

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
import os
import re
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm import tqdm

from blip_core.config.data import ReaderConfig
from blip_core.data.importers.pairs import MAX_JSON_BYTES, REJECTED_FILE, ImportReport, load_json, make_key
from blip_core.data.reader import SkipSample, decode_image
from blip_core.data.shards import write_stats
from blip_core.data.task_data import SHARD_SIZE, TaskItem, write_task_items
from blip_core.fileio import write_text

logger = logging.getLogger(__name__)

DEFAULT_MAX_SIDE = 384
"""Images are downscaled so that their longer side is at most this (BLIP finetunes VQA at 480 px
and NLVR2 at 384 px; 0 keeps the size)."""
MAX_IMAGE_BYTES = 64 * 2**20
"""Image files larger than this are rejected before reading (COCO and NLVR2 images are a few MB)."""
VQA_ANSWER_TYPES = {"yes/no": "yesno", "number": "count", "other": "other"}
"""VQA v2's `answer_type` -> our question type."""
UNKNOWN_TYPE = "unknown"
"""The type of a question without answers (test-dev, BLIP's vqa_test.json)."""

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_NLVR_IDENTIFIER = re.compile(r"^([A-Za-z0-9]+-\d+-\d+)-(\d+)$")  # <split>-<set>-<pair>-<sentence>
_IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})


# ------------------------------------------------------------------------------------------------
# shared: images, field checks, writing


class _ImageEncoder:
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
class _Candidate:
    """An item whose fields passed their checks; its images are read when it is written."""

    key: str
    image_paths: list[Path]
    fields: dict[str, Any]
    ident: dict[str, Any]
    """What `_rejected.jsonl` names the record by if an image fails."""


def _field_error(row: Any, spec: dict[str, type | tuple[type, ...]]) -> tuple[str, str] | None:
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


def _check_dir(path: Path, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    if not path.is_dir():
        raise NotADirectoryError(f"{what} is not a folder: {path}")
    return path


def _check_args(max_side: int, limit: int) -> None:
    if max_side < 0:
        raise ValueError(f"max_side must be >= 0 (0: keep the size), got {max_side}")
    if limit < 0:
        raise ValueError(f"limit must be >= 0 (0: all), got {limit}")


def _rows(rows: list[Any], limit: int, desc: str) -> Iterable[Any]:
    """The records to read (the first `limit`, 0 = all), with a progress bar."""
    rows = rows[:limit] if limit else rows
    return tqdm(rows, total=len(rows), desc=desc, unit="rec")


def _write(
    candidates: Iterator[_Candidate],
    out_dir: Path,
    *,
    task: str,
    split: str,
    report: ImportReport,
    encoder: _ImageEncoder,
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


# ------------------------------------------------------------------------------------------------
# VQA


def _vqa_answer_fields(answers: list[str]) -> dict[str, Any]:
    """Fields of a question from its human answers only (BLIP's json has no answer type): the most
    common answer, and the type guessed from it as the VQA answer types are defined."""
    if not answers:
        return {"answers": [], "answer": "", "type": UNKNOWN_TYPE}
    answer = Counter(answers).most_common(1)[0][0]
    kind = "yesno" if answer in ("yes", "no") else "count" if answer.isdigit() else "other"
    return {"answers": answers, "answer": answer, "type": kind}


def _index_vqa_annotations(path: Path, max_json_bytes: int, report: ImportReport) -> tuple[dict[int, Any], str | None]:
    data = load_json(path, max_json_bytes)
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise ValueError(f"{path} is not a VQA annotations file (needs an 'annotations' list)")
    by_question: dict[int, Any] = {}
    for ann in data["annotations"]:
        qid = ann.get("question_id") if isinstance(ann, dict) else None
        if not isinstance(qid, int) or isinstance(qid, bool):
            report.reject(ann, "bad_annotation_entry", "needs an int 'question_id'", level="annotation")
        elif qid in by_question:
            report.reject(ann, "duplicate_annotation", f"question {qid} already annotated (the first is kept)",
                          level="annotation")  # fmt: skip
        else:
            by_question[qid] = ann
    subtype = data.get("data_subtype")
    return by_question, subtype if isinstance(subtype, str) else None


def _vqa_annotation_fields(ann: Any, image_id: int) -> dict[str, Any] | tuple[str, str]:
    """A question's answer fields from its VQA v2 annotation, or (reason, detail)."""
    error = _field_error(ann, {"multiple_choice_answer": str, "answers": list, "answer_type": str, "image_id": int})
    if error:
        return "bad_annotation", error[1]
    answers = [a.get("answer") if isinstance(a, dict) else None for a in ann["answers"]]
    if not answers or not all(isinstance(a, str) for a in answers):
        return "bad_annotation", "'answers' must be a non-empty list of {'answer': str}"
    if ann["answer_type"] not in VQA_ANSWER_TYPES:
        return "unknown_answer_type", f"answer_type {ann['answer_type']!r}; known: {', '.join(VQA_ANSWER_TYPES)}"
    if ann["image_id"] != image_id:
        return "annotation_mismatch", f"annotation is for image {ann['image_id']}, the question for {image_id}"
    return {"answers": answers, "answer": ann["multiple_choice_answer"], "type": VQA_ANSWER_TYPES[ann["answer_type"]]}


def _coco_image_finder(images_dir: Path, subtype: str | None) -> Callable[[int], Path]:
    """image_id -> its file: `COCO_<subtype>_<12 digits>.jpg`, `<12 digits>.jpg` or `<id>.jpg`, in
    `images_dir` or its `<subtype>/` folder. The path of the first name when none exists (rejected
    later as missing)."""
    # test-dev questions (data_subtype "test-dev2015") are asked about test2015's images
    image_subtype = subtype.replace("test-dev", "test") if subtype else None
    dirs = [images_dir] + ([images_dir / image_subtype] if image_subtype else [])
    found: dict[int, Path] = {}

    def find(image_id: int) -> Path:
        if image_id not in found:
            names = ([f"COCO_{image_subtype}_{image_id:012d}.jpg"] if image_subtype else []) + [
                f"{image_id:012d}.jpg", f"{image_id}.jpg"]  # fmt: skip
            paths = [d / n for d in dirs for n in names]
            found[image_id] = next((p for p in paths if p.is_file()), paths[0])
        return found[image_id]

    return find


def import_vqa_v2(
    questions_file: str | Path,
    images_dir: str | Path,
    out_dir: str | Path,
    *,
    annotations_file: str | Path | None = None,
    split: str = "vqa_val",
    reader_cfg: ReaderConfig | None = None,
    max_side: int = DEFAULT_MAX_SIDE,
    limit: int = 0,
    max_json_bytes: int = MAX_JSON_BYTES,
    shard_size: int = SHARD_SIZE,
) -> ImportReport:
    """VQA v2 questions (+ annotations, when the split has them) and COCO images -> `vqa` items.

    One item per question, keyed `vqa-<question_id>`, with fields question, answers (the 10 human
    answers; [] without annotations), answer (`multiple_choice_answer`; ""), type (yesno | count |
    other; "unknown"), question_id and image_id.

    Args:
        limit: read only the first `limit` questions (0: all).
    """
    _check_args(max_side, limit)
    questions_file, out_dir = Path(questions_file), Path(out_dir)
    images_dir = _check_dir(Path(images_dir), "VQA image folder")
    data = load_json(questions_file, max_json_bytes)
    if not isinstance(data, dict) or not isinstance(data.get("questions"), list):
        raise ValueError(f"{questions_file} is not a VQA questions file (needs a 'questions' list)")
    subtype = data.get("data_subtype")
    if subtype is not None and (not isinstance(subtype, str) or not _SAFE_NAME.match(subtype)):
        raise ValueError(f"{questions_file}: data_subtype {subtype!r} is not a plain name")
    report = ImportReport(source=f"vqa-v2:{questions_file}")
    annotations: dict[int, Any] | None = None
    if annotations_file is not None:
        annotations, ann_subtype = _index_vqa_annotations(Path(annotations_file), max_json_bytes, report)
        if subtype and ann_subtype and ann_subtype != subtype:
            raise ValueError(f"{questions_file} holds {subtype} questions but {annotations_file} {ann_subtype} answers")
    find_image = _coco_image_finder(images_dir, subtype)

    def candidates() -> Iterator[_Candidate]:
        seen: set[int] = set()
        for q in _rows(data["questions"], limit, f"import {split}"):
            report.num_records += 1
            error = _field_error(q, {"question_id": int, "image_id": int, "question": str})
            if error:
                report.reject(q, *error)
                continue
            qid, image_id, question = q["question_id"], q["image_id"], q["question"].strip()
            ident = {"question_id": qid, "image_id": image_id}
            if not question:
                report.reject(q, "empty_text", "empty question")
                continue
            if qid in seen:
                report.reject(ident, "duplicate_question", f"question_id {qid} already imported")
                continue
            if annotations is None:
                answer_fields: dict[str, Any] | tuple[str, str] = _vqa_answer_fields([])
            elif qid not in annotations:
                answer_fields = ("no_annotation", "the annotations file has no entry for this question")
            else:
                answer_fields = _vqa_annotation_fields(annotations[qid], image_id)
            if isinstance(answer_fields, tuple):
                report.reject(ident, *answer_fields)
                continue
            seen.add(qid)
            fields = {"question": question, **answer_fields, "question_id": qid, "image_id": image_id}
            yield _Candidate(make_key("vqa", qid), [find_image(image_id)], fields, ident)

    encoder = _ImageEncoder(images_dir, reader_cfg or ReaderConfig(), max_side)
    return _write(candidates(), out_dir, task="vqa", split=split, report=report, encoder=encoder,
                  shard_size=shard_size)  # fmt: skip


def _open_blip_list(ann_json, images_root, what: str, root_label: str, max_side: int, limit: int,
                    max_json_bytes: int):  # fmt: skip
    """BLIP's annotation json of a task (`what`: VQA or NLVR), a list of objects, with its image root
    checked: (json path, image root, the list, the import report)."""
    _check_args(max_side, limit)
    ann_json = Path(ann_json)
    images_root = _check_dir(Path(images_root), root_label)
    data = load_json(ann_json, max_json_bytes)
    if not isinstance(data, list):
        raise ValueError(f"{ann_json} is not a BLIP {what} json (needs a list of objects)")
    return ann_json, images_root, data, ImportReport(source=f"blip-{what.lower()}-json:{ann_json}")


def import_blip_vqa_json(
    ann_json: str | Path,
    images_root: str | Path,
    out_dir: str | Path,
    *,
    split: str = "vqa_train",
    reader_cfg: ReaderConfig | None = None,
    max_side: int = DEFAULT_MAX_SIDE,
    limit: int = 0,
    max_json_bytes: int = MAX_JSON_BYTES,
    shard_size: int = SHARD_SIZE,
) -> ImportReport:
    """BLIP's VQA json (`vqa_train.json`, `vqa_val.json`, `vqa_test.json`, `vg_qa.json`): a list of
    `{"question_id", "question", "answer": [str] (absent for test), "image": path under images_root,
    "dataset"}` -> `vqa` items with the fields of `import_vqa_v2`. BLIP's json has no answer type:
    it is guessed from the most common answer (yes/no -> yesno, digits -> count, else other), and
    image_id is the number at the end of the image's file name (its stem when there is none)."""
    ann_json, images_root, data, report = _open_blip_list(ann_json, images_root, "VQA", "VQA image root", max_side,
                                                          limit, max_json_bytes)  # fmt: skip
    out_dir = Path(out_dir)

    def candidates() -> Iterator[_Candidate]:
        seen: set[str] = set()
        for row in _rows(data, limit, f"import {split}"):
            report.num_records += 1
            error = _field_error(row, {"question_id": (int, str), "question": str, "image": str})
            if error:
                report.reject(row, *error)
                continue
            raw = row.get("answer", [])
            answers = [raw] if isinstance(raw, str) else raw
            if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
                report.reject(row, "bad_type", "'answer' must be a string or a list of strings")
                continue
            question = row["question"].strip()
            if not question:
                report.reject(row, "empty_text", "empty question")
                continue
            dataset = row.get("dataset", "vqa")
            key = make_key("vqa", row["question_id"] if dataset == "vqa" else f"{dataset}-{row['question_id']}")
            ident = {"question_id": row["question_id"], "image": row["image"]}
            if key in seen:
                report.reject(ident, "duplicate_question", f"{key} already imported")
                continue
            seen.add(key)
            digits = re.search(r"(\d+)$", Path(row["image"]).stem)
            fields = {"question": question, **_vqa_answer_fields([a.strip() for a in answers if a.strip()]),
                      "question_id": row["question_id"],
                      "image_id": int(digits.group(1)) if digits else Path(row["image"]).stem}  # fmt: skip
            yield _Candidate(key, [images_root / row["image"]], fields, ident)

    encoder = _ImageEncoder(images_root, reader_cfg or ReaderConfig(), max_side)
    return _write(candidates(), out_dir, task="vqa", split=split, report=report, encoder=encoder,
                  shard_size=shard_size)  # fmt: skip


# ------------------------------------------------------------------------------------------------
# NLVR2


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
    _check_args(max_side, limit)
    json_file, out_dir = Path(json_file), Path(out_dir)
    images_dir = _check_dir(Path(images_dir), "NLVR2 image folder")
    lines = _read_json_lines(json_file, max_json_bytes)
    index, ambiguous = _index_images(images_dir)
    report = ImportReport(source=f"nlvr2:{json_file}")

    def candidates() -> Iterator[_Candidate]:
        seen: set[str] = set()
        for line in _rows(lines, limit, f"import {split}"):
            report.num_records += 1
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                report.reject({"line": line}, "bad_json", str(e))
                continue
            error = _field_error(row, {"identifier": str, "sentence": str, "label": (str, bool, int)})
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
            yield _Candidate(make_key("nlvr", identifier), [index[n] for n in names], fields, ident)

    encoder = _ImageEncoder(images_dir, reader_cfg or ReaderConfig(), max_side)
    return _write(candidates(), out_dir, task="nlvr", split=split, report=report, encoder=encoder,
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
    ann_json, images_root, data, report = _open_blip_list(ann_json, images_root, "NLVR", "NLVR2 image root", max_side,
                                                          limit, max_json_bytes)  # fmt: skip
    out_dir = Path(out_dir)

    def candidates() -> Iterator[_Candidate]:
        per_pair: Counter[str] = Counter()
        for i, row in enumerate(_rows(data, limit, f"import {split}")):
            report.num_records += 1
            error = _field_error(row, {"images": list, "sentence": str, "label": (int, str, bool)})
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
            yield _Candidate(make_key("nlvr", identifier), [images_root / p for p in paths], fields, ident)

    encoder = _ImageEncoder(images_root, reader_cfg or ReaderConfig(), max_side)
    return _write(candidates(), out_dir, task="nlvr", split=split, report=report, encoder=encoder,
                  shard_size=shard_size)  # fmt: skip
