"""NLVR2 items of the embedded world: statements about a pair of images with their truth, and the
independent checker `nlvr_truth`.

`nlvr_train` (coco_train images), `nlvr_test` and `nlvr_novel` hold ~50/50 labels; a false statement
talks about things in the pair (plausible, not random), and a statement's type says nothing about
its label.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from random import Random

from blip_core.config.data import WorldConfig
from blip_core.data.task_data import TaskItem
from blip_core.data.world import lexicon as lx
from blip_core.data.world.items import (
    NUMBER_WORDS,
    REL_RE,
    TASK_SPLITS,
    Combo,
    SplitImages,
    allowed_combos,
    matching,
    normalize,
    np_of,
    np_phrase,
    rel_phrase,
    relation_of,
)
from blip_core.data.world.render import rng_for
from blip_core.data.world.scene import Scene, relation_holds

NLVR_TYPES = ("more", "both", "only_one", "exact_count", "neither", "total", "relation")

NlvrNp = tuple[str | None, str | None]  # (colour or None, shape or None): "red circles", "circles", "objects"


def _nlvr_text(claim: tuple, rng: Random) -> str:
    """The words of a structured NLVR claim (see `_nlvr_claims`)."""
    kind, other = claim[0], {"left": "right", "right": "left"}

    def sg(np_: NlvrNp, article: str = "a") -> str:
        return np_phrase(rng, np_[1], np_[0], article=article)

    def pl(np_: NlvrNp) -> str:
        return np_phrase(rng, np_[1], np_[0], plural=True)

    def amount(np_: NlvrNp, n: int) -> str:
        return f"{NUMBER_WORDS[n]} {sg(np_, '') if n == 1 else pl(np_)}"

    if kind == "more":
        _, side, np_ = claim
        return f"the {side} image {rng.choice(('has', 'contains'))} more {pl(np_)} than the {other[side]} image"
    if kind == "exact_count":
        _, side, np_, n = claim
        if rng.random() < 0.5:
            return f"there {'is' if n == 1 else 'are'} exactly {amount(np_, n)} in the {side} image"
        return f"the {side} image has exactly {amount(np_, n)}"
    if kind == "total":
        _, np_, n = claim
        if rng.random() < 0.5:
            return f"there {'is' if n == 1 else 'are'} {amount(np_, n)} in total"
        return f"the two images contain {amount(np_, n)} in total"
    if kind == "both":
        np_ = claim[1]
        return rng.choice((f"both images contain {sg(np_)}", f"each image has {sg(np_)}",
                           f"each image contains at least one {sg(np_, '')}"))  # fmt: skip
    if kind == "only_one":
        _, side, np_ = claim
        return rng.choice((f"the {side} image contains {sg(np_)} but the {other[side]} image does not",
                           f"only the {side} image has {sg(np_)}"))  # fmt: skip
    if kind == "neither":
        np_ = claim[1]
        return rng.choice((f"neither image contains {sg(np_)}", f"no image has {sg(np_)}"))
    if kind == "relation":
        _, side, a, rel, b = claim
        if rng.random() < 0.5:
            return f"in the {side} image, {sg(a)} is {rel_phrase(rng, rel)} {sg(b)}"
        return f"the {side} image shows {sg(a)} {rel_phrase(rng, rel)} {sg(b)}"
    raise ValueError(f"unknown NLVR statement type {kind!r}")


def _nlvr_claims(left: Scene, right: Scene, allowed: list[Combo]) -> list[tuple[tuple, bool]]:
    """(claim, truth) for every claim the generator may make about the pair; a claim is a tuple
    whose first item is its type. Claims name only things in the pair, so false ones are plausible."""
    scenes = {"left": left, "right": right}
    other = {"left": "right", "right": "left"}
    objs = left.objects + right.objects

    counts = {side: Counter([(None, None)] * len(sc.objects) + [(None, o.shape) for o in sc.objects]
                            + [(o.color, o.shape) for o in sc.objects]) for side, sc in scenes.items()}  # fmt: skip

    def count(side: str, np_: NlvrNp) -> int:
        return counts[side][np_]

    named: list[NlvrNp] = sorted({(None, o.shape) for o in objs} | {(o.color, o.shape) for o in objs}, key=str)
    out: list[tuple[tuple, bool]] = []
    for np_ in [(None, None), *named]:  # (None, None): "objects"
        for side in scenes:
            actual = count(side, np_)
            out.append((("more", side, np_), actual > count(other[side], np_)))
            for n in sorted({actual - 1, actual, actual + 1} & {1, 2, 3, 4}):
                out.append((("exact_count", side, np_, n), n == actual))
        if np_ == (None, None):
            continue
        total = count("left", np_) + count("right", np_)
        for n in sorted({total - 1, total, total + 1} & {1, 2, 3, 4}):
            out.append((("total", np_, n), n == total))
        present = {side: count(side, np_) > 0 for side in scenes}
        out.append((("both", np_), present["left"] and present["right"]))
        out.append((("neither", np_), False))
        for side in scenes:
            out.append((("only_one", side, np_), present[side] and not present[other[side]]))
    # true "neither": a colour and a shape of the pair that never go together in it (a binding error)
    colors, shapes, combos = {o.color for o in objs}, {o.shape for o in objs}, {(o.color, o.shape) for o in objs}
    for c, s in allowed:
        if c in colors and s in shapes and (c, s) not in combos:
            out.append((("neither", (c, s)), True))
    # relations: each true relation of either image and its inverse, claimed of both images
    relations = set()
    for sc in scenes.values():
        for a in sc.objects:
            for b in sc.objects:
                if (a.color, a.shape) == (b.color, b.shape):
                    continue
                for rel in lx.RELATIONS:
                    if relation_holds(a, b, rel):
                        relations.add(((a.color, a.shape), rel, (b.color, b.shape)))
                        if rel in lx.INVERSE_RELATION:
                            relations.add(((a.color, a.shape), lx.INVERSE_RELATION[rel], (b.color, b.shape)))
    for ca, rel, cb in sorted(relations):
        for side, sc in scenes.items():
            truth = any(relation_holds(a, b, rel) for a in sc.objects for b in sc.objects
                        if (a.color, a.shape) == ca and (b.color, b.shape) == cb)  # fmt: skip
            out.append((("relation", side, ca, rel, cb), truth))
    return out


def nlvr_statement(left: Scene, right: Scene, rng: Random, label: bool, allowed: list[Combo]) -> tuple[str, str]:
    """A statement about the pair with truth value `label`, and its type. The type is drawn
    uniformly among those with both true and false statements about this pair, so that a type says
    nothing about the label; then the statement among that type's with truth `label`."""
    by_type: dict[tuple[str, bool], list[tuple]] = {}
    for claim, truth in _nlvr_claims(left, right, allowed):
        by_type.setdefault((claim[0], truth), []).append(claim)
    kinds = [k for k in NLVR_TYPES if (k, True) in by_type and (k, False) in by_type]
    kind = rng.choice(kinds or [k for k in NLVR_TYPES if (k, label) in by_type])
    return _nlvr_text(rng.choice(by_type[kind, label]), rng), kind


def nlvr_items(cfg: WorldConfig, split: str) -> Iterator[TaskItem]:
    """`num_<split>` statements, each about a pair of distinct images of the image split."""
    image_split = TASK_SPLITS[split][1]
    images = SplitImages(cfg, image_split)
    allowed = allowed_combos(cfg, image_split)
    num_images = cfg.split_sizes()[image_split]
    if num_images < 2:
        return
    for i in range(cfg.task_split_sizes()[split]):
        rng = rng_for(cfg, split, i, "statement")
        a, b = rng.sample(range(num_images), 2)
        (ja, sa), (jb, sb) = images.get(a), images.get(b)
        label = rng.random() < 0.5
        statement, kind = nlvr_statement(sa, sb, rng, label, allowed)
        fields = {"statement": statement, "label": label, "type": kind, "image_ids": [images.key(a), images.key(b)],
                  "scenes": [sa.to_dict(), sb.to_dict()]}  # fmt: skip
        yield TaskItem(f"{split}-{i:07d}", [ja, jb], fields)


def nlvr_truth(statement: str, left: Scene, right: Scene) -> bool | None:
    """The truth of an NLVR2-style statement about (left, right). Raises ValueError for text
    outside the generated templates."""
    s = normalize(statement)
    scenes = {"left": left, "right": right}

    def count(side: str, np_text: str) -> int:
        return len(matching(scenes[side], np_of(np_text)))

    def number(word: str) -> int:
        if word not in lx.COUNT_PARSE:
            raise ValueError(f"not a number: {word!r}")
        return lx.COUNT_PARSE[word]

    if m := re.fullmatch(r"the (left|right) image (?:has|contains) more (.+) than the (left|right) image", s):
        if m[1] == m[3]:
            raise ValueError(f"a comparison of an image with itself: {statement!r}")
        return count(m[1], m[2]) > count(m[3], m[2])
    if m := re.fullmatch(r"(?:both images contain|each image has|each image contains) (?:a|an|at least one) (.+)", s):
        return count("left", m[1]) > 0 and count("right", m[1]) > 0
    if m := re.fullmatch(r"the (left|right) image contains (?:a|an) (.+) but the (left|right) image does not", s):
        if m[1] == m[3]:
            raise ValueError(f"a contrast of an image with itself: {statement!r}")
        return count(m[1], m[2]) > 0 and count(m[3], m[2]) == 0
    if m := re.fullmatch(r"only the (left|right) image has (?:a|an) (.+)", s):
        return count(m[1], m[2]) > 0 and count("right" if m[1] == "left" else "left", m[2]) == 0
    if m := re.fullmatch(r"there (?:is|are) exactly (\w+) (.+) in the (left|right) image", s):
        return count(m[3], m[2]) == number(m[1])
    if m := re.fullmatch(r"the (left|right) image has exactly (\w+) (.+)", s):
        return count(m[1], m[3]) == number(m[2])
    if m := re.fullmatch(r"(?:neither image contains|no image has) (?:a|an) (.+)", s):
        return count("left", m[1]) == 0 and count("right", m[1]) == 0
    if m := re.fullmatch(r"(?:there (?:is|are)|the two images contain) (\w+) (.+) in total", s):
        return count("left", m[2]) + count("right", m[2]) == number(m[1])
    if m := (re.fullmatch(rf"in the (left|right) image (?:a|an) (.+?) is ({REL_RE}) (?:a|an) (.+)", s)
             or re.fullmatch(rf"the (left|right) image shows (?:a|an) (.+?) ({REL_RE}) (?:a|an) (.+)", s)):  # fmt: skip
        sc, rel = scenes[m[1]], relation_of(m[3])
        subjects, objects = matching(sc, np_of(m[2])), matching(sc, np_of(m[4]))
        return any(a is not b and relation_holds(a, b, rel) for a in subjects for b in objects)
    raise ValueError(f"unparseable NLVR statement {statement!r}")
