"""How the trainer calls each BLIP-2 model (the registry's `Task.forward`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from blip_core.train.loop import Trainer


def qformer_forward(trainer: Trainer, b: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Stage 1: ITC + ITM + ITG; the hard-negative generator seeded per step, as BLIP's."""
    return trainer.forward_model(b["images"], b["input_ids"], b["attention_mask"], b["image_ids"],
                                 generator=trainer.step_generator())  # fmt: skip
