"""BLIP-2 stage 2 and InstructBLIP: the Q-Former's K query outputs, projected to a frozen causal
language model's width, are its first K input embeddings (soft prompts); only the Q-Former, its
queries, `ln_vision` and the projection train.

References:
- BLIP-2 paper Sec. 3.3 and Fig. 3 ("a fully-connected layer ... prepended to the input text
  embeddings ... soft visual prompts"; decoder-based LLMs trained with the language modeling loss).
- salesforce/LAVIS lavis/models/blip2_models/blip2_opt.py (`Blip2OPT.forward`: `opt_proj`, targets
  -100 on the query and prompt positions, `generate` from `inputs_embeds`).
- InstructBLIP paper Sec. 2.2 and Fig. 3; LAVIS blip2_vicuna_instruct.py (`qformer_text_input`: the
  instruction's tokens join the queries' self-attention; only the query outputs reach the LLM, which
  reads the instruction again in its own tokens; loss on the answer only).
- transformers models/blip_2 and instructblip (`Blip2ForConditionalGeneration`,
  `InstructBlipForConditionalGeneration`): the same computation; their `input_ids` hold K
  `image_token_index` placeholders where the query outputs go, ours hold only the text.

Shapes: B batch, K queries, L language-model tokens, Lq instruction tokens (Q-Former side), N image
tokens, D Q-Former width, H language-model width, V language-model vocabulary.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from blip_core.losses import lm_loss
from blip_core.models.blip2.config import Blip2Config
from blip_core.models.blip2.qformer import Blip2QFormer, QFormer, frozen_tower
from blip_core.models.common.med import key_mask
from blip_core.models.common.vision import encode_image


def load_language_model(path: str | Path) -> nn.Module:
    """A local Hugging Face causal LM directory (`OPTForCausalLM`, ...), read without the network."""
    from transformers import AutoModelForCausalLM

    if not Path(path).is_dir():
        raise FileNotFoundError(f"blip2.language_model: no model directory at {path}")
    return AutoModelForCausalLM.from_pretrained(path, local_files_only=True)


def prompt_lengths(lengths: int | torch.Tensor, batch: int, device: torch.device) -> torch.Tensor:
    """(B,) per-row prompt lengths from an int (one prompt for all rows) or a (B,) tensor."""
    if isinstance(lengths, int):
        return torch.full((batch,), lengths, dtype=torch.long, device=device)
    return lengths.to(device)


class Blip2(nn.Module):
    """BLIP-2 stage 2: image -> frozen tower -> Q-Former queries -> `language_projection` -> the first
    K input embeddings of a frozen causal LM (any transformers `*ForCausalLM`). Returns a dict with
    `lm_loss` (the text after the prompt) and `loss`."""

    vision_towers = ("visual_encoder",)
    """Its vision tower, frozen: never trained, always in eval mode."""

    def __init__(self, cfg: Blip2Config, language_model: nn.Module) -> None:
        super().__init__()
        self.cfg = cfg
        d, vw = cfg.qformer.hidden_size, cfg.vision.width
        self.visual_encoder = frozen_tower(cfg)
        self.ln_vision = nn.LayerNorm(vw)
        self.query_tokens = nn.Parameter(torch.randn(1, cfg.num_query_tokens, d) * cfg.qformer.initializer_range)
        self.qformer = QFormer(cfg.qformer, vw, cfg.cross_attention_freq)
        self.language_model = language_model
        self.language_projection = nn.Linear(d, language_model.get_input_embeddings().embedding_dim)
        self.language_model.requires_grad_(False)
        self.train()

    @classmethod
    def from_stage1(cls, stage1: Blip2QFormer, language_model: nn.Module) -> Blip2:
        """Stage 2 starts from stage 1's tower, `ln_vision`, queries and Q-Former (its ITC/ITM/ITG
        heads stay behind); the projection starts random."""
        model = cls(stage1.cfg, language_model)
        for name in ("visual_encoder", "ln_vision", "qformer"):
            getattr(model, name).load_state_dict(getattr(stage1, name).state_dict())
        model.query_tokens.data.copy_(stage1.query_tokens.data)
        return model

    def train(self, mode: bool = True) -> Blip2:
        super().train(mode)
        self.visual_encoder.eval()  # frozen parts keep their norms' statistics and drop no units
        self.language_model.eval()
        return self

    # -- the soft prompts ----------------------------------------------------------------------------
    def image_embeds(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            tokens = encode_image(self.visual_encoder, images)  # (B, N, Dv)
        return self.ln_vision(tokens)

    def query_output(self, image_embeds: torch.Tensor) -> torch.Tensor:
        """(B, N, Dv) -> (B, K, D): the queries read the image; no text in the Q-Former."""
        q = self.query_tokens.expand(image_embeds.shape[0], -1, -1)
        return self.qformer(query_embeds=q, image_embeds=image_embeds)[0]

    def soft_prompts(self, images: torch.Tensor, **qformer_text) -> torch.Tensor:
        """(B, 3, H, W) -> (B, K, H) inputs for the language model."""
        return self.language_projection(self.query_output(self.image_embeds(images), **qformer_text))

    def _inputs(self, soft: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple:
        embeds = self.language_model.get_input_embeddings()(input_ids)  # (B, L, H)
        mask = torch.cat([attention_mask.new_ones(soft.shape[:2]), attention_mask], dim=1)  # (B, K+L)
        return torch.cat([soft.to(embeds.dtype), embeds], dim=1), mask

    # -- training --------------------------------------------------------------------------------------
    def forward(
        self,
        images: torch.Tensor,  # (B, 3, H, W)
        input_ids: torch.Tensor,  # (B, L) language-model tokens: BOS, prompt, text, EOS, right padding
        attention_mask: torch.Tensor,  # (B, L)
        *,
        prompt_length: int | torch.Tensor = 0,  # BOS + prompt tokens per row: not predicted
        **qformer_text,
    ) -> dict[str, torch.Tensor]:
        soft = self.soft_prompts(images, **qformer_text)  # (B, K, H)
        embeds, mask = self._inputs(soft, input_ids, attention_mask)
        logits = self.language_model(inputs_embeds=embeds, attention_mask=mask).logits  # (B, K+L, V)
        B, L = input_ids.shape
        plen = prompt_lengths(prompt_length, B, input_ids.device)
        pos = torch.arange(L, device=input_ids.device)[None]  # (1, L)
        labels = input_ids.masked_fill((attention_mask == 0) | (pos < plen[:, None]), -100)
        # position K-1+j predicts text token j: the logits from the last query on, against the labels
        # behind one ignored column (lm_loss shifts by one)
        K = self.cfg.num_query_tokens
        out = lm_loss(logits[:, K - 1 :], torch.cat([labels.new_full((B, 1), -100), labels], dim=1), 0.0)
        return {"loss": out["lm_loss"], **out, "lm_logits": logits[:, K:].detach()}

    # -- inference ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        images: torch.Tensor,  # (B, 3, H, W)
        input_ids: torch.Tensor,  # (B, P) BOS + prompt, left-padded when the prompts differ in length
        attention_mask: torch.Tensor,  # (B, P)
        *,
        max_new_tokens: int = 20,
        num_beams: int = 1,
        min_new_tokens: int = 0,
        **qformer_text,
    ) -> torch.Tensor:
        """(B, T) new tokens only, from the language model's own `generate` (greedy or beam) over
        [soft prompts; prompt embeddings]. An OPT-style model takes the padding between the two in
        its stride: its positions count attended tokens only."""
        soft = self.soft_prompts(images, **qformer_text)
        embeds, mask = self._inputs(soft, input_ids, attention_mask)
        gen_cfg = self.language_model.generation_config
        return self.language_model.generate(
            inputs_embeds=embeds,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            min_new_tokens=min_new_tokens,
            num_beams=num_beams,
            do_sample=False,
            eos_token_id=gen_cfg.eos_token_id,
            pad_token_id=gen_cfg.pad_token_id if gen_cfg.pad_token_id is not None else gen_cfg.eos_token_id,
        )


class InstructBlip(Blip2):
    """InstructBLIP: the instruction's tokens (the Q-Former's tokenizer) join the K queries in the
    Q-Former's self-attention, so the queries extract what the instruction asks for; only the K query
    outputs go to the language model, which reads the instruction again as its prompt."""

    def query_output(  # type: ignore[override]
        self,
        image_embeds: torch.Tensor,  # (B, N, Dv)
        *,
        qformer_input_ids: torch.Tensor,  # (B, Lq) the instruction, [CLS] first
        qformer_attention_mask: torch.Tensor,  # (B, Lq)
    ) -> torch.Tensor:
        """(B, N, Dv) -> (B, K, D): one bidirectional pass over [queries; instruction], the queries
        cross-attending to the image (as stage 1's ITM pass)."""
        B, K = image_embeds.shape[0], self.cfg.num_query_tokens
        q = self.query_tokens.expand(B, -1, -1)
        keys = torch.cat([qformer_attention_mask.new_ones(B, K), qformer_attention_mask], dim=1)  # (B, K+Lq)
        h, _ = self.qformer(query_embeds=q, input_ids=qformer_input_ids, image_embeds=image_embeds,
                            mask=key_mask(keys))  # fmt: skip
        return h[:, :K]
