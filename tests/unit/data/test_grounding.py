"""The caption grounding checker on hand-built scenes."""

from __future__ import annotations

from blip_core.data.grounding import Scene, SceneObject, ground_caption, parse_caption, relation_holds

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
    assert abs(r.object_recall - 2 / 3) < 1e-9  # both red circles matched, star phrase is false
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
    assert r.by_attribute == {"color": [1, 1], "shape": [1, 0], "size": [1, 1], "count": [0, 0], "relation": [0, 0],
                              "background": [1, 0]}  # fmt: skip
    assert not r.is_true and r.num_attributes == 4  # the overall checker still binds colour to shape
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
