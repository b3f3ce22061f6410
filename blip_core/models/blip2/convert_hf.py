"""Hugging Face BLIP-2 / InstructBLIP <-> ours: `Blip2ForImageTextRetrieval` (stage 1),
`Blip2ForConditionalGeneration` and `InstructBlipForConditionalGeneration` objects or local
directories in (`load_hf`), our `Blip2QFormer` / `Blip2` / `InstructBlip` out as directories
transformers loads (`export_hf`). HF's retrieval model has no ITG head: ours keeps its initial one.

The language model is the same transformers object on both sides (ours holds any `*ForCausalLM`);
the tower's keys are timm's as in BLIP (`blip_core.models.blip.convert_hf`), except that BLIP-2's
`post_layernorm` is our `ln_vision` (LAVIS's name; the tower itself then has no last norm); the
Q-Former's keys are LAVIS's, which HF renamed in two places (`attention.attention` for
`attention.self`, `layernorm` for `embeddings.LayerNorm`). HF's BLIP-2 Q-Former has no text side
(no word embeddings or text feed-forward): those of ours stay unused in stage 2 and are not
exported. HF puts the query outputs at `image_token_index` placeholders in `input_ids`; ours
prepends them, which is the same computation when the K placeholders come first.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import torch

from blip_core.models.blip.convert_hf import (
    HF_VISION,
    HF_VISION_INV,
    hf_architecture,
    hf_bert_sizes,
    hf_vision_config,
    rename_keys,
)
from blip_core.models.blip2.config import Blip2Config
from blip_core.models.blip2.model import Blip2, InstructBlip
from blip_core.models.blip2.qformer import Blip2QFormer
from blip_core.models.common.config import TextConfig

ARCHITECTURES = {"Blip2ForImageTextRetrieval": Blip2QFormer, "Blip2ForConditionalGeneration": Blip2,
                 "InstructBlipForConditionalGeneration": InstructBlip}  # fmt: skip
_HF_NAME = {cls: name for name, cls in ARCHITECTURES.items()}

_POST_NORM = (r"^vision_model\.post_layernorm\.", "ln_vision.")
_QFORMER = [
    (r"^qformer\.layernorm\.", "qformer.embeddings.LayerNorm."),  # BLIP-2
    (r"^qformer\.embeddings\.layernorm\.", "qformer.embeddings.LayerNorm."),  # InstructBLIP
    (r"^qformer\.embeddings\.(word|position)_embeddings\.", r"qformer.embeddings.\1_embeddings."),
    (r"^qformer\.encoder\.layer\.(\d+)\.(attention|crossattention)\.attention\.", r"qformer.encoder.layer.\1.\2.self."),
    (r"^qformer\.encoder\.layer\.(\d+)\.", r"qformer.encoder.layer.\1."),
    (r"^(query_tokens|language_projection\.|itm_head\.)", r"\1"),
    (r"^embeddings\.(word|position)_embeddings\.", r"qformer.embeddings.\1_embeddings."),  # stage 1
    (r"^(vision|text)_projection\.", r"\1_proj."),
]
_QFORMER_INV = [
    (r"^qformer\.embeddings\.LayerNorm\.", "qformer.embeddings.LayerNorm."),  # renamed per model below
    (r"^qformer\.embeddings\.(word|position)_embeddings\.", r"qformer.embeddings.\1_embeddings."),
    (r"^qformer\.encoder\.layer\.(\d+)\.(attention|crossattention)\.self\.", r"qformer.encoder.layer.\1.\2.attention."),
    (r"^qformer\.encoder\.layer\.(\d+)\.", r"qformer.encoder.layer.\1."),
    (r"^(query_tokens|language_projection\.|itm_head\.)", r"\1"),
    (r"^(vision|text)_proj\.", r"\1_projection."),
]
_SKIP = re.compile(r"^language_model\.|position_ids$")
_TEXT_SIDE = re.compile(
    r"^qformer\.(embeddings\.(word|position)_embeddings\.|encoder\.layer\.\d+\.(intermediate|output)\.)"
)
"""Our Q-Former's text side: BLIP-2 stage 2 never runs it, and HF's BLIP-2 has none."""


def hf_config_to_ours(hf_config) -> Blip2Config:
    """Our Blip2Config for a transformers Blip2Config / InstructBlipConfig (no last tower norm)."""
    v, q = hf_config.vision_config, hf_config.qformer_config
    vision = hf_vision_config(v)
    pad = q.pad_token_id if q.pad_token_id is not None else 0
    qformer = TextConfig(
        **hf_bert_sizes(q),
        # HF's config names no [CLS]/[SEP]/[DEC] ids (its tokenizer has them): BERT's layout
        pad_token_id=pad,
        cls_token_id=101 if q.vocab_size > 103 else 1,
        sep_token_id=102 if q.vocab_size > 103 else 2,
        bos_token_id=q.vocab_size - 2,
        enc_token_id=q.vocab_size - 1,
    )
    return Blip2Config(vision=vision, qformer=qformer, num_query_tokens=hf_config.num_query_tokens,
                       cross_attention_freq=q.cross_attention_frequency, vision_final_norm=False)  # fmt: skip


def ours_to_hf_config(model: Blip2QFormer | Blip2, *, image_token_index: int | None = None):
    """The transformers config of our model; `image_token_index` (stage 2 and InstructBLIP): the
    language model's token id that marks where the query outputs go (HF's processor writes K of them
    before the text)."""
    import transformers

    cfg = model.cfg
    v, q = cfg.vision, cfg.qformer
    if v.stem != "patch" or cfg.vision_final_norm:
        raise ValueError("Hugging Face BLIP-2 has a ViT patch tower without a last norm (vision.stem: patch, "
                         "vision_final_norm: false); keep this model in our format")  # fmt: skip
    vision = {"hidden_size": v.width, "intermediate_size": int(round(v.width * v.mlp_ratio)),
              "image_size": v.image_size, "num_hidden_layers": v.depth, "num_attention_heads": v.num_heads,
              "patch_size": v.patch_size, "layer_norm_eps": v.layer_norm_eps}  # fmt: skip
    qformer = {"vocab_size": q.vocab_size, "hidden_size": q.hidden_size, "num_hidden_layers": q.num_layers,
               "num_attention_heads": q.num_heads, "intermediate_size": q.intermediate_size,
               "max_position_embeddings": q.max_position_embeddings, "layer_norm_eps": q.layer_norm_eps,
               "pad_token_id": q.pad_token_id, "cross_attention_frequency": cfg.cross_attention_freq,
               "encoder_hidden_size": v.width}  # fmt: skip
    if isinstance(model, Blip2QFormer):  # stage 1: the Q-Former reads text, no language model
        qformer["use_qformer_text_input"] = True
        return transformers.Blip2Config(
            vision_config=vision,
            qformer_config=qformer,
            num_query_tokens=cfg.num_query_tokens,
            image_text_hidden_size=cfg.embed_dim,
        )
    if image_token_index is None:
        raise ValueError("export of a model with a language model needs its image_token_index")
    lm = model.language_model
    if model.language_projection.out_features != lm.config.hidden_size:
        raise ValueError(f"Hugging Face BLIP-2 projects to the language model's hidden size ({lm.config.hidden_size}), "
                         f"ours to its input embeddings ({model.language_projection.out_features})")  # fmt: skip
    config_cls = transformers.InstructBlipConfig if isinstance(model, InstructBlip) else transformers.Blip2Config
    return config_cls(vision_config=vision, qformer_config=qformer, text_config=lm.config.to_dict(),
                      num_query_tokens=cfg.num_query_tokens, image_token_index=image_token_index)  # fmt: skip


def from_hf_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF BLIP-2 / InstructBLIP state (any language model left out) -> ours."""
    return rename_keys(state, [*HF_VISION[:-1], _POST_NORM, *_QFORMER], _SKIP)


def to_hf_state(model: Blip2QFormer | Blip2) -> dict[str, torch.Tensor]:
    """Ours (any language model left out) -> HF; stage 2's Q-Former without its unused text side,
    stage 1 without its ITG head and temperature (HF's retrieval model has neither)."""
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("language_model.")}
    if isinstance(model, Blip2QFormer):
        state = {k: v for k, v in state.items() if not k.startswith("lm_head.") and k != "temp"}
    elif not isinstance(model, InstructBlip):
        state = {k: v for k, v in state.items() if not _TEXT_SIDE.search(k)}
    out = rename_keys(state, [*HF_VISION_INV[:-1], (r"^ln_vision\.", "vision_model.post_layernorm."), *_QFORMER_INV],
                      re.compile(r"^$"))  # fmt: skip
    norm = "qformer.embeddings.layernorm." if isinstance(model, InstructBlip) else "qformer.layernorm."
    out = {re.sub(r"^qformer\.embeddings\.LayerNorm\.", norm, k): v for k, v in out.items()}
    if isinstance(model, Blip2QFormer):  # its text embeddings sit beside the Q-Former in HF
        out = {re.sub(r"^qformer\.embeddings\.", "embeddings.", k): v for k, v in out.items()}
    return out


def load_hf(path_or_model: Any) -> Blip2QFormer | Blip2:
    """A transformers BLIP-2 / InstructBLIP (object, or a local directory read without the network)
    as our `Blip2QFormer` / `Blip2` / `InstructBlip`; a language model is shared, not copied."""
    import transformers

    hf = path_or_model
    if isinstance(path_or_model, str | Path):
        path = Path(path_or_model)
        arch = hf_architecture(path, tuple(ARCHITECTURES))
        hf = getattr(transformers, arch).from_pretrained(str(path), local_files_only=True)
    cls = ARCHITECTURES.get(type(hf).__name__)
    if cls is None:
        raise ValueError(f"unsupported model {type(hf).__name__} (one of {', '.join(ARCHITECTURES)})")
    cfg = hf_config_to_ours(hf.config)
    if cls is Blip2QFormer:
        model = Blip2QFormer(dataclasses.replace(cfg, embed_dim=hf.config.image_text_hidden_size))
    else:
        model = cls(cfg, hf.language_model)
    result = model.load_state_dict(from_hf_state(hf.state_dict()), strict=False)
    if cls is Blip2QFormer:
        expected = lambda k: not k.startswith("lm_head.") and k != "temp"  # noqa: E731
    elif cls is Blip2:
        expected = lambda k: not k.startswith("language_model.") and not _TEXT_SIDE.search(k)  # noqa: E731
    else:
        expected = lambda k: not k.startswith("language_model.")  # noqa: E731
    missing = [k for k in result.missing_keys if expected(k)]
    if missing or result.unexpected_keys:
        raise ValueError(f"HF import mismatch: missing {missing}, unexpected {result.unexpected_keys}")
    return model


def export_hf(model: Blip2QFormer | Blip2, out_dir: str | Path, *, image_token_index: int | None = None) -> Path:
    """Write our `Blip2QFormer` / `Blip2` / `InstructBlip` as a directory that transformers loads."""
    import transformers

    hf = getattr(transformers, _HF_NAME[type(model)])(ours_to_hf_config(model, image_token_index=image_token_index))
    if not isinstance(model, Blip2QFormer):
        hf.language_model.load_state_dict(model.language_model.state_dict())
    result = hf.load_state_dict(to_hf_state(model), strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("language_model.")]
    if missing or result.unexpected_keys:
        raise ValueError(f"HF export mismatch: missing {missing}, unexpected {result.unexpected_keys}")
    hf.save_pretrained(str(out_dir))
    return Path(out_dir)
