"""Count statements written from a labelled split's region labels (Visual Genome's role).

BLIP pre-trains on Visual Genome's region descriptions beside COCO's captions: short, dense, true
statements about parts of an image. Our `objects` split plays that role with per-object region
labels (box, colour, shape, size). A statement counts the objects of each colour and shape it names,
in the words the captions use ("two red circles", "a blue square and three green stars"), so the
captioner sees how many of a kind there are and that two different objects get two names. Only the
labels are read; no image-text split's ground truth.

- `group`: one colour-shape group of the image, picked through a random object (a group of three is
  three times as likely as a group of one, as an annotator pointing at objects would describe it);
- `scene`: every colour-shape group of the image once, in random order (a dense description).
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from blip_core.data.world import lexicon as lx

STATEMENT_KINDS = ("group", "scene")


def _phrase(n: int, color: str, shape: str, rng: random.Random) -> str:
    noun = rng.choice(lx.SHAPE_SYNONYMS[shape])  # drawn first: the order of the draws fixes the words
    count, colour = rng.choice(lx.COUNT_WORDS[n]), rng.choice(lx.COLOR_SYNONYMS[color])
    return f"{count} {colour} {noun if n == 1 else lx.plural(noun)}"


def _join(phrases: list[str]) -> str:
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def count_statement(regions: list[dict[str, Any]], kind: str, rng: random.Random) -> str | None:
    """A count statement about an image's regions ({"color", "shape", ...} each), or None when it has
    none or a group is larger than the lexicon counts (four)."""
    if kind not in STATEMENT_KINDS:
        raise ValueError(f"statement kind must be one of {STATEMENT_KINDS}, got {kind!r}")
    groups = Counter((r["color"], r["shape"]) for r in regions)
    if not groups or max(groups.values()) > max(lx.COUNT_WORDS):
        return None
    if kind == "group":
        r = rng.choice(regions)
        chosen = [(r["color"], r["shape"])]
    else:
        chosen = list(groups)
        rng.shuffle(chosen)
    return _join([_phrase(groups[g], *g, rng) for g in chosen])
