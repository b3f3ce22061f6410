"""AdamW with BLIP's settings and learning-rate schedules.

Weight decay (0.05) applies to matrices only: biases, norms, the temperature, position embeddings
and the class token are not decayed (a common refinement of BLIP, which decays everything).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from blip_core.config import TrainConfig

NO_DECAY_NAMES = ("pos_embed", "cls_token", "temp")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or any(name == n or name.endswith("." + n) for n in NO_DECAY_NAMES):
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def create_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.999))


def lr_at(step: int, cfg: TrainConfig, steps_per_epoch: int, total_steps: int) -> float:
    """Linear warm-up, then step decay (x lr_decay per epoch) or cosine to min_lr."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "step":
        return max(cfg.min_lr, cfg.lr * cfg.lr_decay ** (step // max(1, steps_per_epoch)))
    progress = (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


def create_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int, total_steps: int):
    """LambdaLR over optimizer steps (its state_dict holds the step, for resume)."""
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_at(step, cfg, steps_per_epoch, total_steps) / cfg.lr)
