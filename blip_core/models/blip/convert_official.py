"""Official salesforce/BLIP checkpoints as ours (`model_base.pth`, `model_base_capfilt_large.pth`,
`model_base_caption_capfilt_large.pth`, `model_base_retrieval_coco.pth`, ...): loaded with
`torch.load(weights_only=True)`, keys mapped, the position embedding resized (BLIP pre-trains at
224 and fine-tunes at 384).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from blip_core.fileio import safe_torch_load
from blip_core.models.blip.config import ModelConfig
from blip_core.models.blip.model import MOMENTUM_AND_QUEUES, copy_momentum
from blip_core.models.common.vision import resize_pos_embed
from blip_core.models.pretrained import create_model, load_strict

logger = logging.getLogger(__name__)


def load_official_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The `model` dict of an official BLIP .pth, loaded without executing pickled code."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    ckpt = safe_torch_load(path)
    state = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a BLIP state dict")
    return state


def from_official_state(state: dict[str, torch.Tensor], kind: str, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Official BLIP state -> ours for `kind` (pretrain | captioner | retrieval).

    Pre-training checkpoints hold text_encoder, text_decoder (tied to the encoder except its
    self-attention) and momentum copies; captioning checkpoints hold text_decoder only; retrieval
    checkpoints hold text_encoder, momentum copies and queues (`ptr_queue`, `idx_queue`).
    """
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if k.startswith(("visual_encoder.", "visual_encoder_m.")):
            out[k] = v
        elif k.startswith(("vision_proj", "text_proj", "itm_head")) or k == "temp":
            if kind != "captioner":
                out[k] = v
        elif k.startswith("text_encoder.") and kind != "captioner":
            out["text." + k[len("text_encoder.") :]] = v
        elif k.startswith("text_encoder_m.") and kind != "captioner":
            if ".crossattention." not in k:  # our momentum text encoder runs in text mode only
                out["text_m." + k[len("text_encoder_m.") :]] = v
        elif k.startswith("text_decoder.bert.encoder.layer.") and kind == "pretrain":
            if ".attention." in k:  # the only decoder parameters not tied to the encoder
                out["text." + k[len("text_decoder.bert.") :].replace(".attention.", ".attention_dec.")] = v
        elif k.startswith("text_decoder.bert.") and kind == "captioner":
            out["text." + k[len("text_decoder.bert.") :]] = v
        elif k.startswith("text_decoder.cls.predictions.") and kind in ("pretrain", "captioner"):
            rest = k[len("text_decoder.cls.predictions.") :]
            if rest.startswith("transform."):
                out["text.lm_head." + rest] = v
            elif rest == "bias":
                out["text.lm_head.bias"] = v
        elif k in ("image_queue", "text_queue") and kind != "captioner":
            out[k] = v
        elif k in ("queue_ptr", "ptr_queue") and kind != "captioner":
            out["queue_ptr"] = v.reshape(()).long()
        elif k == "idx_queue" and kind != "captioner":
            out["idx_queue"] = v.reshape(-1).long()
    out = {k: v for k, v in out.items() if "position_ids" not in k}
    # resolution change: resize patch position embeddings (e.g. 224 -> 384)
    for key in ("visual_encoder.pos_embed", "visual_encoder_m.pos_embed"):
        if key in out:
            out[key] = resize_pos_embed(out[key], cfg.vision.num_patches)
    if kind == "captioner":
        out = {k: v for k, v in out.items() if not k.startswith("visual_encoder_m.")}
    if "image_queue" in out and "idx_queue" not in out:  # pre-training checkpoints: filled, ids unknown
        out["idx_queue"] = torch.full((out["image_queue"].shape[1],), -1, dtype=torch.long)
    # queues of another length cannot be reused: start fresh ones (logged)
    if "image_queue" in out and out["image_queue"].shape[1] != cfg.queue_size:
        logger.warning(
            "checkpoint queue length %d != model.queue_size %d: queues re-initialised",
            out["image_queue"].shape[1],
            cfg.queue_size,
        )
        for key in ("image_queue", "text_queue", "idx_queue", "queue_ptr"):
            out.pop(key, None)
    return out


def load_official(path: str | Path, kind: str, cfg: ModelConfig) -> nn.Module:
    """Build our `kind` model from an official BLIP .pth file."""
    model = create_model(kind, cfg)
    state = from_official_state(load_official_state(path), kind, cfg)
    has_momentum = any(k.startswith("visual_encoder_m.") for k in state)
    load_strict(
        model,
        state,
        ignore_missing=MOMENTUM_AND_QUEUES
        if not has_momentum
        else ("image_queue", "text_queue", "idx_queue", "queue_ptr"),
    )
    if kind != "captioner" and not has_momentum:
        copy_momentum(model)
    return model
