"""MED: BLIP's multimodal mixture of encoder-decoder text transformer.

References:
- BLIP paper Sec. 3.1 (three functionalities of one model) and Table 3 (encoder and decoder share
  all parameters except self-attention).
- salesforce/BLIP models/med.py (a BERT fork) and transformers' models/blip/modeling_blip_text.py;
  parameter names follow BERT (`attention.self.query`, `crossattention.output.LayerNorm`, ...), so
  official BLIP and Hugging Face weights map one-to-one.

Modes of one set of weights:
- "text":       unimodal encoder, bidirectional, no cross-attention ([CLS] first) -> ITC;
- "multimodal": image-grounded encoder, bidirectional + cross-attention ([ENC] first) -> ITM;
- "decoder":    image-grounded decoder, causal + cross-attention ([DEC] first) -> LM. When the model
                has a separate decoder self-attention (`decoder_self_attention=True`, the paper's
                pre-training setting), decoder mode uses it and everything else is shared.

Cross-attention attends to every context token unless `encoder_attention_mask` says otherwise: image
tokens need no mask; VQA's answer decoder attends to padded question states (BLIP models/blip_vqa.py).

Attention runs through `F.scaled_dot_product_attention` (under CPU bf16 autocast, `attention`'s
math form). Decoding uses `KVCache`: self-attention
keys/values are appended each step; cross-attention keys/values are computed once per image and
shared by all beams or samples of that image (queries are folded onto the image's batch row).

Shapes: B batch (text rows), Bi image rows (B = Bi * R), L text tokens, T cached tokens,
N image tokens, D hidden, Dv image width, H heads, Dh = D / H, V vocab.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from blip_core.models.common import packing
from blip_core.models.common.config import TextConfig
from blip_core.models.common.packing import Packed

MODES = ("text", "multimodal", "decoder")


class KVCache:
    """Per-layer keys/values for incremental decoding."""

    def __init__(self, num_layers: int) -> None:
        self.self_k: list[torch.Tensor | None] = [None] * num_layers
        self.self_v: list[torch.Tensor | None] = [None] * num_layers
        self.cross_k: list[torch.Tensor | None] = [None] * num_layers
        self.cross_v: list[torch.Tensor | None] = [None] * num_layers

    @property
    def length(self) -> int:
        return 0 if self.self_k[0] is None else self.self_k[0].shape[2]

    def reorder(self, index: torch.Tensor) -> None:
        """Reorder text rows (beam search). Cross keys/values are per image and stay as they are,
        because beams are only ever reordered within their own image."""
        self.self_k = [k.index_select(0, index) for k in self.self_k]  # type: ignore[union-attr]
        self.self_v = [v.index_select(0, index) for v in self.self_v]  # type: ignore[union-attr]


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, mask=None, dropout_p: float = 0.0, is_causal: bool = False
) -> torch.Tensor:
    """SDPA: (B, H, L, Dh), (B, H, S, Dh) x2 -> (B, H, L, Dh); `mask` bool, True = attend.

    Under CPU bf16 autocast it is written out (bf16 matmuls, fp32 softmax): PyTorch's fused CPU
    kernel in bf16 is several times slower than fp32 in its backward at these short lengths
    (benchmarks/bench_model.py); fp32 and GPUs keep the fused kernel."""
    if not (q.device.type == "cpu" and torch.is_autocast_enabled("cpu")):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal)
    s = torch.matmul(q, k.transpose(-1, -2)) * q.shape[-1] ** -0.5  # (B, H, L, S)
    if is_causal:
        mask = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril()
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    p = F.dropout(s.float().softmax(dim=-1), dropout_p, training=dropout_p > 0).to(v.dtype)
    return torch.matmul(p, v)


class SelfAttentionProj(nn.Module):
    """BERT's `attention.self`: query/key/value projections (key/value may read image tokens)."""

    def __init__(self, dim: int, kv_dim: int) -> None:
        super().__init__()
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(kv_dim, dim)
        self.value = nn.Linear(kv_dim, dim)


class AttentionOutput(nn.Module):
    """BERT's `attention.output`: projection, dropout, residual, LayerNorm (post-norm)."""

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout)


class Attention(nn.Module):
    def __init__(self, cfg: TextConfig, kv_dim: int) -> None:
        super().__init__()
        self.num_heads = cfg.num_heads
        self.dropout_p = cfg.attention_dropout
        self.self = SelfAttentionProj(cfg.hidden_size, kv_dim)
        self.output = AttentionOutput(cfg)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        return x.view(B, L, self.num_heads, D // self.num_heads).transpose(1, 2)  # (B, H, L, Dh)

    def forward(
        self,
        x: torch.Tensor,  # (B, L, D)
        *,
        context: torch.Tensor | None = None,  # (Bi, N, Dv) for cross-attention
        mask: torch.Tensor | None = None,  # bool, broadcastable to (B, H, L, L+T); True = attend
        is_causal: bool = False,
        cache: KVCache | None = None,
        layer: int = 0,
        image_index: torch.Tensor | None = None,  # (B,) image row of each text row
        context_mask: torch.Tensor | None = None,  # bool (Bi, 1, 1, N), True = attend; cross-attention only
    ) -> torch.Tensor:
        B, L, D = x.shape
        q = self._heads(self.self.query(x))  # (B, H, L, Dh)
        drop = self.dropout_p if self.training else 0.0
        if context is None:  # self-attention
            k, v = self._heads(self.self.key(x)), self._heads(self.self.value(x))  # (B, H, L, Dh)
            if cache is not None:
                if cache.self_k[layer] is not None:
                    k = torch.cat([cache.self_k[layer], k], dim=2)  # (B, H, T+L, Dh)
                    v = torch.cat([cache.self_v[layer], v], dim=2)
                cache.self_k[layer], cache.self_v[layer] = k, v
            # a causal prefill without padding can use the fused causal kernel; a one-token decode
            # step attends to every cached token, so it needs no mask at all
            causal = is_causal and mask is None and k.shape[2] == L
            if is_causal and mask is None and not causal and L > 1:
                T = k.shape[2] - L
                mask = torch.ones(L, T + L, dtype=torch.bool, device=x.device).tril(diagonal=T)
            y = attention(q, k, v, mask=mask, dropout_p=drop, is_causal=causal)
        else:  # cross-attention to image tokens
            Bi = context.shape[0]
            R = B // Bi  # text rows per image (beams, samples, or several captions of one image)
            if cache is not None and cache.cross_k[layer] is not None:
                k, v = cache.cross_k[layer], cache.cross_v[layer]
            else:
                k, v = self._heads(self.self.key(context)), self._heads(self.self.value(context))  # (Bi, H, N, Dh)
                if cache is not None:
                    cache.cross_k[layer], cache.cross_v[layer] = k, v
            if image_index is not None:
                # rows pair with arbitrary images (ITM's hard negatives): keys/values are projected once
                # per distinct image and gathered per row (index_select: its backward, index_add, is
                # several times cheaper on CPU than advanced indexing's deterministic index_put)
                m = None if context_mask is None else context_mask[image_index]  # (B, 1, 1, N)
                k, v = k.index_select(0, image_index), v.index_select(0, image_index)  # (B, H, N, Dh)
                y = attention(q, k, v, mask=m, dropout_p=drop)
            else:
                # fold the R text rows of each image into the query length: keys/values stay (Bi, ...)
                qf = q.view(Bi, R, self.num_heads, L, -1).transpose(1, 2).reshape(Bi, self.num_heads, R * L, -1)
                y = attention(qf, k, v, mask=context_mask, dropout_p=drop)  # (Bi, H, R*L, Dh)
                y = y.view(Bi, self.num_heads, R, L, -1).transpose(1, 2).reshape(B, self.num_heads, L, -1)
        y = y.transpose(1, 2).reshape(B, L, D)  # (B, L, D)
        out = self.output
        return out.LayerNorm(out.dropout(out.dense(y)) + x)


class Intermediate(nn.Module):
    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)


class Output(nn.Module):
    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout)


class MedLayer(nn.Module):
    """Self-attention -> (cross-attention) -> feed-forward, each post-norm with a residual."""

    def __init__(self, cfg: TextConfig, vision_width: int, *, cross_attention: bool, decoder_self_attention: bool):
        super().__init__()
        self.attention = Attention(cfg, cfg.hidden_size)
        self.attention_dec = Attention(cfg, cfg.hidden_size) if decoder_self_attention else None
        self.crossattention = Attention(cfg, vision_width) if cross_attention else None
        self.intermediate = Intermediate(cfg)
        self.output = Output(cfg)

    def forward(
        self, x, *, mode, image_embeds, mask, cache, layer, image_index=None, context_mask=None
    ) -> torch.Tensor:
        sa = self.attention_dec if (mode == "decoder" and self.attention_dec is not None) else self.attention
        x = sa(x, mask=mask, is_causal=mode == "decoder", cache=cache, layer=layer)
        if mode != "text":
            x = self.crossattention(x, context=image_embeds, cache=cache, layer=layer, image_index=image_index,
                                    context_mask=context_mask)  # fmt: skip
        h = F.gelu(self.intermediate.dense(x))
        return self.output.LayerNorm(self.output.dropout(self.output.dense(h)) + x)


class Embeddings(nn.Module):
    """Word + learned absolute position embeddings, LayerNorm, dropout (no token types, as BLIP)."""

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout)

    def forward(self, input_ids: torch.Tensor, offset: int = 0) -> torch.Tensor:
        L = input_ids.shape[1]
        pos = torch.arange(offset, offset + L, device=input_ids.device)  # (L,)
        x = self.word_embeddings(input_ids) + self.position_embeddings(pos)[None]  # (B, L, D)
        return self.dropout(self.LayerNorm(x))


class LMHead(nn.Module):
    """BERT's prediction head: dense -> GELU -> LayerNorm -> logits with weights tied to the word embeddings."""

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.transform = nn.Module()
        self.transform.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.transform.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))

    def forward(self, h: torch.Tensor, word_embeddings: torch.Tensor, packed: Packed | None = None) -> torch.Tensor:
        h = self.transform.LayerNorm(F.gelu(self.transform.dense(h)))
        return packing.linear(h, word_embeddings, self.bias, packed)  # (B, L, V)


def bert_init(module: nn.Module, std: float) -> None:
    """BERT initialisation (for `nn.Module.apply`): N(0, std) weights, zero biases, unit LayerNorm."""
    if isinstance(module, nn.Linear | nn.Embedding):
        nn.init.normal_(module.weight, std=std)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
    if isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def key_mask(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """(B, S) 1 = token -> boolean SDPA mask (B, 1, 1, S) that every row shares (True = attend), or
    None when nothing is padded (faster kernels)."""
    if attention_mask is None or bool(attention_mask.all()):
        return None
    return attention_mask.bool()[:, None, None, :]


class MED(nn.Module):
    """The text transformer. `forward` returns hidden states; `logits` applies the LM head."""

    def __init__(
        self,
        cfg: TextConfig,
        vision_width: int,
        *,
        cross_attention: bool = True,
        decoder_self_attention: bool = False,
        lm_head: bool = False,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.embeddings = Embeddings(cfg)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList(
            MedLayer(cfg, vision_width, cross_attention=cross_attention, decoder_self_attention=decoder_self_attention)
            for _ in range(cfg.num_layers)
        )
        self.lm_head = LMHead(cfg) if lm_head else None
        self.has_cross_attention = cross_attention
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        bert_init(module, self.cfg.initializer_range)

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, L)
        attention_mask: torch.Tensor | None = None,  # (B, L) 1 = token, 0 = padding
        *,
        mode: str = "text",
        image_embeds: torch.Tensor | None = None,  # (Bi, N, Dv) with B % Bi == 0, or any Bi with image_index
        cache: KVCache | None = None,
        image_index: torch.Tensor | None = None,  # (B,) which image row each text row attends to
        encoder_attention_mask: torch.Tensor | None = None,  # (Bi, N) 1 = attend, 0 = padded context token
    ) -> torch.Tensor:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if mode != "text" and (image_embeds is None or not self.has_cross_attention):
            raise ValueError(f"mode {mode!r} needs image_embeds and a model with cross-attention")
        offset = cache.length if cache is not None else 0
        x = self.embeddings(input_ids, offset)  # (B, L, D)
        mask = self._mask(attention_mask, mode, input_ids.shape[1], offset)
        ctx_mask = None  # no mask when nothing is padded (faster kernels, and the default path is unchanged)
        if encoder_attention_mask is not None and not bool(encoder_attention_mask.all()):
            ctx_mask = encoder_attention_mask.bool()[:, None, None, :]  # (Bi, 1, 1, N)
        for i, layer in enumerate(self.encoder.layer):
            x = layer(x, mode=mode, image_embeds=image_embeds, mask=mask, cache=cache, layer=i, image_index=image_index,
                      context_mask=ctx_mask)  # fmt: skip
        return x  # (B, L, D)

    @staticmethod
    def _mask(attention_mask: torch.Tensor | None, mode: str, L: int, T: int) -> torch.Tensor | None:
        """Boolean SDPA mask (True = attend), or None when no padding is present (faster kernels)."""
        keys = key_mask(attention_mask)  # (B, 1, 1, T+L)
        if keys is None or mode != "decoder":
            return keys
        causal = torch.ones(L, keys.shape[-1], dtype=torch.bool, device=keys.device).tril(diagonal=keys.shape[-1] - L)
        return keys & causal  # (B, 1, L, T+L)

    packed: Packed | None = None
    """The LM head's weight packed for CPU inference (models/common/packing.py), or None."""

    def packable_weight(self) -> torch.Tensor | None:
        """The LM head's weight (tied to the word embeddings) for pack_for_cpu_inference."""
        return self.embeddings.word_embeddings.weight if self.lm_head is not None else None

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, L, D) -> (B, L, V)."""
        assert self.lm_head is not None, "this MED has no LM head"
        return self.lm_head(hidden, self.embeddings.word_embeddings.weight, self.packed)
