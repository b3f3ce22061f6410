"""The towers' arguments that every model family shares: the vision tower (timm ViT or the
hybrid) and the MED / BERT-style text transformer."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(kw_only=True, slots=True)
class VisionConfig:
    """timm VisionTransformer hyper-parameters (BLIP: ViT-B/16 or ViT-L/16)."""

    image_size: int = 224
    patch_size: int = 16
    width: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    layer_norm_eps: float = 1e-6
    """BLIP's ViT uses 1e-6; Hugging Face's BLIP port uses 1e-5 (kept when converting from HF)."""
    drop_path_rate: float = 0.0
    grad_checkpointing: bool = False
    """Recompute block activations in backward (BLIP enables it for ViT-L)."""
    stem: str = "patch"
    """How pixels become tokens. patch: ViT's linear patchify (BLIP; the only stem official and Hugging
    Face weights have). conv: a hybrid ViT (blip_core.models.common.vision.HybridViT): a conv stem whose
    feature map is the token grid and whose mean starts token 0; for towers trained from scratch on
    little data, where a patch ViT's [CLS] does not become image-dependent within a CPU budget."""
    stem_channels: list[int] = field(default_factory=list)
    """conv stem: output channels of each 3x3 conv (norm + ReLU after each); the last equals `width`."""
    stem_strides: list[int] = field(default_factory=list)
    """conv stem: stride (1 or 2) of each conv; their product is `patch_size` (one token per patch)."""
    pos_embed_init: str = "normal"
    """conv stem: how the (learned) position embedding of the grid tokens starts. normal: N(0, 0.02),
    as timm's ViT; sincos: the fixed 2D sine-cosine embedding (MAE) as the start. A hybrid tower
    trained on image-level labels has no use for position, so an N(0, 0.02) start stays negligible
    and its tokens do not say where they are (a captioner cannot tell left from right); sincos
    starts position at the scale of the features."""
    stem_norm: str = "batch"
    """conv stem normalisation: batch (BatchNorm; centring over the batch breaks the symmetry of
    mostly-background images, measured ~2x faster to start learning than group) or group (GroupNorm
    with one group: no batch statistics, so N CPU DDP processes equal one process exactly; on GPUs
    BatchNorm is synchronised across ranks instead)."""

    def __post_init__(self) -> None:
        if self.stem not in ("patch", "conv"):
            raise ValueError(f"vision.stem must be patch or conv, got {self.stem!r}")
        if self.pos_embed_init not in ("normal", "sincos"):
            raise ValueError(f"vision.pos_embed_init must be normal or sincos, got {self.pos_embed_init!r}")
        if self.stem_norm not in ("batch", "group"):
            raise ValueError(f"vision.stem_norm must be batch or group, got {self.stem_norm!r}")
        if self.stem == "conv":
            if not self.stem_channels or len(self.stem_channels) != len(self.stem_strides):
                raise ValueError("vision.stem_channels and vision.stem_strides must be non-empty and of equal length")
            if any(s not in (1, 2) for s in self.stem_strides) or math.prod(self.stem_strides) != self.patch_size:
                raise ValueError(
                    f"vision.stem_strides ({self.stem_strides}) must be 1s and 2s whose product is patch_size "
                    f"({self.patch_size})"
                )
            if self.stem_channels[-1] != self.width or min(self.stem_channels) < 1:
                raise ValueError(
                    f"vision.stem_channels ({self.stem_channels}) must be >= 1 and end at width ({self.width})"
                )
        elif self.stem_channels or self.stem_strides or self.pos_embed_init != "normal":
            raise ValueError(
                "vision.stem_channels / stem_strides / pos_embed_init are only used with vision.stem: conv"
            )
        if self.image_size % self.patch_size:
            raise ValueError(
                f"vision.image_size ({self.image_size}) must be divisible by patch_size ({self.patch_size})"
            )
        if self.width % self.num_heads:
            raise ValueError(f"vision.width ({self.width}) must be divisible by num_heads ({self.num_heads})")
        for name in ("image_size", "patch_size", "width", "depth", "num_heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"vision.{name} must be >= 1")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"vision.drop_path_rate must be in [0, 1), got {self.drop_path_rate}")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


@dataclass(kw_only=True, slots=True)
class TextConfig:
    """MED (BERT-style) text transformer; token ids come from the tokenizer."""

    vocab_size: int = 30524
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    layer_norm_eps: float = 1e-12
    hidden_dropout: float = 0.0
    attention_dropout: float = 0.0
    pad_token_id: int = 0
    cls_token_id: int = 101
    sep_token_id: int = 102
    """Also the decoder's end-of-sequence token (BLIP)."""
    bos_token_id: int = 30522
    """`[DEC]`: replaces `[CLS]` as the decoder's first token."""
    enc_token_id: int = 30523
    """`[ENC]`: replaces `[CLS]` for the image-grounded text encoder (ITM)."""
    label_smoothing: float = 0.1
    initializer_range: float = 0.02
    """Std of the N(0, std) weight init (BERT: 0.02). Narrow towers trained from scratch need more:
    with 0.02 at width 128 every caption's [CLS] state starts almost identical (cosine ~0.999)."""
    max_text_len: int = 35
    """Captions are truncated to this many tokens (BLIP: 30-35)."""

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"text.hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads})")
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size", "max_text_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"text.{name} must be >= 1")
        ids = {
            "pad": self.pad_token_id,
            "cls": self.cls_token_id,
            "sep": self.sep_token_id,
            "bos": self.bos_token_id,
            "enc": self.enc_token_id,
        }
        for name, i in ids.items():
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"text.{name}_token_id ({i}) is outside the vocabulary (size {self.vocab_size})")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"text.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.max_text_len > self.max_position_embeddings:
            raise ValueError("text.max_text_len must be <= text.max_position_embeddings")
