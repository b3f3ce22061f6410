"""Caption cleaning, as in salesforce/BLIP `data/utils.py:pre_caption`."""

from __future__ import annotations

import re

_PUNCT = re.compile(r"([.!\"()*#:;~])")
_SPACES = re.compile(r"\s{2,}")


def pre_caption(caption: str, max_words: int = 50) -> str:
    """Lower-case, replace BLIP's punctuation set by spaces, squeeze spaces, keep `max_words` words.

    Matches BLIP's `pre_caption` so that tokenisation of our data equals theirs.
    """
    caption = _PUNCT.sub(" ", caption.lower())
    caption = _SPACES.sub(" ", caption)
    caption = caption.rstrip("\n").strip(" ")
    words = caption.split(" ")
    if len(words) > max_words:
        caption = " ".join(words[:max_words])
    return caption
