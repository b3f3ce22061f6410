"""Downstream-task items of the embedded world (VQA, NLVR2, text-video), with exact answers, and
independent checkers that say whether an item is true of its scene(s).

The BLIP paper transfers the pre-trained model to VQA, NLVR2 and (zero-shot) video-language tasks;
the world builds small analogues of each from its own scenes, so that every answer is known:

- VQA (`vqa_train` on coco_train images only, `vqa_test`, `vqa_novel`): questions about colour,
  shape, count, relation, size, background and yes/no existence; each question has exactly one
  answer in its scene (a referent that is absent or ambiguous is never asked about);
- NLVR2 (`nlvr_train`, `nlvr_test`, `nlvr_novel`): a statement about a pair of images and its
  truth, labels ~50/50; a false statement talks about things in the pair (plausible, not random);
- video (`video_test`, `video_novel`): a clip of `video_frames` frames drawn from a start scene
  and one event (an object moves, appears, disappears or changes colour) with 2-3 captions;
  `video_novel` clips start from `novel` scenes, so each holds a held-out (colour, shape) combo.

Everything derives from (seed, split, index, purpose) through `world.rng_for`, like the image splits.

The checkers (`vqa_answer`, `nlvr_truth`, `video_caption_true`) parse the TEXT of an item with the
shared lexicon and compute the truth from the scene(s); they share no code with the generators
beyond the lexicon and `relation_holds`, so a generator bug shows up as a failed check.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from random import Random
from typing import Any

from blip_core.config.data import WorldConfig
from blip_core.data.world import lexicon as lx
from blip_core.data.world.grounding import Scene, SceneObject, relation_holds, tokenize
from blip_core.data.task_data import TaskItem, write_task_items
from blip_core.data.world.render import (
    CLEAN_SPLITS,
    GRID,
    rng_for,
    encode_jpeg,
    render_scene,
    sample_scene,
    seen_combos,
)

logger = logging.getLogger(__name__)

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
VQA_TYPES = ("color", "shape", "count", "relation", "yesno", "size", "background")
NLVR_TYPES = ("more", "both", "only_one", "exact_count", "neither", "total", "relation")
VIDEO_EVENTS = ("move", "appear", "disappear", "change")
NUMBER_WORDS = {0: "zero", 1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight"}
"""Count answers are words, as in VQA v2."""

Combo = tuple[str, str]  # (colour, shape)


# ------------------------------------------------------------------------------------------------
# shared helpers of the generators (text rendering, images)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _np(
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


def _rel(rng: Random, relation: str) -> str:
    return rng.choice(lx.RELATION_PHRASES[relation])


def _allowed(cfg: WorldConfig, image_split: str) -> list[Combo]:
    """Combos a split's text may name: clean splits never name a held-out combination."""
    if image_split in CLEAN_SPLITS:
        return seen_combos(cfg)
    return [(c, s) for c in lx.COLORS for s in lx.SHAPES]


class _Images:
    """The jpeg and scene of each image of a split, rendered once (the bytes `make_sample` writes)."""

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
# VQA


def _vqa_candidates(kind: str, scene: Scene, rng: Random, allowed: list[Combo]) -> list[tuple[str, str]]:
    """(question, answer) pairs of one type whose answer is unique in `scene`."""
    objs = scene.objects
    combos = Counter((o.color, o.shape) for o in objs)
    shapes = Counter(o.shape for o in objs)
    colors = Counter(o.color for o in objs)
    out: list[tuple[str, str]] = []
    if kind == "color":
        for o in objs:
            if shapes[o.shape] == 1:
                out.append((f"what color is the {_np(rng, o.shape)}?", o.color))
            elif sum(p.shape == o.shape and p.size == o.size for p in objs) == 1:
                out.append((f"what color is the {_np(rng, o.shape, size=o.size)}?", o.color))
    elif kind == "shape":
        for o in objs:
            if colors[o.color] == 1:
                out.append((f"what shape is the {_np(rng, None, o.color)}?", o.shape))
            elif sum(p.color == o.color and p.size == o.size for p in objs) == 1:
                out.append((f"what shape is the {_np(rng, None, o.color, o.size)}?", o.shape))
    elif kind == "size":
        for o in objs:
            if combos[(o.color, o.shape)] == 1:
                out.append((f"what size is the {_np(rng, o.shape, o.color)}?", o.size))
    elif kind == "count":
        out.append((f"how many {_np(rng, None, plural=True)} are there?", NUMBER_WORDS[len(objs)]))
        for s, n in shapes.items():
            out.append((f"how many {_np(rng, s, plural=True)} are there?", NUMBER_WORDS[n]))
        for (c, s), n in combos.items():
            out.append((f"how many {_np(rng, s, c, plural=True)} are there?", NUMBER_WORDS[n]))
        for c, n in colors.items():
            out.append((f"how many {_np(rng, None, c, plural=True)} are there?", NUMBER_WORDS[n]))
    elif kind == "relation":
        for ref in objs:
            if combos[(ref.color, ref.shape)] != 1:
                continue
            for rel in lx.RELATIONS:
                hits = [o for o in objs if o is not ref and relation_holds(o, ref, rel)]
                if len(hits) == 1:
                    q = f"what is {_rel(rng, rel)} the {_np(rng, ref.shape, ref.color)}?"
                    out.append((q, f"{hits[0].color} {hits[0].shape}"))
    elif kind == "yesno":
        if rng.random() < 0.5:
            out = [(f"is there {_np(rng, s, c, article='a')}?", "yes") for (c, s) in combos]
        else:
            absent = [cs for cs in allowed if cs not in combos]
            # plausible: the colour or the shape is in the scene, only the binding is wrong
            near = [(c, s) for c, s in absent if c in colors or s in shapes]
            out = [(f"is there {_np(rng, s, c, article='a')}?", "no") for c, s in (near or absent)]
    elif kind == "background":
        q = rng.choice(("what is the background pattern?", "what kind of background is it?"))
        out.append((q, scene.background))
    else:
        raise ValueError(f"unknown VQA question type {kind!r}")
    return out


def vqa_questions(scene: Scene, rng: Random, n: int, allowed: list[Combo]) -> list[dict[str, str]]:
    """`n` distinct questions about `scene` ({question, answer, type}); types balanced as far as the
    scene allows (a shuffled round over `VQA_TYPES`, skipping types with no valid question)."""
    out: list[dict[str, str]] = []
    asked: set[str] = set()
    exhausted: set[str] = set()
    while len(out) < n and len(exhausted) < len(VQA_TYPES):
        order = list(VQA_TYPES)
        rng.shuffle(order)
        for kind in order:
            if len(out) == n:
                break
            if kind in exhausted:
                continue
            cands = [c for c in _vqa_candidates(kind, scene, rng, allowed) if c[0] not in asked]
            if not cands:
                exhausted.add(kind)
                continue
            question, answer = rng.choice(cands)
            asked.add(question)
            out.append({"question": question, "answer": answer, "type": kind})
    return out


def vqa_items(cfg: WorldConfig, split: str) -> Iterator[TaskItem]:
    """`cfg.vqa_per_image` questions on every image of the split's image split."""
    image_split = TASK_SPLITS[split][1]
    images = _Images(cfg, image_split)
    allowed = _allowed(cfg, image_split)
    for i in range(cfg.split_sizes()[image_split]):
        jpeg, scene = images.get(i)
        for q, qa in enumerate(vqa_questions(scene, rng_for(cfg, split, i, "questions"), cfg.vqa_per_image, allowed)):
            fields = {"image_id": images.key(i), "question": qa["question"], "answers": [qa["answer"]],
                      "answer": qa["answer"], "type": qa["type"], "scene": scene.to_dict()}  # fmt: skip
            yield TaskItem(f"{split}-{i:07d}-q{q}", [jpeg], fields)


# ------------------------------------------------------------------------------------------------
# NLVR2


NlvrNp = tuple[str | None, str | None]  # (colour or None, shape or None): "red circles", "circles", "objects"


def _nlvr_text(claim: tuple, rng: Random) -> str:
    """The words of a structured NLVR claim (see `_nlvr_claims`)."""
    kind, other = claim[0], {"left": "right", "right": "left"}

    def sg(np_: NlvrNp, article: str = "a") -> str:
        return _np(rng, np_[1], np_[0], article=article)

    def pl(np_: NlvrNp) -> str:
        return _np(rng, np_[1], np_[0], plural=True)

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
            return f"in the {side} image, {sg(a)} is {_rel(rng, rel)} {sg(b)}"
        return f"the {side} image shows {sg(a)} {_rel(rng, rel)} {sg(b)}"
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
    images = _Images(cfg, image_split)
    allowed = _allowed(cfg, image_split)
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


# ------------------------------------------------------------------------------------------------
# video


_DIRECTION_TEXT = {(0, 1): "to the right", (0, -1): "to the left", (1, 0): "down", (-1, 0): "up"}
_SIDE_TEXT = {
    (0, 1): ("left", "right"),
    (0, -1): ("right", "left"),
    (1, 0): ("top", "bottom"),
    (-1, 0): ("bottom", "top"),
}


def _copy(scene: Scene, objects: list[SceneObject] | None = None) -> Scene:
    objs = scene.objects if objects is None else objects
    return Scene([SceneObject(o.shape, o.color, o.size, o.row, o.col) for o in objs], scene.background, scene.tone)


def _event(scene: Scene, kind: str, rng: Random, allowed: list[Combo], n: int) -> dict[str, Any] | None:
    """Frames and caption material of one event on `scene`, or None when the scene cannot have it.
    The changed object is last in every frame, so the same render seed keeps the others' jitter."""
    objs = scene.objects
    combos = Counter((o.color, o.shape) for o in objs)
    unique = [o for o in objs if combos[(o.color, o.shape)] == 1]
    occupied = {(o.row, o.col) for o in objs}
    if kind == "move":
        moves = []
        for o in unique:
            for dr, dc in _DIRECTION_TEXT:
                path = []
                r, c = o.row + dr, o.col + dc
                while 0 <= r < GRID and 0 <= c < GRID and (r, c) not in occupied:
                    path.append((r, c))
                    moves.append((o, (dr, dc), list(path)))
                    r, c = r + dr, c + dc
        if not moves:
            return None
        o, step, path = rng.choice(moves)
        steps = sorted(rng.sample(range(1, n), min(len(path), n - 1)))
        shown = path[len(path) - len(steps) :]  # too few frames to show every cell: jump over the first
        others = [p for p in objs if p is not o]
        frames = []
        for f in range(n):
            k = sum(s <= f for s in steps)
            row, col = (o.row, o.col) if k == 0 else shown[k - 1]
            frames.append(_copy(scene, [*others, SceneObject(o.shape, o.color, o.size, row, col)]))
        return {"frames": frames, "subject": o, "step": step, "distance": len(path)}
    t = rng.randrange(1, n)
    if kind == "appear":
        free = [(r, c) for r in range(GRID) for c in range(GRID) if (r, c) not in occupied]
        new = [cs for cs in allowed if cs not in combos]
        if not free or not new:
            return None
        (color, shape), (row, col) = rng.choice(new), rng.choice(free)
        o = SceneObject(shape, color, rng.choice(lx.SIZES), row, col)
        before, after = _copy(scene), _copy(scene, [*objs, o])
        return {"frames": [before] * t + [after] * (n - t), "subject": o}
    if kind == "disappear":
        if not unique:
            return None
        o = rng.choice(unique)
        others = [p for p in objs if p is not o]
        before, after = _copy(scene, [*others, o]), _copy(scene, others)
        return {"frames": [before] * t + [after] * (n - t), "subject": o}
    if kind == "change":
        changes = [(o, c) for o in unique for c in lx.COLORS if (c, o.shape) in allowed and (c, o.shape) not in combos]
        if not changes:
            return None
        o, color = rng.choice(changes)
        others = [p for p in objs if p is not o]
        before = _copy(scene, [*others, o])
        after = _copy(scene, [*others, SceneObject(o.shape, color, o.size, o.row, o.col)])
        return {"frames": [before] * t + [after] * (n - t), "subject": o, "color": color}
    raise ValueError(f"unknown video event {kind!r}")


def _video_captions(kind: str, ev: dict[str, Any], rng: Random) -> list[str]:
    """2-3 distinct true captions: a plain one, then mostly ones that also mention other objects."""
    o: SceneObject = ev["subject"]
    end = ev["frames"][-1].objects[-1] if kind in ("move", "appear") else o  # where the subject ends up
    still = [p for p in ev["frames"][0].objects if (p.color, p.shape) != (o.color, o.shape)]

    def clause(what: str, p: SceneObject | None = None, rel: str = "") -> str:
        article = {"appear": "a", "change": "the"}.get(kind) or rng.choice(("a", "the"))
        subject = _np(rng, o.shape, o.color, o.size if rng.random() < 0.3 else None, article=article)
        other = _np(rng, p.shape, p.color, article="a") if p is not None else ""
        if kind == "move" and what == "across":
            start, stop = _SIDE_TEXT[ev["step"]]
            return f"{subject} moves from the {start} to the {stop}"
        if kind == "move":
            ends = f" and ends up {_rel(rng, rel)} {other}" if what == "relation" else ""
            return f"{subject} moves {_DIRECTION_TEXT[ev['step']]}{ends}"
        if kind == "appear":
            return f"{subject} appears" + (f" {_rel(rng, rel)} {other}" if what == "relation" else "")
        if kind == "disappear":
            return f"{subject} disappears" + (f", leaving {other}" if what == "leaving" else "")
        color = rng.choice(lx.COLOR_SYNONYMS[ev["color"]])
        return f"{subject} {rng.choice(('turns', 'changes color to'))} {color}"

    plain = [("event", None, "")] + ([("across", None, "")] if kind == "move" and ev["distance"] == 2 else [])
    context = []
    if kind in ("move", "appear"):
        context = [("relation", p, rel) for p in still for rel in lx.RELATIONS if relation_holds(end, p, rel)]
    elif kind == "disappear":
        context = [("leaving", p, "") for p in still]

    def with_context() -> str:
        if still and (not context or rng.random() < 0.5):  # the other objects stay where they are
            p, stays = rng.choice(still), rng.choice(("still", "in place"))
            return (
                f"{clause(*rng.choice(plain + context))}, while {_np(rng, p.shape, p.color, article='a')} stays {stays}"
            )
        return clause(*rng.choice(context))

    want = rng.choice((2, 3))
    out = [clause(*rng.choice(plain))]
    for _ in range(30):
        if len(out) == want:
            break
        c = with_context() if (context or still) and rng.random() < 0.8 else clause(*rng.choice(plain))
        if c not in out:
            out.append(c)
    return out


_SPARE_SCENES = 10**9
"""Scene indices from here on are never images of a split: the spare start scenes of video clips."""


def video_clip(cfg: WorldConfig, split: str, index: int) -> dict[str, Any]:
    """Clip `index` of a video split: {"scenes": frame scenes, "event": type, "captions": [...]}.

    The event type is drawn uniformly; the start scene is scene `index` of the image split (`test`
    or `novel`), or, when that scene cannot have the event (no object whose (colour, shape) is
    unique in it), another scene drawn from the same split's distribution."""
    image_split = TASK_SPLITS[split][1]
    rng = rng_for(cfg, split, index, "event")
    kind = rng.choice(VIDEO_EVENTS)
    allowed = _allowed(cfg, image_split)
    for attempt in range(100):
        scene = sample_scene(cfg, image_split, index if attempt == 0 else _SPARE_SCENES + rng.randrange(10**6))
        ev = _event(scene, kind, rng, allowed, cfg.video_frames)
        if ev is not None:
            return {"scenes": ev["frames"], "event": kind, "captions": _video_captions(kind, ev, rng)}
    raise RuntimeError(f"no scene for a {kind} event in {split}-{index}")  # unreachable in practice


def video_items(cfg: WorldConfig, split: str) -> Iterator[TaskItem]:
    """`num_<split>` clips; every frame is rendered with the clip's one render seed, so the
    background and the unchanged objects look the same in every frame."""
    for i in range(cfg.task_split_sizes()[split]):
        clip = video_clip(cfg, split, i)
        frames: list[bytes] = []
        for k, sc in enumerate(clip["scenes"]):
            if k and sc.to_dict() == clip["scenes"][k - 1].to_dict():  # same state, same seed: same image
                frames.append(frames[-1])
                continue
            img = render_scene(sc, rng_for(cfg, split, i, "render"), cfg.image_size)
            frames.append(encode_jpeg(img, cfg.jpeg_quality))
        fields = {"captions": clip["captions"], "event": clip["event"], "scenes": [s.to_dict() for s in clip["scenes"]]}
        yield TaskItem(f"{split}-{i:07d}", frames, fields)


# ------------------------------------------------------------------------------------------------
# writing


def task_items(cfg: WorldConfig, split: str) -> Iterator[TaskItem]:
    """The items of one task split (see `TASK_SPLITS`)."""
    task = TASK_SPLITS[split][0]
    return {"vqa": vqa_items, "nlvr": nlvr_items, "video": video_items}[task](cfg, split)


def write_task_split(cfg: WorldConfig, out_dir: str | Path, split: str) -> dict[str, Any]:
    """Write one task split to `out_dir/<split>/` (replacing it); returns its stats."""
    task, image_split = TASK_SPLITS[split]
    folder = Path(out_dir) / split
    if folder.exists():
        shutil.rmtree(folder)
    items = list(task_items(cfg, split))
    counts = Counter(it.fields["type" if task != "video" else "event"] for it in items)
    extra: dict[str, Any] = {"image_split": image_split, "type_counts": dict(sorted(counts.items()))}
    if task == "nlvr":
        extra["label_counts"] = {
            str(k).lower(): v for k, v in sorted(Counter(it.fields["label"] for it in items).items())
        }
    if task == "vqa":
        extra["answer_counts"] = dict(sorted(Counter(it.fields["answer"] for it in items if
                                                     it.fields["type"] == "yesno").items()))  # fmt: skip
    if not items:
        logger.warning("%s: no items (its image split %s is too small)", split, image_split)
        return {"split": split, "task": task, "items": 0, "num_shards": 0, "bytes": 0}
    stats = write_task_items(folder, items, task=task, split=split, shard_size=cfg.shard_size, extra_stats=extra)
    size = sum((folder / s).stat().st_size for s in stats["shards"])
    return {"split": split, "task": task, "items": stats["items"], "num_shards": len(stats["shards"]), "bytes": size}


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


def _matching(scene: Scene, np_: tuple[str | None, str | None, str | None, bool]) -> list[SceneObject]:
    shape, color, size, _ = np_
    return [
        o
        for o in scene.objects
        if (shape is None or o.shape == shape) and (color is None or o.color == color) and size in (None, o.size)
    ]


def _np_of(text: str) -> tuple[str | None, str | None, str | None, bool]:
    return _parse_np(text.split())


def _relation_of(phrase: str) -> str:
    for words, rel in lx.PHRASE_TO_RELATION:
        if " ".join(words) == phrase:
            return rel
    raise ValueError(f"not a relation: {phrase!r}")


_REL = "|".join(re.escape(" ".join(w)) for w, _ in lx.PHRASE_TO_RELATION)  # longest first
_ART = r"(?:a|an|the)"


def _norm(text: str) -> str:
    return " ".join(tokenize(text))


def vqa_answer(question: str, scene: Scene) -> str | None:
    """The exact answer of `question` in `scene`; None when the question is ill-posed there (its
    referent is absent or ambiguous). Raises ValueError for text outside the generated templates."""
    q = _norm(question)
    if q in ("what is the background pattern", "what kind of background is it"):
        return scene.background
    if m := re.fullmatch(r"what colou?r is the (.+)", q):
        hits = _matching(scene, _np_of(m[1]))
        return hits[0].color if len(hits) == 1 else None
    if m := re.fullmatch(r"what shape is the (.+)", q):
        hits = _matching(scene, _np_of(m[1]))
        return hits[0].shape if len(hits) == 1 else None
    if m := re.fullmatch(r"what size is the (.+)", q):
        hits = _matching(scene, _np_of(m[1]))
        return hits[0].size if len(hits) == 1 else None
    if m := re.fullmatch(r"how many (.+) are there", q):
        n = len(_matching(scene, _np_of(m[1])))
        return NUMBER_WORDS.get(n, str(n))
    if m := re.fullmatch(r"is there (?:a|an) (.+)", q):
        return "yes" if _matching(scene, _np_of(m[1])) else "no"
    if m := re.fullmatch(rf"what is ({_REL}) the (.+)", q):
        rel, refs = _relation_of(m[1]), _matching(scene, _np_of(m[2]))
        if len(refs) != 1:
            return None
        hits = [o for o in scene.objects if o is not refs[0] and relation_holds(o, refs[0], rel)]
        return f"{hits[0].color} {hits[0].shape}" if len(hits) == 1 else None
    raise ValueError(f"unparseable VQA question {question!r}")


def nlvr_truth(statement: str, left: Scene, right: Scene) -> bool | None:
    """The truth of an NLVR2-style statement about (left, right). Raises ValueError for text
    outside the generated templates."""
    s = _norm(statement)
    scenes = {"left": left, "right": right}

    def count(side: str, np_text: str) -> int:
        return len(_matching(scenes[side], _np_of(np_text)))

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
    if m := (re.fullmatch(rf"in the (left|right) image (?:a|an) (.+?) is ({_REL}) (?:a|an) (.+)", s)
             or re.fullmatch(rf"the (left|right) image shows (?:a|an) (.+?) ({_REL}) (?:a|an) (.+)", s)):  # fmt: skip
        sc, rel = scenes[m[1]], _relation_of(m[3])
        subjects, objects = _matching(sc, _np_of(m[2])), _matching(sc, _np_of(m[4]))
        return any(a is not b and relation_holds(a, b, rel) for a in subjects for b in objects)
    raise ValueError(f"unparseable NLVR statement {statement!r}")


_DIRECTIONS = {"to the right": (0, 1), "to the left": (0, -1), "down": (1, 0), "up": (-1, 0)}
_SIDES = {"left": ("col", 0), "right": ("col", GRID - 1), "top": ("row", 0), "bottom": ("row", GRID - 1)}


def video_caption_true(caption: str, scenes: list[Scene]) -> bool | None:
    """Is `caption` true of the clip `scenes` (frames in order)? None when its subject is ambiguous
    (several matching objects where the caption says which one moves or changes). Raises
    ValueError for text outside the generated templates."""
    if len(scenes) < 2:
        raise ValueError("a clip needs at least two frames")
    c = _norm(caption)
    first, last = scenes[0], scenes[-1]
    if m := re.fullmatch(r"(.+) while (?:a|an|the) (.+) stays (?:still|in place)", c):
        np_ = _np_of(m[2])
        anchored = any(all(any((p.row, p.col) == (o.row, o.col) for p in _matching(sc, np_)) for sc in scenes)
                       for o in _matching(first, np_))  # fmt: skip
        main = video_caption_true(m[1], scenes)
        return None if main is None else (main and anchored)
    if m := re.fullmatch(
        rf"{_ART} (.+?) moves (to the right|to the left|up|down)(?: and ends up ({_REL}) (?:a|an) (.+))?", c
    ):
        np_ = _np_of(m[1])
        a, b = _matching(first, np_), _matching(last, np_)
        if not a or not b:
            return False
        if len(a) > 1 or len(b) > 1:
            return None
        dr, dc = _DIRECTIONS[m[2]]
        a, b = a[0], b[0]
        moved = (b.row - a.row) * dr > 0 if dr else (b.col - a.col) * dc > 0
        straight = b.col == a.col if dr else b.row == a.row
        ends = m[3] is None or any(
            p is not b and relation_holds(b, p, _relation_of(m[3])) for p in _matching(last, _np_of(m[4]))
        )
        return moved and straight and ends
    if m := re.fullmatch(rf"{_ART} (.+?) moves from the (left|right|top|bottom) to the (left|right|top|bottom)", c):
        (axis, start), (axis_b, end) = _SIDES[m[2]], _SIDES[m[3]]
        if axis != axis_b or start == end:
            raise ValueError(f"not a straight move across the grid: {caption!r}")
        np_ = _np_of(m[1])
        a, b = _matching(first, np_), _matching(last, np_)
        if not a or not b:
            return False
        if len(a) > 1 or len(b) > 1:
            return None
        other = "row" if axis == "col" else "col"
        a, b = a[0], b[0]
        return getattr(a, axis) == start and getattr(b, axis) == end and getattr(a, other) == getattr(b, other)
    if m := re.fullmatch(rf"{_ART} (.+?) appears(?: ({_REL}) (?:a|an) (.+))?", c):
        np_ = _np_of(m[1])
        if _matching(first, np_) or not _matching(last, np_):
            return False
        if m[2] is None:
            return True
        others = _matching(last, _np_of(m[3]))
        return any(relation_holds(a, p, _relation_of(m[2])) for a in _matching(last, np_) for p in others if p is not a)
    if m := re.fullmatch(rf"{_ART} (.+?) disappears(?: leaving (?:a|an) (.+))?", c):
        np_ = _np_of(m[1])
        if not _matching(first, np_) or _matching(last, np_):
            return False
        return m[2] is None or bool(_matching(last, _np_of(m[2])))
    if m := re.fullmatch(r"the (.+?) (?:turns|changes colou?r to) (\w+)", c):
        np_ = _np_of(m[1])
        if np_[1] is None or m[2] not in lx.WORD_TO_COLOR:
            raise ValueError(f"a colour change names both colours: {caption!r}")
        new = lx.WORD_TO_COLOR[m[2]]
        a = _matching(first, np_)
        if not a:
            return False
        if len(a) > 1:
            return None
        a = a[0]
        now = [o for o in last.objects if (o.row, o.col) == (a.row, a.col)]
        return bool(now) and now[0].shape == a.shape and now[0].color == new != a.color and not _matching(last, np_)
    raise ValueError(f"unparseable video caption {caption!r}")
