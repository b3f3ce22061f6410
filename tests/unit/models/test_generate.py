"""Generation: seeded sampling, k captions per image, length limits, processors."""

from __future__ import annotations

import pytest
import torch

from blip_core.models.blip.model import BlipCaptioner
from blip_core.models.common.generate import GenerationConfig, _top_p, generate

PROMPT = torch.tensor([5, 20, 21])


@pytest.fixture
def captioner(cfg):
    torch.manual_seed(0)
    return BlipCaptioner(cfg).eval()


def test_nucleus_sampling_is_seeded_and_returns_k_per_image(captioner):
    emb = captioner.image_embeds(torch.randn(3, 3, 32, 32))
    g = GenerationConfig(method="nucleus", num_return_sequences=2, max_length=12, min_length=5, repetition_penalty=1.1)
    a = generate(captioner, emb, PROMPT, g, generator=torch.Generator().manual_seed(1))
    b = generate(captioner, emb, PROMPT, g, generator=torch.Generator().manual_seed(1))
    c = generate(captioner, emb, PROMPT, g, generator=torch.Generator().manual_seed(2))
    assert a.shape[0] == 6 and torch.equal(a, b) and not torch.equal(a, c)
    assert (a[:, :3] == PROMPT).all()


@pytest.mark.parametrize("method", ["greedy", "beam", "nucleus"])
def test_length_limits(captioner, method):
    sep = captioner.cfg.text.sep_token_id
    with torch.no_grad():
        captioner.text.lm_head.bias[sep] += 30.0  # the model wants to stop at once
    emb = captioner.image_embeds(torch.randn(2, 3, 32, 32))
    g = GenerationConfig(method=method, max_length=10, min_length=6)
    out = generate(captioner, emb, PROMPT, g, generator=torch.Generator().manual_seed(0))
    assert out.shape[1] <= 10
    for row in out.tolist():
        assert sep in row and row.index(sep) >= 6 - 1  # [SEP] no earlier than min_length allows


def test_top_p_keeps_the_nucleus():
    scores = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = torch.isfinite(_top_p(scores, 0.7))
    assert kept.tolist() == [[True, True, False, False]]
    assert torch.isfinite(_top_p(scores, 0.01)).sum() == 1


def test_bad_generation_config():
    with pytest.raises(ValueError, match="method"):
        GenerationConfig(method="topk")
    with pytest.raises(ValueError, match="top_p"):
        GenerationConfig(top_p=0.0)
