"""The world's captions: noun-phrase text, COCO-style human captions (fluent, partial, true of the
scene) and the terse mentions and text of clean web alt-text.
"""

from __future__ import annotations

import random
from collections import Counter

from blip_core.data.world import lexicon as lx
from blip_core.data.world.scene import Mentions, NounPhrase, Scene, SceneObject, true_relations


def count_matching(scene: Scene, np_: NounPhrase) -> int:
    """How many objects of `scene` a phrase fits (its shape, and its colour and size where given)."""
    return sum(
        1
        for o in scene.objects
        if o.shape == np_.shape and (np_.color is None or o.color == np_.color) and (np_.size in (None, o.size))
    )


def phrase_text(np_: NounPhrase, rng: random.Random, *, numerals: bool = False, one: bool = True) -> str:
    """Render a noun phrase with synonyms: `[count] [size] [colour] shape(s)`. `one`: a count of 1
    may read "one" (a reader takes it as exactly one), else only "a"/"an"."""
    words: list[str] = []
    if np_.size:
        words.append(rng.choice(lx.SIZE_SYNONYMS[np_.size]))
    if np_.color:
        words.append(rng.choice(lx.COLOR_SYNONYMS[np_.color]))
    noun = rng.choice(lx.SHAPE_SYNONYMS[np_.shape]) if np_.shape else rng.choice(lx.GENERIC_NOUNS)
    is_plural = np_.count is not None and np_.count > 1
    words.append(lx.plural(noun) if is_plural else noun)
    if np_.count is not None:
        if np_.count > 1:
            count = str(np_.count) if numerals else rng.choice(lx.COUNT_WORDS[np_.count])
        else:
            count = rng.choice(lx.COUNT_WORDS[1] if one else ("a",))
            if count == "a" and words[0][0] in "aeiou":
                count = "an"
        words.insert(0, count)
    return " ".join(words)


def _join(parts: list[str], rng: random.Random) -> str:
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2 and rng.random() < 0.2:
        return f"{parts[0]} with {parts[1]}"
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def _groups(scene: Scene) -> list[list[SceneObject]]:
    groups: dict[tuple[str, str], list[SceneObject]] = {}
    for o in scene.objects:
        groups.setdefault((o.color, o.shape), []).append(o)
    return list(groups.values())


def _relation_pair(scene: Scene, rng: random.Random) -> tuple[SceneObject, str, SceneObject] | None:
    pairs = [
        (a, b) for a in scene.objects for b in scene.objects if a is not b and (a.color, a.shape) != (b.color, b.shape)
    ]
    rng.shuffle(pairs)
    for a, b in pairs:
        rels = true_relations(a, b)
        if rels:
            return a, rng.choice(rels), b
    return None


_HUMAN_INTROS = ("", "", "", "an image of ", "a drawing of ", "a photo showing ", "a view of ", "a graphic with ")


def human_caption(scene: Scene, rng: random.Random) -> str:
    """One COCO-style caption: fluent, partial, and everything it says is true of the scene."""
    groups = _groups(scene)
    rng.shuffle(groups)
    if len(groups) >= 3 and rng.random() < 0.3:
        groups = groups[:-1]  # humans leave things out
    phrases = []
    shapes = Counter(g[0].shape for g in groups)
    for g in groups:
        # a colour is left out only where no other named group has the shape: "four triangles and two
        # pink triangles" reads as six
        drop = rng.random() <= 0.08 and shapes[g[0].shape] == 1
        np_ = NounPhrase(shape=g[0].shape, color=None if drop else g[0].color)
        if len({o.size for o in g}) == 1 and rng.random() < 0.5:
            np_.size = g[0].size
        np_.count = count_matching(scene, np_)
        phrases.append(phrase_text(np_, rng))
    style = rng.random()
    pair = _relation_pair(scene, rng) if style < 0.4 else None
    if pair is not None:
        a, rel, b = pair
        na = NounPhrase(a.shape, a.color, a.size if rng.random() < 0.4 else None, 1)
        nb = NounPhrase(b.shape, b.color, b.size if rng.random() < 0.4 else None, 1)
        # "one" only where exactly one object fits the phrase: it is a count a reader holds to
        pa = phrase_text(na, rng, one=count_matching(scene, na) == 1)
        pb = phrase_text(nb, rng, one=count_matching(scene, nb) == 1)
        text = f"{pa} {rng.choice(lx.RELATION_PHRASES[rel])} {pb}"
    elif style < 0.6 and len(scene.objects) >= 2:
        total = rng.choice(lx.COUNT_WORDS[len(scene.objects)])
        text = f"{total} {rng.choice(('shapes', 'objects'))}: {_join(phrases, rng)}"
    elif style < 0.75:
        verb = "is" if len(phrases) == 1 and phrases[0].split()[0] in ("a", "an", "one") else "are"
        text = f"there {verb} {_join(phrases, rng)}"
    else:
        text = rng.choice(_HUMAN_INTROS) + _join(phrases, rng)
    if rng.random() < 0.3:
        text += f" on a {scene.background} background"
    return text


def human_captions(scene: Scene, rng: random.Random, n: int) -> list[str]:
    """`n` distinct human captions when the scene allows it (a handful of tries otherwise)."""
    out: list[str] = []
    for _ in range(20 * n):
        c = human_caption(scene, rng)
        if c not in out:
            out.append(c)
        if len(out) == n:
            break
    while len(out) < n:
        out.append(human_caption(scene, rng))
    return out


def terse_mentions(scene: Scene, rng: random.Random) -> Mentions:
    """What a web alt-text mentions: 1-2 colour+shape phrases, sometimes a count or relation."""
    m = Mentions()
    pair = _relation_pair(scene, rng) if rng.random() < 0.25 else None
    if pair is not None:
        a, rel, b = pair
        m.phrases = [NounPhrase(a.shape, a.color), NounPhrase(b.shape, b.color)]
        m.relations = [(0, rel, 1)]
        return m
    groups = _groups(scene)
    rng.shuffle(groups)
    for g in groups[: rng.choice((1, 1, 2))]:
        np_ = NounPhrase(g[0].shape, g[0].color)
        if len({o.size for o in g}) == 1 and rng.random() < 0.2:
            np_.size = g[0].size
        if len(g) > 1:
            np_.count = count_matching(scene, np_)
        m.phrases.append(np_)
    return m


_WEB_SUFFIXES = ("", "", "", "", " icon", " clipart", " vector", " illustration", " graphic")


def terse_text(m: Mentions, rng: random.Random) -> str:
    """Web alt-text style: no articles, odd separators and casing."""
    parts = [phrase_text(p, rng, numerals=rng.random() < 0.5) for p in m.phrases]
    if m.relations:
        _, rel, _ = m.relations[0]
        text = f"{parts[0]} {rng.choice(lx.RELATION_PHRASES[rel])} {parts[1]}"
    else:
        text = rng.choice((" and ", ", ", " | ", " - ")).join(parts)
    text += rng.choice(_WEB_SUFFIXES)
    style = rng.random()
    if style < 0.25:
        text = text.title()
    elif style < 0.3:
        text = text.upper()
    return text
