"""Text-only ITM pairs: one-attribute swap negatives are false of the scene, phrase positives true."""

from __future__ import annotations

import random
from collections import Counter

from blip_core.config.data import WorldConfig
from blip_core.data.caption_edits import phrase_positive, swap_negative, swap_negative_marked, word_spans
from blip_core.data.world.grounding import Scene, ground_caption, parse_caption
from blip_core.data.world.samples import make_sample


def test_every_kind_of_swap_changes_one_attribute():
    caption = "two red circles to the left of a small blue star on a striped background"
    seen = Counter()
    rng = random.Random(0)
    for _ in range(300):
        neg = swap_negative(caption, rng)
        assert neg is not None and neg != caption
        a, b = parse_caption(caption), parse_caption(neg)
        diffs = [(p.shape, p.color, p.size, p.count) != (q.shape, q.color, q.size, q.count)
                 for p, q in zip(a.phrases, b.phrases, strict=True)]  # fmt: skip
        pairs = [(p.color, p.shape) for p in b.phrases]
        if len(set(pairs)) < len(pairs):
            seen["repeat"] += 1  # one phrase copied over the other
        elif a.relations != b.relations:
            seen["relation"] += 1
        elif a.background != b.background:
            seen["background"] += 1
        elif sum(diffs) == 2:
            seen["binding"] += 1  # the two colours traded places
            assert {p.color for p in a.phrases} == {p.color for p in b.phrases}
        else:
            assert sum(diffs) == 1, neg
            seen["attribute"] += 1
    assert set(seen) == {"relation", "background", "binding", "attribute", "repeat"}


def test_a_repeat_negative_names_one_object_twice():
    rng = random.Random(4)
    caption = "a yellow square to the right of a blue circle"
    negs = [swap_negative(caption, rng) for _ in range(400)]
    twice = {n for n in negs if len({(p.color, p.shape) for p in parse_caption(n).phrases}) == 1}
    assert twice == {"a yellow square to the right of a yellow square", "a blue circle to the right of a blue circle"}


def test_swaps_keep_the_noun_number_and_skip_captions_without_attributes():
    rng = random.Random(1)
    for _ in range(50):
        neg = swap_negative("three green hexagons", rng)
        assert neg.split()[-1].endswith("s") and neg != "three green hexagons"
    assert swap_negative("IMG_2041.jpg", rng) is None and swap_negative("untitled", rng) is None


ORIGINAL = ["one", "big", "red", "star", "left", "of", "a", "blue", "circle"]


def test_a_swap_marks_the_words_it_made_false():
    rng = random.Random(5)
    seen = set()
    for _ in range(300):
        neg, false = swap_negative_marked("one big red star left of a blue circle", rng)
        words = [w for _, _, w in word_spans(neg)]
        marked = " ".join(words[i] for i in sorted(false))
        seen.add(marked)
        if len(words) == len(ORIGINAL):  # a word replaced or two traded: every unmarked word is the original's
            assert all(w == o for i, (w, o) in enumerate(zip(words, ORIGINAL, strict=True)) if i not in false)
    # a binding swap marks both moved colours; a repeat the copied phrase; a relation its phrase
    assert {"blue red", "a blue circle", "to the right of", "one big red star"} <= seen


def test_swap_negatives_of_true_captions_are_mostly_false_and_phrases_always_true():
    """On the world's human captions: a phrase of a true caption is true; a swap is false but for
    the rare chance NegCLIP accepts (the swapped value also present in the scene)."""
    cfg = WorldConfig()
    rng = random.Random(2)
    false = total = 0
    for i in range(200):
        s = make_sample(cfg, "coco_train", i)
        scene = Scene.from_dict(s["meta"]["gt"]["scene"])
        for caption in s["captions"]:
            part = phrase_positive(caption, rng)
            if part is not None:
                assert ground_caption(part, scene).is_true, (caption, part)
            neg = swap_negative(caption, rng)
            if neg is not None:
                total += 1
                false += not ground_caption(neg, scene).is_true
    assert total > 900 and false / total > 0.85


def test_phrase_positive_takes_a_whole_noun_phrase():
    rng = random.Random(3)
    got = {phrase_positive("three objects: two big red circles and a star", rng) for _ in range(40)}
    assert got == {"two big red circles", "a star"}
    assert phrase_positive("click here to download", rng) is None
