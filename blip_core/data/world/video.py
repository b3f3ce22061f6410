"""Text-video items of the embedded world: clips of one event with their captions, and the
independent checker `video_caption_true`.

A clip of `video_frames` frames is drawn from a start scene and one event (an object moves, appears,
disappears or changes colour) with 2-3 true captions; `video_test` clips start from `test` scenes,
`video_novel` ones from `novel` scenes, so each holds a held-out (colour, shape) combination.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from random import Random
from typing import Any

from blip_core.config.data import WorldConfig
from blip_core.data.task_data import TaskItem
from blip_core.data.world import lexicon as lx
from blip_core.data.world.items import (
    REL_RE,
    TASK_SPLITS,
    Combo,
    allowed_combos,
    matching,
    normalize,
    np_of,
    np_phrase,
    rel_phrase,
    relation_of,
)
from blip_core.data.world.render import GRID, encode_jpeg, render_scene, rng_for, sample_scene
from blip_core.data.world.scene import Scene, SceneObject, relation_holds

VIDEO_EVENTS = ("move", "appear", "disappear", "change")


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
        subject = np_phrase(rng, o.shape, o.color, o.size if rng.random() < 0.3 else None, article=article)
        other = np_phrase(rng, p.shape, p.color, article="a") if p is not None else ""
        if kind == "move" and what == "across":
            start, stop = _SIDE_TEXT[ev["step"]]
            return f"{subject} moves from the {start} to the {stop}"
        if kind == "move":
            ends = f" and ends up {rel_phrase(rng, rel)} {other}" if what == "relation" else ""
            return f"{subject} moves {_DIRECTION_TEXT[ev['step']]}{ends}"
        if kind == "appear":
            return f"{subject} appears" + (f" {rel_phrase(rng, rel)} {other}" if what == "relation" else "")
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
            main = clause(*rng.choice(plain + context))
            return f"{main}, while {np_phrase(rng, p.shape, p.color, article='a')} stays {stays}"
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
    allowed = allowed_combos(cfg, image_split)
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


_ART = r"(?:a|an|the)"
_DIRECTIONS = {"to the right": (0, 1), "to the left": (0, -1), "down": (1, 0), "up": (-1, 0)}
_SIDES = {"left": ("col", 0), "right": ("col", GRID - 1), "top": ("row", 0), "bottom": ("row", GRID - 1)}


def video_caption_true(caption: str, scenes: list[Scene]) -> bool | None:
    """Is `caption` true of the clip `scenes` (frames in order)? None when its subject is ambiguous
    (several matching objects where the caption says which one moves or changes). Raises
    ValueError for text outside the generated templates."""
    if len(scenes) < 2:
        raise ValueError("a clip needs at least two frames")
    c = normalize(caption)
    first, last = scenes[0], scenes[-1]
    if m := re.fullmatch(r"(.+) while (?:a|an|the) (.+) stays (?:still|in place)", c):
        np_ = np_of(m[2])
        anchored = any(all(any((p.row, p.col) == (o.row, o.col) for p in matching(sc, np_)) for sc in scenes)
                       for o in matching(first, np_))  # fmt: skip
        main = video_caption_true(m[1], scenes)
        return None if main is None else (main and anchored)
    if m := re.fullmatch(
        rf"{_ART} (.+?) moves (to the right|to the left|up|down)(?: and ends up ({REL_RE}) (?:a|an) (.+))?", c
    ):
        np_ = np_of(m[1])
        a, b = matching(first, np_), matching(last, np_)
        if not a or not b:
            return False
        if len(a) > 1 or len(b) > 1:
            return None
        dr, dc = _DIRECTIONS[m[2]]
        a, b = a[0], b[0]
        moved = (b.row - a.row) * dr > 0 if dr else (b.col - a.col) * dc > 0
        straight = b.col == a.col if dr else b.row == a.row
        ends = m[3] is None or any(
            p is not b and relation_holds(b, p, relation_of(m[3])) for p in matching(last, np_of(m[4]))
        )
        return moved and straight and ends
    if m := re.fullmatch(rf"{_ART} (.+?) moves from the (left|right|top|bottom) to the (left|right|top|bottom)", c):
        (axis, start), (axis_b, end) = _SIDES[m[2]], _SIDES[m[3]]
        if axis != axis_b or start == end:
            raise ValueError(f"not a straight move across the grid: {caption!r}")
        np_ = np_of(m[1])
        a, b = matching(first, np_), matching(last, np_)
        if not a or not b:
            return False
        if len(a) > 1 or len(b) > 1:
            return None
        other = "row" if axis == "col" else "col"
        a, b = a[0], b[0]
        return getattr(a, axis) == start and getattr(b, axis) == end and getattr(a, other) == getattr(b, other)
    if m := re.fullmatch(rf"{_ART} (.+?) appears(?: ({REL_RE}) (?:a|an) (.+))?", c):
        np_ = np_of(m[1])
        if matching(first, np_) or not matching(last, np_):
            return False
        if m[2] is None:
            return True
        others = matching(last, np_of(m[3]))
        return any(relation_holds(a, p, relation_of(m[2])) for a in matching(last, np_) for p in others if p is not a)
    if m := re.fullmatch(rf"{_ART} (.+?) disappears(?: leaving (?:a|an) (.+))?", c):
        np_ = np_of(m[1])
        if not matching(first, np_) or matching(last, np_):
            return False
        return m[2] is None or bool(matching(last, np_of(m[2])))
    if m := re.fullmatch(r"the (.+?) (?:turns|changes colou?r to) (\w+)", c):
        np_ = np_of(m[1])
        if np_[1] is None or m[2] not in lx.WORD_TO_COLOR:
            raise ValueError(f"a colour change names both colours: {caption!r}")
        new = lx.WORD_TO_COLOR[m[2]]
        a = matching(first, np_)
        if not a:
            return False
        if len(a) > 1:
            return None
        a = a[0]
        now = [o for o in last.objects if (o.row, o.col) == (a.row, a.col)]
        return bool(now) and now[0].shape == a.shape and now[0].color == new != a.color and not matching(last, np_)
    raise ValueError(f"unparseable video caption {caption!r}")
