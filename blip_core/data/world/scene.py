"""The world's scenes and what a caption says about one: scene objects, noun phrases, relations
between grid cells, and the parser that reads free text (world or model captions) back into
mentions with the shared lexicon. The grounding checker (blip_core.data.world.grounding) judges them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from blip_core.data.world import lexicon as lx

GRID = 3
"""Objects sit on a GRID x GRID lattice of cells, one object per cell."""


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
        return cls(objects=[SceneObject(**o) for o in d["objects"]], background=d["background"], tone=d.get("tone", 0))


@dataclass(slots=True)
class NounPhrase:
    """`count size color shape`; None means not mentioned. shape None = generic noun ("shapes").

    `exact`: the count of one came from a numeral ("one", "1"), not from "a"/"an". A count of two
    or more is always exact (only numerals say it), so a phrase built in code with count=1 and the
    default reads as "a" (at least one); the world sets count=1 only where exactly one object
    matches, so "a" or "one" are both true there. `plural`: a plural noun; without a count it
    claims two or more objects."""

    shape: str | None
    color: str | None = None
    size: str | None = None
    count: int | None = None
    exact: bool = False
    plural: bool = False


@dataclass(slots=True)
class Mentions:
    phrases: list[NounPhrase] = field(default_factory=list)
    relations: list[tuple[int, str, int]] = field(default_factory=list)
    """(index of subject phrase, relation, index of object phrase)"""
    background: str | None = None


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
                np_.exact = w not in ("a", "an")
            else:
                break
            k -= 1
        np_.plural = is_plural
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
