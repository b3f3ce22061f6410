"""Tokenizer: BERT WordPiece plus BLIP's `[DEC]` (decoder BOS) and `[ENC]` (image-grounded encoder).

No hub: by default a WordPiece vocabulary is trained on the world's captions with the `tokenizers`
library and saved as a directory that `transformers.BertTokenizerFast.from_pretrained` loads. A
local `bert-base-uncased` directory can be used instead (official BLIP weights need its vocab).
Follows salesforce/BLIP `models/blip.py:init_tokenizer`.
"""

from __future__ import annotations

import json
import logging
import string
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from transformers import BertTokenizerFast

from blip_core.data.text import pre_caption
from blip_core.fileio import write_json

logger = logging.getLogger(__name__)

BERT_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
DEC_TOKEN = "[DEC]"
BLIP_PROMPT = "a picture of "
"""The captioner's prompt (BLIP `blip_decoder(prompt='a picture of ')`)."""
ENC_TOKEN = "[ENC]"
TEXT_CONFIG = "blip_text.json"
"""Saved beside the tokenizer: how captions are cleaned for it (`max_words`), so training,
evaluation, CapFilt and the registry all clean captions as params.yaml's `tokenizer` section said."""
DEFAULT_MAX_WORDS = 30
"""BLIP's `pre_caption(max_words=30)`, for tokenizer directories without our file (bert-base-uncased)."""


def add_blip_tokens(tok: BertTokenizerFast) -> BertTokenizerFast:
    """Add `[DEC]` as bos and `[ENC]` as an extra special token (no-op if present)."""
    tok.add_special_tokens({"bos_token": DEC_TOKEN})
    tok.add_special_tokens({"additional_special_tokens": [ENC_TOKEN]})
    tok.enc_token_id = tok.convert_tokens_to_ids(ENC_TOKEN)  # type: ignore[attr-defined]
    return tok


def build_vocab(texts: Iterable[str], *, vocab_size: int, min_frequency: int) -> list[str]:
    """A deterministic WordPiece vocabulary: special tokens, every character (word-initial and
    `##` continuation), then whole words by frequency (ties alphabetical) up to `vocab_size`.

    Deterministic on purpose: the `tokenizers` trainer breaks frequency ties in hash order, which
    changes token ids between runs and makes `dvc repro` and golden losses unreproducible.
    """
    from tokenizers.normalizers import BertNormalizer
    from tokenizers.pre_tokenizers import BertPreTokenizer

    norm, pre = BertNormalizer(lowercase=True, strip_accents=True, clean_text=True), BertPreTokenizer()
    counts: Counter[str] = Counter()
    for t in texts:
        counts.update(w for w, _ in pre.pre_tokenize_str(norm.normalize_str(t)))
    # every printable ASCII character is always in, so raw text never maps to [UNK]
    chars = sorted({c for w in counts for c in w} | set(string.ascii_lowercase + string.digits + string.punctuation))
    vocab = BERT_SPECIAL + [DEC_TOKEN, ENC_TOKEN] + chars + ["##" + c for c in chars]
    seen = set(vocab)
    for word, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        if len(vocab) >= vocab_size or n < min_frequency:
            break
        if word not in seen:
            vocab.append(word)
            seen.add(word)
    return vocab


def train_tokenizer(
    captions: Iterable[str], out_dir: str | Path, *, vocab_size: int = 1200, min_frequency: int = 2, max_words: int = 30
) -> BertTokenizerFast:
    """Build a lower-cased WordPiece tokenizer from cleaned captions and save it to `out_dir`."""
    from tokenizers import Tokenizer, decoders
    from tokenizers.models import WordPiece
    from tokenizers.normalizers import BertNormalizer
    from tokenizers.pre_tokenizers import BertPreTokenizer
    from tokenizers.processors import TemplateProcessing

    texts = [pre_caption(c, max_words) for c in captions]
    texts = [t for t in texts if t]
    if not texts:
        raise ValueError("cannot train a tokenizer on zero non-empty captions")
    vocab = build_vocab(texts, vocab_size=vocab_size, min_frequency=min_frequency)
    ids = {w: i for i, w in enumerate(vocab)}
    wp = Tokenizer(WordPiece(ids, unk_token="[UNK]", max_input_chars_per_word=100))
    wp.normalizer = BertNormalizer(lowercase=True, strip_accents=True, clean_text=True)
    wp.pre_tokenizer = BertPreTokenizer()
    wp.post_processor = TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    wp.decoder = decoders.WordPiece(prefix="##")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = BertTokenizerFast(tokenizer_object=wp, do_lower_case=True, model_max_length=512)
    tok.pad_token, tok.unk_token, tok.cls_token, tok.sep_token, tok.mask_token = BERT_SPECIAL
    add_blip_tokens(tok)
    tok.save_pretrained(out_dir)
    write_json(out_dir / TEXT_CONFIG, {"max_words": max_words})
    logger.info("built WordPiece tokenizer (%d tokens) from %d captions -> %s", len(tok), len(texts), out_dir)
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


def tokenizer_max_words(path: str | Path) -> int:
    """The caption word limit saved with a tokenizer directory (BLIP's 30 when it has none)."""
    f = Path(path) / TEXT_CONFIG
    if not f.is_file():
        return DEFAULT_MAX_WORDS
    value = json.loads(f.read_text()).get("max_words")
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"{f}: max_words must be an integer >= 1, got {value!r}")
    return value


class TextProcessor:
    """Captions <-> token tensors the way BLIP feeds them to the model.

    Cleaning with `pre_caption`, `[CLS] caption [SEP]` padded to the longest row and truncated to
    `max_len`; with `prompt=True` the captioner's prompt is prepended ("a picture of " + caption)
    and `prompt_length` tokens ([CLS]/[DEC] + prompt) are excluded from the LM loss (BLIP
    `BLIP_Decoder.prompt_length`).
    """

    def __init__(
        self, tokenizer, *, max_len: int = 35, max_words: int = DEFAULT_MAX_WORDS, prompt: str = BLIP_PROMPT
    ) -> None:
        self.tokenizer = tokenizer
        self.max_len = max_len
        self.max_words = max_words
        self.prompt = prompt
        self.prompt_length = len(tokenizer(prompt).input_ids) - 1  # without the trailing [SEP]

    def __call__(self, captions: list[str], *, prompt: bool = False):
        texts = [(self.prompt if prompt else "") + pre_caption(c, self.max_words) for c in captions]
        enc = self.tokenizer(texts, padding="longest", truncation=True, max_length=self.max_len, return_tensors="pt")
        return enc.input_ids, enc.attention_mask

    def with_word_labels(self, captions: list[str], false_words: list[set[int]]):
        """`self(captions)` plus (B, L) labels per token: 0 for a token of a word in its row's
        `false_words` (indices as `caption_edits.word_spans` counts words), 1 for the other words'
        tokens, -100 for [CLS], [SEP], padding and punctuation."""
        import torch

        from blip_core.data.caption_edits import word_spans

        texts = [pre_caption(c, self.max_words) for c in captions]
        enc = self.tokenizer(texts, padding="longest", truncation=True, max_length=self.max_len,
                             return_tensors="pt", return_offsets_mapping=True)  # fmt: skip
        labels = torch.full_like(enc.input_ids, -100)
        for b, (text, false) in enumerate(zip(texts, false_words, strict=True)):
            starts = [(s, e, i) for i, (s, e, _) in enumerate(word_spans(text))]
            for t, (a, z) in enumerate(enc.offset_mapping[b].tolist()):
                word = next((i for s, e, i in starts if s <= a < e), None) if z > a else None
                if word is not None:
                    labels[b, t] = int(word not in false)
        return enc.input_ids, enc.attention_mask, labels

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
