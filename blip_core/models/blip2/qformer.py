"""BLIP-2 stage 1: the Querying Transformer (Q-Former) on a frozen image tower, trained with ITC,
ITM and image-grounded text generation (ITG).

References:
- BLIP-2 paper Sec. 3.1-3.2 and Fig. 2 (the three objectives and their attention masks).
- salesforce/LAVIS lavis/models/blip2_models/Qformer.py (BertLayer with `crossattention`,
  `intermediate_query` / `output_query`, `query_length`) and blip2_qformer.py (`Blip2Qformer.forward`:
  ITC max over queries, ITM over a bidirectional pass with hard negatives from the ITC softmax,
  logits averaged over the query outputs; ITG reusing the query pass's keys/values).
- transformers models/blip_2/modeling_blip_2.py (Blip2QFormerLayer: the same layout, HF names).

Structure: one set of weights runs the queries and the text. Every layer self-attends over
[queries; text]; layers 0, f, 2f, ... (f = `cross_attention_freq`) then cross-attend from the query
positions to the image tokens; queries go through their own feed-forward (`intermediate_query`,
`output_query`), text through BERT's. Parameter names follow LAVIS / BERT.

The three attention masks (Fig. 2 of the paper):
- ITC: queries and text in separate passes: no query sees text, no text sees a query;
- ITM: one bidirectional pass over [queries; text];
- ITG: text is causal and sees every query; queries see only queries. The queries' keys/values are
  the ones of the ITC image pass (`prefix`), so the query outputs never depend on the text.

Shapes: B batch, K queries, L text tokens, N image tokens, Dv image width, D Q-Former width,
E embed dim, V vocab.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from blip_core.losses import itc_loss, itc_targets, itm_loss, lm_loss, sample_hard_negatives
from blip_core.models.blip.model import TEMP_MAX, TEMP_MIN
from blip_core.models.blip2.config import Blip2Config
from blip_core.models.common.config import TextConfig
from blip_core.models.common.med import Attention, Intermediate, LMHead, Output, attention, bert_init, key_mask
from blip_core.models.common.vision import create_vision_encoder, encode_image

KV = tuple[torch.Tensor, torch.Tensor]


class QFormerAttention(Attention):
    """BERT attention (MED's parameters, post-norm residual); `forward` also returns this call's
    keys/values, and takes earlier positions' keys/values as a prefix."""

    def forward(
        self,
        x: torch.Tensor,  # (B, L, D)
        *,
        context: torch.Tensor | None = None,  # (B, N, Dv): cross-attention
        mask: torch.Tensor | None = None,  # bool, broadcastable to (B, H, L, S); True = attend
        prefix: KV | None = None,  # keys/values (B, H, P, Dh) of earlier positions (ITG: the queries)
    ) -> tuple[torch.Tensor, KV]:
        B, L, D = x.shape
        src = x if context is None else context
        q, k, v = self._heads(self.self.query(x)), self._heads(self.self.key(src)), self._heads(self.self.value(src))
        kv = (k, v)
        if prefix is not None:
            k, v = torch.cat([prefix[0], k], dim=2), torch.cat([prefix[1], v], dim=2)  # (B, H, P+L, Dh)
        y = attention(q, k, v, mask=mask, dropout_p=self.dropout_p if self.training else 0.0)
        y = y.transpose(1, 2).reshape(B, L, D)
        out = self.output
        return out.LayerNorm(out.dropout(out.dense(y)) + x), kv


def _ffn(x: torch.Tensor, inter: nn.Module, out: nn.Module) -> torch.Tensor:
    return out.LayerNorm(out.dropout(out.dense(F.gelu(inter.dense(x)))) + x)


class QFormerLayer(nn.Module):
    """Self-attention over [queries; text] -> (queries only: cross-attention) -> a feed-forward each."""

    def __init__(self, cfg: TextConfig, vision_width: int, *, cross_attention: bool) -> None:
        super().__init__()
        self.attention = QFormerAttention(cfg, cfg.hidden_size)
        self.crossattention = QFormerAttention(cfg, vision_width) if cross_attention else None
        self.intermediate, self.output = Intermediate(cfg), Output(cfg)
        self.intermediate_query, self.output_query = Intermediate(cfg), Output(cfg)  # the queries' own

    def forward(
        self, x: torch.Tensor, *, num_query: int, image_embeds: torch.Tensor | None, mask, prefix: KV | None
    ) -> tuple[torch.Tensor, KV]:
        x, kv = self.attention(x, mask=mask, prefix=prefix)  # (B, K+L, D)
        parts = []
        if num_query:
            q = x[:, :num_query]  # (B, K, D)
            if self.crossattention is not None:
                q = self.crossattention(q, context=image_embeds)[0]
            parts.append(_ffn(q, self.intermediate_query, self.output_query))
        if x.shape[1] > num_query:
            parts.append(_ffn(x[:, num_query:], self.intermediate, self.output))  # (B, L, D)
        return torch.cat(parts, dim=1), kv


class QFormer(nn.Module):
    """BERT embeddings + Q-Former layers. `forward` returns hidden states (B, K+L, D) and each
    layer's self-attention keys/values (to be the `prefix` of a later pass)."""

    def __init__(self, cfg: TextConfig, vision_width: int, cross_attention_freq: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.embeddings = nn.Module()
        self.embeddings.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.embeddings.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.embeddings.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.embeddings.dropout = nn.Dropout(cfg.hidden_dropout)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList(
            QFormerLayer(cfg, vision_width, cross_attention=i % cross_attention_freq == 0)
            for i in range(cfg.num_layers)
        )
        self.apply(lambda m: bert_init(m, cfg.initializer_range))

    def forward(
        self,
        *,
        query_embeds: torch.Tensor | None = None,  # (B, K, D) the learned queries
        input_ids: torch.Tensor | None = None,  # (B, L)
        image_embeds: torch.Tensor | None = None,  # (B, N, Dv): needed with queries
        mask: torch.Tensor | None = None,  # bool (B, 1, K+L or L, P+K+L), True = attend
        prefix: list[KV] | None = None,  # per layer, keys/values of positions before these
    ) -> tuple[torch.Tensor, list[KV]]:
        parts = []
        if query_embeds is not None:
            parts.append(query_embeds)
        if input_ids is not None:
            e = self.embeddings
            pos = torch.arange(input_ids.shape[1], device=input_ids.device)  # text positions start at 0
            parts.append(e.word_embeddings(input_ids) + e.position_embeddings(pos)[None])
        x = self.embeddings.dropout(self.embeddings.LayerNorm(torch.cat(parts, dim=1)))  # (B, K+L, D)
        K = 0 if query_embeds is None else query_embeds.shape[1]
        kvs = []
        for i, layer in enumerate(self.encoder.layer):
            before = None if prefix is None else prefix[i]
            x, kv = layer(x, num_query=K, image_embeds=image_embeds, mask=mask, prefix=before)
            kvs.append(kv)
        return x, kvs


def frozen_tower(cfg: Blip2Config) -> nn.Module:
    """BLIP-2's image tower: built from `cfg.vision`, its last LayerNorm dropped unless
    `cfg.vision_final_norm`, no parameter trainable."""
    tower = create_vision_encoder(cfg.vision)
    if not cfg.vision_final_norm:
        tower.norm = nn.Identity()
    tower.requires_grad_(False)
    return tower


class Blip2QFormer(nn.Module):
    """BLIP-2 stage 1: the Q-Former learns to extract from a frozen tower's image tokens the K query
    features that the text needs (ITC + ITM + ITG). Returns a dict of `*_loss` tensors."""

    vision_towers = ("visual_encoder",)
    """Its vision tower, frozen: never trained, always in eval mode."""

    def __init__(self, cfg: Blip2Config) -> None:
        super().__init__()
        self.cfg = cfg
        t, d, vw = cfg.qformer, cfg.qformer.hidden_size, cfg.vision.width
        self.visual_encoder = frozen_tower(cfg)
        self.ln_vision = nn.LayerNorm(vw)  # trained on the frozen tower's output (LAVIS `ln_vision`)
        self.query_tokens = nn.Parameter(torch.randn(1, cfg.num_query_tokens, d) * t.initializer_range)
        self.qformer = QFormer(t, vw, cfg.cross_attention_freq)
        self.vision_proj, self.text_proj = nn.Linear(d, cfg.embed_dim), nn.Linear(d, cfg.embed_dim)
        self.itm_head = nn.Linear(d, 2)
        self.lm_head = LMHead(t)  # ITG: BERT's prediction head, tied to the word embeddings
        for head in (self.vision_proj, self.text_proj, self.itm_head):
            nn.init.normal_(head.weight, std=t.initializer_range)
            nn.init.zeros_(head.bias)
        self.temp = nn.Parameter(torch.tensor(cfg.temp))

    def train(self, mode: bool = True) -> Blip2QFormer:
        super().train(mode)
        self.visual_encoder.eval()  # frozen: BatchNorm statistics and dropout stay as they were
        return self

    # -- features ---------------------------------------------------------------------------------------
    def image_embeds(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, N, Dv): the frozen tower's tokens (no gradient), then `ln_vision`.
        Callers that cache the tower's output pass it to `forward(image_tokens=...)` instead."""
        with torch.no_grad():
            tokens = encode_image(self.visual_encoder, images)
        return self.ln_vision(tokens)

    def query_pass(self, image_embeds: torch.Tensor) -> tuple[torch.Tensor, list[KV]]:
        """(B, N, Dv) -> query outputs (B, K, D) and their per-layer keys/values: no text in sight."""
        q = self.query_tokens.expand(image_embeds.shape[0], -1, -1)
        return self.qformer(query_embeds=q, image_embeds=image_embeds)

    def image_feats(self, query_out: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.vision_proj(query_out), dim=-1)  # (B, K, E)

    def image_feat(self, image_embeds: torch.Tensor) -> torch.Tensor:
        """(B, N, Dv) -> (B, K, E): the retrieval evaluator's ITC features (`itc_similarity` takes the
        best-matching query, as BLIP-2's ITC)."""
        return self.image_feats(self.query_pass(image_embeds)[0])

    def text_feat(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h, _ = self.qformer(input_ids=input_ids, mask=key_mask(attention_mask))  # (B, L, D): no queries
        return F.normalize(self.text_proj(h[:, 0]), dim=-1)  # (B, E)

    def itm_logits(
        self, image_embeds: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """(B, N, Dv), (B, L) -> (B, 2): one bidirectional pass over [queries; text], the ITM head on
        each query output, averaged over the queries."""
        B, K = input_ids.shape[0], self.cfg.num_query_tokens
        q = self.query_tokens.expand(B, -1, -1)
        keys = torch.cat([attention_mask.new_ones(B, K), attention_mask], dim=1)  # (B, K+L)
        h, _ = self.qformer(query_embeds=q, input_ids=input_ids, image_embeds=image_embeds, mask=key_mask(keys))
        return self.itm_head(h[:, :K]).mean(dim=1)

    @torch.no_grad()
    def score(self, image_embeds: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict:
        """CapFilt's filter scores, as `BlipRetrieval.score`: each image once (Bi, N, Dv) and its R
        captions as consecutive rows (B = Bi * R) -> ITM p(match) and the best query's ITC cosine."""
        R = input_ids.shape[0] // image_embeds.shape[0]
        rows = image_embeds.repeat_interleave(R, dim=0)  # (B, N, Dv)
        itm = self.itm_logits(rows, input_ids, attention_mask).float().softmax(dim=-1)[:, 1]
        img = self.image_feat(image_embeds).repeat_interleave(R, dim=0)  # (B, K, E)
        txt = self.text_feat(input_ids, attention_mask)  # (B, E)
        return {"itm_prob": itm, "itc_cosine": torch.einsum("bke,be->bk", img, txt).amax(dim=1).float()}

    def itg_logits(self, prefix: list[KV], input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Text (B, L), [DEC] first, causal, attending to every query through the query pass's
        keys/values `prefix` -> next-token logits (B, L, V)."""
        B, L = input_ids.shape
        K = prefix[0][0].shape[2]
        causal = torch.ones(L, L, dtype=torch.bool, device=input_ids.device).tril()
        text = causal[None] & attention_mask.bool()[:, None, :]  # (B, L, L)
        mask = torch.cat([text.new_ones(B, L, K), text], dim=2)[:, None]  # (B, 1, L, K+L)
        h, _ = self.qformer(input_ids=input_ids, mask=mask, prefix=prefix)
        return self.lm_head(h, self.qformer.embeddings.word_embeddings.weight)

    # -- training ------------------------------------------------------------------------------------------
    def forward(
        self,
        images: torch.Tensor | None,  # (B, 3, H, W), or None with image_tokens
        input_ids: torch.Tensor,  # (B, L), [CLS] first
        attention_mask: torch.Tensor,  # (B, L)
        image_ids: torch.Tensor,  # (B,) equal ids = same image
        *,
        image_tokens: torch.Tensor | None = None,  # (B, N, Dv) the frozen tower's output, computed once
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        if (images is None) == (image_tokens is None):
            raise ValueError("Blip2QFormer.forward takes images or the tower's image_tokens, one of them")
        if image_tokens is None:
            image_embeds = self.image_embeds(images)
        else:
            image_embeds = self.ln_vision(image_tokens)
        B = input_ids.shape[0]
        with torch.no_grad():
            self.temp.clamp_(TEMP_MIN, TEMP_MAX)

        # ITC: the best-matching query against the text's [CLS] feature, in-batch negatives
        query_out, prefix = self.query_pass(image_embeds)  # (B, K, D)
        image_feats = self.image_feats(query_out)  # (B, K, E)
        text_feat = self.text_feat(input_ids, attention_mask)  # (B, E)
        sim = torch.einsum("ike,te->itk", image_feats, text_feat).amax(dim=-1)  # (B_img, B_txt)
        sim_i2t, sim_t2i = sim / self.temp, sim.T / self.temp
        itc = itc_loss(sim_i2t, sim_t2i, itc_targets(image_ids, image_ids))  # every caption of the same image

        # ITM: positives, and for each pair one hard negative text and one hard negative image
        same = image_ids[:, None] == image_ids[None, :]
        neg_text, ok_text = sample_hard_negatives(sim_i2t.detach(), same, generator)  # per image
        neg_image, ok_image = sample_hard_negatives(sim_t2i.detach(), same, generator)  # per text
        idx = torch.arange(B, device=sim.device)
        rows_img = torch.cat([idx, neg_image[ok_image], idx[ok_text]])  # (M,) M = B + valid negatives
        rows_txt = torch.cat([idx, idx[ok_image], neg_text[ok_text]])
        logits = self.itm_logits(image_embeds[rows_img], input_ids[rows_txt], attention_mask[rows_txt])
        labels = torch.zeros(len(rows_img), dtype=torch.long, device=logits.device)
        labels[:B] = 1

        # ITG: [DEC] then the caption, causal, reading the queries only
        dec_ids = input_ids.clone()
        dec_ids[:, 0] = self.cfg.qformer.bos_token_id
        lm_labels = dec_ids.masked_fill(attention_mask == 0, -100)
        lm_logits = self.itg_logits(prefix, dec_ids, attention_mask)
        return {
            **itc,
            **itm_loss(logits, labels),
            **lm_loss(lm_logits, lm_labels, self.cfg.qformer.label_smoothing),
            "itm_logits": logits.detach(),
            "itm_labels": labels,
            "lm_logits": lm_logits.detach(),
        }


def qformer_from_pretrain(
    state: dict[str, torch.Tensor], cfg: Blip2Config | None
) -> tuple[dict[str, torch.Tensor], tuple[str, ...]]:
    """A Q-Former's start from a BLIP pre-training (its registry entry's `init_from`): the tower, and
    for the Q-Former what BLIP-2 takes from BERT-base, here BLIP's own text encoder: its embeddings,
    bidirectional self-attention and feed-forward (copied into the queries' own, as LAVIS does), the
    cross-attention of the layers that keep one (every `cfg.cross_attention_freq`-th), its LM head,
    ITC text projection, ITM head and temperature. Fresh: the queries, `ln_vision` and the query
    projection, whose input is a query output rather than BLIP's image [CLS]."""
    if cfg is None:
        raise ValueError("a Q-Former's start from a BLIP pre-training needs the Q-Former's config")
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if k.startswith(("visual_encoder.", "text_proj.", "itm_head.")) or k == "temp":
            out[k] = v
        elif k.startswith(("text.lm_head.", "text.embeddings.", "text.encoder.layer.")):
            m = re.match(r"text\.encoder\.layer\.(\d+)\.(\w+)\.", k)
            if m and (m[2] == "attention_dec" or (m[2] == "crossattention" and int(m[1]) % cfg.cross_attention_freq)):
                continue  # the decoder's causal self-attention; cross-attention where a layer has none
            name = k.replace("text.", "" if k.startswith("text.lm_head.") else "qformer.", 1)
            out[name] = v
            if m and m[2] in ("intermediate", "output"):  # the queries' feed-forward starts as the text's
                out[name.replace(f".{m[2]}.", f".{m[2]}_query.", 1)] = v
    return out, ("query_tokens", "ln_vision.", "vision_proj.")
