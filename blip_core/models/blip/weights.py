"""What BLIP's converters share: the momentum encoders and queues a converted checkpoint may lack,
and BLIP's `copy_params` start for them."""

from __future__ import annotations

import torch
from torch import nn

MOMENTUM_AND_QUEUES = (
    "visual_encoder_m.",
    "text_m.",
    "vision_proj_m.",
    "text_proj_m.",
    "image_queue",
    "text_queue",
    "idx_queue",
    "queue_ptr",
    "temp",
)


def copy_momentum(model: nn.Module) -> None:
    with torch.no_grad():
        for online, mom in model.momentum_pairs():
            mom.copy_(online)
