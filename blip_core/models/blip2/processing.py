"""BLIP-2's text side for the data loaders and evaluators: the Q-Former's BERT tokenizer, caption
length and the tokenizer's word cap (BLIP's processor with the Q-Former's sizes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from blip_core.models.common.tokenizer import TextProcessor, load_tokenizer, tokenizer_max_words


def text_processor(cfg: Any, tokenizer: Any = None, tokenizer_dir: str | Path | None = None) -> TextProcessor:
    """The processor a Q-Former of config `cfg` trains and is evaluated with (`Family.processor`)."""
    path = tokenizer_dir or cfg.tokenizer
    tok = tokenizer if tokenizer is not None else load_tokenizer(path)
    return TextProcessor(tok, max_len=cfg.qformer.max_text_len, max_words=tokenizer_max_words(path))
