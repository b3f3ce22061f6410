"""The world's scenes and their images: which (colour, shape) combinations are held out of the
clean splits, scene sampling, drawing and jpeg encoding.

Everything derives from (seed, split, index, purpose) through `rng_for` (a string-seeded
`random.Random`), so any scene or image can be regenerated alone.
"""

from __future__ import annotations

import functools
import io
import random
from collections import Counter

import numpy as np
from PIL import Image, ImageDraw

from blip_core.config.data import WorldConfig
from blip_core.data.world import lexicon as lx
from blip_core.data.world.scene import GRID, Scene, SceneObject

CLEAN_SPLITS = ("coco_train", "val", "test", "objects")
"""Splits without held-out (colour, shape) combinations: `novel` stays zero-shot for every
supervised start (the `objects` labels included), as for the clean human captions."""


def rng_for(cfg: WorldConfig, split: str, index: int, purpose: str) -> random.Random:
    """The generator of one (split, index, purpose): independent of every other draw."""
    return random.Random(f"{cfg.seed}/{split}/{index}/{purpose}")


# ------------------------------------------------------------------------------------------------
# which (colour, shape) combinations are held out of the clean splits


def held_out_combos(cfg: WorldConfig) -> list[tuple[str, str]]:
    """(colour, shape) pairs absent from coco_train/val/test; every colour and shape stays seen."""
    return list(_held_out_combos(cfg.seed, cfg.novel_fraction))


@functools.lru_cache(maxsize=16)
def _held_out_combos(seed: int, novel_fraction: float) -> tuple[tuple[str, str], ...]:
    rng = random.Random(f"{seed}/novel-combos")
    combos = [(c, s) for c in lx.COLORS for s in lx.SHAPES]
    rng.shuffle(combos)
    target = max(1, round(novel_fraction * len(combos)))
    held: list[tuple[str, str]] = []
    per_color: Counter[str] = Counter()
    per_shape: Counter[str] = Counter()
    for c, s in combos:
        if len(held) == target:
            break
        if per_color[c] >= 2 or per_shape[s] >= 2:  # spread over colours and shapes
            continue
        held.append((c, s))
        per_color[c] += 1
        per_shape[s] += 1
    return tuple(sorted(held))


def seen_combos(cfg: WorldConfig) -> list[tuple[str, str]]:
    held = set(held_out_combos(cfg))
    return [(c, s) for c in lx.COLORS for s in lx.SHAPES if (c, s) not in held]


# ------------------------------------------------------------------------------------------------
# scenes


def sample_scene(cfg: WorldConfig, split: str, index: int) -> Scene:
    """The scene of one sample; cheap, so other samples can regenerate it."""
    rng = rng_for(cfg, split, index, "scene")
    held = held_out_combos(cfg)
    allowed = seen_combos(cfg) if split in CLEAN_SPLITS else [(c, s) for c in lx.COLORS for s in lx.SHAPES]
    num_objects = rng.choices((1, 2, 3, 4), weights=(0.3, 0.35, 0.2, 0.15))[0]
    if split == "novel":
        num_objects = max(num_objects, 1)
    cells = rng.sample(range(GRID * GRID), num_objects)
    force_novel = split == "novel" or (split == "web" and rng.random() < cfg.web_novel_rate)
    objects: list[SceneObject] = []
    for i, cell in enumerate(cells):
        if i == 0 and force_novel:
            color, shape = rng.choice(held)
        elif objects and rng.random() < 0.25:  # repeat a combination so captions can count
            color, shape = rng.choice(objects).color, rng.choice(objects).shape
            if split in CLEAN_SPLITS and (color, shape) in held:
                color, shape = rng.choice(allowed)
        else:
            color, shape = rng.choice(allowed)
        objects.append(SceneObject(shape, color, rng.choice(lx.SIZES), cell // GRID, cell % GRID))
    rng.shuffle(objects)
    return Scene(objects=objects, background=rng.choice(lx.BACKGROUNDS), tone=rng.randrange(len(lx.BACKGROUND_TONES)))


# ------------------------------------------------------------------------------------------------
# rendering


def _jitter(rgb: tuple[int, int, int], rng: random.Random, amount: int) -> tuple[int, int, int]:
    return tuple(min(255, max(0, v + rng.randint(-amount, amount))) for v in rgb)  # type: ignore[return-value]


@functools.lru_cache(maxsize=4)
def _grid(side: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    return yy, xx


def _background(scene: Scene, rng: random.Random, side: int) -> Image.Image:
    tone = np.array(_jitter(lx.BACKGROUND_TONES[scene.tone], rng, 10), dtype=np.float32)
    yy, xx = _grid(side)
    period = rng.choice((8, 12, 16)) * side / 128
    kind = scene.background
    if kind == "plain":
        shade = np.zeros((side, side), np.float32)
    elif kind == "gradient":
        axis = yy if rng.random() < 0.5 else xx
        shade = (axis / side - 0.5) * rng.choice((-60, 60))
    elif kind == "striped":
        axis = yy if rng.random() < 0.5 else xx
        shade = np.where((axis // period) % 2 == 0, 22.0, -22.0)
    elif kind == "checkered":
        shade = np.where(((yy // period) + (xx // period)) % 2 == 0, 22.0, -22.0)
    elif kind == "dotted":
        cy, cx = (yy % period) - period / 2, (xx % period) - period / 2
        shade = np.where(cy**2 + cx**2 < (period / 4) ** 2, 40.0, 0.0)
    elif kind == "noisy":
        shade = np.random.default_rng(rng.getrandbits(32)).normal(0, 18, (side, side)).astype(np.float32)
    else:
        raise ValueError(f"unknown background {kind!r}")
    arr = np.clip(tone[None, None, :] + shade[..., None], 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def _regular_polygon(cx: float, cy: float, r: float, n: int, rot: float) -> list[tuple[float, float]]:
    ang = np.deg2rad(rot) + np.arange(n) * 2 * np.pi / n - np.pi / 2
    return list(zip((cx + r * np.cos(ang)).tolist(), (cy + r * np.sin(ang)).tolist()))


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, rot: float, fill) -> None:
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "ring":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=fill, width=max(2, int(r * 0.38)))
    elif shape == "square":
        draw.polygon(_regular_polygon(cx, cy, r * 1.25, 4, 45 + rot), fill=fill)
    elif shape == "diamond":
        draw.polygon([(cx, cy - r * 1.1), (cx + r * 0.7, cy), (cx, cy + r * 1.1), (cx - r * 0.7, cy)], fill=fill)
    elif shape == "triangle":
        draw.polygon(_regular_polygon(cx, cy + r * 0.15, r * 1.2, 3, rot), fill=fill)
    elif shape == "hexagon":
        draw.polygon(_regular_polygon(cx, cy, r * 1.05, 6, 30 + rot), fill=fill)
    elif shape == "star":
        outer = _regular_polygon(cx, cy, r * 1.2, 5, rot)
        inner = _regular_polygon(cx, cy, r * 0.5, 5, rot + 36)
        draw.polygon([p for pair in zip(outer, inner) for p in pair], fill=fill)
    elif shape == "cross":
        t = r * 0.36
        draw.rectangle([cx - r, cy - t, cx + r, cy + t], fill=fill)
        draw.rectangle([cx - t, cy - r, cx + t, cy + r], fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def render_scene(scene: Scene, rng: random.Random, image_size: int) -> Image.Image:
    """Draw at 2x and downsample (anti-aliasing), with jittered colours, positions and rotations."""
    side = image_size * 2
    img = _background(scene, rng, side)
    draw = ImageDraw.Draw(img)
    cell = side / GRID
    for o in scene.objects:
        r = cell * (0.40 if o.size == "large" else 0.22)
        cx = (o.col + 0.5 + rng.uniform(-0.08, 0.08)) * cell
        cy = (o.row + 0.5 + rng.uniform(-0.08, 0.08)) * cell
        _draw_shape(draw, o.shape, cx, cy, r, rng.uniform(-10, 10), _jitter(lx.COLORS[o.color], rng, 14))
    return img.resize((image_size, image_size), Image.Resampling.LANCZOS)


def encode_jpeg(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
