"""The caption grounding checker on hand-built scenes."""

from __future__ import annotations

from blip_core.data.world.grounding import (
    NounPhrase,
    Scene,
    SceneObject,
    ground_caption,
    names_pair_twice,
    parse_caption,
    relation_holds,
    scene_has_pair_twice,
)

SCENE = Scene(
    objects=[
        SceneObject("circle", "red", "large", 0, 0),
        SceneObject("circle", "red", "small", 0, 2),
        SceneObject("star", "blue", "small", 2, 0),
    ],
    background="striped",
)


def test_parse_noun_phrases_relations_and_background():
    m = parse_caption("Two big RED circles, to the left of a tiny violet star on a striped background!")
    assert [(p.count, p.size, p.color, p.shape) for p in m.phrases] == [
        (2, "large", "red", "circle"),
        (1, "small", "purple", "star"),
    ]
    assert m.relations == [(0, "left_of", 1)]
    assert m.background == "striped"


def test_true_captions():
    for c in [
        "two red circles and a blue star",
        "a large red disk above a small blue star",
        "three shapes: two red circles and a star",
        "a red circle to the left of a red circle",
        "blue star on a striped background",
        "RED CIRCLE | BLUE STAR",
    ]:
        r = ground_caption(c, SCENE)
        assert r.is_true, (c, r.errors)


def test_false_captions_name_the_error():
    cases = {
        "a green circle": "no green",
        "a red triangle": "no triangle",
        "three red circles": "count 3",
        "a blue star above a red circle": "relation above",
        "a large blue star": "no large",
        "four shapes": "count 4",
        "a red circle on a dotted background": "background",
    }
    for caption, err in cases.items():
        r = ground_caption(caption, SCENE)
        assert not r.is_true, caption
        assert any(err in e for e in r.errors), (caption, r.errors)


def test_uninformative_has_no_attributes():
    for c in ["IMG_2041.jpg", "click here to download", "untitled", "https://www.pixhost.com/images/0042.jpg"]:
        r = ground_caption(c, SCENE)
        assert r.num_attributes == 0 and not r.is_true and r.precision == 0.0


def test_precision_and_recall():
    r = ground_caption("a red circle and a green star", SCENE)
    # red circle: shape, colour true; green star: shape true, colour false ("a" is no count claim)
    assert r.num_attributes == 4 and r.num_true == 3
    assert abs(r.precision - 3 / 4) < 1e-9
    assert abs(r.object_recall - 1 / 3) < 1e-9  # "a red circle" is given one of the two, the star phrase is false
    full = ground_caption("two red circles and a small blue star", SCENE)
    assert full.object_recall == 1.0
    assert abs(full.attribute_recall - (2 * 2 + 3) / 9) < 1e-9


def test_relations_use_dominant_axis():
    a, b = SceneObject("circle", "red", "small", 0, 0), SceneObject("star", "red", "small", 1, 2)
    assert relation_holds(a, b, "left_of") and relation_holds(b, a, "right_of")
    assert not relation_holds(a, b, "above") and not relation_holds(a, b, "next_to")
    c = SceneObject("star", "red", "small", 1, 0)
    assert relation_holds(a, c, "above") and relation_holds(a, c, "next_to") and relation_holds(c, a, "below")


def test_by_attribute_each_mention_is_judged_on_its_own():
    """The per-attribute tally says which attribute fails: a wrong shape is not also a wrong colour."""
    r = ground_caption("there is one large red triangle on a dotted background", SCENE)
    # "one" is an exact count: no red triangle, so it is false too
    assert r.by_attribute == {"color": [1, 1], "shape": [1, 0], "size": [1, 1], "count": [1, 0], "relation": [0, 0],
                              "background": [1, 0]}  # fmt: skip
    assert not r.is_true and r.num_attributes == 5  # the overall checker still binds colour to shape
    r = ground_caption("two blue circles above three red stars", SCENE)
    assert r.by_attribute["color"] == [2, 0]  # the circles are red, the star blue: colour bound to the shape
    assert r.by_attribute["shape"] == [2, 2] and r.by_attribute["count"] == [2, 0]
    assert r.by_attribute["relation"] == [1, 0]


def test_grounding_metrics_report_precision_by_attribute():
    from blip_core.eval.captioning import grounding_metrics

    scene = SCENE.to_dict()
    m = grounding_metrics(["a red circle", "a red triangle", "a blue star on a striped background"], [scene] * 3)
    assert m["grounded_precision_shape"] == 2 / 3 and m["grounded_mentions_shape"] == 3
    assert m["grounded_precision_color"] == 1.0 and m["grounded_precision_background"] == 1.0
    assert "grounded_precision_relation" not in m and m["grounded_mentions_relation"] == 0
    assert m["grounded_true_rate"] == 2 / 3


# ------------------------------------------------------------------------------------------------
# a caption as a person reads it: distinct objects, exact numerals, relations under one matching


def _scene(*objects: tuple[str, str, str, int, int]) -> Scene:
    return Scene(objects=[SceneObject(*o) for o in objects], background="plain")


ONE_BLACK_TRIANGLE = _scene(("triangle", "black", "large", 0, 0), ("circle", "red", "small", 1, 2))
TWO_ORANGE_TRIANGLES = _scene(("triangle", "orange", "large", 0, 0), ("triangle", "orange", "small", 2, 2))


def test_two_phrases_cannot_claim_the_same_object():
    r = ground_caption("two shapes one big black triangle and one black triangle", ONE_BLACK_TRIANGLE)
    assert not r.is_true and r.num_true == r.num_attributes - 1
    assert r.errors == ["count: claims 2 distinct black triangle objects, scene has 1"]
    assert r.by_attribute["count"] == [4, 3]  # "two shapes", both "one"s, and the fit failure
    assert ground_caption("two shapes: a big black triangle and a red circle", ONE_BLACK_TRIANGLE).is_true


def test_one_is_an_exact_count_and_a_is_not():
    r = ground_caption("there is one orange triangle", TWO_ORANGE_TRIANGLES)
    assert not r.is_true and r.errors == ["count 1 but 2 match"] and r.by_attribute["count"] == [1, 0]
    assert ground_caption("there is an orange triangle", TWO_ORANGE_TRIANGLES).is_true
    two_red = _scene(("circle", "red", "large", 0, 0), ("circle", "red", "small", 0, 2))
    three_red = _scene(
        ("circle", "red", "large", 0, 0), ("circle", "red", "small", 0, 2), ("circle", "red", "small", 2, 2)
    )
    assert ground_caption("a red circle", two_red).is_true
    assert not ground_caption("one red circle", two_red).is_true
    assert ground_caption("1 red circle", _scene(("circle", "red", "small", 0, 0))).is_true
    r = ground_caption("two red circles", three_red)
    assert not r.is_true and any("count 2" in e for e in r.errors)


def test_parser_records_numerals_and_bare_plurals():
    a, one, digit, bare, two = parse_caption("a circle, one star, 1 ring, red squares and two crosses").phrases
    assert (a.count, a.exact, one.count, one.exact, digit.exact) == (1, False, 1, True, True)
    assert (bare.count, bare.plural, two.count, two.exact) == (None, True, 2, True)
    # built in code: count 1 reads as "a" unless marked exact, two or more is always exact
    two_red = _scene(("circle", "red", "large", 0, 0), ("circle", "red", "small", 0, 2))
    assert ground_caption(_mentions(NounPhrase("circle", "red", None, 1)), two_red).is_true
    assert not ground_caption(_mentions(NounPhrase("circle", "red", None, 1, exact=True)), two_red).is_true
    assert ground_caption(_mentions(NounPhrase("circle", "red", None, 2)), two_red).is_true


def _mentions(*phrases: NounPhrase):
    from blip_core.data.world.grounding import Mentions

    return Mentions(list(phrases))


def test_each_claim_is_a_distinct_object():
    black_white = _scene(("circle", "black", "small", 0, 0), ("circle", "white", "small", 0, 2))
    assert ground_caption("a black circle and a white circle", black_white).is_true
    one_black = _scene(("circle", "black", "small", 0, 0))
    r = ground_caption("a black circle and a black circle", one_black)
    assert not r.is_true and any("count" in e and "claims 2" in e for e in r.errors)
    two_black = _scene(("circle", "black", "small", 0, 0), ("circle", "black", "large", 2, 2))
    assert ground_caption("a black circle and a black circle", two_black).is_true
    # a general phrase placed first does not steal the object a later, narrower phrase needs
    red_blue = _scene(("circle", "red", "small", 0, 0), ("circle", "blue", "small", 0, 2))
    assert ground_caption("a circle and a red circle", red_blue).is_true
    assert not ground_caption("a circle and a red circle", _scene(("circle", "red", "small", 0, 0))).is_true


def test_bare_plural_claims_two_or_more():
    one_red = _scene(("circle", "red", "small", 0, 0), ("star", "blue", "small", 2, 2))
    r = ground_caption("red circles", one_red)
    assert not r.is_true and r.by_attribute["count"] == [1, 0] and any("count" in e for e in r.errors)
    two_red = _scene(("circle", "red", "small", 0, 0), ("circle", "red", "large", 2, 2))
    assert ground_caption("red circles", two_red).is_true
    assert ground_caption("red circles", SCENE).is_true


def test_generic_total_claims_no_object():
    assert ground_caption("three shapes: two red circles and a star", SCENE).is_true
    r = ground_caption("three shapes: two red circles and a star", SCENE)
    assert r.object_recall == 1.0 and r.by_attribute["count"] == [2, 2]
    assert not ground_caption("two objects: a red circle and a star", SCENE).is_true


def test_relation_needs_two_distinct_objects():
    one_red = _scene(("circle", "red", "small", 0, 0), ("star", "blue", "small", 2, 2))
    r = ground_caption("a red circle left of a red circle", one_red)
    assert not r.is_true and "relation left_of false" in r.errors
    two_red = _scene(("circle", "red", "small", 0, 0), ("circle", "red", "small", 0, 2))
    assert ground_caption("a red circle left of a red circle", two_red).is_true
    assert ground_caption("a red circle right of a red circle", two_red).is_true


def test_relation_is_found_under_any_matching():
    """The obvious matching (first phrase, first object) puts the right-hand circle left of the star;
    the caption is still true, with the other circle as the subject of the relation."""
    scene = _scene(("circle", "red", "small", 0, 0), ("circle", "red", "large", 0, 2), ("star", "blue", "small", 0, 1))
    r = ground_caption("a red circle and a red circle to the left of a blue star", scene)
    assert parse_caption("a red circle and a red circle to the left of a blue star").relations == [(1, "left_of", 2)]
    assert r.is_true, r.errors
    r = ground_caption("a large red circle and a red circle to the left of a blue star", scene)
    assert r.is_true, r.errors  # the large one is right of the star: the small one must be the subject
    assert not ground_caption("a small red circle and a red circle to the left of a blue star", scene).is_true
    # two relations on one middle phrase: the same star must serve both
    chain = _scene(
        ("circle", "red", "small", 0, 0), ("star", "blue", "small", 0, 1), ("square", "green", "small", 1, 1)
    )
    assert ground_caption("a red circle left of a blue star above a green square", chain).is_true
    assert not ground_caption("a red circle left of a blue star below a green square", chain).is_true


def test_repetition_helpers():
    assert names_pair_twice("a black circle and a black circle")
    assert names_pair_twice("a big black triangle and one black triangle")
    assert not names_pair_twice("a black circle and a white circle")
    assert not names_pair_twice("a circle and a circle")  # no colour given
    assert not names_pair_twice("two black circles")  # one phrase
    assert names_pair_twice(parse_caption("red circle | red circle"))
    assert scene_has_pair_twice(TWO_ORANGE_TRIANGLES) and scene_has_pair_twice(SCENE)
    assert not scene_has_pair_twice(ONE_BLACK_TRIANGLE)
