"""BLIP's VQA model: an image-grounded question encoder and an answer decoder.

References:
- BLIP paper Sec. 5.3 and Fig. 5(a): VQA as answer generation. The image-grounded encoder embeds
  the image and the question; the answer decoder attends to that embedding and is trained with the
  LM loss on the ground-truth answers. Evaluation either generates or ranks a candidate list.
- salesforce/BLIP models/blip_vqa.py: `[ENC]` replaces `[CLS]` in the question, answers start with
  `[DEC]`, each answer's loss is weighted and the sum is divided by the number of questions;
  `rank_answer` takes the top-k candidates by the first answer token's probability and re-ranks them
  by the whole answer's likelihood.

Deliberate differences from salesforce/BLIP: ranking scores the plain log-likelihood (BLIP negates
its label-smoothed loss), and generation masks the question's padding in the decoder's
cross-attention as training does (BLIP's generate passes an all-ones mask).

Shapes: B questions (one image each), Lq question tokens, A answers, La answer tokens, C candidate
answers, Lc candidate tokens, K candidates re-ranked per question, N image tokens, Dv vision width,
D text width, V vocab.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from blip_core.losses import vqa_loss
from blip_core.models.blip.config import ModelConfig
from blip_core.models.common.generate import GenerationConfig, generate
from blip_core.models.common.med import MED, KVCache
from blip_core.models.common.vision import create_vision_encoder, encode_image

LOGIT_ROWS = 256
"""Answer rows whose (Lc, V) logits are materialised at once when ranking: B * K * Lc * V floats
would not fit for BLIP's k = 128 and a BERT vocabulary."""


def _first_token(ids: torch.Tensor, token_id: int) -> torch.Tensor:
    ids = ids.clone()
    ids[:, 0] = token_id
    return ids


class _AnswerDecoder:
    """VQA's answer decoder as generate's `TextDecoder`: the question states are its context, with
    their padding mask bound into every cross-attention call."""

    def __init__(self, vqa: BlipVQA, question_mask: torch.Tensor) -> None:
        self.cfg, self._med, self._mask = vqa.cfg, vqa.text_decoder, question_mask

    def decoder_cache(self) -> KVCache:
        return KVCache(len(self._med.encoder.layer))

    def next_token_logits(self, ids: torch.Tensor, context: torch.Tensor, cache: KVCache) -> torch.Tensor:
        h = self._med(ids, None, mode="decoder", image_embeds=context, cache=cache, encoder_attention_mask=self._mask)
        return self._med.logits(h[:, -1:])[:, -1].float()  # (B, V)


class BlipVQA(nn.Module):
    """Vision encoder + image-grounded question encoder + answer decoder (separate weights, as BLIP)."""

    vision_towers = ("visual_encoder",)
    """Its vision tower attributes, the trained one first (the trainer freezes / slows them)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.visual_encoder = create_vision_encoder(cfg.vision)
        self.text_encoder = MED(cfg.text, cfg.vision.width, cross_attention=True)
        # the decoder's cross-attention reads question states, so its keys/values are D wide (not Dv)
        self.text_decoder = MED(cfg.text, cfg.text.hidden_size, cross_attention=True, lm_head=True)

    def encode_questions(
        self,
        images: torch.Tensor,  # (B, 3, H, W)
        question_ids: torch.Tensor,  # (B, Lq): [CLS] question [SEP] padding
        question_mask: torch.Tensor,  # (B, Lq)
    ) -> torch.Tensor:
        """Image-grounded question states (B, Lq, D), `[ENC]` first as BLIP."""
        image_embeds = encode_image(self.visual_encoder, images)  # (B, N, Dv)
        ids = _first_token(question_ids, self.cfg.text.enc_token_id)
        return self.text_encoder(ids, question_mask, mode="multimodal", image_embeds=image_embeds)

    def answer_hidden(
        self,
        answer_ids: torch.Tensor,  # (A, La): [CLS] answer [SEP] padding
        answer_mask: torch.Tensor,  # (A, La)
        question_states: torch.Tensor,  # (B, Lq, D)
        question_mask: torch.Tensor,  # (B, Lq)
        answer_index: torch.Tensor | None = None,  # (A,) question row of each answer; None: A = B * R in order
    ) -> torch.Tensor:
        """Decoder states (A, La, D) of the answers, `[DEC]` first."""
        ids = _first_token(answer_ids, self.cfg.text.bos_token_id)
        return self.text_decoder(ids, answer_mask, mode="decoder", image_embeds=question_states,
                                 image_index=answer_index, encoder_attention_mask=question_mask)  # fmt: skip

    def forward(
        self,
        images: torch.Tensor,  # (B, 3, H, W)
        question_ids: torch.Tensor,  # (B, Lq)
        question_mask: torch.Tensor,  # (B, Lq)
        answer_ids: torch.Tensor,  # (A, La)
        answer_mask: torch.Tensor,  # (A, La)
        answer_index: torch.Tensor,  # (A,) question row of each answer
        answer_weight: torch.Tensor | None = None,  # (A,) None: 1 / (answers of its question)
    ) -> dict[str, torch.Tensor]:
        """`vqa_loss` (LM loss on the answer tokens, weighted per answer, mean over questions) and
        the answer `logits` (A, La, V)."""
        B = question_ids.shape[0]
        states = self.encode_questions(images, question_ids, question_mask)  # (B, Lq, D)
        logits = self.text_decoder.logits(self.answer_hidden(answer_ids, answer_mask, states, question_mask,
                                                             answer_index))  # fmt: skip
        labels = answer_ids.masked_fill(answer_mask == 0, -100)  # (A, La); the first token is never a target
        if answer_weight is None:
            counts = torch.bincount(answer_index, minlength=B).to(logits.dtype)  # (B,)
            answer_weight = 1.0 / counts[answer_index]
        out = vqa_loss(logits, labels, answer_weight.to(logits.dtype), B, self.cfg.text.label_smoothing)
        return out | {"logits": logits}

    # -- inference --------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate_answers(
        self,
        images: torch.Tensor,  # (B, 3, H, W)
        question_ids: torch.Tensor,  # (B, Lq)
        question_mask: torch.Tensor,  # (B, Lq)
        max_length: int = 8,
        *,
        num_beams: int = 3,
        question_states: torch.Tensor | None = None,  # (B, Lq, D) from encode_questions, to reuse it
    ) -> torch.Tensor:
        """Answer token ids (B, <= max_length): `[DEC]` answer `[SEP]` then `[PAD]`. Beam search as
        BLIP (3 beams, min_length 1), or greedy with num_beams=1; `max_length` counts `[DEC]`."""
        if question_states is None:
            question_states = self.encode_questions(images, question_ids, question_mask)
        gcfg = GenerationConfig(method="beam" if num_beams > 1 else "greedy", num_beams=num_beams,
                                max_length=max_length, min_length=1)  # fmt: skip
        prompt = torch.tensor([self.cfg.text.bos_token_id], device=question_states.device)
        return generate(_AnswerDecoder(self, question_mask), question_states, prompt, gcfg)

    @torch.no_grad()
    def rank_answers(
        self,
        images: torch.Tensor,  # (B, 3, H, W)
        question_ids: torch.Tensor,  # (B, Lq)
        question_mask: torch.Tensor,  # (B, Lq)
        candidate_ids: torch.Tensor,  # (C, Lc): [CLS] answer [SEP] padding
        candidate_mask: torch.Tensor,  # (C, Lc)
        k: int = 128,
        *,
        question_states: torch.Tensor | None = None,  # (B, Lq, D) from encode_questions, to reuse it
    ) -> torch.Tensor:
        """Index (B,) of each question's best candidate (BLIP's rank mode, k = k_test)."""
        if question_states is None:
            question_states = self.encode_questions(images, question_ids, question_mask)
        B, C, dev = question_states.shape[0], candidate_ids.shape[0], question_states.device
        if k >= C:  # every candidate is re-ranked: the first-token shortlist would change nothing
            top = torch.arange(C, device=dev).expand(B, C)  # (B, C)
        else:
            start = torch.full((B, 1), self.cfg.text.bos_token_id, dtype=torch.long, device=dev)
            h = self.text_decoder(start, None, mode="decoder", image_embeds=question_states,
                                  encoder_attention_mask=question_mask)  # fmt: skip
            first = self.text_decoder.logits(h)[:, 0].float().softmax(dim=-1)  # (B, V)
            top = first.index_select(1, candidate_ids[:, 1]).topk(k, dim=1).indices  # (B, K)
        K = top.shape[1]
        ids, mask = candidate_ids[top].flatten(0, 1), candidate_mask[top].flatten(0, 1)  # (B*K, Lc)
        # rows of one question are consecutive, so the decoder folds them onto its question states
        h = self.answer_hidden(ids, mask, question_states, question_mask)  # (B*K, Lc, D)
        labels = ids.masked_fill(mask == 0, -100)
        log_prob = torch.cat([
            self._log_likelihood(h[s : s + LOGIT_ROWS], labels[s : s + LOGIT_ROWS])
            for s in range(0, h.shape[0], LOGIT_ROWS)
        ])  # fmt: skip
        best = log_prob.view(B, K).argmax(dim=1)  # (B,)
        return top.gather(1, best[:, None]).squeeze(1)

    def _log_likelihood(self, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(R, Lc, D), (R, Lc) -> (R,) summed log-probability of each row's answer tokens and [SEP]."""
        logp = F.log_softmax(self.text_decoder.logits(hidden)[:, :-1].float(), dim=-1)  # (R, Lc-1, V)
        target = labels[:, 1:]
        keep = target != -100
        tok = logp.gather(-1, target.clamp(min=0)[..., None]).squeeze(-1)  # (R, Lc-1)
        return (tok * keep).sum(dim=1)


def _check_pretrain_state(state: dict[str, torch.Tensor]) -> None:
    if "text.lm_head.bias" not in state or not any(".attention_dec." in k for k in state):
        raise ValueError("not a BlipPretrain state: it needs text.lm_head.* and the decoder self-attention "
                         "(text.encoder.layer.*.attention_dec.*)")  # fmt: skip


def vqa_state_from_pretrain(
    state: dict[str, torch.Tensor], cfg: ModelConfig | None = None
) -> tuple[dict[str, torch.Tensor], tuple[str, ...]]:
    """A `BlipPretrain` state dict -> (BlipVQA state, keys left at their fresh init).

    As BLIP: the question encoder is the pre-trained image-grounded encoder (self-attention,
    cross-attention, FFN, embeddings); the answer decoder is the pre-trained decoder (`attention_dec`
    becomes its self-attention; cross-attention, FFN and embeddings are the shared ones; the LM
    head). Momentum copies, queues, projections, the ITM head and `temp` are dropped. When the vision
    width differs from the text width (the `large` preset), the decoder's cross-attention keys/values
    (which read D-wide question states, not Dv-wide image tokens) cannot be copied and stay fresh.
    """
    _check_pretrain_state(state)
    text_width = state["text.embeddings.word_embeddings.weight"].shape[1]
    out: dict[str, torch.Tensor] = {}
    fresh: list[str] = []
    for k, v in state.items():
        if k.startswith("visual_encoder."):
            out[k] = v
            continue
        if not k.startswith("text."):
            continue  # momentum copies, queues, projections, itm_head, temp
        rest = k[len("text.") :]
        if ".attention_dec." not in rest and not rest.startswith("lm_head."):
            out["text_encoder." + rest] = v
        if ".attention." in rest:
            continue  # the encoder's self-attention; the decoder has its own
        dec = "text_decoder." + rest.replace(".attention_dec.", ".attention.")
        kv = ".crossattention.self.key." in rest or ".crossattention.self.value." in rest
        kv_width = state[k.replace(".bias", ".weight")].shape[1] if kv else text_width
        if kv_width != text_width:
            fresh.append(dec)
        else:
            out[dec] = v
    return out, tuple(fresh)
