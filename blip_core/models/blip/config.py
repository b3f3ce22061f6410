"""BLIP's model arguments: the towers (models.common.config) and the model around them —
projections, momentum encoders, queues, the captioner prompt, a vision classifier's classes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from blip_core.config.loader import from_dict
from blip_core.models.common.config import TextConfig, VisionConfig


@dataclass(kw_only=True, slots=True)
class ModelConfig:
    """A BLIP model: towers, projections, momentum encoders and queues."""

    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    embed_dim: int = 256
    """ITC projection size."""
    queue_size: int = 57600
    """Momentum feature queue length; must be divisible by the global batch size."""
    momentum: float = 0.995
    alpha: float = 0.4
    """Weight of the momentum-distillation pseudo-targets in ITC."""
    temp: float = 0.07
    """Initial ITC temperature (learnable, clamped to [0.001, 0.5])."""
    itc_online_batch: bool = False
    """ITC in-batch columns use the online features (gradients through both towers, as CLIP) instead
    of the momentum ones; the queue stays momentum features. BLIP's recipe (False) starts from
    pre-trained towers; from scratch its text features collapse, so the `tiny` preset turns this on."""
    classes: dict[str, list[str]] = field(default_factory=dict)
    """Vision classifiers only (kind `vision`, `pretrain_vision`): the class vocabulary per label
    group, e.g. {"shape": [...], "color": [...]}; empty for BLIP models."""
    prompt: str = "a picture of "
    """Captioner prompt; its tokens are not trained on and are stripped from generated captions."""
    tokenizer: str = ""
    """Tokenizer directory (ours, or a local bert-base-uncased for official weights)."""

    def __post_init__(self) -> None:
        if self.embed_dim < 1:
            raise ValueError(f"model.embed_dim must be >= 1, got {self.embed_dim}")
        if self.queue_size < 1:
            raise ValueError(f"model.queue_size must be >= 1, got {self.queue_size}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"model.momentum must be in [0, 1), got {self.momentum}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"model.alpha must be in [0, 1], got {self.alpha}")
        if not 0.001 <= self.temp <= 0.5:
            raise ValueError(f"model.temp must be in [0.001, 0.5], got {self.temp}")

    def check_batch(self, global_batch_size: int) -> None:
        """The queue is filled a whole global batch at a time, so it must divide evenly."""
        if global_batch_size < 1 or self.queue_size % global_batch_size:
            raise ValueError(
                f"model.queue_size ({self.queue_size}) must be divisible by the global batch size ({global_batch_size})"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "vision": {f.name: getattr(self.vision, f.name) for f in dataclasses.fields(self.vision)},
            "text": {f.name: getattr(self.text, f.name) for f in dataclasses.fields(self.text)},
            **{f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("vision", "text")},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, section: str = "model") -> ModelConfig:
        return from_dict(cls, d, section=section)
