"""Supervised vision start: the preset's vision tower with a multi-label classification head.

References:
- BLIP paper Sec. 3.1 / salesforce/BLIP models/blip_pretrain.py: the ViT starts from ImageNet
  weights (DeiT-B, `deit_base_patch16_224`, supervised), the text encoder from BERT-base.
- Touvron et al. 2021 (DeiT): a linear head on the final-norm [CLS] token.

This model plays ImageNet training for the embedded world: trained on the label-only `objects` split
(`pretrain_vision`), its `visual_encoder` is what both BLIP pre-trainings load (`vision_init`);
the head is dropped. Labels are multi-label per group (the shapes and the colours an image shows; as
options its background and its objects as "large red circle"), so the loss is a binary cross-entropy per class,
averaged per group: each group weighs the same. (Summed over a group's classes instead, so that
each class weighs the same, the 140 attribute-object classes swamped the rest: after the make-run
budget of 875 steps the shapes were at val F1 0.37 and the backgrounds at chance, against 0.875 and
1.0 with the mean.)

One linear head scores the [CLS] token (DeiT; BLIP's ITC reads that token) and every grid token;
a class's logit is the mean of its [CLS] logit and its largest grid-token logit (max pooling over
locations, the multiple-instance pooling of multi-label presence: "is there a star anywhere").
Why: a small object covers one or two of 64 tokens, and supervising the tokens where it is teaches
the local features that BLIP's cross-attention reads; at equal steps it learns shapes faster than
[CLS] alone (the README's recipe table has the measurement). A label of the whole image (the
world's background; `SCENE_GROUPS`) is scored on [CLS] alone: every token sees the background, and
max pooling would make each grid token carry it beside (or instead of) its object.

Shapes: B batch, N image tokens, Dv vision width, K classes over all groups.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from blip_core.models.blip.config import ModelConfig
from blip_core.models.common.vision import create_vision_encoder, encode_image

SCENE_GROUPS = ("background",)
"""Label groups of the whole image rather than of an object in it: their logits are the [CLS] token's."""


class VisionClassifier(nn.Module):
    """Vision tower + a linear head on [CLS] and, max-pooled, on the grid tokens."""

    vision_towers = ("visual_encoder",)
    """Its vision tower attributes, the trained one first (the trainer freezes / slows them)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if not cfg.classes:
            raise ValueError("a vision classifier needs model.classes ({group: [class, ...]})")
        self.cfg = cfg
        self.visual_encoder = create_vision_encoder(cfg.vision)
        self.groups = [(g, len(cs)) for g, cs in cfg.classes.items()]
        self.head = nn.Linear(cfg.vision.width, sum(n for _, n in self.groups))
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)
        scene = torch.cat([torch.full((n,), group in SCENE_GROUPS) for group, n in self.groups])  # (K,)
        self.register_buffer("scene_classes", scene, persistent=False)  # True: scored on [CLS] alone

    def image_embeds(self, images: torch.Tensor) -> torch.Tensor:
        return encode_image(self.visual_encoder, images)  # (B, N, Dv)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        emb = self.image_embeds(images)  # (B, N, Dv)
        per_token = self.head(emb)  # (B, N, K)
        pooled = 0.5 * (per_token[:, 0] + per_token[:, 1:].amax(dim=1))  # (B, K)
        return torch.where(self.scene_classes, per_token[:, 0], pooled)  # (B, K)

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 3, H, W), (B, K) multi-hot -> {"<group>_loss": BCE averaged over the group's classes}."""
        logits = self.logits(images)  # (B, K)
        out: dict[str, torch.Tensor] = {"logits": logits}
        start = 0
        for group, n in self.groups:
            sl = slice(start, start + n)
            out[f"{group}_loss"] = F.binary_cross_entropy_with_logits(logits[:, sl].float(), labels[:, sl].float())
            start += n
        return out

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """{group: (B, K_group) bool}: the classes with p > 0.5."""
        probs = self.logits(images).float().sigmoid()
        out, start = {}, 0
        for group, n in self.groups:
            out[group] = probs[:, start : start + n] > 0.5
            start += n
        return out
