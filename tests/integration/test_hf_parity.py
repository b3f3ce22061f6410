"""Parity with Hugging Face's BLIP (random small models built in-process; no downloads).

HF's retrieval port feeds `[CLS]` (the tokenizer's first token) to the ITM text encoder where the
original BLIP substitutes `[ENC]`; the parity test calls our ITM with `use_enc=False` so both see
the same ids. Our own models use `[ENC]`, as BLIP.
"""

from __future__ import annotations

import pytest
import torch
from transformers import BlipConfig, BlipForConditionalGeneration, BlipForImageTextRetrieval

from blip_core.models.blip.convert_hf import export_hf, load_hf, to_hf_state
from blip_core.models.common.generate import GenerationConfig, generate

BOS, PAD, SEP = 110, 0, 3


def _hf_config() -> BlipConfig:
    return BlipConfig(
        vision_config=dict(
            hidden_size=48,
            intermediate_size=96,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=32,
            patch_size=8,
        ),
        text_config=dict(
            vocab_size=120,
            hidden_size=32,
            encoder_hidden_size=48,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=64,
            bos_token_id=BOS,
            pad_token_id=PAD,
            sep_token_id=SEP,
            eos_token_id=SEP,
        ),
        image_text_hidden_size=24,
    )


def _perturb(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """HF's random init is near-degenerate (vision init 1e-10); spread the weights."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


@pytest.fixture(scope="module")
def captioners():
    torch.manual_seed(0)
    hf = _perturb(BlipForConditionalGeneration(_hf_config()), 1)
    return hf, load_hf(hf).eval()


@pytest.fixture(scope="module")
def retrievers():
    torch.manual_seed(0)
    hf = _perturb(BlipForImageTextRetrieval(_hf_config()), 2)
    return hf, load_hf(hf).eval()


def _batch(n=3, L=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    imgs = torch.randn(n, 3, 32, 32, generator=g)
    ids = torch.randint(5, 100, (n, L), generator=g)
    ids[:, 0] = 101
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    return imgs, ids, mask


def test_caption_logits_match(captioners):
    hf, ours = captioners
    imgs, ids, mask = _batch()
    ids[:, 0] = BOS
    with torch.no_grad():
        ref = hf(pixel_values=imgs, input_ids=ids, attention_mask=mask).logits
        got = ours.text.logits(ours.text(ids, mask, mode="decoder", image_embeds=ours.image_embeds(imgs)))
    assert torch.allclose(ref[mask.bool()], got[mask.bool()], atol=1e-4)


def test_itm_and_itc_match(retrievers):
    hf, ours = retrievers
    imgs, ids, mask = _batch()
    with torch.no_grad():
        ref_itm = hf(input_ids=ids, attention_mask=mask, pixel_values=imgs, use_itm_head=True).itm_score
        ref_itc = hf(input_ids=ids, attention_mask=mask, pixel_values=imgs, use_itm_head=False).itm_score
        emb = ours.image_embeds(imgs)
        got_itm = ours.itm_logits(emb, ids, mask, use_enc=False)
        got_itc = ours.image_feat(emb) @ ours.text_feat(ids, mask).T
    assert torch.allclose(ref_itm, got_itm, atol=1e-4)
    assert torch.allclose(ref_itc, got_itc, atol=1e-4)


@pytest.mark.parametrize("eos_bias", [0.0, 2.5])  # 2.5: sequences end at different steps
@pytest.mark.parametrize("method", ["greedy", "beam"])
def test_generate_matches_hf_tokens(captioners, method, eos_bias):
    hf, ours = captioners
    imgs = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    prompt = torch.tensor([BOS, 7, 8])
    cfg = GenerationConfig(method=method, num_beams=3 if method == "beam" else 1, max_length=20, min_length=5)
    with torch.no_grad():
        hf.text_decoder.cls.predictions.bias[SEP] += eos_bias
        ours.text.lm_head.bias[SEP] += eos_bias
        try:
            ref = hf.generate(
                pixel_values=imgs,
                input_ids=torch.tensor([[BOS, 7, 8, SEP]] * 4),
                max_length=20,
                min_length=5,
                num_beams=cfg.num_beams,
                do_sample=False,
            )
            got = generate(ours, ours.image_embeds(imgs), prompt, cfg)
        finally:
            hf.text_decoder.cls.predictions.bias[SEP] -= eos_bias
            ours.text.lm_head.bias[SEP] -= eos_bias
    assert got.tolist() == ref.tolist()
    if eos_bias:
        assert (got == SEP).any()  # the early-stop paths were exercised


def test_round_trip_ours_hf_ours_is_exact(captioners, retrievers, tmp_path):
    for i, (_, ours) in enumerate([captioners, retrievers]):
        out = export_hf(ours, tmp_path / f"hf{i}")
        back = load_hf(out)
        a, b = to_hf_state(ours), to_hf_state(back)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), k
        sa, sb = ours.state_dict(), back.state_dict()
        for k in sa:
            if "_queue" not in k and "queue_ptr" not in k and k != "temp":
                assert torch.equal(sa[k], sb[k]), k


def test_exported_directory_loads_in_transformers(captioners, tmp_path):
    hf, ours = captioners
    out = export_hf(ours, tmp_path / "cap")
    reloaded = BlipForConditionalGeneration.from_pretrained(str(out), local_files_only=True).eval()
    imgs, ids, mask = _batch()
    ids[:, 0] = BOS
    with torch.no_grad():
        ref = hf(pixel_values=imgs, input_ids=ids).logits
        assert torch.allclose(ref, reloaded(pixel_values=imgs, input_ids=ids).logits, atol=1e-5)
