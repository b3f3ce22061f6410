"""Tokenizer trained without any hub, loadable by transformers; BLIP caption cleaning."""

from __future__ import annotations

import re

import torch
from transformers import BertTokenizerFast

from blip_core.data.text import pre_caption
from blip_core.models.blip.processing import text_processor
from blip_core.models.common.tokenizer import BLIP_PROMPT, load_tokenizer, train_tokenizer


def _blip_pre_caption(caption, max_words=50):
    # verbatim from salesforce/BLIP data/utils.py
    caption = re.sub(r"([.!\"()*#:;~])", " ", caption.lower())
    caption = re.sub(r"\s{2,}", " ", caption)
    caption = caption.rstrip("\n")
    caption = caption.strip(" ")
    caption_words = caption.split(" ")
    if len(caption_words) > max_words:
        caption = " ".join(caption_words[:max_words])
    return caption


def test_pre_caption_matches_blip():
    for c in ["A Red  Circle!", "two (big) stars; left of: a ring~", "  x.y.z  ", "w " * 60, "IMG_2041.JPG\n"]:
        for n in (5, 50):
            assert pre_caption(c, n) == _blip_pre_caption(c, n)


def test_train_save_load_roundtrip(tmp_path):
    caps = ["a red circle left of a blue star", "two green squares", "a small violet ring above a hexagon"] * 5
    tok = train_tokenizer(caps + [BLIP_PROMPT] * 2, tmp_path / "tok", vocab_size=200, min_frequency=1)
    plain = BertTokenizerFast.from_pretrained(str(tmp_path / "tok"), local_files_only=True)
    loaded = load_tokenizer(tmp_path / "tok")
    assert len(plain) == len(tok) == len(loaded)
    for special in ("[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]", "[DEC]", "[ENC]"):
        assert loaded.convert_tokens_to_ids(special) != loaded.unk_token_id or special == "[UNK]"
    assert loaded.bos_token == "[DEC]" and loaded.enc_token_id == loaded.convert_tokens_to_ids("[ENC]")
    ids = loaded("A Red circle!").input_ids
    assert ids[0] == loaded.cls_token_id and ids[-1] == loaded.sep_token_id
    assert loaded.tokenize("a picture of a red circle") == ["a", "picture", "of", "a", "red", "circle"]
    assert loaded.decode(loaded("two green squares").input_ids, skip_special_tokens=True) == "two green squares"


def test_max_words_travels_with_the_tokenizer(tmp_path):
    """One source: params.yaml's tokenizer.max_words is saved with the tokenizer and every
    processor built for a model reads it (training, evaluation, CapFilt, the registry)."""
    from blip_core.models.blip.config import ModelConfig
    from blip_core.models.common.tokenizer import tokenizer_max_words, train_tokenizer

    caps = ["one two three four five six seven eight"] * 3
    train_tokenizer(caps, tmp_path / "tok", vocab_size=100, min_frequency=1, max_words=4)
    assert tokenizer_max_words(tmp_path / "tok") == 4
    assert tokenizer_max_words(tmp_path) == 30  # a directory without our file: BLIP's default
    proc = text_processor(ModelConfig(tokenizer=str(tmp_path / "tok")))
    ids, _ = proc(["one two three four five six seven eight"])
    assert proc.tokenizer.decode(ids[0], skip_special_tokens=True) == "one two three four"


def test_word_labels_mark_the_tokens_of_false_words(tmp_path):
    """TrainConfig.itm_word_loss's targets: a false word's every token 0, the other words' tokens 1,
    [CLS] / [SEP] / padding / punctuation unlabelled; the ids are the processor's own."""
    from blip_core.models.common.tokenizer import TextProcessor

    caps = ["a red circle left of a blue star", "two green squares", "a small ring"] * 5
    proc = TextProcessor(train_tokenizer(caps, tmp_path / "tok", vocab_size=300, min_frequency=1))
    texts = ["Two green squares, left of a hexagonal star!", "a red circle"]
    ids, mask, labels = proc.with_word_labels(texts, [{1, 6}, set()])  # "green", "hexagonal"
    want_ids, want_mask = proc(texts)
    assert torch.equal(ids, want_ids) and torch.equal(mask, want_mask)
    tokens = proc.tokenizer.convert_ids_to_tokens(ids[0])
    by_token = dict(zip(tokens, labels[0].tolist(), strict=True))
    assert by_token["[CLS]"] == by_token["[SEP]"] == by_token[","] == -100
    assert by_token["green"] == 0 and by_token["two"] == by_token["squares"] == by_token["star"] == 1
    hexagonal = [lab for tok, lab in zip(tokens, labels[0].tolist(), strict=True) if tok.startswith("##")]
    assert hexagonal and set(hexagonal) == {0}  # every piece of the false word "hexagonal"
    assert labels[1].tolist()[1:4] == [1, 1, 1] and set(labels[1].tolist()[4:]) == {-100}  # [SEP] + padding


def test_collate_labels_words_only_when_asked(tmp_path):
    """Collate: the ITM rows' word labels (and the positives', labelled the same way: punctuation
    unlabelled) only with `word_labels` (TrainConfig.itm_word_loss > 0); the rows' ids are the same."""
    from blip_core.data.loader import Collate
    from blip_core.models.common.tokenizer import TextProcessor

    caps = ["a red circle left of a blue star", "two green squares", "a small ring"] * 5
    proc = TextProcessor(train_tokenizer(caps, tmp_path / "tok", vocab_size=300, min_frequency=1))
    items = [{"caption": "two green squares, a ring", "tensor": torch.zeros(3, 8, 8), "image_id": "a-1", "pair": "p0",
              "itm_extra": [("two red squares", 0, {1})]},
             {"caption": "a red circle", "tensor": torch.zeros(3, 8, 8), "image_id": "a-2", "pair": "p1"}]  # fmt: skip
    plain_batch, labelled_batch = Collate(proc)(items), Collate(proc, word_labels=True)(items)
    assert torch.equal(plain_batch["input_ids"], labelled_batch["input_ids"])
    plain, labelled = plain_batch["itm_extra"], labelled_batch["itm_extra"]
    assert "word_labels" not in plain and "positive_word_labels" not in plain
    assert torch.equal(plain["input_ids"], labelled["input_ids"])
    assert labelled["word_labels"][0].tolist()[1:4] == [1, 0, 1]  # "red" is the swap's false word
    pos = labelled["positive_word_labels"]
    tokens = proc.tokenizer.convert_ids_to_tokens(proc([it["caption"] for it in items])[0][0])
    assert dict(zip(tokens, pos[0].tolist(), strict=True))[","] == -100 and pos[0, 1] == 1
