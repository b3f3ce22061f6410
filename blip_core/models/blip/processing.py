"""BLIP's text side for the data loaders and evaluators: the tokenizer's processor with the model's
caption length, the tokenizer's word cap and the captioner's prompt."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from blip_core.models.common.tokenizer import TextProcessor, load_tokenizer, tokenizer_max_words


def text_processor(cfg: Any, tokenizer: Any = None, tokenizer_dir: str | Path | None = None) -> TextProcessor:
    """The processor a BLIP model of config `cfg` trains and is evaluated with (the registry's
    `Family.processor`): its tokenizer folder (or `tokenizer_dir`, which overrides it; `tokenizer`
    when already loaded), caption word limit, text length and prompt."""
    path = tokenizer_dir or cfg.tokenizer
    tok = tokenizer if tokenizer is not None else load_tokenizer(path)
    return TextProcessor(tok, max_len=cfg.text.max_text_len, max_words=tokenizer_max_words(path), prompt=cfg.prompt)
