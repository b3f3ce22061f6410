"""Vision encoder: timm's VisionTransformer, configured as BLIP's ViT.

References:
- BLIP paper Sec. 3.1 ("we use a visual transformer as our image encoder ... [CLS] token").
- salesforce/BLIP models/vit.py (a copy of timm's ViT; parameter names are identical to timm's) and
  `interpolate_pos_embed` (bicubic resize of the patch position embeddings, class token kept).

- Dosovitskiy et al. 2021 (ViT), Sec. 3.1 "Hybrid Architecture": tokens from a CNN feature map;
  Xiao et al. 2021, "Early Convolutions Help Transformers See Better".

timm's Attention uses `F.scaled_dot_product_attention` (fused kernels on GPU).

Two stems (`VisionConfig.stem`):
- `patch`: timm's VisionTransformer, BLIP's ViT; the only stem official and Hugging Face weights have.
- `conv`: `HybridViT`, a small conv stem (timm `ConvNormAct` layers) whose feature map is the token
  grid, then timm transformer `Block`s. Token 0 (BLIP's [CLS], read by ITC and the momentum
  encoder) starts as the mean of the grid tokens instead of a learned constant. Why: trained from
  scratch on a few thousand images, a ViT's [CLS] stays nearly input-independent for hundreds of
  steps (image features collapse to one point, cosine 0.9999) and contrastive learning never
  starts within a CPU budget; the conv stem with batch statistics and a pooled token 0 learns from
  the first steps (measured in benchmarks/bench_learning.py).

Shapes: B batch, N = 1 + patches tokens, D width, P grid tokens.
"""

from __future__ import annotations

from functools import partial

import torch
from timm.layers import ConvNormAct, resample_abs_pos_embed
from timm.layers.pos_embed_sincos import build_sincos2d_pos_embed
from timm.models import checkpoint_seq
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn

from blip_core.models.common.config import VisionConfig
from blip_core.models.common.feature_cache import cached


class HybridViT(nn.Module):
    """Conv stem -> token grid (+ a pooled token 0) -> pre-norm transformer blocks -> LayerNorm."""

    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        norm = nn.BatchNorm2d if cfg.stem_norm == "batch" else partial(nn.GroupNorm, 1)
        layers, c_in = [], 3
        for c_out, stride in zip(cfg.stem_channels, cfg.stem_strides, strict=True):
            layers.append(ConvNormAct(c_in, c_out, 3, stride=stride, norm_layer=norm, act_layer=nn.ReLU))
            c_in = c_out
        self.stem = nn.Sequential(*layers)
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + cfg.num_patches, cfg.width) * 0.02)
        if cfg.pos_embed_init == "sincos":  # MAE's 2D sin-cos start; token 0 (pooled) gets none
            side = int(cfg.num_patches**0.5)
            with torch.no_grad():
                self.pos_embed.zero_()
                self.pos_embed[0, 1:] = build_sincos2d_pos_embed([side, side], cfg.width)
        drop_path = torch.linspace(0, cfg.drop_path_rate, max(1, cfg.depth)).tolist()
        norm_layer = partial(nn.LayerNorm, eps=cfg.layer_norm_eps)
        self.blocks = nn.Sequential(
            *[
                Block(
                    cfg.width,
                    cfg.num_heads,
                    cfg.mlp_ratio,
                    qkv_bias=True,
                    drop_path=drop_path[i],
                    norm_layer=norm_layer,
                )
                for i in range(cfg.depth)
            ]
        )
        self.norm = norm_layer(cfg.width)
        self.grad_checkpointing = False

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        x = self.stem(images).flatten(2).transpose(1, 2)  # (B, P, D)
        x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1) + self.pos_embed  # (B, 1 + P, D)
        if self.grad_checkpointing and torch.is_grad_enabled():
            x = checkpoint_seq(self.blocks, x)
        else:
            x = self.blocks(x)
        return self.norm(x)  # (B, N, D)


def create_vision_encoder(cfg: VisionConfig) -> nn.Module:
    """A ViT whose `forward_features(images)` returns all token embeddings (B, N, D), final norm applied."""
    if cfg.stem == "conv":
        vit = HybridViT(cfg)
        vit.set_grad_checkpointing(cfg.grad_checkpointing)
        return vit
    vit = VisionTransformer(
        img_size=cfg.image_size,
        patch_size=cfg.patch_size,
        embed_dim=cfg.width,
        depth=cfg.depth,
        num_heads=cfg.num_heads,
        mlp_ratio=cfg.mlp_ratio,
        qkv_bias=True,
        num_classes=0,
        global_pool="",
        class_token=True,
        norm_layer=partial(nn.LayerNorm, eps=cfg.layer_norm_eps),
        drop_path_rate=cfg.drop_path_rate,
    )
    vit.set_grad_checkpointing(cfg.grad_checkpointing)
    return vit


def encode_image(vit: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, N, D) image embeddings; [CLS] is token 0. A frozen tower with a
    `FeatureCache` attached runs once per image (`blip_core.models.common.feature_cache`)."""
    cache = cached(vit)
    if cache is not None:
        return cache(images, vit.forward_features)
    return vit.forward_features(images)


def resize_pos_embed(pos_embed: torch.Tensor, num_patches: int) -> torch.Tensor:
    """Resize a (1, 1 + P, D) position embedding to (1, 1 + num_patches, D); [CLS] position kept.

    Used when a checkpoint trained at one resolution is loaded at another (BLIP pre-trains at 224
    and fine-tunes at 384). Bicubic, no antialiasing, as BLIP's `interpolate_pos_embed`.
    """
    old = pos_embed.shape[1] - 1
    if old == num_patches:
        return pos_embed
    new_side, old_side = int(num_patches**0.5), int(old**0.5)
    if new_side**2 != num_patches or old_side**2 != old:
        raise ValueError(f"cannot resize a non-square position embedding ({old} -> {num_patches} patches)")
    return resample_abs_pos_embed(
        pos_embed, new_size=[new_side, new_side], old_size=[old_side, old_side], num_prefix_tokens=1, antialias=False
    )


def vision_tower_names(model: nn.Module) -> tuple[str, ...]:
    """The attributes of a model's vision towers, the trained one first (its momentum copy, if any,
    is never optimised): the model class says them in `vision_towers`, e.g. BLIP's
    ("visual_encoder", "visual_encoder_m"); () for a model without one."""
    return tuple(n for n in getattr(model, "vision_towers", ()) if getattr(model, n, None) is not None)


def written_out_attention(model: nn.Module, enable: bool = True) -> int:
    """timm's attention layers in `model` compute softmax(q k^T) v with plain matmuls instead of the
    fused SDPA kernel (timm's `fused_attn`), for CPU bf16 autocast: there the fused kernel's backward
    is slower than fp32 (a tiny block's forward + backward: 33 ms fused, 18 ms written out; MED does
    the same, models/common/med.py `attention`). The number of layers switched."""
    layers = [m for m in model.modules() if hasattr(m, "fused_attn")]
    for m in layers:
        m.fused_attn = not enable
    return len(layers)
