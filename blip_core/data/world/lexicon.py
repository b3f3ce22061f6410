"""Vocabulary of the embedded world: shapes, colours, sizes, counts, relations, backgrounds.

The world generator renders captions from these tables and the grounding checker parses captions
back with the same tables, so the two can never disagree about what a word means.
"""

from __future__ import annotations

# Canonical colour -> RGB. Object colours are saturated; background tones (below) are muted so
# that every object colour keeps contrast on every background.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "orange": (245, 135, 15),
    "yellow": (240, 220, 30),
    "green": (30, 160, 55),
    "blue": (35, 75, 220),
    "purple": (135, 50, 185),
    "pink": (250, 125, 190),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
    "brown": (120, 70, 30),
}
COLOR_SYNONYMS: dict[str, tuple[str, ...]] = {
    "red": ("red", "scarlet"),
    "orange": ("orange",),
    "yellow": ("yellow",),
    "green": ("green",),
    "blue": ("blue",),
    "purple": ("purple", "violet"),
    "pink": ("pink",),
    "white": ("white",),
    "black": ("black",),
    "brown": ("brown",),
}

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "star", "cross", "ring", "hexagon")
# canonical -> (singular synonyms...), plural forms derived by PLURALS.
SHAPE_SYNONYMS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "disk"),
    "square": ("square", "block"),
    "triangle": ("triangle",),
    "diamond": ("diamond", "rhombus"),
    "star": ("star",),
    "cross": ("cross", "plus"),
    "ring": ("ring", "hoop"),
    "hexagon": ("hexagon",),
}
GENERIC_NOUNS: tuple[str, ...] = ("shape", "object", "thing")


def plural(word: str) -> str:
    return word + ("es" if word.endswith(("s", "x", "sh", "ch")) else "s")


SIZES: tuple[str, ...] = ("small", "large")
SIZE_SYNONYMS: dict[str, tuple[str, ...]] = {"small": ("small", "little", "tiny"), "large": ("large", "big")}

COUNT_WORDS: dict[int, tuple[str, ...]] = {1: ("a", "one"), 2: ("two",), 3: ("three",), 4: ("four",)}
COUNT_PARSE: dict[str, int] = {
    "a": 1,
    "an": 1,
    "one": 1,
    "1": 1,
    "two": 2,
    "2": 2,
    "three": 3,
    "3": 3,
    "four": 4,
    "4": 4,
    "five": 5,
    "5": 5,
    "six": 6,
    "6": 6,
}

RELATIONS: tuple[str, ...] = ("left_of", "right_of", "above", "below", "next_to")
RELATION_PHRASES: dict[str, tuple[str, ...]] = {
    "left_of": ("to the left of", "left of"),
    "right_of": ("to the right of", "right of"),
    "above": ("above", "over"),
    "below": ("below", "under", "beneath"),
    "next_to": ("next to", "beside"),
}
INVERSE_RELATION = {"left_of": "right_of", "right_of": "left_of", "above": "below", "below": "above"}

BACKGROUNDS: tuple[str, ...] = ("plain", "gradient", "striped", "checkered", "dotted", "noisy")
BACKGROUND_TONES: tuple[tuple[int, int, int], ...] = (
    (128, 128, 128),
    (160, 150, 130),
    (110, 125, 140),
    (150, 165, 150),
    (140, 120, 130),
    (100, 100, 95),
)

# Reverse maps used by the grounding parser.
WORD_TO_COLOR = {syn: c for c, syns in COLOR_SYNONYMS.items() for syn in syns}
WORD_TO_SIZE = {syn: s for s, syns in SIZE_SYNONYMS.items() for syn in syns}
WORD_TO_SHAPE: dict[str, tuple[str | None, bool]] = {}
"""word -> (canonical shape or None for a generic noun, is_plural)"""
for _shape, _syns in SHAPE_SYNONYMS.items():
    for _syn in _syns:
        WORD_TO_SHAPE[_syn] = (_shape, False)
        WORD_TO_SHAPE[plural(_syn)] = (_shape, True)
for _gen in GENERIC_NOUNS:
    WORD_TO_SHAPE[_gen] = (None, False)
    WORD_TO_SHAPE[plural(_gen)] = (None, True)
# relation phrases as token tuples, longest first so "to the left of" wins over "left of"
PHRASE_TO_RELATION: list[tuple[tuple[str, ...], str]] = sorted(
    ((tuple(p.split()), r) for r, ps in RELATION_PHRASES.items() for p in ps), key=lambda x: -len(x[0])
)

SPAM_TEMPLATES: tuple[str, ...] = (
    "IMG_{n4}.jpg",
    "DSC{n5}.JPG",
    "photo_{n4}_{n2}.png",
    "click here to download",
    "stock photo {n6}",
    "royalty free stock image {n5}",
    "https://www.{site}.com/images/{n4}.jpg",
    "http://cdn.{site}.net/u/{n5}/thumb.png",
    '<img src="/static/{n4}.jpg">',
    "<b>buy now</b> free shipping",
    "download wallpaper hd 1920x1080",
    "best price guaranteed, order today",
    "{site} - all rights reserved",
    "screenshot {n4}-{n2}-{n2}",
)
SPAM_SITES: tuple[str, ...] = ("pixhost", "imgshare", "stockpics", "freewall", "shopdeals", "mediabank")
UNINFORMATIVE: tuple[str, ...] = (
    "image",
    "photo",
    "untitled",
    "picture",
    "no description available",
    "nice",
    "cool picture",
    "my favorite",
    "view",
    "untitled design",
    "thumbnail",
    "default image",
    "look at this",
    "wow",
    "new post",
    "artwork",
)
