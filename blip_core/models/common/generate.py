"""Caption generation: greedy, beam search and nucleus sampling with a KV cache.

References: BLIP `models/blip.py:BLIP_Decoder.generate` (beam 3, max 20, min 5 for COCO; nucleus
top-p 0.9 with repetition penalty 1.1 for CapFilt), which calls Hugging Face `generate`. The
semantics here follow transformers' implementation so that tokens are identical to HF's BLIP for the
same weights (tested): lengths count the prompt, `min_length` forbids `[SEP]` before it, beam search
keeps 2 * num_beams candidates, normalises finished scores by generated length ** length_penalty,
and stops with HF's early-stop heuristic (`early_stopping=False`).

Work done once per image: the vision pass and the cross-attention keys/values (shared by all beams
or samples of the image); self-attention keys/values grow by one token per step.

Shapes: Bi images, K beams or samples per image, B = Bi * K rows, P prompt tokens, V vocab.

A model decodes through the small `TextDecoder` protocol (its special token ids, a KV cache, the
next token's logits given its context), so BLIP's captioner, VQA's answer decoder and a later
family's language model share one search.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from blip_core.models.common.med import KVCache


@dataclass(kw_only=True, slots=True)
class GenerationConfig:
    method: str = "beam"
    """beam | greedy | nucleus"""
    num_beams: int = 3
    max_length: int = 20
    """Total tokens including the prompt (as BLIP/HF)."""
    min_length: int = 5
    top_p: float = 0.9
    repetition_penalty: float = 1.0
    """BLIP uses 1.0 for beam search and 1.1 for nucleus sampling."""
    num_return_sequences: int = 1
    """Samples per image (nucleus); beam search returns the best beam."""
    length_penalty: float = 1.0

    def __post_init__(self) -> None:
        if self.method not in ("beam", "greedy", "nucleus"):
            raise ValueError(f"generation.method must be beam, greedy or nucleus, got {self.method!r}")
        if self.num_beams < 1 or self.num_return_sequences < 1:
            raise ValueError("generation.num_beams and num_return_sequences must be >= 1")
        if not 0 <= self.min_length <= self.max_length:
            raise ValueError(f"generation.min_length ({self.min_length}) must be in [0, max_length]")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"generation.top_p must be in (0, 1], got {self.top_p}")
        if self.repetition_penalty <= 0:
            raise ValueError("generation.repetition_penalty must be > 0")


class TextDecoder(Protocol):
    """What decoding needs of a model."""

    cfg: Any
    """`cfg.text` holds the special token ids (`sep_token_id` ends a caption, `pad_token_id`)."""

    def decoder_cache(self) -> KVCache:
        """An empty cache for one decoding session (beam search calls its `reorder(rows)`)."""
        ...

    def next_token_logits(self, ids: torch.Tensor, context: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """(B, T) new token ids, (B, N, D) what it attends to (image embeddings, question states)
        -> (B, V) fp32 logits of the token after the last one; `cache` grows by T."""
        ...


class _Decoder:
    """One decoding session: prefill the prompt, then one token at a time through the KV cache."""

    def __init__(self, model: TextDecoder, context: torch.Tensor) -> None:
        self.model, self.context = model, context
        self.cache = model.decoder_cache()

    def step(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.next_token_logits(ids, self.context, self.cache)  # (B, V)


def _process(scores: torch.Tensor, seqs: torch.Tensor, cfg: GenerationConfig, eos: int) -> torch.Tensor:
    """HF logits processors: repetition penalty (on tokens already in the sequence), min length."""
    if cfg.repetition_penalty != 1.0:
        s = scores.gather(1, seqs)
        s = torch.where(s < 0, s * cfg.repetition_penalty, s / cfg.repetition_penalty)
        scores = scores.scatter(1, seqs, s)
    if seqs.shape[1] < cfg.min_length:
        scores = scores.clone()
        scores[:, eos] = -float("inf")
    return scores


def _top_p(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of tokens whose probability mass reaches top_p (HF TopPLogitsWarper)."""
    if top_p >= 1.0:
        return scores
    sorted_logits, sorted_idx = torch.sort(scores, descending=False)
    cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove = cum <= (1 - top_p)
    remove[:, -1] = False  # always keep the most likely token
    return scores.masked_fill(remove.scatter(1, sorted_idx, remove), -float("inf"))


@torch.no_grad()
def generate(
    captioner: TextDecoder,
    image_embeds: torch.Tensor,  # (Bi, N, Dv)
    prompt_ids: torch.Tensor,  # (P,) or (Bi, P): [DEC] + prompt tokens, no [SEP]
    cfg: GenerationConfig,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Token ids (Bi * R, <= max_length) including the prompt; finished rows padded with [PAD].

    R = 1 for beam search and greedy, `num_return_sequences` for nucleus sampling (rows of one image
    are consecutive).
    """
    Bi = image_embeds.shape[0]
    if prompt_ids.dim() == 1:
        prompt_ids = prompt_ids[None].expand(Bi, -1)
    if cfg.method == "beam" and cfg.num_beams > 1:
        return _beam_search(captioner, image_embeds, prompt_ids, cfg)
    R = cfg.num_return_sequences if cfg.method == "nucleus" else 1
    return _sample(captioner, image_embeds, prompt_ids.repeat_interleave(R, dim=0), cfg, generator)


def _sample(captioner, image_embeds, seqs, cfg: GenerationConfig, generator) -> torch.Tensor:
    """Greedy or nucleus sampling (HF `_sample`)."""
    tcfg = captioner.cfg.text
    eos, pad = tcfg.sep_token_id, tcfg.pad_token_id
    dec = _Decoder(captioner, image_embeds)
    logits = dec.step(seqs)
    unfinished = torch.ones(seqs.shape[0], dtype=torch.bool, device=seqs.device)
    while True:
        scores = _process(logits, seqs, cfg, eos)
        if cfg.method == "nucleus":
            probs = _top_p(scores, cfg.top_p).softmax(dim=-1)
            nxt = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        else:
            nxt = scores.argmax(dim=-1)
        nxt = torch.where(unfinished, nxt, torch.full_like(nxt, pad))
        seqs = torch.cat([seqs, nxt[:, None]], dim=1)
        unfinished &= nxt != eos
        if seqs.shape[1] >= cfg.max_length or not bool(unfinished.any()):
            return seqs
        logits = dec.step(nxt[:, None])


def _beam_search(captioner, image_embeds, prompt, cfg: GenerationConfig) -> torch.Tensor:
    """Vectorised beam search with transformers' semantics (see module docstring)."""
    tcfg = captioner.cfg.text
    eos, pad = tcfg.sep_token_id, tcfg.pad_token_id
    Bi, P = prompt.shape
    K, max_len, dev = cfg.num_beams, cfg.max_length, prompt.device
    keep = 2 * K  # candidates per image: enough to continue K beams even if K of them just ended
    running = torch.full((Bi, K, max_len), pad, dtype=torch.long, device=dev)
    running[:, :, :P] = prompt[:, None]
    finished = running.clone()
    running_scores = torch.zeros(Bi, K, device=dev)
    running_scores[:, 1:] = -1e9  # all beams start identical: only the first one may expand
    finished_scores = torch.full((Bi, K), -1e9, device=dev)
    is_finished = torch.zeros(Bi, K, dtype=torch.bool, device=dev)
    improvable = torch.ones(Bi, 1, dtype=torch.bool, device=dev)
    top_k_mask = torch.arange(keep, device=dev) < K
    batch_offset = torch.arange(Bi, device=dev)[:, None] * K
    dec = _Decoder(captioner, image_embeds)
    logits = dec.step(running[:, :, :P].reshape(Bi * K, P))
    cur = P
    while True:
        flat_seqs = running[:, :, :cur].reshape(Bi * K, cur)
        logp = _process(F.log_softmax(logits, dim=-1), flat_seqs, cfg, eos)  # (B, V)
        V = logp.shape[-1]
        logp = (logp.view(Bi, K, V) + running_scores[:, :, None]).view(Bi, K * V)
        top_logp, top_idx = torch.topk(logp, keep)  # (Bi, 2K)
        beam_of, token = top_idx // V, top_idx % V
        cand = running.gather(1, beam_of[:, :, None].expand(-1, -1, max_len)).clone()  # (Bi, 2K, max_len)
        cand[:, :, cur] = token
        hits = (token == eos) | (cur + 1 >= max_len)  # (Bi, 2K) candidates that stop here
        # continue with the best K candidates that did not stop
        cont_logp = top_logp + hits.float() * -1e9
        nxt = torch.topk(cont_logp, K).indices  # (Bi, K)
        running = cand.gather(1, nxt[:, :, None].expand(-1, -1, max_len))
        running_scores = cont_logp.gather(1, nxt)
        reorder = (beam_of.gather(1, nxt) + batch_offset).view(-1)  # (B,) rows the cache must follow
        # merge candidates that stopped (among the top K) into the finished hypotheses
        just_done = hits & top_k_mask[None]
        done_scores = top_logp / ((cur + 1 - P) ** cfg.length_penalty)
        done_scores = done_scores + (~improvable).float() * -1e9 + (~just_done).float() * -1e9
        merged = torch.cat([finished, cand], dim=1)
        merged_scores = torch.cat([finished_scores, done_scores], dim=1)
        merged_done = torch.cat([is_finished, just_done], dim=1)
        best = torch.topk(merged_scores, K).indices
        finished = merged.gather(1, best[:, :, None].expand(-1, -1, max_len))
        finished_scores, is_finished = merged_scores.gather(1, best), merged_done.gather(1, best)
        cur += 1
        # HF's heuristic: stop an image once no running beam can beat its worst finished one
        best_running = running_scores[:, :1] / ((cur - P) ** cfg.length_penalty)
        worst_done = torch.where(is_finished, finished_scores.min(dim=1, keepdim=True).values, -1e9)
        improvable = improvable & (best_running > worst_done).any(dim=-1, keepdim=True)
        if not bool(improvable.any()) or bool(hits.all()):
            break
        dec.cache.reorder(reorder)
        logits = dec.step(running[:, :, cur - 1].reshape(-1, 1))
    best = finished[:, 0]  # (Bi, max_len)
    # trim to the longest returned sequence, as HF does: rows end at their first [SEP] or at max_len
    is_eos = best[:, P:] == eos
    gen_len = torch.where(
        is_eos.any(1), is_eos.float().argmax(1) + 1, torch.full_like(is_eos[:, 0], max_len - P, dtype=torch.long)
    )
    return best[:, : P + int(gen_len.max())]


@torch.no_grad()
def caption_images(
    captioner,
    processor,
    images: torch.Tensor | None,
    cfg: GenerationConfig,
    *,
    generator: torch.Generator | None = None,
    image_embeds: torch.Tensor | None = None,
) -> list[str]:
    """Images (Bi, 3, H, W), or their tower output `image_embeds` -> Bi * R captions (R =
    num_return_sequences for nucleus, else 1)."""
    embeds = captioner.image_embeds(images) if image_embeds is None else image_embeds
    seqs = generate(captioner, embeds, processor.prompt_ids().to(embeds.device), cfg, generator=generator)
    return processor.decode(seqs)
