"""Our checkpoint format, for every model family: a folder with `model.safetensors`, `config.json`
(`kind` + the kind's config) and the tokenizer in `tokenizer/`, so a checkpoint folder is
self-contained. The kind's registry entry (blip_core.registry) names its model class, its config
class and the kinds it can start from with their conversions (`init_from`): a pre-training
checkpoint becomes a captioner, a filter, a VQA or an NLVR model.

Conversions from other formats live with their family (`models.blip.convert_hf`, `convert_official`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_model
from torch import nn

from blip_core.fileio import atomic_path, write_json
from blip_core.registry import get_family, get_task, kind_task, model_kinds

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1


def kind_of(model: nn.Module) -> str:
    """The checkpoint kind of a model: its class's task in the registry (blip_core.registry)."""
    for name, cls in model_kinds().items():
        if type(model) is cls:
            return name
    raise TypeError(f"not a registered model class: {type(model).__name__} (blip_core.registry)")


def create_model(kind: str, cfg: Any) -> nn.Module:
    kinds = model_kinds()
    if kind not in kinds:
        raise ValueError(f"unknown model kind {kind!r}; known: {', '.join(kinds)}")
    return kinds[kind](cfg)


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


def read_meta(path: str | Path) -> dict[str, Any]:
    """A checkpoint folder's config.json (`kind`, `model`, `format_version`), checked for both keys."""
    path = Path(path)
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"not a model directory (no config.json): {path}")
    meta = json.loads(cfg_path.read_text())
    if "kind" not in meta or "model" not in meta:
        raise ValueError(f"{cfg_path} is not one of our checkpoints (needs 'kind' and 'model')")
    return meta


def read_config(path: str | Path) -> tuple[str, Any]:
    """(kind, config) of a checkpoint folder; the kind's task says which config class it holds."""
    meta = read_meta(path)
    cfg = get_task(kind_task(meta["kind"])).config_class.from_dict(meta["model"])
    if cfg.tokenizer and not Path(cfg.tokenizer).is_absolute():
        cfg.tokenizer = str(Path(path) / cfg.tokenizer)
    return meta["kind"], cfg


def text_processor(kind: str, cfg: Any) -> Any:
    """The text processor of a `kind` checkpoint's config (its family's; the config's tokenizer)."""
    task = get_task(kind_task(kind))
    return get_family(task.family).call("processor", cfg)


def load_pretrained(path: str | Path, *, kind: str | None = None, map_location: str = "cpu") -> nn.Module:
    """Load one of our checkpoint directories. With `kind` differing from the saved kind, the
    checkpoint must be of a kind that `kind`'s task starts from (`Task.init_from`: a pre-training
    becomes the captioner, the filter, VQA or NLVR), converted by the conversion it names there."""
    saved_kind, cfg = read_config(path)
    state = load_file(str(Path(path) / "model.safetensors"), device=map_location)
    kind = kind or saved_kind
    if kind != saved_kind:
        task = get_task(kind_task(kind))
        if saved_kind not in task.init_from:
            raise ValueError(f"cannot turn a {saved_kind} checkpoint into a {kind}")
        if not isinstance(cfg, task.config_class):  # another family's checkpoint (a Q-Former from BLIP)
            cfg = task.call("config_from", cfg)
        model = create_model(kind, cfg)
        load_converted(model, state, saved_kind)
    else:
        model = create_model(kind, cfg)
        load_strict(model, state, ignore_missing=())
    return model


def load_converted(model: nn.Module, state: dict[str, torch.Tensor], from_kind: str = "pretrain") -> tuple[str, ...]:
    """Load a `from_kind` state dict (a pre-training's) into a model of another registered kind
    through its task's `init_from` conversion (e.g. the captioner's split, VQA's encoder + decoder):
    strict but for the keys the conversion leaves at their fresh init (a classifier head, merge
    layers), which it returns."""
    converted, fresh = get_task(kind_task(kind_of(model))).convert(from_kind, state, model.cfg)
    load_strict(model, converted, ignore_missing=tuple(fresh))
    return tuple(fresh)


def load_for_inference(path: str | Path, *, kind: str | None = None, device: str | torch.device = "cpu") -> nn.Module:
    """`load_pretrained`, on `device`, in eval mode, with its linear weights packed when on CPU
    (models/common/packing.py: the fp32 decoding path streams weights 2-4x faster)."""
    from blip_core.models.common.packing import pack_for_cpu_inference

    model = load_pretrained(path, kind=kind).to(device).eval()
    pack_for_cpu_inference(model)
    return model


def load_strict(model: nn.Module, state: dict[str, torch.Tensor], ignore_missing: tuple[str, ...]) -> None:
    """load_state_dict that allows only the listed missing prefixes and no unexpected keys."""
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(ignore_missing)]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"checkpoint does not fit {type(model).__name__}: missing {missing[:8]}"
            f"{'...' if len(missing) > 8 else ''}, unexpected {result.unexpected_keys[:8]}"
        )
