"""Importers of VQA into task-item shards (`vqa` items): the public VQA v2 layout and BLIP's VQA json.

Supported sources:
- VQA v2: `v2_OpenEnded_mscoco_<subtype>_questions.json` and, optionally (test-dev has none),
  `v2_mscoco_<subtype>_annotations.json`, with a COCO image folder
  (`COCO_val2014_000000000042.jpg`; `000000000042.jpg` and `42.jpg` are accepted too);
- BLIP's VQA json (`data/vqa_*.json`: `[{"question_id", "question", "answer": [...], "image"}]`).

The safety rules, the image encoding and the writing are those of `blip_core.data.importers.task_items`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from blip_core.config.data import ReaderConfig
from blip_core.data.importers.common import MAX_JSON_BYTES, ImportReport, load_json, make_key
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

VQA_ANSWER_TYPES = {"yes/no": "yesno", "number": "count", "other": "other"}
"""VQA v2's `answer_type` -> our question type."""
UNKNOWN_TYPE = "unknown"
"""The type of a question without answers (test-dev, BLIP's vqa_test.json)."""

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


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
    error = field_error(ann, {"multiple_choice_answer": str, "answers": list, "answer_type": str, "image_id": int})
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
    check_args(max_side, limit)
    questions_file, out_dir = Path(questions_file), Path(out_dir)
    images_dir = check_dir(Path(images_dir), "VQA image folder")
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

    def candidates() -> Iterator[Candidate]:
        seen: set[int] = set()
        for q in rows_to_read(data["questions"], limit, f"import {split}"):
            report.num_records += 1
            error = field_error(q, {"question_id": int, "image_id": int, "question": str})
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
            yield Candidate(make_key("vqa", qid), [find_image(image_id)], fields, ident)

    encoder = ImageEncoder(images_dir, reader_cfg or ReaderConfig(), max_side)
    return write_candidates(candidates(), out_dir, task="vqa", split=split, report=report, encoder=encoder,
                            shard_size=shard_size)  # fmt: skip


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
    ann_json, images_root, data, report = open_blip_list(ann_json, images_root, "VQA", "VQA image root", max_side,
                                                         limit, max_json_bytes)  # fmt: skip
    out_dir = Path(out_dir)

    def candidates() -> Iterator[Candidate]:
        seen: set[str] = set()
        for row in rows_to_read(data, limit, f"import {split}"):
            report.num_records += 1
            error = field_error(row, {"question_id": (int, str), "question": str, "image": str})
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
            yield Candidate(key, [images_root / row["image"]], fields, ident)

    encoder = ImageEncoder(images_root, reader_cfg or ReaderConfig(), max_side)
    return write_candidates(candidates(), out_dir, task="vqa", split=split, report=report, encoder=encoder,
                            shard_size=shard_size)  # fmt: skip
