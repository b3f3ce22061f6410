"""Hugging Face BLIP <-> ours: `BlipForConditionalGeneration` (captioner) and
`BlipForImageTextRetrieval` (filter) folders in, and our captioner / filter out as folders that
transformers loads.

Our vision keys are timm's (identical to BLIP's ViT); text keys are BERT's, so mapping is mostly
prefix renaming. The state-dict adapters are plain functions over dicts (torchtitan's
state_dict_adapter idea), tested against each other and against live HF models.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from blip_core.models.blip.config import ModelConfig
from blip_core.models.blip.model import MOMENTUM_AND_QUEUES, copy_momentum
from blip_core.models.common.config import TextConfig, VisionConfig
from blip_core.models.pretrained import create_model, kind_of, load_strict

HF_VISION = [
    (r"^vision_model\.embeddings\.class_embedding$", "visual_encoder.cls_token"),
    (r"^vision_model\.embeddings\.patch_embedding\.", "visual_encoder.patch_embed.proj."),
    (r"^vision_model\.embeddings\.position_embedding$", "visual_encoder.pos_embed"),
    (r"^vision_model\.encoder\.layers\.(\d+)\.layer_norm1\.", r"visual_encoder.blocks.\1.norm1."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.layer_norm2\.", r"visual_encoder.blocks.\1.norm2."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.self_attn\.qkv\.", r"visual_encoder.blocks.\1.attn.qkv."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.self_attn\.projection\.", r"visual_encoder.blocks.\1.attn.proj."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.mlp\.", r"visual_encoder.blocks.\1.mlp."),
    (r"^vision_model\.post_layernorm\.", "visual_encoder.norm."),
]
_HF_CAPTION_TEXT = [
    (r"^text_decoder\.bert\.", "text."),
    (r"^text_decoder\.cls\.predictions\.transform\.", "text.lm_head.transform."),
    (r"^text_decoder\.cls\.predictions\.bias$", "text.lm_head.bias"),
]
_HF_RETRIEVAL_TEXT = [
    (r"^text_encoder\.", "text."),
    (r"^(vision_proj|text_proj|itm_head)\.", r"\1."),
]
# the inverse direction (ours -> HF); order matters where prefixes overlap
HF_VISION_INV = [
    (r"^visual_encoder\.cls_token$", "vision_model.embeddings.class_embedding"),
    (r"^visual_encoder\.patch_embed\.proj\.", "vision_model.embeddings.patch_embedding."),
    (r"^visual_encoder\.pos_embed$", "vision_model.embeddings.position_embedding"),
    (r"^visual_encoder\.blocks\.(\d+)\.norm1\.", r"vision_model.encoder.layers.\1.layer_norm1."),
    (r"^visual_encoder\.blocks\.(\d+)\.norm2\.", r"vision_model.encoder.layers.\1.layer_norm2."),
    (r"^visual_encoder\.blocks\.(\d+)\.attn\.qkv\.", r"vision_model.encoder.layers.\1.self_attn.qkv."),
    (r"^visual_encoder\.blocks\.(\d+)\.attn\.proj\.", r"vision_model.encoder.layers.\1.self_attn.projection."),
    (r"^visual_encoder\.blocks\.(\d+)\.mlp\.", r"vision_model.encoder.layers.\1.mlp."),
    (r"^visual_encoder\.norm\.", "vision_model.post_layernorm."),
]
_HF_CAPTION_TEXT_INV = [
    (r"^text\.lm_head\.transform\.", "text_decoder.cls.predictions.transform."),
    (r"^text\.lm_head\.bias$", "text_decoder.cls.predictions.bias"),
    (r"^text\.", "text_decoder.bert."),
]
_HF_RETRIEVAL_TEXT_INV = [(r"^text\.", "text_encoder."), (r"^(vision_proj|text_proj|itm_head)\.", r"\1.")]
_HF_SKIP = re.compile(r"(cls\.predictions\.decoder\.|position_ids$|embeddings\.token_type|text_encoder\.pooler\.)")


def rename_keys(state: dict[str, torch.Tensor], rules: list[tuple[str, str]], skip: re.Pattern) -> dict:
    """Each key renamed by the first rule whose pattern it matches; keys matching `skip` dropped; a
    key no rule matches is an error (a checkpoint of another layout)."""
    out = {}
    for k, v in state.items():
        if skip.search(k):
            continue
        for pat, rep in rules:
            new, n = re.subn(pat, rep, k)
            if n:
                out[new] = v
                break
        else:
            raise ValueError(f"unmapped checkpoint key: {k}")
    return out


def hf_vision_config(v) -> VisionConfig:
    """Our tower config for a transformers BLIP / BLIP-2 vision config (a ViT patch tower)."""
    return VisionConfig(image_size=v.image_size, patch_size=v.patch_size, width=v.hidden_size,
                        depth=v.num_hidden_layers, num_heads=v.num_attention_heads,
                        mlp_ratio=v.intermediate_size / v.hidden_size, layer_norm_eps=v.layer_norm_eps)  # fmt: skip


def hf_bert_sizes(t) -> dict[str, Any]:
    """The TextConfig sizes of a transformers BERT-style config (BLIP's text side, BLIP-2's Q-Former)."""
    return dict(vocab_size=t.vocab_size, hidden_size=t.hidden_size, num_layers=t.num_hidden_layers,
                num_heads=t.num_attention_heads, intermediate_size=t.intermediate_size,
                max_position_embeddings=t.max_position_embeddings, layer_norm_eps=t.layer_norm_eps)  # fmt: skip


def hf_config_to_ours(hf_config, *, tokenizer_dir: str = "") -> ModelConfig:
    """A ModelConfig equal to a transformers BlipConfig (vision LayerNorm eps included)."""
    v, t = hf_config.vision_config, hf_config.text_config
    vision = hf_vision_config(v)
    text = TextConfig(
        **hf_bert_sizes(t),
        # HF's config has no [CLS]/[ENC] ids (its tokenizer has them): BERT's layout by default,
        # replaced by the tokenizer's ids below when a tokenizer is given
        pad_token_id=t.pad_token_id,
        cls_token_id=101 if t.vocab_size > 101 else 1,
        sep_token_id=t.sep_token_id,
        bos_token_id=t.bos_token_id,
        enc_token_id=t.bos_token_id + 1 if t.bos_token_id + 1 < t.vocab_size else 2,
        label_smoothing=t.label_smoothing or 0.1,
        max_text_len=min(35, t.max_position_embeddings),
    )
    cfg = ModelConfig(vision=vision, text=text, embed_dim=hf_config.image_text_hidden_size, tokenizer=tokenizer_dir)
    if tokenizer_dir:
        from blip_core.models.blip.presets import with_tokenizer
        from blip_core.models.common.tokenizer import load_tokenizer

        with_tokenizer(cfg, load_tokenizer(tokenizer_dir))
    return cfg


def ours_to_hf_config(cfg: ModelConfig):
    from transformers import BlipConfig

    v, t = cfg.vision, cfg.text
    if v.stem != "patch":
        raise ValueError(
            f"Hugging Face BLIP has only the ViT patch stem; this model uses vision.stem={v.stem!r} "
            "and cannot be exported to transformers (keep it in our format)"
        )
    return BlipConfig(
        vision_config={
            "hidden_size": v.width,
            "intermediate_size": int(v.width * v.mlp_ratio),
            "num_hidden_layers": v.depth,
            "num_attention_heads": v.num_heads,
            "image_size": v.image_size,
            "patch_size": v.patch_size,
            "layer_norm_eps": v.layer_norm_eps,
        },
        text_config={
            "vocab_size": t.vocab_size,
            "hidden_size": t.hidden_size,
            "encoder_hidden_size": v.width,
            "intermediate_size": t.intermediate_size,
            "num_hidden_layers": t.num_layers,
            "num_attention_heads": t.num_heads,
            "max_position_embeddings": t.max_position_embeddings,
            "layer_norm_eps": t.layer_norm_eps,
            "bos_token_id": t.bos_token_id,
            "pad_token_id": t.pad_token_id,
            "sep_token_id": t.sep_token_id,
            "eos_token_id": t.sep_token_id,
            "label_smoothing": t.label_smoothing,
        },
        image_text_hidden_size=cfg.embed_dim,
    )


def from_hf_state(state: dict[str, torch.Tensor], kind: str) -> dict[str, torch.Tensor]:
    """HF BLIP state dict -> ours (kind: captioner | retrieval)."""
    rules = HF_VISION + (_HF_CAPTION_TEXT if kind == "captioner" else _HF_RETRIEVAL_TEXT)
    return rename_keys(state, rules, _HF_SKIP)


def to_hf_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Our captioner or filter -> HF state dict (tied LM weights written out explicitly)."""
    kind = kind_of(model)
    if kind == "pretrain":
        raise ValueError("export a captioner or a filter (split the pre-training checkpoint first)")
    state = {k: v for k, v in model.state_dict().items() if "_m." not in k}  # no momentum copies in HF
    state = {k: v for k, v in state.items() if k not in ("image_queue", "text_queue", "idx_queue", "queue_ptr", "temp")}
    rules = HF_VISION_INV + (_HF_CAPTION_TEXT_INV if kind == "captioner" else _HF_RETRIEVAL_TEXT_INV)
    out = rename_keys(state, rules, re.compile(r"^$"))
    if kind == "captioner":
        out["text_decoder.cls.predictions.decoder.weight"] = state["text.embeddings.word_embeddings.weight"]
        out["text_decoder.cls.predictions.decoder.bias"] = state["text.lm_head.bias"]
    return out


def hf_architecture(path: Path, known: tuple[str, ...]) -> str:
    """The architecture a local Hugging Face model directory declares, one of `known`."""
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"not a Hugging Face model directory (no config.json): {path}")
    arch = (json.loads((path / "config.json").read_text()).get("architectures") or [""])[0]
    if arch not in known:
        raise ValueError(f"{path}: unsupported architecture {arch!r} (one of {', '.join(known)})")
    return arch


def load_hf(path_or_model: Any, *, tokenizer_dir: str = "") -> nn.Module:
    """A transformers BlipForConditionalGeneration / BlipForImageTextRetrieval (object or local
    directory) as our captioner / filter; momentum encoders start as copies (BLIP's copy_params)."""
    import transformers

    hf = path_or_model
    if isinstance(path_or_model, str | Path):
        path = Path(path_or_model)
        arch = hf_architecture(path, ("BlipForConditionalGeneration", "BlipForImageTextRetrieval"))
        hf = getattr(transformers, arch).from_pretrained(str(path), local_files_only=True)
        if not tokenizer_dir and (path / "tokenizer.json").is_file():
            tokenizer_dir = str(path)
    kind = "captioner" if type(hf).__name__ == "BlipForConditionalGeneration" else "retrieval"
    cfg = hf_config_to_ours(hf.config, tokenizer_dir=tokenizer_dir)
    model = create_model(kind, cfg)
    state = from_hf_state(hf.state_dict(), kind)
    load_strict(model, state, ignore_missing=MOMENTUM_AND_QUEUES)
    if kind == "retrieval":
        copy_momentum(model)
    return model


def export_hf(model: nn.Module, out_dir: str | Path, *, tokenizer=None) -> Path:
    """Write our captioner / filter as a Hugging Face directory that transformers loads."""
    import transformers

    kind = kind_of(model)
    cls = transformers.BlipForConditionalGeneration if kind == "captioner" else transformers.BlipForImageTextRetrieval
    hf = cls(ours_to_hf_config(model.cfg))
    result = hf.load_state_dict(to_hf_state(model), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"HF export mismatch: missing {result.missing_keys}, unexpected {result.unexpected_keys}")
    hf.save_pretrained(str(out_dir))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out_dir))
    return Path(out_dir)
