"""BLIP-2 size presets (the registry's `Family.preset`) and the tokenizer's ids into a config.

- `tiny`: BLIP's `tiny` tower and text sizes with 8 queries: trains on a 2-core CPU in minutes.
- `base`: BLIP-2's Q-Former (BERT-base, 32 queries, cross-attention every 2nd layer) on a ViT-B/16.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from blip_core.models.blip import presets as blip_presets
from blip_core.models.blip2.config import Blip2Config


def tiny() -> Blip2Config:
    blip = blip_presets.tiny()
    return Blip2Config(vision=blip.vision, qformer=blip.text, num_query_tokens=8, embed_dim=blip.embed_dim)


def base() -> Blip2Config:
    return Blip2Config()


PRESETS: dict[str, Callable[[], Blip2Config]] = {"tiny": tiny, "base": base}


def get_preset(name: str) -> Blip2Config:
    if name not in PRESETS:
        raise ValueError(f"unknown blip2 preset {name!r}; known presets: {', '.join(PRESETS)}")
    return PRESETS[name]()


def from_blip(blip: Any, num_query_tokens: int = 8) -> Blip2Config:
    """A Q-Former config for a start from a BLIP pre-training (the registry's `config_from`): its
    tower, its text sizes and tokenizer (the weights that `qformer_from_pretrain` copies), BLIP's
    ITC size, and `num_query_tokens` queries (the tiny preset's)."""
    vision, text = copy.deepcopy(blip.vision), copy.deepcopy(blip.text)
    return Blip2Config(vision=vision, qformer=text, num_query_tokens=num_query_tokens, embed_dim=blip.embed_dim,
                       tokenizer=blip.tokenizer)  # fmt: skip


def with_tokenizer(cfg: Blip2Config, tokenizer) -> Blip2Config:
    """The Q-Former's vocabulary size and special ids from a loaded tokenizer (in place)."""
    blip_presets.set_text_ids(cfg.qformer, tokenizer)
    return cfg
