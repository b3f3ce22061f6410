"""Caption grounding checker: parse a caption into objects/attributes/relations and score it against
the scene that was rendered.

The world generator writes captions from structured mentions; this module parses free text back
into the same structure with the shared lexicon, so it also works on generated (model) captions.

Scoring (per caption):
- every mentioned attribute (shape, colour, size, count of two or more, relation, background) is
  checked against the scene; precision = true attributes / mentioned attributes;
- object recall = scene objects matched by a fully-true noun phrase / scene objects;
- attribute recall = (shape, colour, size) attributes of scene objects that a true noun phrase names
  / (3 * scene objects);
- a caption is *true* when it mentions at least one attribute and all of them are true;
- by attribute (`GroundingResult.by_attribute`: mentioned and true mentions of colour, shape, size,
  count, relation, background), each mention is judged on its own, so the tally says which
  attribute fails: a shape is true if the scene has one; a colour if an object of the named shape
  has it (any object, when no object has that shape: one wrong shape is not also a wrong colour); a
  size likewise among the objects of that shape and colour; counts, relations and the background as
  above.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from blip_core.data import lexicon as lx


@dataclass(slots=True)
class SceneObject:
    shape: str
    color: str
    size: str
    row: int
    col: int

    def to_dict(self) -> dict:
        return {"shape": self.shape, "color": self.color, "size": self.size, "row": self.row, "col": self.col}


@dataclass(slots=True)
class Scene:
    objects: list[SceneObject]
    background: str
    tone: int = 0

    def to_dict(self) -> dict:
        return {"background": self.background, "tone": self.tone, "objects": [o.to_dict() for o in self.objects]}

    @classmethod
    def from_dict(cls, d: dict) -> Scene:
        return cls(
            objects=[SceneObject(**o) for o in d["objects"]], background=d["background"], tone=d.get("tone", 0)
        )


@dataclass(slots=True)
class NounPhrase:
    """`count size color shape`; None means not mentioned. shape None = generic noun ("shapes")."""

    shape: str | None
    color: str | None = None
    size: str | None = None
    count: int | None = None


@dataclass(slots=True)
class Mentions:
    phrases: list[NounPhrase] = field(default_factory=list)
    relations: list[tuple[int, str, int]] = field(default_factory=list)
    """(index of subject phrase, relation, index of object phrase)"""
    background: str | None = None


ATTRIBUTES = ("color", "shape", "size", "count", "relation", "background")
"""The attribute kinds a caption can mention (the keys of `GroundingResult.by_attribute`)."""


@dataclass(slots=True)
class GroundingResult:
    num_attributes: int
    num_true: int
    object_recall: float
    attribute_recall: float
    errors: list[str]
    by_attribute: dict[str, list[int]] = field(default_factory=lambda: {a: [0, 0] for a in ATTRIBUTES})
    """attribute -> [mentions, true mentions], each mention judged on its own (module docstring)."""

    @property
    def precision(self) -> float:
        return self.num_true / self.num_attributes if self.num_attributes else 0.0

    @property
    def is_true(self) -> bool:
        return self.num_attributes > 0 and self.num_true == self.num_attributes


# ------------------------------------------------------------------------------------------------
# relations between objects (grid cells)


def relation_holds(a: SceneObject, b: SceneObject, relation: str) -> bool:
    """Is `a <relation> b` true? Directions use the dominant axis, so diagonals satisfy two."""
    dx, dy = b.col - a.col, b.row - a.row
    if relation == "left_of":
        return dx > 0 and abs(dx) >= abs(dy)
    if relation == "right_of":
        return dx < 0 and abs(dx) >= abs(dy)
    if relation == "above":
        return dy > 0 and abs(dy) >= abs(dx)
    if relation == "below":
        return dy < 0 and abs(dy) >= abs(dx)
    if relation == "next_to":
        return abs(dx) + abs(dy) == 1
    raise ValueError(f"unknown relation {relation!r}")


def true_relations(a: SceneObject, b: SceneObject) -> list[str]:
    return [r for r in lx.RELATIONS if relation_holds(a, b, r)]


# ------------------------------------------------------------------------------------------------
# parsing

_PUNCT = re.compile(r"[^a-z0-9 ]+")


def tokenize(caption: str) -> list[str]:
    return _PUNCT.sub(" ", caption.lower()).split()


def parse_caption(caption: str) -> Mentions:
    """Parse free text into noun phrases, relations between adjacent phrases and a background."""
    tokens = tokenize(caption)
    # 1. replace relation phrases by a single marker token
    marked: list[str] = []
    i = 0
    while i < len(tokens):
        for phrase, rel in lx.PHRASE_TO_RELATION:
            if tuple(tokens[i : i + len(phrase)]) == phrase:
                marked.append("<rel:" + rel + ">")
                i += len(phrase)
                break
        else:
            marked.append(tokens[i])
            i += 1
    # 2. noun phrases anchored at shape nouns; modifiers are the contiguous words just before
    out = Mentions()
    spans: list[tuple[int, int]] = []  # (first token, shape token) per phrase
    for j, tok in enumerate(marked):
        if tok == "background" and j > 0 and marked[j - 1] in lx.BACKGROUNDS:
            out.background = marked[j - 1]
            continue
        if tok not in lx.WORD_TO_SHAPE:
            continue
        shape, is_plural = lx.WORD_TO_SHAPE[tok]
        np_ = NounPhrase(shape=shape)
        k = j - 1
        while k >= 0 and (spans == [] or k > spans[-1][1]):
            w = marked[k]
            if w in lx.WORD_TO_COLOR and np_.color is None:
                np_.color = lx.WORD_TO_COLOR[w]
            elif w in lx.WORD_TO_SIZE and np_.size is None:
                np_.size = lx.WORD_TO_SIZE[w]
            elif w in lx.COUNT_PARSE and np_.count is None:
                np_.count = lx.COUNT_PARSE[w]
            else:
                break
            k -= 1
        if np_.count is None and not is_plural and (np_.color or np_.size or shape):
            np_.count = None  # bare singular noun: existence only
        if shape is None and np_.count is None and np_.color is None and np_.size is None:
            continue  # "shapes" alone says nothing checkable
        spans.append((k + 1, j))
        out.phrases.append(np_)
    # 3. a relation marker between phrase p and phrase p+1 relates them
    for p in range(len(spans) - 1):
        between = marked[spans[p][1] + 1 : spans[p + 1][0]]
        rels = [t[5:-1] for t in between if t.startswith("<rel:")]
        if rels:
            out.relations.append((p, rels[-1], p + 1))
    return out


# ------------------------------------------------------------------------------------------------
# scoring


def _matches(o: SceneObject, np_: NounPhrase) -> bool:
    return (
        (np_.shape is None or o.shape == np_.shape)
        and (np_.color is None or o.color == np_.color)
        and (np_.size is None or o.size == np_.size)
    )


def _check_phrase(np_: NounPhrase, scene: Scene) -> tuple[int, int, list[str], list[SceneObject]]:
    """Returns (attributes mentioned, attributes true, error strings, matched objects)."""
    objs = scene.objects
    mentioned = true = 0
    errors: list[str] = []
    if np_.shape is not None:
        mentioned += 1
        if any(o.shape == np_.shape for o in objs):
            true += 1
        else:
            errors.append(f"no {np_.shape}")
    base = [o for o in objs if np_.shape is None or o.shape == np_.shape]
    if np_.color is not None:
        mentioned += 1
        if any(o.color == np_.color for o in base):
            true += 1
            base = [o for o in base if o.color == np_.color]
        else:
            errors.append(f"no {np_.color} {np_.shape or 'shape'}")
            base = []
    if np_.size is not None:
        mentioned += 1
        if any(o.size == np_.size for o in base):
            true += 1
        else:
            errors.append(f"no {np_.size} {np_.color or ''} {np_.shape or 'shape'}".replace("  ", " "))
    matched = [o for o in objs if _matches(o, np_)]
    # "a red circle" claims existence (covered by shape/colour/size); a numeral >= 2 is a count
    # attribute that must be exact, COCO-style ("two dogs" is false with three dogs)
    if np_.count is not None and np_.count >= 2:
        mentioned += 1
        if len(matched) == np_.count:
            true += 1
        else:
            errors.append(f"count {np_.count} but {len(matched)} match")
    return mentioned, true, errors, matched


def _tally_phrase(np_: NounPhrase, scene: Scene, tally: dict[str, list[int]]) -> None:
    """Per-attribute judgement of one noun phrase (see the module docstring)."""

    def add(attr: str, ok: bool) -> None:
        tally[attr][0] += 1
        tally[attr][1] += int(ok)

    objs = scene.objects
    if np_.shape is not None:
        add("shape", any(o.shape == np_.shape for o in objs))
    pool = [o for o in objs if np_.shape is None or o.shape == np_.shape] or objs
    if np_.color is not None:
        add("color", any(o.color == np_.color for o in pool))
        pool = [o for o in pool if o.color == np_.color] or pool
    if np_.size is not None:
        add("size", any(o.size == np_.size for o in pool))
    if np_.count is not None and np_.count >= 2:
        add("count", sum(1 for o in objs if _matches(o, np_)) == np_.count)


def ground_caption(caption: str | Mentions, scene: Scene) -> GroundingResult:
    """Score a caption (text or parsed mentions) against a scene."""
    m = parse_caption(caption) if isinstance(caption, str) else caption
    mentioned = true = 0
    errors: list[str] = []
    covered: dict[int, set[str]] = {}
    matched_per_phrase: list[list[SceneObject]] = []
    tally: dict[str, list[int]] = {a: [0, 0] for a in ATTRIBUTES}
    for np_ in m.phrases:
        _tally_phrase(np_, scene, tally)
        n_m, n_t, errs, matched = _check_phrase(np_, scene)
        mentioned += n_m
        true += n_t
        errors += errs
        matched_per_phrase.append(matched)
        if n_m == n_t:
            for o in matched:
                attrs = covered.setdefault(id(o), set())
                attrs.add("shape") if np_.shape else None
                attrs.add("color") if np_.color else None
                attrs.add("size") if np_.size else None
    for a_idx, rel, b_idx in m.relations:
        mentioned += 1
        tally["relation"][0] += 1
        if any(relation_holds(a, b, rel) for a in matched_per_phrase[a_idx] for b in matched_per_phrase[b_idx]):
            true += 1
            tally["relation"][1] += 1
        else:
            errors.append(f"relation {rel} false")
    if m.background is not None:
        mentioned += 1
        tally["background"][0] += 1
        if m.background == scene.background:
            true += 1
            tally["background"][1] += 1
        else:
            errors.append(f"background is {scene.background}, not {m.background}")
    n_obj = max(1, len(scene.objects))
    object_recall = sum(1 for o in scene.objects if covered.get(id(o))) / n_obj
    attribute_recall = sum(len(covered.get(id(o), ())) for o in scene.objects) / (3 * n_obj)
    return GroundingResult(mentioned, true, object_recall, attribute_recall, errors, tally)
