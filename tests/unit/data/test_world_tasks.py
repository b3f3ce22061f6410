"""The world's downstream-task items (VQA, NLVR2, video): true of their scenes per the independent
checkers, balanced, deterministic, and written by `generate_world` beside unchanged image splits."""

from __future__ import annotations

import filecmp
import json
import random
from collections import Counter

import pytest
from helpers import tiny_world_config

from blip_core.config.data import WorldConfig
from blip_core.data.task_data import iter_task_items, read_task_items, task_of
from blip_core.data.world import lexicon as lx
from blip_core.data.world.generate import generate_world
from blip_core.data.world.grounding import Scene, SceneObject
from blip_core.data.world.items import TASK_SPLITS
from blip_core.data.world.nlvr import NLVR_TYPES, nlvr_truth
from blip_core.data.world.render import held_out_combos, sample_scene, seen_combos
from blip_core.data.world.samples import make_sample
from blip_core.data.world.tasks import task_items
from blip_core.data.world.video import VIDEO_EVENTS, video_caption_true
from blip_core.data.world.vqa import VQA_TYPES, vqa_answer, vqa_questions

TASKS_OFF = {"vqa_per_image": 0, "num_nlvr_train": 0, "num_nlvr_test": 0, "num_nlvr_novel": 0,
             "num_video_test": 0, "num_video_novel": 0}  # fmt: skip


def _cfg(**overrides) -> WorldConfig:
    sizes = {"num_nlvr_train": 300, "num_nlvr_test": 60, "num_nlvr_novel": 60, "num_video_test": 60,
             "num_video_novel": 60}  # fmt: skip
    return tiny_world_config(**(sizes | overrides))


@pytest.fixture(scope="module")
def items() -> dict[str, list]:
    cfg = _cfg()
    return {split: list(task_items(cfg, split)) for split in TASK_SPLITS}


def _scene(*objects: tuple[str, str, str, int, int], background: str = "plain") -> Scene:
    return Scene([SceneObject(shape, color, size, row, col) for color, shape, size, row, col in objects], background)


# ------------------------------------------------------------------------------------------------
# every generated item is true of its scene(s)


def test_vqa_items_have_their_exact_answer(items):
    cfg = _cfg()
    for split in ("vqa_train", "vqa_test", "vqa_novel"):
        got = items[split]
        assert len(got) == cfg.task_split_sizes()[split]
        for it in got:
            f = it.fields
            assert f["type"] in VQA_TYPES and f["answers"] == [f["answer"]]
            assert vqa_answer(f["question"], Scene.from_dict(f["scene"])) == f["answer"], (f["question"], f)
            assert f["image_id"].startswith(TASK_SPLITS[split][1] + "-") and it.key.startswith(f"{split}-")
        assert len({it.key for it in got}) == len(got)
    # the image of an item is the image split's image, byte for byte
    it = items["vqa_train"][-1]
    assert it.images == [make_sample(cfg, "coco_train", int(it.fields["image_id"].split("-")[1]))["jpeg"]]


def test_nlvr_items_have_their_label(items):
    for split in ("nlvr_train", "nlvr_test", "nlvr_novel"):
        for it in items[split]:
            f = it.fields
            left, right = (Scene.from_dict(d) for d in f["scenes"])
            assert f["type"] in NLVR_TYPES and len(it.images) == 2 and f["image_ids"][0] != f["image_ids"][1]
            assert nlvr_truth(f["statement"], left, right) is f["label"], f
            assert all(i.startswith(TASK_SPLITS[split][1] + "-") for i in f["image_ids"])


def test_video_captions_are_true_and_false_backwards(items):
    cfg = _cfg()
    for split in ("video_test", "video_novel"):
        for it in items[split]:
            f = it.fields
            scenes = [Scene.from_dict(d) for d in f["scenes"]]
            assert f["event"] in VIDEO_EVENTS and len(it.images) == len(scenes) == cfg.video_frames
            assert 2 <= len(f["captions"]) <= 3 and len(set(f["captions"])) == len(f["captions"])
            assert scenes[0].to_dict() != scenes[-1].to_dict()
            for caption in f["captions"]:
                assert video_caption_true(caption, scenes) is True, (caption, f)
                assert video_caption_true(caption, scenes[::-1]) is False, (caption, f)
            # one event: the background and every other object stay put
            assert len({(s.background, s.tone) for s in scenes}) == 1
            # frames of the same state are the same image (one render seed per clip)
            for k in range(1, len(scenes)):
                if scenes[k] == scenes[k - 1]:
                    assert it.images[k] == it.images[k - 1]
    # the captions also mention the other objects
    assert sum(any("while" in c or "leaving" in c or "ends up" in c for c in it.fields["captions"])
               for it in items["video_test"]) > len(items["video_test"]) / 3  # fmt: skip


# ------------------------------------------------------------------------------------------------
# the checkers on hand-built scenes: wrong answers and flipped statements are told apart


def test_vqa_answer_on_a_hand_built_scene():
    scene = _scene(("red", "circle", "small", 0, 0), ("blue", "square", "large", 0, 1),
                   ("blue", "circle", "small", 2, 2), background="striped")  # fmt: skip
    assert vqa_answer("what color is the square?", scene) == "blue"
    assert vqa_answer("What colour is the block?", scene) == "blue"
    assert vqa_answer("what color is the circle?", scene) is None  # two circles: ambiguous
    assert vqa_answer("what color is the large circle?", scene) is None  # absent
    assert vqa_answer("what shape is the red object?", scene) == "circle"
    assert vqa_answer("what shape is the blue thing?", scene) is None
    assert vqa_answer("what shape is the large blue shape?", scene) == "square"
    assert vqa_answer("what size is the blue square?", scene) == "large"
    assert vqa_answer("how many circles are there?", scene) == "two"
    assert vqa_answer("how many blue things are there?", scene) == "two"
    assert vqa_answer("how many objects are there?", scene) == "three"
    assert vqa_answer("how many stars are there?", scene) == "zero"
    assert vqa_answer("is there a scarlet disk?", scene) == "yes"
    assert vqa_answer("is there a red square?", scene) == "no"
    assert vqa_answer("what is to the left of the blue square?", scene) == "red circle"
    assert vqa_answer("what is beneath the blue block?", scene) == "blue circle"
    assert vqa_answer("what is right of the red circle?", scene) is None  # the diagonal one is too
    assert vqa_answer("what is next to the blue circle?", scene) is None  # nothing is
    assert vqa_answer("what is above the blue circle?", scene) is None  # both others are: ambiguous
    assert vqa_answer("what kind of background is it?", scene) == "striped"
    for bad in ("what is the meaning of life?", "what color is the giraffe?", "how many are there?"):
        with pytest.raises(ValueError):
            vqa_answer(bad, scene)


def test_nlvr_truth_on_hand_built_pairs_and_flipped_statements():
    left = _scene(("red", "circle", "small", 0, 0), ("blue", "square", "large", 0, 1))
    right = _scene(("red", "circle", "small", 1, 1), ("red", "circle", "large", 2, 2), ("green", "star", "small", 0, 2))
    cases = {
        "the right image has more red circles than the left image": True,
        "the left image contains more red circles than the right image": False,
        "the left image has more objects than the right image": False,
        "both images contain a red circle": True,
        "each image has a blue square": False,
        "each image contains at least one circle": True,
        "the left image contains a blue square but the right image does not": True,
        "the right image contains a blue square but the left image does not": False,
        "only the right image has a star": True,
        "only the left image has a circle": False,
        "there are exactly two red circles in the right image": True,
        "there is exactly one red circle in the right image": False,
        "the left image has exactly two objects": True,
        "the right image has exactly two objects": False,
        "neither image contains a green circle": True,
        "no image has a green star": False,
        "there are three red circles in total": True,
        "the two images contain two red circles in total": False,
        "in the left image, a red circle is left of a blue square": True,
        "in the left image, a red circle is to the right of a blue square": False,
        "the right image shows a red circle below a green star": True,
        "the left image shows a red circle next to a green star": False,
    }
    for statement, truth in cases.items():
        assert nlvr_truth(statement, left, right) is truth, statement
    # swapping the images flips a one-sided statement
    assert nlvr_truth("only the right image has a star", right, left) is False
    for bad in ("the left image is nicer", "the left image has more circles than the left image"):
        with pytest.raises(ValueError):
            nlvr_truth(bad, left, right)


def test_video_caption_true_on_hand_built_clips():
    a = _scene(("red", "circle", "small", 1, 0), ("blue", "square", "large", 0, 2))
    b = _scene(("red", "circle", "small", 1, 2), ("blue", "square", "large", 0, 2))
    move = [a, a, b, b]
    assert video_caption_true("a red circle moves to the right", move) is True
    assert video_caption_true("a red circle moves to the right", move[::-1]) is False
    assert video_caption_true("the red circle moves from the left to the right", move) is True
    assert video_caption_true("the red circle moves up", move) is False
    assert video_caption_true("the red circle moves to the right and ends up below a blue square", move) is True
    assert video_caption_true("the red circle moves to the right and ends up above a blue square", move) is False
    assert video_caption_true("a red circle moves to the right, while a blue square stays still", move) is True
    assert video_caption_true("a red circle moves to the right, while a green star stays still", move) is False
    assert video_caption_true("a blue square moves to the right", move) is False
    empty = _scene(("blue", "square", "large", 0, 2))
    assert video_caption_true("a red circle appears", [empty, a]) is True
    assert video_caption_true("a red circle appears", [a, empty]) is False
    assert video_caption_true("a red circle appears below a blue square", [empty, b]) is True
    assert video_caption_true("a red circle appears left of a blue square", [empty, b]) is False
    assert video_caption_true("a red circle disappears, leaving a blue square", [a, empty]) is True
    assert video_caption_true("a red circle disappears", [empty, a]) is False
    green = _scene(("green", "circle", "small", 1, 0), ("blue", "square", "large", 0, 2))
    assert video_caption_true("the red circle turns green", [a, green]) is True
    assert video_caption_true("the red circle changes color to green", [green, a]) is False
    assert video_caption_true("the red circle turns blue", [a, green]) is False
    two = _scene(("red", "circle", "small", 1, 0), ("red", "circle", "large", 2, 2))
    assert video_caption_true("the red circle moves up", [two, two]) is None  # which one?
    for bad in ("a red circle dances", "the circle turns green", "a red circle moves from the left to the top"):
        with pytest.raises(ValueError):
            video_caption_true(bad, move)


# ------------------------------------------------------------------------------------------------
# balance, splits, held-out combinations


def test_nlvr_labels_and_vqa_yes_no_are_balanced(items):
    labels = Counter(it.fields["label"] for it in items["nlvr_train"])
    assert abs(labels[True] / sum(labels.values()) - 0.5) < 0.09, labels  # 300 draws: ~3 sd
    assert set(Counter(it.fields["type"] for it in items["nlvr_train"])) == set(NLVR_TYPES)
    cfg = WorldConfig()
    types, yes_no = Counter(), Counter()
    for i in range(400):
        for q in vqa_questions(sample_scene(cfg, "coco_train", i), random.Random(i), 3, seen_combos(cfg)):
            types[q["type"]] += 1
            if q["type"] == "yesno":
                yes_no[q["answer"]] += 1
    assert abs(yes_no["yes"] / sum(yes_no.values()) - 0.5) < 0.1, yes_no
    assert set(types) == set(VQA_TYPES) and min(types.values()) > 0.04 * sum(types.values()), types
    events = Counter(it.fields["event"] for s in ("video_test", "video_novel") for it in items[s])
    assert set(events) == set(VIDEO_EVENTS) and min(events.values()) > 0.12 * sum(events.values()), events


def test_train_splits_use_coco_train_images_and_clean_text(items):
    cfg = _cfg()
    held = set(held_out_combos(cfg))
    assert {it.fields["image_id"].split("-")[0] for it in items["vqa_train"]} == {"coco_train"}
    assert {i.split("-")[0] for it in items["nlvr_train"] for i in it.fields["image_ids"]} == {"coco_train"}
    held_phrases = {f"{c2} {s2}" for c, s in held for c2 in lx.COLOR_SYNONYMS[c] for s2 in lx.SHAPE_SYNONYMS[s]}
    texts = {"vqa_train": "question", "vqa_test": "question", "nlvr_train": "statement", "video_test": "captions"}
    for split, field in texts.items():
        for it in items[split]:
            for t in [it.fields[field]] if field != "captions" else it.fields[field]:
                assert not any(p in t for p in held_phrases), (split, t)  # clean splits never name one
    for it in items["video_test"]:
        assert not {(o["color"], o["shape"]) for s in it.fields["scenes"] for o in s["objects"]} & held
    for it in items["video_novel"]:
        assert {(o["color"], o["shape"]) for s in it.fields["scenes"] for o in s["objects"]} & held, it.key


def test_items_are_deterministic(items):
    cfg = _cfg()
    for split in ("vqa_test", "nlvr_test", "video_novel"):
        again = list(task_items(cfg, split))
        assert [(i.key, i.images, i.fields) for i in again] == [(i.key, i.images, i.fields) for i in items[split]]
    other = list(task_items(_cfg(seed=8), "nlvr_test"))
    assert [i.fields for i in other] != [i.fields for i in items["nlvr_test"]]


# ------------------------------------------------------------------------------------------------
# generate_world


def test_generate_world_writes_task_splits_and_keeps_image_splits(tmp_path):
    small = {"num_web": 30, "num_objects": 10, "num_nlvr_train": 20, "num_nlvr_test": 10, "num_nlvr_novel": 10,
             "num_video_test": 5, "num_video_novel": 5, "vqa_per_image": 2}  # fmt: skip
    cfg = _cfg(**small)
    summary = generate_world(cfg, tmp_path / "a", progress=False)
    base = generate_world(_cfg(**(small | TASKS_OFF)), tmp_path / "b", progress=False)
    assert summary["splits"] == base["splits"] and base["task_splits"] == {}
    for split in cfg.split_sizes():  # the image-caption splits are byte-identical with tasks on or off
        files = sorted(p.name for p in (tmp_path / "a" / split).iterdir())
        assert files == sorted(p.name for p in (tmp_path / "b" / split).iterdir())
        for name in files:
            assert filecmp.cmp(tmp_path / "a" / split / name, tmp_path / "b" / split / name, shallow=False), name
    assert not any((tmp_path / "b" / split).exists() for split in TASK_SPLITS)
    world = json.loads((tmp_path / "a" / "world.json").read_text())
    for split, (task, _) in TASK_SPLITS.items():
        folder = tmp_path / "a" / split
        assert task_of(folder) == task
        got = read_task_items(folder)
        assert len(got) == cfg.task_split_sizes()[split] == world["task_splits"][split]["items"]
        assert world["task_splits"][split]["task"] == task
        assert [i.key for i in got] == [i.key for i in task_items(cfg, split)]
    raw = next(iter(iter_task_items(tmp_path / "a" / "vqa_test", decode=False)))
    assert raw.images[0] == make_sample(cfg, "test", int(raw.fields["image_id"].split("-")[1]))["jpeg"]
    # regenerating with a task switched off removes its stale folder
    generate_world(_cfg(**(small | {"num_video_novel": 0})), tmp_path / "a", progress=False)
    assert not (tmp_path / "a" / "video_novel").exists() and task_of(tmp_path / "a" / "video_test") == "video"


@pytest.mark.parametrize("bad", [{"vqa_per_image": -1}, {"vqa_per_image": 11}, {"num_nlvr_train": -1},
                                 {"num_video_novel": -2}, {"video_frames": 1}, {"video_frames": 17}])  # fmt: skip
def test_bad_task_knobs_are_rejected(bad):
    with pytest.raises(ValueError, match="world\\."):
        WorldConfig(**bad)


def test_scaled_world_scales_task_sizes_and_keeps_switched_off_tasks_off():
    cfg = WorldConfig(num_video_novel=0).scaled(0.1)
    assert cfg.num_nlvr_train == 200 and cfg.num_video_test == 20 and cfg.num_video_novel == 0
    assert cfg.task_split_sizes()["vqa_train"] == cfg.vqa_per_image * cfg.num_coco_train
