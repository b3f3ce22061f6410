"""BLIP models: retrieval/filter (ITC + ITM), pre-training (ITC + ITM + LM), captioner (LM).

References:
- BLIP paper Sec. 3 (architecture and objectives) and Sec. 3.3 (CapFilt: the captioner and the
  filter are both initialised from the pre-trained model and fine-tuned on COCO).
- salesforce/BLIP models/blip_pretrain.py, blip_retrieval.py, blip.py (BLIP_Decoder).

Structure: `BlipRetrieval` owns the vision encoder, a MED with cross-attention, the ITC projections,
the ITM head, momentum copies and feature queues. `BlipPretrain` is the same model whose MED also
has a decoder self-attention and an LM head: encoder and decoder share every other parameter
(the paper's Table 3 setting; shared = the same tensors). `BlipCaptioner` is a vision encoder plus
a decoder-mode MED with an LM head. `split_pretrain_state` turns a pre-training state into the
captioner and the filter.

Shapes: B batch, N image tokens, Dv vision width, L text tokens, D text width, E embed dim,
Q queue length, V vocab.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from blip_core.distributed import all_gather_no_grad
from blip_core.losses import (
    itc_loss,
    itc_targets,
    itm_loss,
    itm_word_loss,
    lm_loss,
    sample_hard_negatives,
    unlikelihood_loss,
)
from blip_core.models.blip.config import ModelConfig
from blip_core.models.common.med import MED, KVCache
from blip_core.models.common.vision import create_vision_encoder, encode_image

TEMP_MIN, TEMP_MAX = 0.001, 0.5
EMPTY_SLOT = -100
"""idx_queue value of a never-written queue slot (masked out of ITC). Image ids are >= 0; -1 marks
filled slots whose image is unknown (queues loaded from official BLIP pre-training checkpoints)."""


def _with_first_token(input_ids: torch.Tensor, token_id: int) -> torch.Tensor:
    ids = input_ids.clone()
    ids[:, 0] = token_id
    return ids


class BlipRetrieval(nn.Module):
    """Image-text retrieval model; fine-tuned on clean pairs it is CapFilt's filter."""

    vision_towers = ("visual_encoder", "visual_encoder_m")
    """Its vision tower attributes, the trained one first (the trainer freezes / slows them)."""

    def __init__(self, cfg: ModelConfig, *, decoder: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        vw, d, e = cfg.vision.width, cfg.text.hidden_size, cfg.embed_dim
        self.visual_encoder = create_vision_encoder(cfg.vision)
        self.text = MED(cfg.text, vw, cross_attention=True, decoder_self_attention=decoder, lm_head=decoder)
        self.vision_proj = nn.Linear(vw, e)
        self.text_proj = nn.Linear(d, e)
        self.itm_head = nn.Linear(d, 2)
        for head in (self.vision_proj, self.text_proj, self.itm_head):
            nn.init.normal_(head.weight, std=0.02)
            nn.init.zeros_(head.bias)
        self.temp = nn.Parameter(torch.tensor(cfg.temp))
        # momentum encoders: EMA copies used only without gradients (the text copy needs no
        # cross-attention, decoder or LM head: it only runs in "text" mode)
        self.visual_encoder_m = copy.deepcopy(self.visual_encoder)
        self.text_m = MED(cfg.text, vw, cross_attention=False)
        self.text_m.load_state_dict(self.text.state_dict(), strict=False)
        self.vision_proj_m = copy.deepcopy(self.vision_proj)
        self.text_proj_m = copy.deepcopy(self.text_proj)
        for p in self._momentum_params(momentum=True):
            p.requires_grad_(False)
        q = cfg.queue_size
        self.register_buffer("image_queue", F.normalize(torch.randn(e, q), dim=0))  # (E, Q)
        self.register_buffer("text_queue", F.normalize(torch.randn(e, q), dim=0))  # (E, Q)
        self.register_buffer("idx_queue", torch.full((q,), EMPTY_SLOT, dtype=torch.long))  # (Q,) image ids
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    # -- momentum and queues -------------------------------------------------------------------------
    def momentum_pairs(self) -> list[tuple[nn.Parameter, nn.Parameter]]:
        pairs = []
        for online, mom in [
            (self.visual_encoder, self.visual_encoder_m),
            (self.vision_proj, self.vision_proj_m),
            (self.text_proj, self.text_proj_m),
        ]:
            pairs += list(zip(online.parameters(), mom.parameters(), strict=True))
        online_text = dict(self.text.named_parameters())
        pairs += [(online_text[name], p) for name, p in self.text_m.named_parameters()]
        return pairs

    def _momentum_params(self, momentum: bool) -> list[nn.Parameter]:
        return [p[1] if momentum else p[0] for p in self.momentum_pairs()]

    @torch.no_grad()
    def momentum_update(self) -> None:
        m = self.cfg.momentum
        # a frozen parameter's average is itself; m*p + (1-m)*p would drift from it by rounding
        pairs = [(p, q) for p, q in self.momentum_pairs() if p.requires_grad]
        if not pairs:
            return
        online, mom = zip(*pairs, strict=True)
        torch._foreach_mul_(mom, m)
        torch._foreach_add_(mom, online, alpha=1 - m)

    @torch.no_grad()
    def enqueue(self, image_feat_m: torch.Tensor, text_feat_m: torch.Tensor, image_ids: torch.Tensor) -> None:
        """Write the global batch (gathered from all ranks) into the queues, ring-buffer style."""
        image_feat_m, text_feat_m = all_gather_no_grad(image_feat_m), all_gather_no_grad(text_feat_m)
        image_ids = all_gather_no_grad(image_ids)
        if not (torch.isfinite(image_feat_m).all() and torch.isfinite(text_feat_m).all()):
            return  # a non-finite batch (its update is skipped too) must not poison the queues
        n, ptr = image_feat_m.shape[0], int(self.queue_ptr)
        assert self.cfg.queue_size % n == 0, "queue size must be divisible by the global batch (config check)"
        self.image_queue[:, ptr : ptr + n] = image_feat_m.T
        self.text_queue[:, ptr : ptr + n] = text_feat_m.T
        self.idx_queue[ptr : ptr + n] = image_ids
        self.queue_ptr.fill_((ptr + n) % self.cfg.queue_size)

    # -- features --------------------------------------------------------------------------------------
    def image_embeds(self, images: torch.Tensor) -> torch.Tensor:
        return encode_image(self.visual_encoder, images)  # (B, N, Dv)

    def image_feat(self, image_embeds: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.vision_proj(image_embeds[:, 0]), dim=-1)  # (B, E)

    def text_feat(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.text(input_ids, attention_mask, mode="text")  # (B, L, D)
        return F.normalize(self.text_proj(h[:, 0]), dim=-1)  # (B, E)

    def itm_logits(
        self,
        image_embeds: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        *,
        use_enc: bool = True,
        image_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(Bi, N, Dv), (B, L) -> (B, 2). Without `image_index`, B is a multiple of Bi (image i pairs
        with text rows i*R..i*R+R-1); with it, text row r pairs with image `image_index[r]`.

        `use_enc` puts `[ENC]` first as BLIP does; Hugging Face's port keeps `[CLS]` (use_enc=False).
        """
        return self.itm_head(self.itm_hidden(image_embeds, input_ids, attention_mask, use_enc=use_enc,
                                             image_index=image_index)[:, 0])  # fmt: skip

    def itm_hidden(self, image_embeds, input_ids, attention_mask, *, use_enc=True, image_index=None) -> torch.Tensor:
        """The image-grounded encoder's output (B, L, D) for `itm_logits`' pairs."""
        ids = _with_first_token(input_ids, self.cfg.text.enc_token_id) if use_enc else input_ids
        return self.text(ids, attention_mask, mode="multimodal", image_embeds=image_embeds, image_index=image_index)

    @torch.no_grad()
    def score(self, image_embeds: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict:
        """CapFilt filter scores for (image, caption) pairs: ITM p(match) and ITC cosine.

        One vision pass serves all captions of an image: pass each image once and its R captions as
        consecutive rows (B = Bi * R).
        """
        R = input_ids.shape[0] // image_embeds.shape[0]
        itm = self.itm_logits(image_embeds, input_ids, attention_mask).float().softmax(dim=-1)[:, 1]
        img = self.image_feat(image_embeds).repeat_interleave(R, dim=0)  # (B, E)
        txt = self.text_feat(input_ids, attention_mask)
        return {"itm_prob": itm, "itc_cosine": (img * txt).sum(-1).float()}

    # -- training ----------------------------------------------------------------------------------------
    def forward(
        self,
        images: torch.Tensor,  # (B, 3, H, W)
        input_ids: torch.Tensor,  # (B, L), [CLS] first
        attention_mask: torch.Tensor,  # (B, L)
        image_ids: torch.Tensor,  # (B,) int64; equal ids = same image
        *,
        alpha: float | None = None,
        generator: torch.Generator | None = None,
        itm_extra: dict[str, torch.Tensor] | None = None,
        itm_word: float = 0.0,
    ) -> dict[str, torch.Tensor]:
        """`itm_extra`: more ITM rows made from the captions (blip_core.data.caption_edits): input_ids
        (E, L'), attention_mask (E, L'), image_index (E,) into the batch, labels (E,) 1 match / 0 not,
        and, for `itm_word` > 0, word_labels (E, L') which words are false and positive_word_labels
        (B, L'') the captions' words (all true): `itm_word_loss` x `itm_word` on those rows."""
        image_embeds = self.image_embeds(images)
        out = self._itc_itm(images, image_embeds, input_ids, attention_mask, image_ids, alpha, generator, itm_extra,
                            itm_word)  # fmt: skip
        out["image_embeds"] = image_embeds
        return out

    def _itc_itm(
        self, images, image_embeds, input_ids, attention_mask, image_ids, alpha, generator, itm_extra=None, itm_word=0.0
    ) -> dict:
        alpha = self.cfg.alpha if alpha is None else alpha
        B = input_ids.shape[0]
        with torch.no_grad():
            self.temp.clamp_(TEMP_MIN, TEMP_MAX)
        image_feat = self.image_feat(image_embeds)  # (B, E)
        text_feat = self.text_feat(input_ids, attention_mask)  # (B, E)

        # ITC against the batch and the momentum queues
        with torch.no_grad():
            self.momentum_update()
            image_embeds_m = encode_image(self.visual_encoder_m, images)  # (B, N, Dv)
            image_feat_m = F.normalize(self.vision_proj_m(image_embeds_m[:, 0]), dim=-1)  # (B, E)
            h_m = self.text_m(input_ids, attention_mask, mode="text")
            text_feat_m = F.normalize(self.text_proj_m(h_m[:, 0]), dim=-1)
            image_feat_all = torch.cat([image_feat_m.T, self.image_queue.clone()], dim=1)  # (E, B+Q)
            text_feat_all = torch.cat([text_feat_m.T, self.text_queue.clone()], dim=1)  # (E, B+Q)
            ids_all = torch.cat([image_ids, self.idx_queue.clone()])  # (B+Q,)
            targets = itc_targets(image_ids, ids_all)  # (B, B+Q)
            # never-written queue slots (EMPTY_SLOT) hold random vectors: left in, a model trained from
            # scratch learns the shortcut "batch vs random queue" and its features collapse
            empty = (ids_all == EMPTY_SLOT).float() * -1e4  # (B+Q,)
            sim_i2t_m = image_feat_m @ text_feat_all / self.temp + empty
            sim_t2i_m = text_feat_m @ image_feat_all / self.temp + empty
        if self.cfg.itc_online_batch:
            # the batch columns carry gradients into both towers (CLIP-style): from scratch, a
            # detached momentum target lets the text tower collapse to one point (cosine ~0.99)
            text_feat_all = torch.cat([text_feat.T, text_feat_all[:, B:]], dim=1)
            image_feat_all = torch.cat([image_feat.T, image_feat_all[:, B:]], dim=1)
        sim_i2t = image_feat @ text_feat_all / self.temp + empty  # (B, B+Q)
        sim_t2i = text_feat @ image_feat_all / self.temp + empty  # (B, B+Q)
        out = itc_loss(sim_i2t, sim_t2i, targets, sim_i2t_m, sim_t2i_m, alpha)
        self.enqueue(image_feat_m, text_feat_m, image_ids)

        # ITM: positives + one hard negative text per image and one hard negative image per text
        with torch.no_grad():
            same = image_ids[:, None] == image_ids[None, :]  # (B, B)
            neg_img, ok_t = sample_hard_negatives(sim_t2i[:, :B], same, generator)
            neg_txt, ok_i = sample_hard_negatives(sim_i2t[:, :B], same, generator)
        rows_t, rows_i = ok_t.nonzero().squeeze(1), ok_i.nonzero().squeeze(1)
        ids_all_itm = [input_ids, input_ids[rows_t], input_ids[neg_txt[rows_i]]]
        mask_all = [attention_mask, attention_mask[rows_t], attention_mask[neg_txt[rows_i]]]
        img_index = [torch.arange(B, device=rows_t.device), neg_img[rows_t], rows_i]
        labels = [torch.ones(B, dtype=torch.long), torch.zeros(len(rows_t) + len(rows_i), dtype=torch.long)]
        if itm_extra is not None:  # + the caption-made rows (swap negatives, partial positives)
            L = max(input_ids.shape[1], itm_extra["input_ids"].shape[1])
            ids_all_itm = [F.pad(t, (0, L - t.shape[1])) for t in (*ids_all_itm, itm_extra["input_ids"])]
            mask_all = [F.pad(t, (0, L - t.shape[1])) for t in (*mask_all, itm_extra["attention_mask"])]
            img_index.append(itm_extra["image_index"])
            labels.append(itm_extra["labels"].cpu())
        ids_all_itm, mask_all, img_index = torch.cat(ids_all_itm), torch.cat(mask_all), torch.cat(img_index)
        h = self.itm_hidden(image_embeds, ids_all_itm, mask_all, image_index=img_index)  # (B + n_t + n_i + E, L, D)
        logits = self.itm_head(h[:, 0])  # (B + n_t + n_i + E, 2)
        labels = torch.cat(labels)
        out |= itm_loss(logits, labels.to(logits.device))
        if itm_word and itm_extra is not None:
            words = self._word_labels(itm_extra["positive_word_labels"], len(rows_t) + len(rows_i),
                                      itm_extra["word_labels"], h.shape[1])  # fmt: skip
            out["itm_word_loss"] = itm_word * itm_word_loss(self.itm_head(h), words)["itm_word_loss"]
        out |= {
            "itm_logits": logits,
            "itm_labels": labels,
            "sim_i2t": sim_i2t.detach(),
            "num_no_negative": (~ok_t).sum() + (~ok_i).sum(),
            "temp": self.temp.detach(),
        }
        return out

    @staticmethod
    def _word_labels(pos: torch.Tensor, num_negatives: int, extra: torch.Tensor, L: int) -> torch.Tensor:
        """(M, L) word targets of the ITM rows: the positives' (labelled as the caption-made rows
        are), the in-batch negatives unlabelled (which word is false is unknown), then the
        caption-made rows' own."""
        neg = torch.full((num_negatives, L), -100, dtype=torch.long, device=pos.device)
        return torch.cat([F.pad(pos, (0, L - pos.shape[1]), value=-100), neg,
                          F.pad(extra, (0, L - extra.shape[1]), value=-100)])  # fmt: skip


class BlipPretrain(BlipRetrieval):
    """Pre-training model: ITC + ITM + LM. The MED has a second (decoder) self-attention and an LM
    head; every other text parameter is shared between the encoder and the decoder."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg, decoder=True)

    def forward(self, images, input_ids, attention_mask, image_ids, *, alpha=None, generator=None, **negatives):
        out = super().forward(images, input_ids, attention_mask, image_ids, alpha=alpha, generator=generator,
                              **negatives)  # fmt: skip
        # LM: [DEC] replaces [CLS]; padding is not predicted
        dec_ids = _with_first_token(input_ids, self.cfg.text.bos_token_id)
        labels = dec_ids.masked_fill(attention_mask == 0, -100)
        h = self.text(dec_ids, attention_mask, mode="decoder", image_embeds=out["image_embeds"])
        logits = self.text.logits(h)  # (B, L, V)
        out |= lm_loss(logits, labels, self.cfg.text.label_smoothing)
        out["lm_logits"] = logits
        return out


class BlipCaptioner(nn.Module):
    """Image-grounded decoder: vision encoder + decoder-mode MED + LM head. Generation lives in
    `blip_core.models.common.generate`."""

    vision_towers = ("visual_encoder",)
    """Its vision tower attribute (the trainer freezes / slows it)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.visual_encoder = create_vision_encoder(cfg.vision)
        self.text = MED(cfg.text, cfg.vision.width, cross_attention=True, lm_head=True)

    def image_embeds(self, images: torch.Tensor) -> torch.Tensor:
        return encode_image(self.visual_encoder, images)  # (B, N, Dv)

    # generate's TextDecoder protocol
    def decoder_cache(self) -> KVCache:
        return KVCache(len(self.text.encoder.layer))

    def next_token_logits(self, ids: torch.Tensor, context: torch.Tensor, cache: KVCache) -> torch.Tensor:
        h = self.text(ids, None, mode="decoder", image_embeds=context, cache=cache)  # (B, T, D)
        return self.text.logits(h[:, -1:])[:, -1].float()  # (B, V)

    def forward(
        self,
        images: torch.Tensor,  # (B, 3, H, W)
        input_ids: torch.Tensor,  # (B, L): [CLS] prompt caption [SEP] padding
        attention_mask: torch.Tensor,  # (B, L)
        *,
        prompt_length: int = 0,
        image_embeds: torch.Tensor | None = None,
        negative_ids: torch.Tensor | None = None,  # (B, L'): a swap negative of each caption
        unlikelihood: float = 0.0,
    ) -> dict[str, torch.Tensor]:
        """LM loss on the caption; the prompt tokens (including [DEC]) are not trained on, as BLIP.
        With `negative_ids`, also `unlikelihood_loss` x `unlikelihood` at the first token where each
        negative leaves its caption (the prefix is shared, so the caption's own logits score it)."""
        if image_embeds is None:
            image_embeds = self.image_embeds(images)
        dec_ids = _with_first_token(input_ids, self.cfg.text.bos_token_id)
        labels = dec_ids.masked_fill(attention_mask == 0, -100)
        labels[:, :prompt_length] = -100
        logits = self.text.logits(self.text(dec_ids, attention_mask, mode="decoder", image_embeds=image_embeds))
        out = lm_loss(logits, labels, self.cfg.text.label_smoothing) | {"lm_logits": logits}
        if negative_ids is not None:
            out["unlikelihood_loss"] = unlikelihood * unlikelihood_loss(logits, labels, negative_ids)
        return out


def split_pretrain_state(state: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """Pre-training state -> (captioner state, retrieval/filter state).

    The captioner takes the vision encoder, the shared text parameters, the *decoder* self-attention
    (renamed to the captioner's only self-attention) and the LM head. The filter takes everything
    but the decoder self-attention and LM head (momentum encoders and queues included).
    """
    cap, ret = {}, {}
    for k, v in state.items():
        if ".attention_dec." in k or k.startswith("text.lm_head."):
            continue
        ret[k] = v
    for k, v in state.items():
        if k.startswith("visual_encoder."):
            cap[k] = v
        elif k.startswith("text.") and ".attention." not in k:
            cap[k.replace(".attention_dec.", ".attention.")] = v
    return cap, ret


# what a converted checkpoint (Hugging Face, salesforce/BLIP) may lack
MOMENTUM_AND_QUEUES = (
    "visual_encoder_m.",
    "text_m.",
    "vision_proj_m.",
    "text_proj_m.",
    "image_queue",
    "text_queue",
    "idx_queue",
    "queue_ptr",
    "temp",
)


def copy_momentum(model: nn.Module) -> None:
    """BLIP's `copy_params`: momentum encoders start as copies of the online ones."""
    with torch.no_grad():
        for online, mom in model.momentum_pairs():
            mom.copy_(online)


def captioner_from_pretrain(
    state: dict[str, torch.Tensor], cfg: ModelConfig | None = None
) -> tuple[dict[str, torch.Tensor], tuple[str, ...]]:
    """The captioner's state from a pre-training state (its registry entry's `init_from`; nothing fresh)."""
    return split_pretrain_state(state)[0], ()


def retrieval_from_pretrain(
    state: dict[str, torch.Tensor], cfg: ModelConfig | None = None
) -> tuple[dict[str, torch.Tensor], tuple[str, ...]]:
    """The filter's state from a pre-training state (its registry entry's `init_from`; nothing fresh)."""
    return split_pretrain_state(state)[1], ()
