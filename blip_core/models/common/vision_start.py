"""The vision start (BLIP: DeiT ImageNet weights; here also the `pretrain_vision` stage's tower):
a vision tower's weights from one of our checkpoints or a timm-layout state-dict file."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from blip_core.fileio import safe_torch_load
from blip_core.models.common.config import VisionConfig
from blip_core.models.common.vision import resize_pos_embed, vision_tower_names
from blip_core.models.pretrained import read_config
from blip_core.registry import get_task, kind_task

logger = logging.getLogger(__name__)

TIMM_HEAD_PREFIXES = ("head.", "head_dist.", "fc_norm.", "pre_logits.")
"""Classification parts of a timm ViT state dict: dropped, as BLIP drops DeiT's head."""


def vision_start_state(source: str | Path, vision_cfg: VisionConfig) -> dict[str, torch.Tensor]:
    """The vision tower's weights from `source`, keyed as the tower's own state dict (timm names).

    `source` is one of our checkpoint folders (any kind whose model class names a vision tower in
    `vision_towers`, e.g. the `pretrain_vision` stage's), or a timm-layout state dict file:
    `.safetensors`, or `.pth`/`.pt`/`.bin` (optionally under "model" or "state_dict", as DeiT's release), e.g.
    `deit_base_patch16_224-b5f2ef4d.pth`, which BLIP's ViT-B starts from. The classification head is
    dropped, a distillation token (DeiT-distilled) removed with its position, and the position
    embedding resized to this tower's resolution (bicubic, as BLIP's `interpolate_pos_embed`).
    """
    source = Path(source)
    if source.is_dir():
        kind, cfg = read_config(source)
        towers = getattr(get_task(kind_task(kind)).model_class, "vision_towers", ())
        prefix = f"{towers[0]}." if towers else ""
        state = load_file(str(source / "model.safetensors"))
        state = {k[len(prefix) :]: v for k, v in state.items() if prefix and k.startswith(prefix)}
        if not state:
            raise ValueError(f"{source} ({kind} checkpoint) holds no vision tower")
        check_same_tower(cfg.vision, vision_cfg, source)
    elif source.is_file():
        if source.suffix == ".safetensors":
            state = load_file(str(source))
        else:
            ckpt = safe_torch_load(source)
            state = ckpt.get("model", ckpt.get("state_dict", ckpt)) if isinstance(ckpt, dict) else None
            if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
                raise ValueError(f"{source} does not hold a timm-layout state dict (name -> tensor)")
        state = {k.removeprefix("module."): v for k, v in state.items()}  # saved from DDP
        if any(k.startswith("visual_encoder.") for k in state):  # a whole BLIP model's state
            state = {k[len("visual_encoder.") :]: v for k, v in state.items() if k.startswith("visual_encoder.")}
        state = {k: v for k, v in state.items() if not k.startswith(TIMM_HEAD_PREFIXES)}
    else:
        raise FileNotFoundError(f"vision start not found: {source} (a checkpoint folder or a timm state-dict file)")
    if "dist_token" in state:  # DeiT-distilled: [CLS], [DIST], patches -> drop [DIST] and its position
        state.pop("dist_token")
        if "pos_embed" in state:
            pe = state["pos_embed"]
            state["pos_embed"] = torch.cat([pe[:, :1], pe[:, 2:]], dim=1)
    if "pos_embed" in state:
        state["pos_embed"] = resize_pos_embed(state["pos_embed"], vision_cfg.num_patches)
    return state


def check_same_tower(saved: VisionConfig, wanted: VisionConfig, source: Path) -> None:
    """Our checkpoints carry their VisionConfig: a different architecture is a clear error here."""
    keys = ("stem", "width", "depth", "num_heads", "patch_size", "stem_channels", "stem_strides")
    diff = {k: (getattr(saved, k), getattr(wanted, k)) for k in keys if getattr(saved, k) != getattr(wanted, k)}
    if diff:
        raise ValueError(f"the vision tower of {source} differs from the model's: {diff} (saved, wanted)")


def load_vision_start(model: nn.Module, source: str | Path) -> dict[str, Any]:
    """Load a vision start into the model's vision tower (`vision_towers`: the trained one, and its
    momentum copy if any). Every tower parameter must be found with its shape; returns what was
    loaded (for the run's record)."""
    names = vision_tower_names(model)
    if not names:
        raise ValueError(
            f"a {type(model).__name__} has no vision tower to start (its class names none in vision_towers)"
        )
    tower = getattr(model, names[0])
    state = vision_start_state(source, model.cfg.vision)
    own = tower.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        raise ValueError(
            f"vision start {source} does not fit the {model.cfg.vision.stem} tower (width {model.cfg.vision.width}, "
            f"depth {model.cfg.vision.depth}): missing {missing[:6]}, unexpected {unexpected[:6]}, "
            f"wrong shapes {[(k, tuple(state[k].shape), tuple(own[k].shape)) for k in wrong[:4]]}"
        )
    tower.load_state_dict(state)
    for copy in names[1:]:  # momentum copies start equal to the tower
        getattr(model, copy).load_state_dict(tower.state_dict())
    logger.info("vision tower starts from %s (%d tensors)", source, len(state))
    return {"vision_init": str(source), "vision_init_tensors": len(state)}
