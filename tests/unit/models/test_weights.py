"""Checkpoints: our format, official salesforce/BLIP layouts, position-embedding resize."""

from __future__ import annotations

import pytest
import torch
from helpers import micro_config

from blip_core.models.blip.convert_official import load_official
from blip_core.models.blip.model import BlipCaptioner, BlipPretrain, BlipRetrieval
from blip_core.models.common.vision import create_vision_encoder, resize_pos_embed
from blip_core.models.pretrained import load_pretrained, save_pretrained


def _official_pretrain_state(model: BlipPretrain) -> dict[str, torch.Tensor]:
    """Our pre-training model written out with the key layout of BLIP's blip_pretrain.py
    (BertModel text_encoder, BertLMHeadModel text_decoder tied except '/attention', momentum copies
    with cross-attention, BERT position_ids buffers, queue_ptr of shape (1,))."""
    sd = {}
    for k, v in model.state_dict().items():
        if k.startswith(("visual_encoder", "vision_proj", "text_proj", "itm_head", "temp")) or k.endswith("_queue"):
            if k != "idx_queue":
                sd[k] = v.clone()
        elif k == "queue_ptr":
            sd[k] = v.reshape(1)
        elif k.startswith("text.lm_head.transform."):
            sd["text_decoder.cls.predictions." + k[len("text.lm_head.") :]] = v.clone()
        elif k == "text.lm_head.bias":
            sd["text_decoder.cls.predictions.bias"] = v.clone()
            sd["text_decoder.cls.predictions.decoder.bias"] = v.clone()
        elif k.startswith("text.") and ".attention_dec." in k:
            sd["text_decoder.bert." + k[5:].replace(".attention_dec.", ".attention.")] = v.clone()
        elif k.startswith("text."):
            sd["text_encoder." + k[5:]] = v.clone()
            if ".attention." not in k:  # tied to the decoder
                sd["text_decoder.bert." + k[5:]] = v.clone()
        elif k.startswith("text_m."):
            sd["text_encoder_m." + k[7:]] = v.clone()
    sd["text_decoder.cls.predictions.decoder.weight"] = sd["text_encoder.embeddings.word_embeddings.weight"]
    for prefix in ("text_encoder.", "text_decoder.bert.", "text_encoder_m."):
        sd[prefix + "embeddings.position_ids"] = torch.arange(64)[None]
    for i in range(model.cfg.text.num_layers):  # BLIP's momentum text encoder has cross-attention too
        sd[f"text_encoder_m.encoder.layer.{i}.crossattention.self.query.weight"] = torch.randn(32, 32)
    return sd


def _equal_states(a: torch.nn.Module, b: torch.nn.Module, skip=()) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        if not k.startswith(skip):
            assert torch.equal(sa[k], sb[k]), k


def test_our_format_round_trip_and_split(cfg, tmp_path):
    model = BlipPretrain(cfg)
    save_pretrained(model, tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "model.safetensors").is_file() and (tmp_path / "ckpt" / "config.json").is_file()
    back = load_pretrained(tmp_path / "ckpt")
    assert isinstance(back, BlipPretrain) and back.cfg == cfg
    _equal_states(model, back)
    assert isinstance(load_pretrained(tmp_path / "ckpt", kind="captioner"), BlipCaptioner)
    assert isinstance(load_pretrained(tmp_path / "ckpt", kind="retrieval"), BlipRetrieval)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_pretrained(tmp_path)


def test_load_official_pretrain_checkpoint(cfg, tmp_path):
    model = BlipPretrain(cfg)
    torch.save({"model": _official_pretrain_state(model), "epoch": 19}, tmp_path / "model_base.pth")
    loaded = load_official(tmp_path / "model_base.pth", "pretrain", cfg)
    _equal_states(model, loaded, skip=("idx_queue",))
    assert (loaded.idx_queue == -1).all()  # pre-training checkpoints: filled queue, image ids unknown
    # the same file gives the captioner (decoder self-attention) and the filter (encoder one)
    cap = load_official(tmp_path / "model_base.pth", "captioner", cfg)
    l0 = model.text.encoder.layer[0]
    assert torch.equal(cap.text.encoder.layer[0].attention.self.value.weight, l0.attention_dec.self.value.weight)
    ret = load_official(tmp_path / "model_base.pth", "retrieval", cfg)
    assert torch.equal(ret.text.encoder.layer[0].attention.self.value.weight, l0.attention.self.value.weight)


def test_load_official_caption_and_retrieval_checkpoints(cfg, tmp_path):
    model = BlipPretrain(cfg)
    full = _official_pretrain_state(model)
    caption_ckpt = {k: v for k, v in full.items() if k.startswith(("visual_encoder.", "text_decoder."))}
    torch.save({"model": caption_ckpt}, tmp_path / "model_base_caption.pth")
    cap = load_official(tmp_path / "model_base_caption.pth", "captioner", cfg)
    assert torch.equal(cap.text.lm_head.bias, model.text.lm_head.bias)
    retrieval = {k: v for k, v in full.items() if not k.startswith("text_decoder.")}
    retrieval["ptr_queue"] = retrieval.pop("queue_ptr")
    retrieval["idx_queue"] = torch.arange(cfg.queue_size)[None]  # BLIP retrieval: (1, Q)
    torch.save({"model": retrieval}, tmp_path / "model_base_retrieval_coco.pth")
    ret = load_official(tmp_path / "model_base_retrieval_coco.pth", "retrieval", cfg)
    assert ret.idx_queue.tolist() == list(range(cfg.queue_size))
    assert torch.equal(ret.text_m.embeddings.word_embeddings.weight, model.text_m.embeddings.word_embeddings.weight)


def test_official_checkpoint_at_other_resolution_is_resized(cfg, tmp_path):
    model = BlipPretrain(cfg)  # 32 px, patch 8: 16 patches
    torch.save({"model": _official_pretrain_state(model)}, tmp_path / "m.pth")
    big = micro_config()
    big.vision.image_size = 48  # 36 patches, as 224 -> 384 fine-tuning
    loaded = load_official(tmp_path / "m.pth", "captioner", big)
    assert loaded.visual_encoder.pos_embed.shape == (1, 37, cfg.vision.width)
    assert torch.equal(loaded.visual_encoder.pos_embed, resize_pos_embed(model.visual_encoder.pos_embed.detach(), 36))
    assert torch.equal(loaded.visual_encoder.pos_embed[:, 0], model.visual_encoder.pos_embed[:, 0].detach())
    loaded.image_embeds(torch.randn(1, 3, 48, 48))  # runs at the new resolution


def test_official_loader_rejects_garbage(cfg, tmp_path):
    torch.save({"model": {"visual_encoder.cls_token": torch.zeros(1, 1, 48)}}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="does not fit"):
        load_official(tmp_path / "bad.pth", "captioner", cfg)
    with pytest.raises(FileNotFoundError):
        load_official(tmp_path / "none.pth", "captioner", cfg)


def test_vision_encoder_options(cfg):
    cfg.vision.grad_checkpointing = True
    vit = create_vision_encoder(cfg.vision)
    assert vit.grad_checkpointing
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    vit.train()
    out = vit.forward_features(x)
    assert out.shape == (2, 17, 48)
    out.sum().backward()
    assert x.grad is not None
