"""BLIP-2 stage 1 (blip_core.models.blip2.qformer): the attention masks of ITC / ITM / ITG, the frozen
tower, each loss, and over-fitting a handful of items."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import micro_config, text_batch

from blip_core.models.blip2.config import Blip2Config
from blip_core.models.blip2.qformer import Blip2QFormer


def micro_blip2(**kw) -> Blip2QFormer:
    m = micro_config()
    text = copy.deepcopy(m.text)
    text.num_layers = 3  # cross-attention in layers 0 and 2 (freq 2), none in layer 1
    torch.manual_seed(0)
    return Blip2QFormer(Blip2Config(vision=m.vision, qformer=text, num_query_tokens=4, embed_dim=16, **kw))


def test_config_is_validated():
    with pytest.raises(ValueError, match="num_query_tokens"):
        Blip2Config(num_query_tokens=0)
    with pytest.raises(ValueError, match="cross_attention_freq"):
        Blip2Config(cross_attention_freq=13)


def test_layout_cross_attention_every_second_layer_and_query_ffn():
    model = micro_blip2()
    layers = model.qformer.encoder.layer
    assert [layer.crossattention is not None for layer in layers] == [True, False, True]
    names = {n for n, _ in model.named_parameters()}
    assert "qformer.encoder.layer.0.intermediate_query.dense.weight" in names
    assert "qformer.encoder.layer.1.output_query.LayerNorm.weight" in names
    assert "qformer.encoder.layer.0.crossattention.self.key.weight" in names
    assert model.query_tokens.shape == (1, 4, 32)


def test_itg_text_is_causal_and_queries_never_see_text():
    model = micro_blip2().eval()
    images = torch.randn(2, 3, 32, 32)
    ids, mask = text_batch(B=2, L=8)
    mask[:] = 1
    with torch.no_grad():
        emb = model.image_embeds(images)
        q_out, prefix = model.query_pass(emb)
        logits = model.itg_logits(prefix, ids, mask)
        changed = ids.clone()
        changed[:, 5] = (changed[:, 5] + 1) % 100 + 7
        logits2 = model.itg_logits(prefix, changed, mask)
        # a query's output in a pass that also holds text (the ITM pass) does depend on the text ...
        K = model.cfg.num_query_tokens
        keys = torch.ones(2, K + 8, dtype=torch.bool)
        h1, _ = model.qformer(query_embeds=model.query_tokens.expand(2, -1, -1), input_ids=ids, image_embeds=emb,
                              mask=keys[:, None, None])  # fmt: skip
        h2, _ = model.qformer(query_embeds=model.query_tokens.expand(2, -1, -1), input_ids=changed, image_embeds=emb,
                              mask=keys[:, None, None])  # fmt: skip
    assert torch.allclose(logits[:, :5], logits2[:, :5], atol=1e-6)  # text before position 5 cannot see it
    assert not torch.allclose(logits[:, 5:], logits2[:, 5:], atol=1e-4)
    assert not torch.allclose(h1[:, :K], h2[:, :K], atol=1e-4)  # ITM: bidirectional
    # ... while ITG's query keys/values come from the query pass, which has no text at all: the same
    # text outputs as one pass over [queries; text] with queries masked off the text
    full = torch.ones(2, K + 8, K + 8, dtype=torch.bool)
    full[:, :K, K:] = False  # queries do not see text
    full[:, K:, K:] = torch.ones(8, 8, dtype=torch.bool).tril()  # text is causal
    dec = ids.clone()
    with torch.no_grad():
        h_full, _ = model.qformer(query_embeds=model.query_tokens.expand(2, -1, -1), input_ids=dec, image_embeds=emb,
                                  mask=full[:, None])  # fmt: skip
        h_pref, _ = model.qformer(input_ids=dec, mask=full[:, None, K:], prefix=prefix)
    assert torch.allclose(h_full[:, :K], q_out, atol=1e-5)
    assert torch.allclose(h_full[:, K:], h_pref, atol=1e-5)


def test_itc_passes_are_unimodal():
    """ITC: the image features do not depend on the text, the text feature not on the image."""
    model = micro_blip2().eval()
    images = torch.randn(2, 3, 32, 32)
    ids, mask = text_batch(B=2, L=8)
    with torch.no_grad():
        f1 = model.image_feats(model.query_pass(model.image_embeds(images))[0])
        t1 = model.text_feat(ids, mask)
        t2 = model.text_feat(ids, mask)
        f2 = model.image_feats(model.query_pass(model.image_embeds(images.flip(0)))[0])
    assert torch.allclose(t1, t2)
    assert torch.allclose(f1, f2.flip(0), atol=1e-5)
    assert f1.shape == (2, 4, 16) and t1.shape == (2, 16)


def test_losses_and_the_frozen_tower():
    model = micro_blip2().train()
    assert not model.visual_encoder.training  # frozen: eval mode even in train()
    tower = copy.deepcopy(model.visual_encoder.state_dict())
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    images = torch.randn(4, 3, 32, 32)
    ids, mask = text_batch(B=4, L=9)
    out = model(images, ids, mask, torch.tensor([0, 1, 2, 2]), generator=torch.Generator().manual_seed(0))
    for name in ("itc_loss", "itm_loss", "lm_loss"):
        assert torch.isfinite(out[name]) and out[name] > 0, name
    # images 2 and 3 are one image: no negative of a row may show its own image
    assert out["itm_labels"][:4].tolist() == [1, 1, 1, 1] and (out["itm_labels"][4:] == 0).all()
    (out["itc_loss"] + out["itm_loss"] + out["lm_loss"]).backward()
    opt.step()
    assert all(p.grad is None for p in model.visual_encoder.parameters())
    for name in ("query_tokens", "ln_vision.weight", "qformer.encoder.layer.0.crossattention.self.query.weight",
                 "qformer.encoder.layer.2.intermediate_query.dense.weight", "itm_head.weight", "temp"):  # fmt: skip
        assert dict(model.named_parameters())[name].grad is not None, name
    after = model.visual_encoder.state_dict()
    assert all(torch.equal(tower[k], after[k]) for k in tower)  # BatchNorm statistics included
    with pytest.raises(ValueError, match="one of them"):
        model(None, ids, mask, torch.arange(4))


def test_cached_tower_output_is_the_same_forward():
    """Stages whose tower is frozen pass its output, computed once, instead of the images."""
    model = micro_blip2().train()
    images = torch.randn(3, 3, 32, 32)
    ids, mask = text_batch(B=3, L=9)
    a = model(images, ids, mask, torch.arange(3), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        tokens = model.visual_encoder.forward_features(images)
    b = model(None, ids, mask, torch.arange(3), image_tokens=tokens, generator=torch.Generator().manual_seed(1))
    for k in ("itc_loss", "itm_loss", "lm_loss"):
        assert torch.allclose(a[k], b[k], atol=1e-6), k


def test_overfits_a_handful_of_items():
    """Stage 1 fits 4 image-caption pairs: ITM right on every positive and hard negative, ITG's
    teacher-forced next token right everywhere."""
    torch.manual_seed(0)
    model = micro_blip2().train()
    images = torch.randn(4, 3, 32, 32)
    ids, mask = text_batch(B=4, L=8, seed=3)
    mask[:] = 1
    image_ids = torch.arange(4)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        out = model(images, ids, mask, image_ids, generator=g)
        opt.zero_grad()
        (out["itc_loss"] + out["itm_loss"] + out["lm_loss"]).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        out = model(images, ids, mask, image_ids, generator=g)
    assert (out["itm_logits"].argmax(-1) == out["itm_labels"]).all()
    pred = out["lm_logits"][:, :-1].argmax(-1)
    assert (pred == ids[:, 1:]).all()


def test_filter_scores_as_the_retrieval_model_gives_them():
    """`score` (CapFilt's filter, the probes): each image once and its R captions as rows -> ITM
    p(match) of each pair and the best query's ITC cosine, as `itm_logits` and `image_feat` give them."""
    model = micro_blip2().eval()
    images = torch.randn(2, 3, 32, 32)
    ids, mask = text_batch(B=4, L=7)
    emb = model.image_embeds(images)
    out = model.score(emb, ids, mask)  # rows 0-1: image 0, rows 2-3: image 1
    rows = emb.repeat_interleave(2, dim=0)
    with torch.no_grad():
        want_itm = model.itm_logits(rows, ids, mask).softmax(-1)[:, 1]
        feats = model.image_feat(emb).repeat_interleave(2, dim=0)  # (4, K, E)
        want_itc = (feats @ model.text_feat(ids, mask)[:, :, None])[..., 0].amax(dim=1)
    assert torch.allclose(out["itm_prob"], want_itm, atol=1e-6) and torch.allclose(
        out["itc_cosine"], want_itc, atol=1e-6
    )
