"""BlipPretrain / BlipRetrieval / BlipCaptioner behaviour."""

from __future__ import annotations

import pytest
import torch
from helpers import micro_config, text_batch

from blip_core.models.blip.model import BlipCaptioner, BlipPretrain, BlipRetrieval, split_pretrain_state
from blip_core.models.blip.presets import PRESETS, get_preset


def _step(model, B=4, ids_img=None, seed=0):
    ids, mask = text_batch(B=B, seed=seed)
    imgs = torch.randn(B, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    image_ids = torch.arange(B) if ids_img is None else ids_img
    return model(imgs, ids, mask, image_ids, generator=torch.Generator().manual_seed(seed))


def test_pretrain_forward_returns_losses_and_tensors(cfg):
    model = BlipPretrain(cfg)
    out = _step(model)
    for k in ("itc_loss", "itm_loss", "lm_loss"):
        assert out[k].ndim == 0 and torch.isfinite(out[k])
    assert out["itm_logits"].shape == (12, 2) and out["itm_labels"].tolist() == [1] * 4 + [0] * 8
    assert out["lm_logits"].shape == (4, 9, cfg.text.vocab_size)
    sum(v for k, v in out.items() if k.endswith("_loss")).backward()
    assert model.text.encoder.layer[0].attention_dec.self.query.weight.grad is not None
    assert model.visual_encoder_m.cls_token.grad is None  # momentum encoders get no gradient


def test_caption_made_itm_rows_are_appended_with_their_labels(cfg):
    """TrainConfig.itm_swap_negatives / itm_phrase_positives: extra (image, text, label) rows, of
    their own length, join ITM after the in-batch ones."""
    model = BlipRetrieval(cfg)
    ids, mask = text_batch(B=4, L=9)
    extra_ids, extra_mask = text_batch(B=3, L=12, seed=5)
    extra = {"input_ids": extra_ids, "attention_mask": extra_mask, "image_index": torch.tensor([0, 0, 3]),
             "labels": torch.tensor([0, 1, 0])}  # fmt: skip
    imgs = torch.randn(4, 3, 32, 32)
    out = model(imgs, ids, mask, torch.arange(4), generator=torch.Generator().manual_seed(0), itm_extra=extra)
    assert out["itm_logits"].shape == (15, 2)
    assert out["itm_labels"].tolist() == [1] * 4 + [0] * 8 + [0, 1, 0]
    # the extra rows are scored as `itm_logits` scores those pairs alone
    with torch.no_grad():
        alone = model.itm_logits(model.image_embeds(imgs), extra_ids, extra_mask, image_index=extra["image_index"])
    assert torch.allclose(out["itm_logits"][12:].detach(), alone, atol=1e-5)


def test_itm_word_loss_reads_the_itm_head_at_every_labelled_word(cfg):
    """TrainConfig.itm_word_loss: the ITM head at each labelled token of the positives (every word
    true), none of the in-batch negatives (which word is false is unknown) and the caption-made
    rows (their own word labels); weighted, and absent at weight 0."""
    model = BlipRetrieval(cfg)
    ids, mask = text_batch(B=4, L=9)
    mask[1, 6:] = 0
    pos_labels = torch.full((4, 9), -100)
    pos_labels[:, 1:8] = 1  # [CLS] at 0, [SEP] at 8
    pos_labels[1, 5:] = -100  # row 1: [SEP] at 5, then padding
    pos_labels[2, 3] = -100  # a punctuation token, unlabelled as in the caption-made rows
    extra_ids, extra_mask = text_batch(B=2, L=7, seed=5)
    words = torch.tensor([[-100, 1, 0, 1, 1, 1, -100], [-100, 1, 1, -100, -100, -100, -100]])
    extra = {"input_ids": extra_ids, "attention_mask": extra_mask, "image_index": torch.tensor([0, 2]),
             "labels": torch.tensor([0, 1]), "word_labels": words, "positive_word_labels": pos_labels}  # fmt: skip
    imgs = torch.randn(4, 3, 32, 32)
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    out = model(imgs, ids, mask, torch.arange(4), generator=gen(), itm_extra=extra, itm_word=0.5)
    assert "itm_word_loss" not in model(imgs, ids, mask, torch.arange(4), generator=gen(), itm_extra=extra)
    # by hand: the positives' words, then the caption-made rows, through itm_head at each token
    with torch.no_grad():
        emb = model.image_embeds(imgs)
        pos = model.itm_head(model.itm_hidden(emb, ids, mask))  # (4, 9, 2)
        ext = model.itm_head(model.itm_hidden(emb, extra_ids, extra_mask, image_index=extra["image_index"]))
    logits = torch.cat([pos[pos_labels >= 0], ext[words >= 0]])
    target = torch.cat([pos_labels[pos_labels >= 0], words[words >= 0]])
    want = 0.5 * torch.nn.functional.cross_entropy(logits, target)
    assert torch.allclose(out["itm_word_loss"].detach(), want, atol=1e-5)
    out["itm_word_loss"].backward()
    assert model.itm_head.weight.grad is not None


def test_queue_enqueue_and_wrap_around(cfg):
    model = BlipRetrieval(cfg)  # queue_size 16, batch 4
    for step in range(5):
        _step(model, seed=step, ids_img=torch.arange(4) + 10 * step)
        assert int(model.queue_ptr) == (4 * (step + 1)) % 16
    # after 5 batches of 4 into 16 slots, the first slots hold the 5th batch (ids 40..43)
    assert model.idx_queue[:4].tolist() == [40, 41, 42, 43]
    assert model.idx_queue[4:8].tolist() == [10, 11, 12, 13]
    assert torch.allclose(model.image_queue.norm(dim=0), torch.ones(16), atol=1e-5)


def test_momentum_update_is_ema(cfg):
    model = BlipRetrieval(cfg)
    with torch.no_grad():
        model.vision_proj.weight.add_(1.0)
    before = model.vision_proj_m.weight.clone()
    model.momentum_update()
    expected = cfg.momentum * before + (1 - cfg.momentum) * model.vision_proj.weight
    assert torch.allclose(model.vision_proj_m.weight, expected)
    # the momentum text encoder follows the online one by parameter name
    assert torch.allclose(model.text_m.embeddings.word_embeddings.weight, model.text.embeddings.word_embeddings.weight)


def test_captions_of_one_image_are_not_negatives(cfg):
    model = BlipRetrieval(cfg)
    out = _step(model, ids_img=torch.tensor([3, 3, 3, 3]))  # four captions of one image
    assert int(out["num_no_negative"]) == 8  # no valid negative for any row
    assert out["itm_logits"].shape == (4, 2)  # positives only: no false negatives trained on
    out = _step(model, ids_img=torch.tensor([1, 1, 2, 2]), seed=1)
    assert int(out["num_no_negative"]) == 0 and out["itm_logits"].shape == (12, 2)


def test_temperature_is_clamped(cfg):
    model = BlipRetrieval(cfg)
    with torch.no_grad():
        model.temp.fill_(5.0)
    out = _step(model)
    assert float(out["temp"]) == 0.5


def test_captioner_ignores_prompt_and_padding(cfg):
    import torch.nn.functional as F

    model = BlipCaptioner(cfg).eval()
    ids, mask = text_batch()
    out = model(torch.randn(4, 3, 32, 32), ids, mask, prompt_length=3)
    logits = out["lm_logits"]
    # targets: positions 3.. of each row that are not padding (prompt and padding never predicted)
    pred, tgt = logits[:, 2:-1], ids[:, 3:]
    keep = mask[:, 3:].bool()
    ref = F.cross_entropy(pred[keep], tgt[keep], label_smoothing=cfg.text.label_smoothing)
    assert torch.allclose(out["lm_loss"], ref, atol=1e-6)


def test_split_pretrain_into_captioner_and_filter(cfg):
    pre = BlipPretrain(cfg)
    cap_state, ret_state = split_pretrain_state(pre.state_dict())
    cap, ret = BlipCaptioner(cfg), BlipRetrieval(cfg)
    cap.load_state_dict(cap_state, strict=True)
    ret.load_state_dict(ret_state, strict=True)
    l0 = pre.text.encoder.layer[0]
    assert torch.equal(cap.text.encoder.layer[0].attention.self.query.weight, l0.attention_dec.self.query.weight)
    assert torch.equal(ret.text.encoder.layer[0].attention.self.query.weight, l0.attention.self.query.weight)
    assert torch.equal(cap.text.encoder.layer[0].crossattention.self.key.weight, l0.crossattention.self.key.weight)
    # same decoder outputs before and after the split
    ids, mask = text_batch()
    img = torch.randn(4, 17, cfg.vision.width)
    pre.eval(), cap.eval()
    assert torch.allclose(
        pre.text.logits(pre.text(ids, mask, mode="decoder", image_embeds=img)),
        cap.text.logits(cap.text(ids, mask, mode="decoder", image_embeds=img)),
    )


def test_presets_build_and_validate():
    for name in PRESETS:
        cfg = get_preset(name)
        assert cfg.vision.num_patches > 0
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        get_preset("huge")
    with pytest.raises(ValueError, match="queue_size .* divisible by the global batch size"):
        micro_config().check_batch(5)
    micro_config().check_batch(8)
    assert get_preset("large").vision.grad_checkpointing and get_preset("base").vision.width == 768


def test_empty_queue_slots_are_masked_out_of_itc(cfg):
    """Never-written slots hold random vectors; they must not act as (easy) negatives."""
    model = BlipRetrieval(cfg)
    out = _step(model)
    assert model.idx_queue[:4].tolist() == [0, 1, 2, 3] and (model.idx_queue[4:] == -100).all()
    # the first call saw a fully empty queue: only the 4 in-batch columns carry probability
    probs = out["sim_i2t"].softmax(dim=1)
    assert torch.allclose(probs[:, :4].sum(1), torch.ones(4), atol=1e-5)


def test_captioner_unlikelihood_pushes_the_negative_word_down(cfg):
    """TrainConfig.lm_unlikelihood: `unlikelihood_loss` joins `lm_loss`; its gradient lowers the
    probability of the negative's token where it leaves the caption, on the caption's own logits."""
    model = BlipCaptioner(cfg)
    ids, mask = text_batch(B=2, L=8)
    neg = ids.clone()
    neg[:, 4] = (ids[:, 4] + 1) % cfg.text.vocab_size
    neg[:, 4] = torch.where(neg[:, 4] < 5, torch.full_like(neg[:, 4], 5), neg[:, 4])  # not a special token
    imgs = torch.randn(2, 3, 32, 32)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)

    def p_neg():
        with torch.no_grad():
            logits = model(imgs, ids, mask)["lm_logits"]
        return torch.softmax(logits[torch.arange(2), 3], -1)[torch.arange(2), neg[:, 4]]

    before = p_neg()
    out = model(imgs, ids, mask, negative_ids=neg, unlikelihood=1.0)
    assert set(out) >= {"lm_loss", "unlikelihood_loss"} and out["unlikelihood_loss"] > 0
    opt.zero_grad()
    out["unlikelihood_loss"].backward()
    opt.step()
    assert (p_neg() < before).all()
    assert "unlikelihood_loss" not in model(imgs, ids, mask)
