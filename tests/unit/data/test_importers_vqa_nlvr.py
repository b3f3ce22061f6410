"""Task importers on fixtures built here: VQA v2 (questions + annotations), BLIP's VQA json, NLVR2
json-lines (with train's numbered sub-folders) and BLIP's NLVR json."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from blip_core.data.importers import nlvr, vqa
from blip_core.data.importers.common import REJECTED_FILE
from blip_core.data.task_data import read_task_items, task_of


def _image(path, size=(40, 30), color=(90, 20, 200), fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format=fmt)
    return path


def _write_json(path, obj):
    path.write_text(json.dumps(obj))
    return path


def _rejected(folder):
    return [json.loads(line) for line in (folder / REJECTED_FILE).read_text().splitlines()]


def _stats(folder):
    return json.loads((folder / "_stats.json").read_text())


def _items(folder):
    return {it.key: it for it in read_task_items(folder)}


# ------------------------------------------------------------------------------------------------
# VQA v2


def _questions(rows, subtype="val2014"):
    return {"info": {}, "task_type": "Open-Ended", "data_type": "mscoco", "data_subtype": subtype, "questions": rows}


def _annotation(qid, image_id, answer, answer_type="other", answers=None):
    answers = answers if answers is not None else [answer] * 8 + ["other", "thing"]
    return {
        "question_id": qid, "image_id": image_id, "question_type": "what", "answer_type": answer_type,
        "multiple_choice_answer": answer,
        "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(answers)],
    }  # fmt: skip


def _vqa_fixture(tmp_path):
    img = tmp_path / "val2014"
    _image(img / "COCO_val2014_000000000042.jpg", size=(100, 60))
    _image(img / "000000000007.jpg")  # the fallback names
    _image(img / "9.png", fmt="PNG").rename(img / "9.jpg")  # a PNG under a .jpg name still decodes
    questions = [
        {"image_id": 42, "question": "Is it red? ", "question_id": 420},
        {"image_id": 42, "question": "How many dogs?", "question_id": 421},
        {"image_id": 7, "question": "What is it?", "question_id": 70},
        {"image_id": 9, "question": "What color?", "question_id": 90},
    ]
    annotations = [
        _annotation(420, 42, "yes", "yes/no"), _annotation(421, 42, "2", "number"),
        _annotation(70, 7, "a cat"), _annotation(90, 9, "blue"),
    ]  # fmt: skip
    q = _write_json(tmp_path / "questions.json", _questions(questions))
    a = _write_json(tmp_path / "annotations.json", {"info": {}, "data_subtype": "val2014", "annotations": annotations})
    return q, a, img


def test_import_vqa_v2_round_trip(tmp_path):
    q, a, img = _vqa_fixture(tmp_path)
    out = tmp_path / "out"
    report = vqa.import_vqa_v2(q, img, out, annotations_file=a, split="vqa_val", max_side=32)
    assert report.num_records == report.num_written == 4 and report.num_rejected == 0
    items = _items(out)
    assert set(items) == {"vqa-420", "vqa-421", "vqa-70", "vqa-90"}
    yes = items["vqa-420"]
    assert yes.fields == {
        "question": "Is it red?", "answers": ["yes"] * 8 + ["other", "thing"], "answer": "yes", "type": "yesno",
        "question_id": 420, "image_id": 42,
    }  # fmt: skip
    assert all(len(it.fields["answers"]) == 10 for it in items.values())
    assert [items[k].fields["type"] for k in ("vqa-421", "vqa-70")] == ["count", "other"]
    assert len(yes.images) == 1 and yes.images[0].mode == "RGB"
    assert yes.images[0].size == (32, 19)  # longer side downscaled to max_side, aspect kept
    assert items["vqa-70"].images[0].size == (32, 24)
    assert task_of(out) == "vqa"
    stats = _stats(out)
    assert stats["items"] == 4 and stats["split"] == "vqa_val"
    assert stats["import"]["num_written"] == 4 and stats["import"]["num_rejected"] == 0
    assert _rejected(out) == []


def test_import_vqa_v2_without_annotations(tmp_path):
    # test-dev: questions about test2015's images, no annotations; images in <root>/test2015/
    rows = [{"image_id": 5, "question": "Where?", "question_id": 50}]
    _image(tmp_path / "coco" / "test2015" / "COCO_test2015_000000000005.jpg")
    q = _write_json(tmp_path / "testdev.json", _questions(rows, subtype="test-dev2015"))
    out = tmp_path / "out"
    report = vqa.import_vqa_v2(q, tmp_path / "coco", out, split="vqa_test")
    (item,) = read_task_items(out)
    assert report.num_written == 1
    assert item.fields["answers"] == [] and item.fields["answer"] == "" and item.fields["type"] == vqa.UNKNOWN_TYPE
    assert item.images[0].size == (40, 30)  # smaller than max_side: kept


def test_import_vqa_v2_bad_records(tmp_path):
    q, a, img = _vqa_fixture(tmp_path)
    (img / "COCO_val2014_000000000013.jpg").write_bytes(b"not an image")
    _image(img / "COCO_val2014_000000000014.jpg", size=(4, 4))  # under ReaderConfig.min_image_side
    rows = json.loads(q.read_text())["questions"] + [
        {"image_id": 404, "question": "Missing image?", "question_id": 1},
        {"image_id": 13, "question": "Corrupt?", "question_id": 2},
        {"image_id": 42, "question_id": 3},  # no question
        {"image_id": 42, "question": "Wrong id type?", "question_id": "4"},
        {"image_id": 42, "question": "Bool id?", "question_id": True},
        {"image_id": 42, "question": "   ", "question_id": 5},
        {"image_id": 42, "question": "No annotation?", "question_id": 6},
        {"image_id": 42, "question": "Odd type?", "question_id": 7},
        {"image_id": 42, "question": "Bad answers?", "question_id": 8},
        {"image_id": 42, "question": "Wrong image?", "question_id": 9},
        {"image_id": 42, "question": "Again", "question_id": 420},  # duplicate question id
        {"image_id": 14, "question": "Tiny?", "question_id": 10},
        "not an object",
    ]
    anns = json.loads(a.read_text())["annotations"] + [
        _annotation(1, 404, "x"), _annotation(2, 13, "x"), _annotation(10, 14, "x"),
        _annotation(7, 42, "x", "colour"), _annotation(8, 42, "x", answers=[]), _annotation(9, 7, "x"),
        {"image_id": 42}, _annotation(70, 7, "again"),  # no question_id; a second annotation of 70
    ]  # fmt: skip
    _write_json(q, _questions(rows))
    _write_json(a, {"annotations": anns})
    out = tmp_path / "out"
    report = vqa.import_vqa_v2(q, img, out, annotations_file=a)
    expected = {
        "annotation_mismatch": 1, "bad_annotation": 1, "bad_type": 3, "corrupt_image": 1, "duplicate_question": 1,
        "empty_text": 1, "image_too_small": 1, "missing_field": 1, "missing_image": 1, "no_annotation": 1,
        "unknown_answer_type": 1,
    }  # fmt: skip
    assert report.rejected_by_reason() == expected
    assert report.rejected_by_reason("annotation") == {"bad_annotation_entry": 1, "duplicate_annotation": 1}
    assert report.num_written == 4 and report.num_records == report.num_written + report.num_rejected == 17
    assert set(_items(out)) == {"vqa-420", "vqa-421", "vqa-70", "vqa-90"}
    assert _items(out)["vqa-70"].fields["answer"] == "a cat"  # the first annotation is kept
    rejected = _rejected(out)
    assert len(rejected) == 15
    by_reason = {r["reason"]: r for r in rejected}
    assert by_reason["missing_image"]["record"] == {"question_id": 1, "image_id": 404}
    assert by_reason["no_annotation"]["record"]["question_id"] == 6
    assert "colour" in by_reason["unknown_answer_type"]["detail"]
    stats = _stats(out)["import"]
    assert stats["rejected_by_reason"] == expected and stats["num_records"] == 17


def test_import_vqa_v2_folder_errors(tmp_path):
    q, a, img = _vqa_fixture(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(FileNotFoundError, match="annotation file not found"):
        vqa.import_vqa_v2(tmp_path / "nope.json", img, out)
    with pytest.raises(ValueError, match="needs a 'questions' list"):
        vqa.import_vqa_v2(_write_json(tmp_path / "bad.json", {"annotations": []}), img, out)
    with pytest.raises(ValueError, match="needs an 'annotations' list"):
        vqa.import_vqa_v2(q, img, out, annotations_file=q)
    with pytest.raises(ValueError, match="train2014 answers"):
        vqa.import_vqa_v2(q, img, out, annotations_file=_write_json(
            tmp_path / "train_ann.json", {"data_subtype": "train2014", "annotations": []}))  # fmt: skip
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        vqa.import_vqa_v2(q, tmp_path / "no_images", out)
    with pytest.raises(ValueError, match="limit"):
        vqa.import_vqa_v2(tmp_path / "bad.json", img, out, max_json_bytes=4)
    with pytest.raises(ValueError, match="data_subtype"):
        vqa.import_vqa_v2(_write_json(tmp_path / "up.json", _questions([], subtype="../x")), img, out)
    with pytest.raises(ValueError, match="max_side"):
        vqa.import_vqa_v2(q, img, out, max_side=-1)
    assert not out.exists()  # nothing written by a refused import


def test_import_vqa_v2_limit(tmp_path):
    q, a, img = _vqa_fixture(tmp_path)
    report = vqa.import_vqa_v2(q, img, tmp_path / "out", annotations_file=a, limit=2)
    assert report.num_records == report.num_written == 2
    assert set(_items(tmp_path / "out")) == {"vqa-420", "vqa-421"}


def test_import_blip_vqa_json(tmp_path):
    _image(tmp_path / "val2014" / "COCO_val2014_000000000042.jpg")
    rows = [
        {"question_id": 1, "question": "Is it red?", "answer": ["yes", "no", "yes"], "dataset": "vqa",
         "image": "val2014/COCO_val2014_000000000042.jpg"},
        {"question_id": 2, "question": "How many?", "answer": ["3", "2", "3"], "dataset": "vqa",
         "image": "val2014/COCO_val2014_000000000042.jpg"},
        {"question_id": 3, "question": "What?", "dataset": "vqa", "image": "val2014/COCO_val2014_000000000042.jpg"},
        {"question_id": 4, "question": "Escape?", "answer": ["x"], "image": "../outside.jpg"},
        {"question_id": 5, "question": "Bad answer?", "answer": [1], "image": "val2014/COCO_val2014_000000000042.jpg"},
    ]  # fmt: skip
    _image(tmp_path.parent / "outside.jpg")
    out = tmp_path / "out"
    report = vqa.import_blip_vqa_json(_write_json(tmp_path / "vqa_val.json", rows), tmp_path, out)
    items = _items(out)
    assert items["vqa-1"].fields == {"question": "Is it red?", "answers": ["yes", "no", "yes"], "answer": "yes",
                                     "type": "yesno", "question_id": 1, "image_id": 42}  # fmt: skip
    assert (items["vqa-2"].fields["answer"], items["vqa-2"].fields["type"]) == ("3", "count")
    assert (items["vqa-3"].fields["answers"], items["vqa-3"].fields["type"]) == ([], vqa.UNKNOWN_TYPE)
    assert report.rejected_by_reason() == {"bad_type": 1, "image_outside_root": 1}
    with pytest.raises(ValueError, match="list of objects"):
        vqa.import_blip_vqa_json(_write_json(tmp_path / "d.json", {"questions": []}), tmp_path, out)


# ------------------------------------------------------------------------------------------------
# NLVR2


def _nlvr_row(identifier, sentence="There are two dogs.", label="True"):
    return {
        "identifier": identifier, "sentence": sentence, "label": label, "left_url": "http://a/l.jpg",
        "right_url": "http://a/r.jpg", "synset": "n02084071", "query": "dogs", "writer": "w1",
        "extra_validations": {}, "validation": {"w2": "True"},
    }  # fmt: skip


def _json_lines(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _nlvr_pair(root, base, sizes=((50, 40), (40, 50))):
    _image(root / f"{base}-img0.png", size=sizes[0], color=(200, 0, 0), fmt="PNG")
    _image(root / f"{base}-img1.png", size=sizes[1], color=(0, 200, 0), fmt="PNG")


def test_import_nlvr2_train_subfolders(tmp_path):
    root = tmp_path / "images"
    _nlvr_pair(root / "train" / "0", "train-10171-0")
    _nlvr_pair(root / "train" / "57", "train-3-1")
    f = _json_lines(tmp_path / "train.json", [
        _nlvr_row("train-10171-0-0", label="True"), _nlvr_row("train-10171-0-1", "No dog.", label="False"),
        _nlvr_row("train-3-1-0", "One red image.", label="False"),
    ])  # fmt: skip
    out = tmp_path / "out"
    report = nlvr.import_nlvr2(f, root, out, split="nlvr_train", max_side=32)
    assert report.num_records == report.num_written == 3 and not report.rejected
    items = _items(out)
    assert set(items) == {"nlvr-train-10171-0-0", "nlvr-train-10171-0-1", "nlvr-train-3-1-0"}
    first = items["nlvr-train-10171-0-0"]
    assert first.fields == {
        "statement": "There are two dogs.", "label": True, "type": "nlvr2", "identifier": "train-10171-0-0",
        "image_ids": ["train-10171-0-img0.png", "train-10171-0-img1.png"],
    }  # fmt: skip
    assert items["nlvr-train-10171-0-1"].fields["label"] is False
    assert [im.size for im in first.images] == [(32, 26), (26, 32)]  # left then right, each downscaled
    assert first.images[0].getpixel((10, 10))[0] > 150 and first.images[1].getpixel((10, 10))[1] > 150
    assert task_of(out) == "nlvr" and _stats(out)["import"]["num_written"] == 3


def test_import_nlvr2_bad_records(tmp_path):
    root = tmp_path / "dev"
    for base in ("dev-1-0", "dev-2-0", "dev-3-0", "dev-4-0"):
        _nlvr_pair(root, base)
    (root / "dev-3-0-img1.png").write_bytes(b"\x89PNG broken")
    _nlvr_pair(root / "copy", "dev-4-0")  # the same names twice: which one is meant is unknown
    rows = [
        _nlvr_row("dev-1-0-0", label="False"),
        _nlvr_row("dev-1-0-1", label="maybe"),  # unknown label
        _nlvr_row("dev-1-0-2", label=None),  # missing field
        _nlvr_row("dev-1-0-3", sentence=["a"]),  # wrong type
        _nlvr_row("dev-1-0-0"),  # duplicate identifier
        _nlvr_row("dev-1-0"),  # no sentence index
        _nlvr_row("dev-9-0-0"),  # no images
        _nlvr_row("dev-3-0-0"),  # right image undecodable
        _nlvr_row("dev-4-0-0"),  # ambiguous
        _nlvr_row("dev-2-0-0", sentence=" "),
        "{not json",
    ]
    out = tmp_path / "out"
    report = nlvr.import_nlvr2(_json_lines(tmp_path / "dev.json", rows), root, out)
    expected = {
        "ambiguous_image": 1, "bad_identifier": 1, "bad_json": 1, "bad_type": 1, "corrupt_image": 1,
        "duplicate_identifier": 1, "empty_text": 1, "missing_field": 1, "missing_image": 1, "unknown_label": 1,
    }  # fmt: skip
    assert report.rejected_by_reason() == expected
    assert report.num_written == 1 and report.num_records == 11
    (item,) = read_task_items(out)
    assert item.key == "nlvr-dev-1-0-0" and item.fields["label"] is False
    by_reason = {r["reason"]: r for r in _rejected(out)}
    assert by_reason["missing_image"]["record"]["identifier"] == "dev-9-0-0"
    assert "maybe" in by_reason["unknown_label"]["detail"]
    assert _stats(out)["import"]["rejected_by_reason"] == expected


def test_import_nlvr2_folder_errors(tmp_path):
    root = tmp_path / "dev"
    _nlvr_pair(root, "dev-1-0")
    out = tmp_path / "out"
    with pytest.raises(FileNotFoundError, match="annotation file not found"):
        nlvr.import_nlvr2(tmp_path / "dev.json", root, out)
    blip = _write_json(tmp_path / "nlvr_dev.json", [{"images": [], "sentence": "s", "label": 1}])
    with pytest.raises(ValueError, match="import_blip_nlvr_json"):
        nlvr.import_nlvr2(blip, root, out)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        nlvr.import_nlvr2(_json_lines(tmp_path / "dev.json", [_nlvr_row("dev-1-0-0")]), tmp_path / "empty", out)
    with pytest.raises(NotADirectoryError):
        nlvr.import_nlvr2(tmp_path / "dev.json", tmp_path / "dev.json", out)


def test_import_blip_nlvr_json(tmp_path):
    _nlvr_pair(tmp_path / "dev", "dev-850-0")
    _nlvr_pair(tmp_path / "dev", "dev-851-1")
    rows = [
        {"images": ["dev/dev-850-0-img0.png", "dev/dev-850-0-img1.png"], "sentence": "Two dogs.", "label": 1},
        {"images": ["dev/dev-850-0-img0.png", "dev/dev-850-0-img1.png"], "sentence": "One cat.", "label": 0},
        {"images": ["dev/dev-851-1-img0.png", "dev/dev-851-1-img1.png"], "sentence": "Red.", "label": 2},
        {"images": ["dev/dev-851-1-img0.png"], "sentence": "One image only.", "label": 1},
        {"images": ["dev/dev-851-1-img0.png", "dev/gone-img1.png"], "sentence": "Gone.", "label": 1},
    ]
    out = tmp_path / "out"
    report = nlvr.import_blip_nlvr_json(_write_json(tmp_path / "nlvr_dev.json", rows), tmp_path, out)
    items = _items(out)
    assert set(items) == {"nlvr-dev-850-0-0", "nlvr-dev-850-0-1"}
    assert items["nlvr-dev-850-0-0"].fields["label"] is True and items["nlvr-dev-850-0-1"].fields["label"] is False
    assert items["nlvr-dev-850-0-0"].fields["image_ids"] == ["dev-850-0-img0.png", "dev-850-0-img1.png"]
    assert report.rejected_by_reason() == {"bad_type": 1, "missing_image": 1, "unknown_label": 1}


def test_parse_label():
    labels = ("True", "False", "true", 1, 0, True)
    assert [nlvr._parse_label(v) for v in labels] == [True, False, True, True, False, True]
    assert [nlvr._parse_label(v) for v in ("yes", 2, None, 1.0)] == [None, None, None, None]
