"""The embedded image-caption world: a deterministic generator of images, human captions and noisy
web alt-text whose noise is known.

Why it exists: BLIP's CapFilt only means something with noisy web data to clean and clean human
captions to learn a captioner and filter from; no such data can be downloaded here. The world mirrors
the properties the paper relies on:

- `coco_train`: clean images with 5 human-style captions each (COCO-like);
- `web`: a pool several times larger with one alt-text each, ~40% of it noise of a labelled type
  (mismatched, attribute-corrupted, spam, uninformative), the rest clean-but-terse;
- `val` / `test`: Karpathy-style held-out clean splits with 5 captions each;
- `novel`: scenes with (colour, shape) combinations that never occur in the clean splits but do
  occur on the web (NoCaps-like), so they can only be learned from web data;
- `vqa_*`, `nlvr_*`, `video_*`: items of the paper's other downstream tasks (VQA, NLVR2,
  text-video) built from these scenes with exact answers; see `blip_core.data.world.tasks`;
- `objects`: label-only object recognition (ImageNet-like: an image and its class labels, no
  captions), from which `pretrain_vision` trains the vision tower that both BLIP pre-trainings
  start from, as BLIP starts its ViT from ImageNet (DeiT) weights. See `object_labels`.

Everything derives from (seed, split, index) through string-seeded `random.Random`, so any sample
can be regenerated alone (the mismatched noise uses this to copy another web image's alt-text) and
shards are byte-identical across runs and across numbers of worker processes.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import random
import shutil
import signal
from collections import Counter
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from blip_core.config.data import SPLITS, WorldConfig
from blip_core.data.world import lexicon as lx
from blip_core.data.world.grounding import Mentions, NounPhrase, Scene, SceneObject, ground_caption, true_relations
from blip_core.data.shards import ShardWriter, write_stats

logger = logging.getLogger(__name__)

GRID = 3  # objects sit on a GRID x GRID lattice of cells
CLEAN_SPLITS = ("coco_train", "val", "test", "objects")
"""Splits without held-out (colour, shape) combinations: `novel` stays zero-shot for every
supervised start (the `objects` labels included), as for the clean human captions."""
LABEL_GROUPS = {"shape": tuple(lx.SHAPES), "color": tuple(lx.COLORS)}
"""The `objects` split's class vocabulary: group -> class names (multi-label per group)."""


def rng_for(cfg: WorldConfig, split: str, index: int, purpose: str) -> random.Random:
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


# ------------------------------------------------------------------------------------------------
# captions


def _count_matching(scene: Scene, np_: NounPhrase) -> int:
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
        np_.count = _count_matching(scene, np_)
        phrases.append(phrase_text(np_, rng))
    style = rng.random()
    pair = _relation_pair(scene, rng) if style < 0.4 else None
    if pair is not None:
        a, rel, b = pair
        na = NounPhrase(a.shape, a.color, a.size if rng.random() < 0.4 else None, 1)
        nb = NounPhrase(b.shape, b.color, b.size if rng.random() < 0.4 else None, 1)
        # "one" only where exactly one object fits the phrase: it is a count a reader holds to
        pa = phrase_text(na, rng, one=_count_matching(scene, na) == 1)
        pb = phrase_text(nb, rng, one=_count_matching(scene, nb) == 1)
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
            np_.count = _count_matching(scene, np_)
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


def _corrupt(m: Mentions, scene: Scene, rng: random.Random) -> tuple[Mentions, str]:
    """Change one attribute (colour, shape, count or relation) to a value false of the scene."""
    fields = ["color", "shape", "count"] + (["relation"] if m.relations else [])
    field_ = rng.choice(fields)
    m = Mentions([NounPhrase(p.shape, p.color, p.size, p.count) for p in m.phrases], list(m.relations))
    p = rng.randrange(len(m.phrases))
    np_ = m.phrases[p]
    if field_ == "color":
        np_.color = rng.choice([c for c in lx.COLORS if c != np_.color])
    elif field_ == "shape":
        np_.shape = rng.choice([s for s in lx.SHAPES if s != np_.shape])
    elif field_ == "count":
        actual = _count_matching(scene, np_)
        np_.count = rng.choice([n for n in (2, 3, 4) if n != actual])
    else:
        a, rel, b = m.relations[0]
        m.relations = [(a, rng.choice([r for r in lx.RELATIONS if r != rel]), b)]
    return m, field_


def web_caption(cfg: WorldConfig, index: int, scene: Scene) -> tuple[str, str, str]:
    """The alt-text of web image `index`: (text, noise type, detail)."""
    rng = rng_for(cfg, "web", index, "caption")
    noise_type = assign_noise_type(cfg, index)
    if noise_type == "clean":
        return terse_text(terse_mentions(scene, rng), rng), "clean", ""
    if noise_type == "spam":
        template = rng.choice(lx.SPAM_TEMPLATES)
        text = template.format(
            n2=f"{rng.randrange(100):02d}",
            n4=f"{rng.randrange(10000):04d}",
            n5=f"{rng.randrange(100000):05d}",
            n6=f"{rng.randrange(1000000):06d}",
            site=rng.choice(lx.SPAM_SITES),
        )
        return text, "spam", template
    if noise_type == "uninformative":
        return rng.choice(lx.UNINFORMATIVE), "uninformative", ""
    if noise_type == "mismatched":
        for _ in range(20):
            j = (index + rng.randrange(1, max(2, cfg.num_web))) % max(1, cfg.num_web)
            other = sample_scene(cfg, "web", j)
            other_rng = rng_for(cfg, "web", j, "caption")
            text = terse_text(terse_mentions(other, other_rng), other_rng)
            if not ground_caption(text, scene).is_true:
                return text, "mismatched", f"web-{j:07d}"
    # corrupted (also the fallback if no false mismatched caption was found: never mislabel)
    for _ in range(50):
        m, field_ = _corrupt(terse_mentions(scene, rng), scene, rng)
        text = terse_text(m, rng)
        if not ground_caption(text, scene).is_true:
            return text, "corrupted", field_
    raise RuntimeError(f"could not corrupt a caption of web-{index}")  # unreachable in practice


def assign_noise_type(cfg: WorldConfig, index: int) -> str:
    """Draw the noise type of web sample `index` from the configured rates."""
    u = rng_for(cfg, "web", index, "noise").random()
    acc = 0.0
    for name in ("mismatched", "corrupted", "spam", "uninformative"):
        acc += cfg.web_noise.get(name, 0.0)
        if u < acc:
            return name
    return "clean"


# ------------------------------------------------------------------------------------------------
# the objects split: the world's ImageNet


def object_labels(scene: Scene) -> dict[str, list[str]]:
    """The class labels of an `objects` image: which shapes and which colours it shows.

    Why this design (decided from what ImageNet is to BLIP, before measuring any effect):
    - scenes: drawn like the clean splits' (1-4 objects, both sizes, every background), because
      ImageNet photos come from the same visual world as COCO's, not isolated studio objects; no
      held-out (colour, shape) combination, so `novel` stays zero-shot;
    - labels: image-level classes a labeller would tag, multi-label per group: the object categories
      (shapes) and their colours. Nothing a caption is for: no counts, sizes, positions,
      relations, backgrounds or colour-shape binding, as ImageNet labels say "goldfish", not "two
      goldfish left of a rock";
    - size: `world.num_objects`, ~1,000+ images per class (ImageNet-1k has ~1,300): ~2.2 objects
      an image over 8 shapes and 10 colours needs ~6,000 images; clean, like ImageNet's labels.
    """
    return {
        "shape": sorted({o.shape for o in scene.objects}, key=LABEL_GROUPS["shape"].index),
        "color": sorted({o.color for o in scene.objects}, key=LABEL_GROUPS["color"].index),
    }


# ------------------------------------------------------------------------------------------------
# samples (blip_core.data.world.generate writes them into shards)


def make_sample(cfg: WorldConfig, split: str, index: int) -> dict[str, Any]:
    """Everything about one sample: key, jpeg bytes, captions, source and ground-truth metadata."""
    scene = sample_scene(cfg, split, index)
    img = render_scene(scene, rng_for(cfg, split, index, "render"), cfg.image_size)
    key = f"{split}-{index:07d}"
    gt: dict[str, Any] = {"scene": scene.to_dict()}
    held = set(held_out_combos(cfg))
    gt["novel_objects"] = [i for i, o in enumerate(scene.objects) if (o.color, o.shape) in held]
    if split == "objects":  # label-only: its labels are training data (unlike gt)
        meta = {"image_id": key, "split": split, "labels": object_labels(scene), "gt": gt}
        return {"key": key, "jpeg": encode_jpeg(img, cfg.jpeg_quality), "size": img.size, "captions": [],
                "source": "labels", "meta": meta}  # fmt: skip
    if split == "web":
        text, noise_type, detail = web_caption(cfg, index, scene)
        captions, source = [text], "web"
        gt |= {"noise_type": noise_type, "noise_detail": detail}
    else:
        captions = human_captions(scene, rng_for(cfg, split, index, "caption"), cfg.captions_per_image)
        source = "human"
    return {
        "key": key,
        "jpeg": encode_jpeg(img, cfg.jpeg_quality),
        "size": img.size,
        "captions": captions,
        "source": source,
        # gt is for evaluation only: training code never reads it
        "meta": {"image_id": key, "split": split, "gt": gt},
    }
