"""BLIP-2's model arguments: the frozen vision tower, the Q-Former (a BERT-style text transformer
plus learned queries) and its projections."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from blip_core.config.loader import from_dict
from blip_core.models.common.config import TextConfig, VisionConfig


@dataclass(kw_only=True, slots=True)
class Blip2Config:
    """A Q-Former on a frozen image tower (BLIP-2 stage 1)."""

    vision: VisionConfig = field(default_factory=VisionConfig)
    qformer: TextConfig = field(default_factory=TextConfig)
    """The Q-Former's text side (BLIP-2: BERT-base, 12 layers)."""
    num_query_tokens: int = 32
    """K learned queries (BLIP-2: 32): the bottleneck every image passes through."""
    cross_attention_freq: int = 2
    """Layers 0, f, 2f, ... cross-attend to the image tokens, for query positions only (BLIP-2: 2)."""
    embed_dim: int = 256
    """ITC projection size."""
    temp: float = 0.07
    """Initial ITC temperature (learnable, clamped to [0.001, 0.5])."""
    vision_final_norm: bool = True
    """The tower keeps its own last LayerNorm (the world's towers end with one); False drops it, as
    LAVIS's EVA ViT and Hugging Face BLIP-2 checkpoints do, where `ln_vision` is the last norm."""
    tokenizer: str = ""

    def __post_init__(self) -> None:
        if self.num_query_tokens < 1:
            raise ValueError(f"blip2.num_query_tokens must be >= 1, got {self.num_query_tokens}")
        if not 1 <= self.cross_attention_freq <= self.qformer.num_layers:
            raise ValueError(
                f"blip2.cross_attention_freq must be in [1, qformer.num_layers={self.qformer.num_layers}], "
                f"got {self.cross_attention_freq}"
            )
        if self.embed_dim < 1:
            raise ValueError(f"blip2.embed_dim must be >= 1, got {self.embed_dim}")
        if not 0.001 <= self.temp <= 0.5:
            raise ValueError(f"blip2.temp must be in [0.001, 0.5], got {self.temp}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, section: str = "blip2") -> Blip2Config:
        return from_dict(cls, d, section=section)
