"""Weights: our format, official salesforce/BLIP checkpoints, and Hugging Face BLIP.

- Ours: a directory with `model.safetensors`, `config.json` (`kind` + the ModelConfig) and the
  tokenizer in `tokenizer/`, so a checkpoint directory is self-contained.
- Official BLIP (`model_base.pth`, `model_base_capfilt_large.pth`, `model_base_caption_capfilt_large.pth`,
  `model_base_retrieval_coco.pth`, ...): `torch.load(weights_only=True)`, key mapping, position
  embedding resize (BLIP pre-trains at 224 and fine-tunes at 384).
- Hugging Face: `BlipForConditionalGeneration` (captioner) and `BlipForImageTextRetrieval` (filter)
  directories in, and our captioner/filter out as directories that transformers loads.

Our vision keys are timm's (identical to BLIP's ViT); text keys are BERT's, so mapping is mostly
prefix renaming. The state-dict adapters are plain functions over dicts (torchtitan's
state_dict_adapter idea), tested against each other and against live HF models.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_model
from torch import nn

from blip_core.train.checkpoint import safe_torch_load
from blip_core.models.blip.config import ModelConfig, VisionConfig
from blip_core.fileio import atomic_path, write_json
from blip_core.models.common.vision import resize_pos_embed
from blip_core.registry import get_task, kind_task, model_kinds

if TYPE_CHECKING:
    from blip_core.models.blip.model import BlipRetrieval

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1


def kind_of(model: nn.Module) -> str:
    """The checkpoint kind of a model: its class's task in the registry (blip_core.registry)."""
    for name, cls in model_kinds().items():
        if type(model) is cls:
            return name
    raise TypeError(f"not a registered BLIP model: {type(model).__name__}")


def create_model(kind: str, cfg: ModelConfig) -> nn.Module:
    kinds = model_kinds()
    if kind not in kinds:
        raise ValueError(f"unknown model kind {kind!r}; known: {', '.join(kinds)}")
    return kinds[kind](cfg)


# ------------------------------------------------------------------------------------------------
# our format


def save_pretrained(model: nn.Module, out_dir: str | Path, *, tokenizer=None) -> Path:
    """Write model.safetensors + config.json (+ tokenizer/) atomically enough: files are renamed in."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "model.safetensors") as tmp:
        save_model(model, str(tmp))  # handles the tied LM head / shared tensors
    meta = {"format_version": FORMAT_VERSION, "kind": kind_of(model), "model": model.cfg.to_dict()}
    if tokenizer is not None:
        tokenizer.save_pretrained(out_dir / "tokenizer")
        meta["model"]["tokenizer"] = "tokenizer"
    write_json(out_dir / "config.json", meta)
    return out_dir


def read_config(path: str | Path) -> tuple[str, ModelConfig]:
    path = Path(path)
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"not a model directory (no config.json): {path}")
    meta = json.loads(cfg_path.read_text())
    if "kind" not in meta or "model" not in meta:
        raise ValueError(f"{cfg_path} is not one of our checkpoints (needs 'kind' and 'model')")
    cfg = ModelConfig.from_dict(meta["model"])
    if cfg.tokenizer and not Path(cfg.tokenizer).is_absolute():
        cfg.tokenizer = str(path / cfg.tokenizer)
    return meta["kind"], cfg


def load_pretrained(path: str | Path, *, kind: str | None = None, map_location: str = "cpu") -> nn.Module:
    """Load one of our checkpoint directories. With `kind` differing from the saved kind, a
    pre-training checkpoint is split into the captioner or the filter."""
    saved_kind, cfg = read_config(path)
    state = load_file(str(Path(path) / "model.safetensors"), device=map_location)
    kind = kind or saved_kind
    model = create_model(kind, cfg)
    if kind != saved_kind:
        if saved_kind != "pretrain" or get_task(kind_task(kind)).from_pretrain is None:
            raise ValueError(f"cannot turn a {saved_kind} checkpoint into a {kind}")
        load_pretrain_state(model, state)
    else:
        _load_strict(model, state, ignore_missing=())
    return model


def load_pretrain_state(model: nn.Module, state: dict[str, torch.Tensor]) -> tuple[str, ...]:
    """Load a pre-training state dict into a model of another registered kind through its task's
    `from_pretrain` (e.g. the captioner's split, VQA's encoder + decoder): strict but for the keys the
    conversion leaves at their fresh init (a classifier head, merge layers), which it returns."""
    converted, fresh = get_task(kind_task(kind_of(model))).call("from_pretrain", state)
    _load_strict(model, converted, ignore_missing=tuple(fresh))
    return tuple(fresh)


def load_for_inference(path: str | Path, *, kind: str | None = None, device: str | torch.device = "cpu") -> nn.Module:
    """`load_pretrained`, on `device`, in eval mode, with its linear weights packed when on CPU
    (model/packing.py: the fp32 decoding path streams weights 2-4x faster)."""
    from blip_core.models.common.packing import pack_for_cpu_inference

    model = load_pretrained(path, kind=kind).to(device).eval()
    pack_for_cpu_inference(model)
    return model


def _load_strict(model: nn.Module, state: dict[str, torch.Tensor], ignore_missing: tuple[str, ...]) -> None:
    """load_state_dict that allows only the listed missing prefixes and no unexpected keys."""
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(ignore_missing)]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"checkpoint does not fit {type(model).__name__}: missing {missing[:8]}"
            f"{'...' if len(missing) > 8 else ''}, unexpected {result.unexpected_keys[:8]}"
        )


# ------------------------------------------------------------------------------------------------
# Hugging Face


_HF_VISION = [
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
_HF_VISION_INV = [
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


def _rename(state: dict[str, torch.Tensor], rules: list[tuple[str, str]], skip: re.Pattern) -> dict[str, torch.Tensor]:
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


def hf_config_to_ours(hf_config, *, tokenizer_dir: str = "") -> ModelConfig:
    """A ModelConfig equal to a transformers BlipConfig (vision LayerNorm eps included)."""
    from blip_core.models.blip.config import TextConfig, VisionConfig

    v, t = hf_config.vision_config, hf_config.text_config
    vision = VisionConfig(
        image_size=v.image_size,
        patch_size=v.patch_size,
        width=v.hidden_size,
        depth=v.num_hidden_layers,
        num_heads=v.num_attention_heads,
        mlp_ratio=v.intermediate_size / v.hidden_size,
        layer_norm_eps=v.layer_norm_eps,
    )
    text = TextConfig(
        vocab_size=t.vocab_size,
        hidden_size=t.hidden_size,
        num_layers=t.num_hidden_layers,
        num_heads=t.num_attention_heads,
        intermediate_size=t.intermediate_size,
        max_position_embeddings=t.max_position_embeddings,
        layer_norm_eps=t.layer_norm_eps,
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
        from blip_core.models.common.tokenizer import load_tokenizer
        from blip_core.models.blip.presets import with_tokenizer

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
    rules = _HF_VISION + (_HF_CAPTION_TEXT if kind == "captioner" else _HF_RETRIEVAL_TEXT)
    return _rename(state, rules, _HF_SKIP)


def to_hf_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Our captioner or filter -> HF state dict (tied LM weights written out explicitly)."""
    kind = kind_of(model)
    if kind == "pretrain":
        raise ValueError("export a captioner or a filter (split the pre-training checkpoint first)")
    state = {k: v for k, v in model.state_dict().items() if "_m." not in k}  # no momentum copies in HF
    state = {k: v for k, v in state.items() if k not in ("image_queue", "text_queue", "idx_queue", "queue_ptr", "temp")}
    rules = _HF_VISION_INV + (_HF_CAPTION_TEXT_INV if kind == "captioner" else _HF_RETRIEVAL_TEXT_INV)
    out = _rename(state, rules, re.compile(r"^$"))
    if kind == "captioner":
        out["text_decoder.cls.predictions.decoder.weight"] = state["text.embeddings.word_embeddings.weight"]
        out["text_decoder.cls.predictions.decoder.bias"] = state["text.lm_head.bias"]
    return out


def load_hf(path_or_model: Any, *, tokenizer_dir: str = "") -> nn.Module:
    """A transformers BlipForConditionalGeneration / BlipForImageTextRetrieval (object or local
    directory) as our captioner / filter; momentum encoders start as copies (BLIP's copy_params)."""
    import transformers

    hf = path_or_model
    if isinstance(path_or_model, str | Path):
        path = Path(path_or_model)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"not a Hugging Face model directory (no config.json): {path}")
        arch = (json.loads((path / "config.json").read_text()).get("architectures") or [""])[0]
        if arch not in ("BlipForConditionalGeneration", "BlipForImageTextRetrieval"):
            raise ValueError(f"{path}: unsupported architecture {arch!r} (captioning or retrieval BLIP expected)")
        hf = getattr(transformers, arch).from_pretrained(str(path), local_files_only=True)
        if not tokenizer_dir and (path / "tokenizer.json").is_file():
            tokenizer_dir = str(path)
    kind = "captioner" if type(hf).__name__ == "BlipForConditionalGeneration" else "retrieval"
    cfg = hf_config_to_ours(hf.config, tokenizer_dir=tokenizer_dir)
    model = create_model(kind, cfg)
    state = from_hf_state(hf.state_dict(), kind)
    _load_strict(model, state, ignore_missing=_MOMENTUM_AND_QUEUES)
    if kind == "retrieval":
        _copy_momentum(model)
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


_MOMENTUM_AND_QUEUES = (
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


def _copy_momentum(model: BlipRetrieval) -> None:
    with torch.no_grad():
        for online, mom in model.momentum_pairs():
            mom.copy_(online)


# ------------------------------------------------------------------------------------------------
# official salesforce/BLIP checkpoints


def load_official_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The `model` dict of an official BLIP .pth, loaded without executing pickled code."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    ckpt = safe_torch_load(path)
    state = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a BLIP state dict")
    return state


def from_official_state(state: dict[str, torch.Tensor], kind: str, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Official BLIP state -> ours for `kind` (pretrain | captioner | retrieval).

    Pre-training checkpoints hold text_encoder, text_decoder (tied to the encoder except its
    self-attention) and momentum copies; captioning checkpoints hold text_decoder only; retrieval
    checkpoints hold text_encoder, momentum copies and queues (`ptr_queue`, `idx_queue`).
    """
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if k.startswith(("visual_encoder.", "visual_encoder_m.")):
            out[k] = v
        elif k.startswith(("vision_proj", "text_proj", "itm_head")) or k == "temp":
            if kind != "captioner":
                out[k] = v
        elif k.startswith("text_encoder.") and kind != "captioner":
            out["text." + k[len("text_encoder.") :]] = v
        elif k.startswith("text_encoder_m.") and kind != "captioner":
            if ".crossattention." not in k:  # our momentum text encoder runs in text mode only
                out["text_m." + k[len("text_encoder_m.") :]] = v
        elif k.startswith("text_decoder.bert.encoder.layer.") and kind == "pretrain":
            if ".attention." in k:  # the only decoder parameters not tied to the encoder
                out["text." + k[len("text_decoder.bert.") :].replace(".attention.", ".attention_dec.")] = v
        elif k.startswith("text_decoder.bert.") and kind == "captioner":
            out["text." + k[len("text_decoder.bert.") :]] = v
        elif k.startswith("text_decoder.cls.predictions.") and kind in ("pretrain", "captioner"):
            rest = k[len("text_decoder.cls.predictions.") :]
            if rest.startswith("transform."):
                out["text.lm_head." + rest] = v
            elif rest == "bias":
                out["text.lm_head.bias"] = v
        elif k in ("image_queue", "text_queue") and kind != "captioner":
            out[k] = v
        elif k in ("queue_ptr", "ptr_queue") and kind != "captioner":
            out["queue_ptr"] = v.reshape(()).long()
        elif k == "idx_queue" and kind != "captioner":
            out["idx_queue"] = v.reshape(-1).long()
    out = {k: v for k, v in out.items() if "position_ids" not in k}
    # resolution change: resize patch position embeddings (e.g. 224 -> 384)
    for key in ("visual_encoder.pos_embed", "visual_encoder_m.pos_embed"):
        if key in out:
            out[key] = resize_pos_embed(out[key], cfg.vision.num_patches)
    if kind == "captioner":
        out = {k: v for k, v in out.items() if not k.startswith("visual_encoder_m.")}
    if "image_queue" in out and "idx_queue" not in out:  # pre-training checkpoints: filled, ids unknown
        out["idx_queue"] = torch.full((out["image_queue"].shape[1],), -1, dtype=torch.long)
    # queues of another length cannot be reused: start fresh ones (logged)
    if "image_queue" in out and out["image_queue"].shape[1] != cfg.queue_size:
        logger.warning(
            "checkpoint queue length %d != model.queue_size %d: queues re-initialised",
            out["image_queue"].shape[1],
            cfg.queue_size,
        )
        for key in ("image_queue", "text_queue", "idx_queue", "queue_ptr"):
            out.pop(key, None)
    return out


def load_official(path: str | Path, kind: str, cfg: ModelConfig) -> nn.Module:
    """Build our `kind` model from an official BLIP .pth file."""
    model = create_model(kind, cfg)
    state = from_official_state(load_official_state(path), kind, cfg)
    has_momentum = any(k.startswith("visual_encoder_m.") for k in state)
    _load_strict(
        model,
        state,
        ignore_missing=_MOMENTUM_AND_QUEUES
        if not has_momentum
        else ("image_queue", "text_queue", "idx_queue", "queue_ptr"),
    )
    if kind != "captioner" and not has_momentum:
        _copy_momentum(model)
    return model


# ------------------------------------------------------------------------------------------------
# the vision start (BLIP: DeiT ImageNet weights; here also the `pretrain_vision` stage's tower)

TIMM_HEAD_PREFIXES = ("head.", "head_dist.", "fc_norm.", "pre_logits.")
"""Classification parts of a timm ViT state dict: dropped, as BLIP drops DeiT's head."""


def vision_start_state(source: str | Path, vision_cfg: VisionConfig) -> dict[str, torch.Tensor]:
    """The vision tower's weights from `source`, keyed as the tower's own state dict (timm names).

    `source` is one of our checkpoint folders (any kind with a `visual_encoder`, e.g. the
    `pretrain_vision` stage's), or a timm-layout state dict file: `.safetensors`, or `.pth`/`.pt`/
    `.bin` (optionally under "model" or "state_dict", as DeiT's release), e.g.
    `deit_base_patch16_224-b5f2ef4d.pth`, which BLIP's ViT-B starts from. The classification head is
    dropped, a distillation token (DeiT-distilled) removed with its position, and the position
    embedding resized to this tower's resolution (bicubic, as BLIP's `interpolate_pos_embed`).
    """
    source = Path(source)
    if source.is_dir():
        kind, cfg = read_config(source)
        state = load_file(str(source / "model.safetensors"))
        state = {k[len("visual_encoder.") :]: v for k, v in state.items() if k.startswith("visual_encoder.")}
        if not state:
            raise ValueError(f"{source} ({kind} checkpoint) holds no vision tower")
        _check_same_tower(cfg.vision, vision_cfg, source)
    elif source.is_file():
        if source.suffix == ".safetensors":
            state = load_file(str(source))
        else:
            ckpt = safe_torch_load(source)
            state = ckpt.get("model", ckpt.get("state_dict", ckpt)) if isinstance(ckpt, dict) else None
            if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
                raise ValueError(f"{source} does not hold a timm-layout state dict (name -> tensor)")
        state = {k.removeprefix("module."): v for k, v in state.items()}  # saved from DDP
        if any(k.startswith("visual_encoder.") for k in state):  # a whole BLIP model's state
            state = {k[len("visual_encoder.") :]: v for k, v in state.items() if k.startswith("visual_encoder.")}
        state = {k: v for k, v in state.items() if not k.startswith(TIMM_HEAD_PREFIXES)}
    else:
        raise FileNotFoundError(f"vision start not found: {source} (a checkpoint folder or a timm state-dict file)")
    if "dist_token" in state:  # DeiT-distilled: [CLS], [DIST], patches -> drop [DIST] and its position
        state.pop("dist_token")
        if "pos_embed" in state:
            pe = state["pos_embed"]
            state["pos_embed"] = torch.cat([pe[:, :1], pe[:, 2:]], dim=1)
    if "pos_embed" in state:
        state["pos_embed"] = resize_pos_embed(state["pos_embed"], vision_cfg.num_patches)
    return state


def _check_same_tower(saved: VisionConfig, wanted: VisionConfig, source: Path) -> None:
    """Our checkpoints carry their VisionConfig: a different architecture is a clear error here."""
    keys = ("stem", "width", "depth", "num_heads", "patch_size", "stem_channels", "stem_strides")
    diff = {k: (getattr(saved, k), getattr(wanted, k)) for k in keys if getattr(saved, k) != getattr(wanted, k)}
    if diff:
        raise ValueError(f"the vision tower of {source} differs from the model's: {diff} (saved, wanted)")


def load_vision_start(model: nn.Module, source: str | Path) -> dict[str, Any]:
    """Load a vision start into `model.visual_encoder` (and its momentum copy, if any). Every tower
    parameter must be found with its shape; returns what was loaded (for the run's record)."""
    tower = model.visual_encoder
    state = vision_start_state(source, model.cfg.vision)
    own = tower.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        raise ValueError(
            f"vision start {source} does not fit the {model.cfg.vision.stem} tower (width {model.cfg.vision.width}, "
            f"depth {model.cfg.vision.depth}): missing {missing[:6]}, unexpected {unexpected[:6]}, "
            f"wrong shapes {[(k, tuple(state[k].shape), tuple(own[k].shape)) for k in wrong[:4]]}"
        )
    tower.load_state_dict(state)
    if getattr(model, "visual_encoder_m", None) is not None:
        model.visual_encoder_m.load_state_dict(tower.state_dict())
    logger.info("vision tower starts from %s (%d tensors)", source, len(state))
    return {"vision_init": str(source), "vision_init_tensors": len(state)}
