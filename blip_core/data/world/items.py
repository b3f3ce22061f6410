"""Shared pieces of the world's downstream-task items (VQA, NLVR2, text-video): the task splits,
number words, noun-phrase and relation text, the rendered images of a split, and the noun-phrase
parsing the independent checkers use.

The generators (`vqa`, `nlvr`, `video`) render text with `np_phrase` / `rel_phrase`; the checkers
read it back with `np_of`, `matching`, `relation_of` and `normalize`, which share nothing with the
text rendering but the lexicon.
"""

from __future__ import annotations

import re
from random import Random

from blip_core.config.data import WorldConfig
from blip_core.data.world import lexicon as lx
from blip_core.data.world.render import CLEAN_SPLITS, encode_jpeg, render_scene, rng_for, sample_scene, seen_combos
from blip_core.data.world.scene import Scene, SceneObject, tokenize

TASK_SPLITS: dict[str, tuple[str, str]] = {
    "vqa_train": ("vqa", "coco_train"),
    "vqa_test": ("vqa", "test"),
    "vqa_novel": ("vqa", "novel"),
    "nlvr_train": ("nlvr", "coco_train"),
    "nlvr_test": ("nlvr", "test"),
    "nlvr_novel": ("nlvr", "novel"),
    "video_test": ("video", "test"),
    "video_novel": ("video", "novel"),
}
"""Task split -> (task, the image split whose scenes it uses)."""
NUMBER_WORDS = {0: "zero", 1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight"}
"""Count answers are words, as in VQA v2."""

Combo = tuple[str, str]  # (colour, shape)


# ------------------------------------------------------------------------------------------------
# shared helpers of the generators (text rendering, images)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def np_phrase(
    rng: Random, shape: str | None, color: str | None = None, size: str | None = None, *, plural: bool = False,
    article: str = "",
) -> str:  # fmt: skip
    """`[article] [size] [colour] noun(s)` with the world's synonyms; shape None = generic noun."""
    words = []
    if size:
        words.append(rng.choice(lx.SIZE_SYNONYMS[size]))
    if color:
        words.append(rng.choice(lx.COLOR_SYNONYMS[color]))
    noun = rng.choice(lx.SHAPE_SYNONYMS[shape]) if shape else rng.choice(lx.GENERIC_NOUNS)
    words.append(lx.plural(noun) if plural else noun)
    if article == "a":
        words.insert(0, _article(words[0]))
    elif article:
        words.insert(0, article)
    return " ".join(words)


def rel_phrase(rng: Random, relation: str) -> str:
    """One of the world's phrases for `relation` ("left of", "to the left of", ...)."""
    return rng.choice(lx.RELATION_PHRASES[relation])


def allowed_combos(cfg: WorldConfig, image_split: str) -> list[Combo]:
    """Combos a split's text may name: clean splits never name a held-out combination."""
    if image_split in CLEAN_SPLITS:
        return seen_combos(cfg)
    return [(c, s) for c in lx.COLORS for s in lx.SHAPES]


class SplitImages:
    """The jpeg and scene of each image of a split, rendered once (the bytes `samples.make_sample` writes)."""

    def __init__(self, cfg: WorldConfig, split: str) -> None:
        self.cfg, self.split = cfg, split
        self._cache: dict[int, tuple[bytes, Scene]] = {}

    def key(self, index: int) -> str:
        return f"{self.split}-{index:07d}"

    def get(self, index: int) -> tuple[bytes, Scene]:
        if index not in self._cache:
            scene = sample_scene(self.cfg, self.split, index)
            img = render_scene(scene, rng_for(self.cfg, self.split, index, "render"), self.cfg.image_size)
            self._cache[index] = (encode_jpeg(img, self.cfg.jpeg_quality), scene)
        return self._cache[index]


# ------------------------------------------------------------------------------------------------
# checkers: parse the text, compute the truth from the scene(s)


def _parse_np(words: list[str]) -> tuple[str | None, str | None, str | None, bool]:
    """`[size] [colour] noun` -> (shape or None for a generic noun, colour, size, is_plural)."""
    if not words or words[-1] not in lx.WORD_TO_SHAPE:
        raise ValueError(f"not a noun phrase: {' '.join(words)!r}")
    shape, is_plural = lx.WORD_TO_SHAPE[words[-1]]
    mods = words[:-1]
    size = color = None
    if mods and mods[-1] in lx.WORD_TO_COLOR:
        color = lx.WORD_TO_COLOR[mods.pop()]
    if mods and mods[-1] in lx.WORD_TO_SIZE:
        size = lx.WORD_TO_SIZE[mods.pop()]
    if mods:
        raise ValueError(f"not a noun phrase: {' '.join(words)!r}")
    return shape, color, size, is_plural


def matching(scene: Scene, np_: tuple[str | None, str | None, str | None, bool]) -> list[SceneObject]:
    """The objects of `scene` that a parsed noun phrase (see `np_of`) fits."""
    shape, color, size, _ = np_
    return [
        o
        for o in scene.objects
        if (shape is None or o.shape == shape) and (color is None or o.color == color) and size in (None, o.size)
    ]


def np_of(text: str) -> tuple[str | None, str | None, str | None, bool]:
    """Parse a noun phrase's text: (shape or None, colour, size, is_plural); ValueError if it is none."""
    return _parse_np(text.split())


def relation_of(phrase: str) -> str:
    """The relation a phrase of the lexicon names; ValueError for any other text."""
    for words, rel in lx.PHRASE_TO_RELATION:
        if " ".join(words) == phrase:
            return rel
    raise ValueError(f"not a relation: {phrase!r}")


REL_RE = "|".join(re.escape(" ".join(w)) for w, _ in lx.PHRASE_TO_RELATION)  # longest first
"""A regex alternation of every relation phrase, for the checkers' templates."""


def normalize(text: str) -> str:
    """Lower-cased words without punctuation, as the checkers match them."""
    return " ".join(tokenize(text))
