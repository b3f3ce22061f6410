"""Tokenizer: BERT WordPiece plus BLIP's `[DEC]` (decoder BOS) and `[ENC]` (image-grounded encoder).

No hub: by default a WordPiece vocabulary is trained on the world's captions with the `tokenizers`
library and saved as a directory that `transformers.BertTokenizerFast.from_pretrained` loads. A
local `bert-base-uncased` directory can be used instead (official BLIP weights need its vocab).
Follows salesforce/BLIP `models/blip.py:init_tokenizer`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from transformers import BertTokenizerFast

from blip_core.data.text import pre_caption

logger = logging.getLogger(__name__)

BERT_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
DEC_TOKEN = "[DEC]"
BLIP_PROMPT = "a picture of "
"""The captioner's prompt (BLIP `blip_decoder(prompt='a picture of ')`)."""
ENC_TOKEN = "[ENC]"


def add_blip_tokens(tok: BertTokenizerFast) -> BertTokenizerFast:
    """Add `[DEC]` as bos and `[ENC]` as an extra special token (no-op if present)."""
    tok.add_special_tokens({"bos_token": DEC_TOKEN})
    tok.add_special_tokens({"additional_special_tokens": [ENC_TOKEN]})
    tok.enc_token_id = tok.convert_tokens_to_ids(ENC_TOKEN)  # type: ignore[attr-defined]
    return tok


def train_tokenizer(
    captions: Iterable[str], out_dir: str | Path, *, vocab_size: int = 1200, min_frequency: int = 2, max_words: int = 30
) -> BertTokenizerFast:
    """Train a lower-cased WordPiece tokenizer on cleaned captions and save it to `out_dir`."""
    from tokenizers import BertWordPieceTokenizer

    texts = [pre_caption(c, max_words) for c in captions]
    texts = [t for t in texts if t]
    if not texts:
        raise ValueError("cannot train a tokenizer on zero non-empty captions")
    wp = BertWordPieceTokenizer(lowercase=True, strip_accents=True, clean_text=True)
    wp.train_from_iterator(
        texts,
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=BERT_SPECIAL + [DEC_TOKEN, ENC_TOKEN],
        show_progress=False,
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = BertTokenizerFast(tokenizer_object=wp._tokenizer, do_lower_case=True, model_max_length=512)
    tok.pad_token, tok.unk_token, tok.cls_token, tok.sep_token, tok.mask_token = BERT_SPECIAL
    add_blip_tokens(tok)
    tok.save_pretrained(out_dir)
    logger.info("trained WordPiece tokenizer (%d tokens) on %d captions -> %s", len(tok), len(texts), out_dir)
    return tok


def load_tokenizer(path: str | Path) -> BertTokenizerFast:
    """Load a tokenizer directory (ours or a local bert-base-uncased) and add BLIP's tokens."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(
            f"tokenizer directory not found: {path} (train one with `blip tokenizer --data DIR --out {path}`)"
        )
    tok = BertTokenizerFast.from_pretrained(str(path), local_files_only=True)
    return add_blip_tokens(tok)


class TextProcessor:
    """Captions <-> token tensors the way BLIP feeds them to the model.

    Cleaning with `pre_caption`, `[CLS] caption [SEP]` padded to the longest row and truncated to
    `max_len`; with `prompt=True` the captioner's prompt is prepended ("a picture of " + caption)
    and `prompt_length` tokens ([CLS]/[DEC] + prompt) are excluded from the LM loss (BLIP
    `BLIP_Decoder.prompt_length`).
    """

    def __init__(self, tokenizer, *, max_len: int = 35, max_words: int = 30, prompt: str = BLIP_PROMPT) -> None:
        self.tokenizer = tokenizer
        self.max_len = max_len
        self.max_words = max_words
        self.prompt = prompt
        self.prompt_length = len(tokenizer(prompt).input_ids) - 1  # without the trailing [SEP]

    def __call__(self, captions: list[str], *, prompt: bool = False):
        texts = [(self.prompt if prompt else "") + pre_caption(c, self.max_words) for c in captions]
        enc = self.tokenizer(texts, padding="longest", truncation=True, max_length=self.max_len, return_tensors="pt")
        return enc.input_ids, enc.attention_mask

    def prompt_ids(self):
        """`[DEC]` + prompt tokens: the decoder input that generation continues."""
        import torch

        ids = self.tokenizer(self.prompt).input_ids[:-1]
        ids[0] = self.tokenizer.bos_token_id
        return torch.tensor(ids, dtype=torch.long)

    def decode(self, sequences) -> list[str]:
        """Generated ids (prompt included) -> captions without the prompt."""
        out = []
        for seq in sequences.tolist():
            text = self.tokenizer.decode(seq[self.prompt_length :], skip_special_tokens=True)
            out.append(text.strip())
        return out
