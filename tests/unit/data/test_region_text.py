"""Count statements written from region labels: true of the scene, as the strict checker reads them."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from blip_core.data.region_text import count_statement
from blip_core.data.world.grounding import ground_caption, parse_caption
from blip_core.data.world.scene import Scene, SceneObject

CELLS = [(r, c) for r in range(3) for c in range(3)]


def _scene(objs: list[tuple[str, str]]) -> tuple[list[dict], Scene]:
    regions = [{"color": c, "shape": s, "size": "large", "box": [0, 0, 1, 1]} for c, s in objs]
    scene = Scene([SceneObject(s, c, "large", *CELLS[i]) for i, (c, s) in enumerate(objs)], "plain")
    return regions, scene


SCENES = [
    [("red", "circle"), ("red", "circle"), ("blue", "square")],
    [("black", "triangle")],
    [("green", "star")] * 3 + [("pink", "ring")],
    [("white", "hexagon"), ("white", "cross"), ("yellow", "hexagon"), ("yellow", "hexagon")],
]


@pytest.mark.parametrize("objs", SCENES)
@pytest.mark.parametrize("seed", range(4))
def test_a_scene_statement_counts_every_group_once_and_is_true(objs, seed):
    regions, scene = _scene(objs)
    text = count_statement(regions, "scene", random.Random(seed))
    assert ground_caption(text, scene).is_true, text
    phrases = parse_caption(text).phrases
    assert Counter((p.color, p.shape) for p in phrases) == Counter(set(objs))  # each group once
    assert all(p.count == Counter(objs)[(p.color, p.shape)] for p in phrases), text


@pytest.mark.parametrize("objs", SCENES)
def test_a_group_statement_names_one_group_with_its_count(objs):
    regions, scene = _scene(objs)
    seen = Counter()
    for seed in range(200):
        text = count_statement(regions, "group", random.Random(seed))
        (phrase,) = parse_caption(text).phrases
        assert ground_caption(text, scene).is_true and phrase.count == Counter(objs)[(phrase.color, phrase.shape)]
        seen[(phrase.color, phrase.shape)] += 1
    for group, n in Counter(objs).items():  # picked through a random object: in proportion to its size
        assert abs(seen[group] / 200 - n / len(objs)) < 0.12, (group, seen)


def test_nothing_to_count_is_none_and_a_wrong_kind_is_refused():
    assert count_statement([], "scene", random.Random(0)) is None
    regions, _ = _scene([("red", "circle")] * 5)  # past the lexicon's counts
    assert count_statement(regions, "group", random.Random(0)) is None
    with pytest.raises(ValueError, match="statement kind"):
        count_statement(regions, "caption", random.Random(0))
