"""BLIP's NLVR² model: one text encoder reasoning over two images.

References:
- BLIP paper Sec. 5.4 and Fig. 5(b): every layer of the image-grounded encoder has two
  cross-attentions, one per image, both initialised from the same pre-trained cross-attention; their
  outputs are merged (averaged in the first six layers, concatenated and projected by a new merge
  layer in the last six); an MLP classifier on the `[ENC]` state predicts true/false.
- salesforce/BLIP models/nlvr_encoder.py (`BertAttention.self0/self1`, `BertSelfOutput.dense0/
  dense1/merge_layer`, merge for `layer_num >= 6` of 12) and models/blip_nlvr.py (both images in
  one vision batch of 2B, `cls_head`, checkpoint keys `self` -> `self0`/`self1`, `dense` ->
  `dense0`/`dense1`). Parameter names follow them, so official BLIP NLVR² weights map one-to-one.

Here the merge starts at `num_layers // 2` (6 of 12, as BLIP). MED itself is unchanged: the NLVR
encoder is a MED whose layers' `crossattention` modules are replaced by `TwinCrossAttention`, which
receives the image pair as the layer's `image_embeds`.

Shapes: B statements (= image pairs), L text tokens, N image tokens, Dv vision width, D text width,
H heads, Dh = D / H.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from blip_core.losses import nlvr_loss
from blip_core.models.blip.config import ModelConfig
from blip_core.models.common.config import TextConfig
from blip_core.models.common.med import MED, SelfAttentionProj
from blip_core.models.common.vision import create_vision_encoder, encode_image


class TwinOutput(nn.Module):
    """BLIP's twin `attention.output`: a projection per image, then average or concat + merge layer,
    dropout, residual, LayerNorm (shared by both images)."""

    def __init__(self, cfg: TextConfig, *, merge: bool) -> None:
        super().__init__()
        d = cfg.hidden_size
        self.dense0 = nn.Linear(d, d)
        self.dense1 = nn.Linear(d, d)
        self.merge_layer = nn.Linear(2 * d, d) if merge else None
        self.LayerNorm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout)

    def forward(self, y0: torch.Tensor, y1: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        h0, h1 = self.dense0(y0), self.dense1(y1)  # (B, L, D)
        h = (h0 + h1) / 2 if self.merge_layer is None else self.merge_layer(torch.cat([h0, h1], dim=-1))
        return self.LayerNorm(self.dropout(h) + x)


class TwinCrossAttention(nn.Module):
    """Cross-attention to a pair of images: separate query/key/value per image (`self0`, `self1`)."""

    def __init__(self, cfg: TextConfig, vision_width: int, *, merge: bool) -> None:
        super().__init__()
        self.num_heads = cfg.num_heads
        self.dropout_p = cfg.attention_dropout
        self.self0 = SelfAttentionProj(cfg.hidden_size, vision_width)
        self.self1 = SelfAttentionProj(cfg.hidden_size, vision_width)
        self.output = TwinOutput(cfg, merge=merge)
        for m in self.modules():  # BERT initialisation, as MED's
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=cfg.initializer_range)
                nn.init.zeros_(m.bias)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        B, L, D = t.shape
        return t.view(B, L, self.num_heads, D // self.num_heads).transpose(1, 2)  # (B, H, L, Dh)

    def _attend(self, proj: SelfAttentionProj, x: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        q, k, v = self._heads(proj.query(x)), self._heads(proj.key(image)), self._heads(proj.value(image))
        drop = self.dropout_p if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)  # (B, H, L, Dh)
        return y.transpose(1, 2).flatten(2)  # (B, L, D)

    def forward(
        self,
        x: torch.Tensor,  # (B, L, D)
        *,
        context: tuple[torch.Tensor, torch.Tensor],  # ((B, N, Dv), (B, N, Dv)) left and right image
        cache=None,
        layer: int = 0,
        image_index: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if cache is not None or image_index is not None or context_mask is not None:
            raise ValueError("NLVR cross-attention pairs text row b with image pair b: no cache, image_index or mask")
        left, right = context
        return self.output(self._attend(self.self0, x, left), self._attend(self.self1, x, right), x)


class BlipNLVR(nn.Module):
    """Vision encoder + two-image MED encoder + classifier head (BLIP_NLVR)."""

    vision_towers = ("visual_encoder",)
    """Its vision tower attributes, the trained one first (the trainer freezes / slows them)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        t = cfg.text
        self.visual_encoder = create_vision_encoder(cfg.vision)
        self.text_encoder = MED(t, cfg.vision.width, cross_attention=True)
        for i, layer in enumerate(self.text_encoder.encoder.layer):
            layer.crossattention = TwinCrossAttention(t, cfg.vision.width, merge=i >= t.num_layers // 2)
        # PyTorch's default init, as BLIP's cls_head (it is not part of the BERT model)
        self.cls_head = nn.Sequential(nn.Linear(t.hidden_size, t.hidden_size), nn.ReLU(), nn.Linear(t.hidden_size, 2))

    def forward(
        self,
        images_left: torch.Tensor,  # (B, 3, H, W)
        images_right: torch.Tensor,  # (B, 3, H, W)
        input_ids: torch.Tensor,  # (B, L): [CLS] statement [SEP] padding
        attention_mask: torch.Tensor,  # (B, L)
        labels: torch.Tensor | None = None,  # (B,) 1/True = the statement holds
    ) -> dict[str, torch.Tensor]:
        """`logits` (B, 2) and, with labels, `nlvr_loss`."""
        B = images_left.shape[0]
        # one vision pass over both images, as BLIP (one batch of 2B)
        embeds = encode_image(self.visual_encoder, torch.cat([images_left, images_right]))  # (2B, N, Dv)
        ids = input_ids.clone()
        ids[:, 0] = self.cfg.text.enc_token_id
        # the pair travels to every layer's TwinCrossAttention as its `image_embeds`
        pair = (embeds[:B], embeds[B:])
        h = self.text_encoder(ids, attention_mask, mode="multimodal", image_embeds=pair)  # type: ignore[arg-type]
        logits = self.cls_head(h[:, 0])  # (B, 2)
        out = {"logits": logits}
        if labels is not None:
            out |= nlvr_loss(logits, labels)
        return out


CLS_HEAD_KEYS = ("cls_head.0.weight", "cls_head.0.bias", "cls_head.2.weight", "cls_head.2.bias")


def nlvr_state_from_pretrain(
    state: dict[str, torch.Tensor], cfg: ModelConfig | None = None
) -> tuple[dict[str, torch.Tensor], tuple[str, ...]]:
    """A `BlipPretrain` (or `BlipRetrieval`) state dict -> (BlipNLVR state, keys left at their fresh init).

    As BLIP's `blip_nlvr.load_checkpoint`: the encoder is the pre-trained image-grounded encoder;
    each layer's cross-attention `self.*` is copied to `self0.*` and `self1.*`, its `output.dense.*`
    to `output.dense0.*` and `output.dense1.*` (LayerNorm shared). The merge layers (layers >=
    num_layers // 2) and the classifier head stay fresh. The decoder self-attention, LM head,
    momentum copies, queues, projections, ITM head and `temp` are dropped.
    """
    out: dict[str, torch.Tensor] = {}
    layers: set[int] = set()
    for k, v in state.items():
        if k.startswith("visual_encoder."):
            out[k] = v
            continue
        if not k.startswith("text.") or ".attention_dec." in k or k.startswith("text.lm_head."):
            continue
        key = "text_encoder." + k[len("text.") :]
        if key.startswith("text_encoder.encoder.layer."):
            layers.add(int(key.split(".")[3]))
        if ".crossattention.self." in key:
            out[key.replace(".self.", ".self0.")] = v
            out[key.replace(".self.", ".self1.")] = v
        elif ".crossattention.output.dense." in key:
            out[key.replace(".dense.", ".dense0.")] = v
            out[key.replace(".dense.", ".dense1.")] = v
        else:
            out[key] = v
    if not layers:
        raise ValueError("not a BLIP pre-training state: no text.encoder.layer.* keys")
    n = max(layers) + 1
    merge = [f"text_encoder.encoder.layer.{i}.crossattention.output.merge_layer.{p}"
             for i in range(n // 2, n) for p in ("weight", "bias")]  # fmt: skip
    return out, (*merge, *CLS_HEAD_KEYS)
