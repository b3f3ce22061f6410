"""Vision encoder: timm's VisionTransformer, configured as BLIP's ViT.

References:
- BLIP paper Sec. 3.1 ("we use a visual transformer as our image encoder ... [CLS] token").
- salesforce/BLIP models/vit.py (a copy of timm's ViT; parameter names are identical to timm's) and
  `interpolate_pos_embed` (bicubic resize of the patch position embeddings, class token kept).

timm's Attention uses `F.scaled_dot_product_attention` (fused kernels on GPU).
Shapes: B batch, N = 1 + patches tokens, D width.
"""

from __future__ import annotations

from functools import partial

import torch
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from blip_core.config import VisionConfig


def create_vision_encoder(cfg: VisionConfig) -> VisionTransformer:
    """A ViT whose `forward_features(images)` returns all token embeddings (B, N, D), final norm applied."""
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


def encode_image(vit: VisionTransformer, images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, N, D) image embeddings; [CLS] is token 0."""
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
