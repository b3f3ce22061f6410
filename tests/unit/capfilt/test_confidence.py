"""The captioner's confidence in a caption's attribute words (blip_core.capfilt.confidence)."""

from __future__ import annotations

import pytest
import torch

from blip_core.capfilt.confidence import AttributeConfidence, lexicon_classes
from blip_core.models.common.tokenizer import TextProcessor, train_tokenizer

CAPTIONS = "a picture of one two red blue green circle circles square squares star big small left of and"


class _Believes:
    """A stand-in captioner whose next-token distribution is the same everywhere: the `favoured`
    words share `mass` of probability, the rest of the vocabulary shares what is left."""

    def __init__(self, tok, favoured: dict[str, float]) -> None:
        self.cfg = type("C", (), {"text": type("T", (), {"bos_token_id": tok.bos_token_id})()})()
        probs = torch.full((len(tok),), 1e-6)
        for word, p in favoured.items():
            probs[tok(word, add_special_tokens=False).input_ids[0]] = p
        self.logp = probs.log()

    def __call__(self, images, ids, mask, *, image_embeds):
        return {"lm_logits": self.logp.expand(ids.shape[0], ids.shape[1], -1)}


@pytest.fixture
def processor(tmp_path):
    # a vocabulary large enough that each of these words is one token
    tok = train_tokenizer([CAPTIONS] * 5, tmp_path / "tok", vocab_size=300, min_frequency=1)
    return TextProcessor(tok)


def test_a_caption_is_as_sure_as_its_least_sure_attribute_word(processor):
    # the captioner: red 0.6 against blue 0.2 (colours), circle 0.3 against star 0.3 (shapes), big only
    model = _Believes(processor.tokenizer, {"red": 0.6, "blue": 0.2, "circle": 0.3, "star": 0.3, "big": 0.5})
    conf = AttributeConfidence(processor)
    embeds = torch.zeros(1, 4, 8)
    red_circle, blue_circle, big_red_star, none = conf(
        model, embeds, ["a red circle", "a blue circle", "a big red star", "left of and"]
    )
    assert red_circle == pytest.approx(0.5, abs=1e-3)  # red 0.75 among colours, circle 0.5 among shapes
    assert blue_circle == pytest.approx(0.25, abs=1e-3)  # blue: 0.2 / 0.8
    assert big_red_star == pytest.approx(0.5, abs=1e-3)  # big is the only size it knows: 1.0
    assert none == 1.0  # no attribute word: nothing to doubt


def test_a_plural_noun_competes_with_plurals_and_counts_with_counts(processor):
    classes = lexicon_classes()
    assert classes["circles"] == ("shape_plural", "circle") and classes["circle"] == ("shape", "circle")
    assert classes["two"] == ("count", "2") and classes["scarlet"][0] == "color"
    model = _Believes(processor.tokenizer, {"two": 0.4, "one": 0.4, "circles": 0.5, "circle": 0.01})
    (two_circles,) = AttributeConfidence(processor)(model, torch.zeros(1, 4, 8), ["two circles"])
    assert two_circles == pytest.approx(0.5, abs=1e-3)  # "two" 0.5 among counts; "circles" ~1 among plurals
