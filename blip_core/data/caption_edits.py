"""Text-only ITM pairs made from a true caption, with the lexicon (no ground truth is read).

- Hard negatives by one word swap (NegCLIP, Yuksekgonul et al. 2023, "When and why vision-language
  models behave like bags-of-words"): the caption with one attribute replaced by another value of
  the same kind, so ITM must check every attribute, not the gist. A colour word becomes another
  colour, a shape noun another shape (number kept), a count of two or more another count, a size the
  other size, a relation phrase another relation, a background pattern another pattern, or two
  different colour words trade places ("a red circle and a blue star" -> "a blue circle and a red
  star": a binding negative, as NegCLIP's word-order swaps), or one noun phrase copied over another
  of a different colour or shape ("a yellow square right of a blue circle" -> "a yellow square right
  of a yellow square": the captioner's most frequent error, one object named twice). The kind of
  swap is drawn uniformly among the kinds the caption allows, so rare ones (relations, backgrounds)
  are as frequent as colours. As in NegCLIP, a swap can by chance still be true of the image (two colours of that shape
  in the scene); that rare label noise is accepted.
- Partial positives: one noun phrase of the caption ("two big red circles"), which is true of the
  image whenever the caption is (a phrase's count is the exact count of its objects). In-batch hard
  negatives in a world of few concepts are often true of the image too (another image's "a brown
  disk"), which teaches ITM that a match must mention every object; web alt-text is partial by
  nature, so the filter must accept a true part.
"""

from __future__ import annotations

import random
import re

from blip_core.data.world import lexicon as lx

_WORD = re.compile(r"[A-Za-z0-9]+")
_COUNTS = {"two": 2, "three": 3, "four": 4, "2": 2, "3": 3, "4": 4}


def _alternatives(word: str, next_word: str | None) -> tuple[str, list[str]] | None:
    """(kind, words that could replace `word` to make that attribute false), or None."""
    if word in lx.WORD_TO_COLOR:
        own = lx.WORD_TO_COLOR[word]
        return "color", [lx.COLOR_SYNONYMS[c][0] for c in lx.COLORS if c != own]
    if word in lx.WORD_TO_SHAPE and lx.WORD_TO_SHAPE[word][0] is not None:
        own, is_plural = lx.WORD_TO_SHAPE[word]
        names = [lx.SHAPE_SYNONYMS[s][0] for s in lx.SHAPES if s != own]
        return "shape", [lx.plural(n) for n in names] if is_plural else names
    if word in _COUNTS:
        digits = word.isdigit()
        return "count", [str(n) if digits else lx.COUNT_WORDS[n][0] for n in (2, 3, 4) if n != _COUNTS[word]]
    if word in lx.WORD_TO_SIZE:
        own = lx.WORD_TO_SIZE[word]
        return "size", [lx.SIZE_SYNONYMS[s][0] for s in lx.SIZES if s != own]
    if word in lx.BACKGROUNDS and next_word == "background":
        return "background", [b for b in lx.BACKGROUNDS if b != word]
    return None


def swap_negative(caption: str, rng: random.Random) -> str | None:
    """`caption` with one attribute swapped, chosen by `rng`; None when the caption names no
    attribute (spam, "untitled")."""
    marked = swap_negative_marked(caption, rng)
    return None if marked is None else marked[0]


def swap_negative_marked(caption: str, rng: random.Random) -> tuple[str, set[int]] | None:
    """`swap_negative`, with the indices of the words the swap made false (words as `word_spans`
    counts them: the new colour words of a binding swap, the copied phrase of a repeat, the new
    word or relation phrase of the others): the token-level ITM target (TrainConfig.itm_token_loss)."""
    text = caption.lower()
    words = word_spans(text)
    # kind -> [(start, end, replacement), ...]: every single edit that falsifies one attribute
    edits: dict[str, list[tuple[int, int, str]]] = {}
    for i, (start, end, w) in enumerate(words):
        found = _alternatives(w, words[i + 1][2] if i + 1 < len(words) else None)
        if found:
            edits.setdefault(found[0], []).extend((start, end, alt) for alt in found[1])
    tokens = [w for _, _, w in words]
    taken: list[tuple[int, int]] = []
    for phrase, rel in lx.PHRASE_TO_RELATION:  # longest first: "to the left of" before "left of"
        n = len(phrase)
        for i in range(len(tokens) - n + 1):
            if tuple(tokens[i : i + n]) != phrase:
                continue
            start, end = words[i][0], words[i + n - 1][1]
            if not any(s < end and start < e for s, e in taken):  # not inside a longer phrase
                taken.append((start, end))
                others = [lx.RELATION_PHRASES[r][0] for r in lx.RELATIONS if r != rel]
                edits.setdefault("relation", []).extend((start, end, o) for o in others)
    colors = [(s, e, w) for s, e, w in words if w in lx.WORD_TO_COLOR]
    pairs = [
        (a, b)
        for i, a in enumerate(colors)
        for b in colors[i + 1 :]
        if lx.WORD_TO_COLOR[a[2]] != lx.WORD_TO_COLOR[b[2]]
    ]
    spans = _phrase_spans(words)
    repeats = [(a, b) for a in spans for b in spans if a[3] != b[3]]  # copy a over b
    if not edits and not pairs and not repeats:
        return None
    kinds = sorted(edits) + (["binding"] if pairs else []) + (["repeat"] if repeats else [])
    kind = rng.choice(kinds)
    if kind == "binding":  # two colour words trade places
        (s1, e1, w1), (s2, e2, w2) = rng.choice(pairs)
        new = text[:s1] + w2 + text[e1:s2] + w1 + text[e2:]
        start2 = s1 + len(w2) + s2 - e1
        return new, _words_in(new, [(s1, s1 + len(w2)), (start2, start2 + len(w1))])
    if kind == "repeat":  # one noun phrase copied over another: one object named twice
        (s1, e1, _, _), (s2, e2, _, _) = rng.choice(repeats)
        return text[:s2] + text[s1:e1] + text[e2:], _words_in(text[:s2] + text[s1:e1], [(s2, s2 + e1 - s1)])
    start, end, replacement = rng.choice(edits[kind])
    new = text[:start] + replacement + text[end:]
    return new, _words_in(new, [(start, start + len(replacement))])


def word_spans(text: str) -> list[tuple[int, int, str]]:
    """(start, end, word) of each word of `text`: runs of letters and digits, which caption
    cleaning (`pre_caption`) keeps in order, so word i of a caption is word i of its cleaned form."""
    return [(m.start(), m.end(), m.group()) for m in _WORD.finditer(text)]


def _words_in(text: str, spans: list[tuple[int, int]]) -> set[int]:
    """Indices of the words of `text` that overlap any of `spans`."""
    return {i for i, (s, e, _) in enumerate(word_spans(text)) if any(s < b and a < e for a, b in spans)}


def _phrase_spans(words: list[tuple[int, int, str]]) -> list[tuple[int, int, str, tuple[str | None, str]]]:
    """(start, end, text, (colour, shape)) of each noun phrase: count, size and colour words before
    a shape noun."""
    spans = []
    for i, (_, end, w) in enumerate(words):
        if w in lx.WORD_TO_SHAPE and lx.WORD_TO_SHAPE[w][0] is not None:
            first = i
            while first > 0 and words[first - 1][2] in _MODIFIERS:
                first -= 1
            color = next((lx.WORD_TO_COLOR[x] for _, _, x in words[first:i] if x in lx.WORD_TO_COLOR), None)
            text = " ".join(x for _, _, x in words[first : i + 1])
            spans.append((words[first][0], end, text, (color, lx.WORD_TO_SHAPE[w][0])))
    return spans


def phrase_positive(caption: str, rng: random.Random) -> str | None:
    """One noun phrase of `caption` (its count, size and colour words and a shape noun), chosen by
    `rng`; None when the caption has no shape noun."""
    words = word_spans(caption.lower())
    phrases = [text for _, _, text, _ in _phrase_spans(words)]
    return rng.choice(phrases) if phrases else None


_MODIFIERS = set(lx.WORD_TO_COLOR) | set(lx.WORD_TO_SIZE) | set(lx.COUNT_PARSE)
"""Words that belong to a noun phrase before its shape noun."""
