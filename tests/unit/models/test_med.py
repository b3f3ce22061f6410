"""MED: shapes, masks, parameter sharing, KV cache."""

from __future__ import annotations

import torch
from helpers import micro_config, text_batch

from blip_core.models.blip.model import BlipPretrain
from blip_core.models.common.med import MED, KVCache


def _med(cfg, **kw):
    return MED(cfg.text, cfg.vision.width, **kw).eval()


def test_shapes_per_mode(cfg):
    med = _med(cfg, lm_head=True)
    ids, mask = text_batch()
    img = torch.randn(4, 17, cfg.vision.width)
    for mode in ("text", "multimodal", "decoder"):
        h = med(ids, mask, mode=mode, image_embeds=img)
        assert h.shape == (4, 9, cfg.text.hidden_size)
    assert med.logits(h).shape == (4, 9, cfg.text.vocab_size)


def test_decoder_is_causal_and_encoder_is_not(cfg):
    med = _med(cfg)
    ids, _ = text_batch()
    img = torch.randn(4, 17, cfg.vision.width)
    changed = ids.clone()
    changed[:, 6] = 99  # change a later token
    for mode, same_prefix in (("decoder", True), ("multimodal", False), ("text", False)):
        a = med(ids, None, mode=mode, image_embeds=img)
        b = med(changed, None, mode=mode, image_embeds=img)
        assert torch.allclose(a[:, :6], b[:, :6], atol=1e-6) is same_prefix, mode


def test_padding_does_not_leak(cfg):
    med = _med(cfg)
    ids, mask = text_batch()
    img = torch.randn(4, 17, cfg.vision.width)
    other = ids.clone()
    other[1, 6:] = 77  # different content behind the padding mask
    for mode in ("text", "multimodal", "decoder"):
        a = med(ids, mask, mode=mode, image_embeds=img)[1, :6]
        b = med(other, mask, mode=mode, image_embeds=img)[1, :6]
        assert torch.allclose(a, b, atol=1e-6), mode


def test_text_mode_ignores_image_and_modes_need_image(cfg):
    med = _med(cfg)
    ids, mask = text_batch()
    a = med(ids, mask, mode="text", image_embeds=torch.randn(4, 17, cfg.vision.width))
    assert torch.allclose(a, med(ids, mask, mode="text"))
    import pytest

    with pytest.raises(ValueError, match="needs image_embeds"):
        med(ids, mask, mode="decoder")


def test_encoder_decoder_share_everything_but_self_attention(cfg):
    model = BlipPretrain(cfg)
    layer = model.text.encoder.layer[0]
    assert layer.attention_dec is not None
    assert layer.attention.self.query.weight.data_ptr() != layer.attention_dec.self.query.weight.data_ptr()
    # one module serves both modes: cross-attention, FFN and embeddings are the same tensors
    enc_params = {id(p) for n, p in model.text.named_parameters() if ".attention_dec." not in n and "lm_head" not in n}
    dec_params = {id(p) for n, p in model.text.named_parameters() if ".attention." not in n and "lm_head" not in n}
    only_enc = enc_params - dec_params
    only_dec = dec_params - enc_params
    n_sa = sum(p.numel() for n, p in model.text.named_parameters() if ".attention." in n)
    assert sum(p.numel() for p in model.text.parameters() if id(p) in only_enc) == n_sa
    assert len(only_dec) == len(only_enc)
    # the LM head is tied to the word embeddings (no separate output matrix)
    assert not any(
        "lm_head" in n and p.shape == model.text.embeddings.word_embeddings.weight.shape
        for n, p in model.text.named_parameters()
    )


def test_decoder_uses_its_own_self_attention(cfg):
    model = BlipPretrain(cfg).eval()
    ids, mask = text_batch()
    img = torch.randn(4, 17, cfg.vision.width)
    before_dec = model.text(ids, mask, mode="decoder", image_embeds=img)
    before_enc = model.text(ids, mask, mode="multimodal", image_embeds=img)
    with torch.no_grad():
        model.text.encoder.layer[0].attention_dec.self.query.weight.normal_()
    assert not torch.allclose(before_dec, model.text(ids, mask, mode="decoder", image_embeds=img))
    assert torch.allclose(before_enc, model.text(ids, mask, mode="multimodal", image_embeds=img))


def test_kv_cache_decoding_equals_full_recompute(cfg):
    med = _med(cfg, lm_head=True)
    ids, _ = text_batch(B=6, L=10)
    img = torch.randn(2, 17, cfg.vision.width)  # 3 text rows per image: cross K/V shared per image
    full = med.logits(med(ids, None, mode="decoder", image_embeds=img))
    cache = KVCache(cfg.text.num_layers)
    steps = [med.logits(med(ids[:, :4], None, mode="decoder", image_embeds=img, cache=cache))]
    for t in range(4, 10):
        steps.append(med.logits(med(ids[:, t : t + 1], None, mode="decoder", image_embeds=img, cache=cache)))
    assert cache.length == 10
    assert torch.allclose(full, torch.cat(steps, dim=1), atol=1e-5)
    # cross-attention folding: 3 rows per image equals repeating the image per row
    rep = med.logits(med(ids, None, mode="decoder", image_embeds=img.repeat_interleave(3, 0)))
    assert torch.allclose(full, rep, atol=1e-5)


def test_cross_attention_image_index_equals_repeated_images():
    """ITM pairs text rows with arbitrary images: gathering per-image keys/values must equal
    feeding the repeated image rows (what the model did before keys/values were shared)."""
    cfg = micro_config()
    med = MED(cfg.text, vision_width=cfg.vision.width).eval()
    ids, mask = text_batch(B=6)
    images = torch.randn(3, 5, cfg.vision.width)
    index = torch.tensor([2, 0, 0, 1, 2, 1])
    a = med(ids, mask, mode="multimodal", image_embeds=images, image_index=index)
    b = med(ids, mask, mode="multimodal", image_embeds=images[index])
    assert torch.allclose(a, b, atol=1e-5)


def test_cpu_bf16_attention_is_the_fused_kernel_written_out():
    """Under CPU bf16 autocast `attention` is written out (the fused CPU kernel is slow there in bf16);
    computed in fp32 it equals the fused kernel with each mask kind, and under autocast it stays within
    bf16 rounding of it, gradients included."""
    from torch.nn import functional as F

    from blip_core.models.common.med import attention

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 5, 8, generator=g) for _ in range(3))
    pad = torch.ones(2, 1, 1, 5, dtype=torch.bool)
    pad[1, ..., 3:] = False
    for kw in ({}, {"mask": pad}, {"is_causal": True}):
        sdpa = {"attn_mask": kw.get("mask"), "is_causal": kw.get("is_causal", False)}
        fused = F.scaled_dot_product_attention(q, k, v, **sdpa)
        assert torch.equal(attention(q, k, v, **kw), fused)  # fp32: the fused kernel itself
        qq, kk, vv = (t.clone().requires_grad_() for t in (q, k, v))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = attention(qq, kk, vv, **kw)
        assert out.dtype == torch.bfloat16
        torch.testing.assert_close(out.float(), fused, atol=0.05, rtol=0.05)
        out.float().sum().backward()
        q2, k2, v2 = (t.clone().requires_grad_() for t in (q, k, v))
        F.scaled_dot_product_attention(q2, k2, v2, **sdpa).sum().backward()
        torch.testing.assert_close(qq.grad, q2.grad, atol=0.1, rtol=0.1)
