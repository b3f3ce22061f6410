"""The web pool's alt-text and its labelled noise: each web image's noise type drawn from the
configured rates (mismatched, corrupted, spam, uninformative, or clean-but-terse), and the caption.

A noisy caption is checked false of its scene with the grounding checker, so a label never lies:
a mismatched caption is another web image's alt-text, regenerated from its (seed, index).
"""

from __future__ import annotations

import random

from blip_core.config.data import WorldConfig
from blip_core.data.world import lexicon as lx
from blip_core.data.world.captions import count_matching, terse_mentions, terse_text
from blip_core.data.world.grounding import ground_caption
from blip_core.data.world.render import rng_for, sample_scene
from blip_core.data.world.scene import Mentions, NounPhrase, Scene


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
        actual = count_matching(scene, np_)
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
