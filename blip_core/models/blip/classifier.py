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

Per-object labels (`region`: Visual Genome's role) are boxes, each with its shape, colour and size:
every grid token whose centre lies in a box is asked the box's attributes (one softmax per attribute,
with a "none" class for tokens in no box), so the token a captioner's cross-attention reads carries
its own object, bound (the README's recipe table: the captioner reads colours and sizes right from
it). `relation` adds, per box, the relations its object is the subject of (a BCE on its tokens).

Shapes: B batch, N image tokens, Dv vision width, K classes over all groups, R boxes, P grid tokens,
A region attributes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from blip_core.config.data import REGION_GROUP, RELATION_GROUP, region_attributes
from blip_core.models.blip.config import ModelConfig
from blip_core.models.common.vision import create_vision_encoder, encode_image

SCENE_GROUPS = ("background",)
"""Label groups of the whole image rather than of an object in it: their logits are the [CLS] token's."""


def token_centres(num_tokens: int) -> torch.Tensor:
    """(P, 2) x, y centres of a square grid of P tokens, as fractions of the image side."""
    side = int(num_tokens**0.5)
    if side * side != num_tokens:
        raise ValueError(f"region labels need a square token grid, got {num_tokens} tokens")
    c = (torch.arange(side, dtype=torch.float32) + 0.5) / side
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([xx.flatten(), yy.flatten()], dim=-1)


def tokens_in_boxes(boxes: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """(B, R, 4) boxes (x0, y0, x1, y1; padded rows -1) -> (B, R, P) bool: token centre inside the box."""
    xy = token_centres(num_tokens).to(boxes.device)  # (P, 2)
    x, y = xy[:, 0], xy[:, 1]
    b = boxes[..., None]  # (B, R, 4, 1)
    return (x >= b[:, :, 0]) & (x < b[:, :, 2]) & (y >= b[:, :, 1]) & (y < b[:, :, 3])  # (B, R, P)


def _per_token(boxes: torch.Tensor, values: torch.Tensor, num_tokens: int, outside: torch.Tensor) -> torch.Tensor:
    """(B, R, 4) boxes and their (B, R, C) values -> (B, P, C): each grid token takes the values of the
    box holding its centre, `outside` (C,) where none does."""
    inside = tokens_in_boxes(boxes, num_tokens)  # (B, R, P)
    first = inside.float().argmax(dim=1)  # (B, P) the box holding the token
    picked = torch.gather(values, 1, first[..., None].expand(-1, -1, values.shape[-1]))  # (B, P, C)
    return torch.where(inside.any(dim=1)[..., None], picked, outside.to(values.dtype))


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
        self.groups = [(g, len(cs)) for g, cs in cfg.classes.items() if g not in (REGION_GROUP, RELATION_GROUP)]
        self.head = nn.Linear(cfg.vision.width, sum(n for _, n in self.groups)) if self.groups else None
        # per-object attributes, each with one more class for "no object here"
        self.region_groups = [
            (a, len(vs) + 1) for a, vs in region_attributes(cfg.classes.get(REGION_GROUP, [])).items()
        ]
        self.region_head = (
            nn.Linear(cfg.vision.width, sum(n for _, n in self.region_groups)) if self.region_groups else None
        )
        # the relations each object is the subject of: multi-label, read on the tokens of its box
        relations = cfg.classes.get(RELATION_GROUP, [])
        self.relation_head = nn.Linear(cfg.vision.width, len(relations)) if relations else None
        for head in (self.head, self.region_head, self.relation_head):
            if head is not None:
                nn.init.normal_(head.weight, std=0.02)
                nn.init.zeros_(head.bias)
        scene = torch.tensor([g in SCENE_GROUPS for g, n in self.groups for _ in range(n)], dtype=torch.bool)  # (K,)
        self.register_buffer("scene_classes", scene, persistent=False)  # True: scored on [CLS] alone

    def image_embeds(self, images: torch.Tensor) -> torch.Tensor:
        return encode_image(self.visual_encoder, images)  # (B, N, Dv)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self._image_logits(self.image_embeds(images))  # (B, K)

    def _image_logits(self, emb: torch.Tensor) -> torch.Tensor:
        if self.head is None:  # per-object labels only
            return emb.new_zeros(emb.shape[0], 0)
        per_token = self.head(emb)  # (B, N, K)
        pooled = 0.5 * (per_token[:, 0] + per_token[:, 1:].amax(dim=1))  # (B, K)
        return torch.where(self.scene_classes, per_token[:, 0], pooled)  # (B, K)

    def region_targets(self, regions: dict[str, torch.Tensor], num_tokens: int) -> torch.Tensor:
        """(B, P, A) class per grid token and attribute: its box's, or "none" (the last class) where
        no box holds the token's centre (boxes of one image do not overlap: one object per cell)."""
        classes = regions["classes"]  # (B, R, A)
        none = torch.tensor([n - 1 for _, n in self.region_groups], device=classes.device)  # (A,)
        return _per_token(regions["boxes"], classes, num_tokens, none)

    def relation_targets(self, regions: dict[str, torch.Tensor], num_tokens: int) -> torch.Tensor:
        """(B, P, K) multi-hot: the relations of the object whose box holds the token; none outside."""
        relations = regions["relations"]  # (B, R, K)
        return _per_token(regions["boxes"], relations, num_tokens, relations.new_zeros(relations.shape[-1]))

    def forward(
        self, images: torch.Tensor, labels: torch.Tensor, regions: dict[str, torch.Tensor] | None = None
    ) -> dict[str, torch.Tensor]:
        """(B, 3, H, W), (B, K) multi-hot[, per-object boxes] -> {"<group>_loss": BCE averaged over the
        group's classes; "region_loss": per-token cross-entropy averaged over the region attributes;
        "relation_loss": per-token BCE of the relations}."""
        if regions is None and (self.region_head is not None or self.relation_head is not None):
            raise ValueError(f"this classifier has {REGION_GROUP} labels: the batch needs its `regions`")
        emb = self.image_embeds(images)  # (B, N, Dv)
        logits = self._image_logits(emb)  # (B, K)
        out: dict[str, torch.Tensor] = {"logits": logits}
        start = 0
        for group, n in self.groups:
            sl = slice(start, start + n)
            out[f"{group}_loss"] = F.binary_cross_entropy_with_logits(logits[:, sl].float(), labels[:, sl].float())
            start += n
        if self.region_head is not None:
            region_logits = self.region_head(emb[:, 1:]).float()  # (B, P, sum of A classes)
            targets = self.region_targets(regions, emb.shape[1] - 1)  # (B, P, A)
            losses, start = [], 0
            for a, (_, n) in enumerate(self.region_groups):
                losses.append(
                    F.cross_entropy(region_logits[..., start : start + n].flatten(0, 1), targets[..., a].flatten())
                )
                start += n
            out[f"{REGION_GROUP}_loss"] = torch.stack(losses).mean()
        if self.relation_head is not None:
            relation_logits = self.relation_head(emb[:, 1:]).float()  # (B, P, K)
            targets = self.relation_targets(regions, emb.shape[1] - 1)  # (B, P, K)
            out[f"{RELATION_GROUP}_loss"] = F.binary_cross_entropy_with_logits(relation_logits, targets.float())
        return out

    @torch.no_grad()
    def predict_regions(self, images: torch.Tensor, boxes: torch.Tensor) -> dict[str, torch.Tensor]:
        """{attribute: (B, R) class index} of each box, from the region logits averaged over the
        tokens inside it ("none", the last index, included); with relation labels also
        {"relation": (B, R, K) bool}."""
        emb = self.image_embeds(images)  # (B, N, Dv)
        region_logits = self.region_head(emb[:, 1:]).float()  # (B, P, C)
        inside = tokens_in_boxes(boxes, emb.shape[1] - 1).float()  # (B, R, P)
        inside = inside / inside.sum(-1, keepdim=True).clamp(min=1)  # mean over the box's tokens
        pooled = inside @ region_logits  # (B, R, C)
        out, start = {}, 0
        for attribute, n in self.region_groups:
            out[attribute] = pooled[..., start : start + n].argmax(-1)
            start += n
        if self.relation_head is not None:  # (B, R, K) bool
            out[RELATION_GROUP] = (inside @ self.relation_head(emb[:, 1:]).float()) > 0
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
