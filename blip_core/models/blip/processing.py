"""BLIP's text side for the data loaders: the tokenizer's processor with the model's caption length,
the tokenizer's word cap and the captioner's prompt."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from blip_core.models.common.tokenizer import TextProcessor, tokenizer_max_words


def text_processor(model: Any, tokenizer: Any, tokenizer_dir: str | Path | None = None) -> TextProcessor:
    """The processor a BLIP model of `model.cfg` trains and is evaluated with (the registry's
    `Family.processor`)."""
    return TextProcessor(
        tokenizer,
        max_len=model.cfg.text.max_text_len,
        max_words=tokenizer_max_words(tokenizer_dir or model.cfg.tokenizer),
        prompt=model.cfg.prompt,
    )
