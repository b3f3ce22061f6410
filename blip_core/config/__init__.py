"""Typed, validated configuration.

Every knob that a pipeline stage reads lives in one of these dataclasses. `params.yaml` holds one
section per stage; `load_params_section` turns a section into its dataclass and rejects unknown
keys and wrong types with a message that names the key (nanoGPT's configurator does the same).

One module per kind of knob, so that a stage's code dependencies name only what it reads:
`loader` (the typed params.yaml loader), `data` (world, reader, tokenizer), `train` (training and
evaluation runs), `pipeline` (CapFilt, the gates, the downstream tasks). A model family's arguments
live with the family (`blip_core.models.blip.config`, the towers in `blip_core.models.common.config`).
`from blip_core.config import X` still gives every name, imported on first use, so that importing
one submodule never loads the others.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "blip_core.config.data": ("NOISE_TYPES", "SPLITS", "ReaderConfig", "TokenizerConfig", "WorldConfig"),
    "blip_core.config.loader": (
        "PARAMS_SECTIONS",
        "from_dict",
        "load_params_section",
        "params_sections",
        "read_params",
    ),  # fmt: skip
    "blip_core.models.blip.config": ("ModelConfig",),
    "blip_core.models.common.config": ("TextConfig", "VisionConfig"),
    "blip_core.config.pipeline": ("CAPFILT_POLICIES", "CapFiltConfig", "DownstreamConfig", "ValidateConfig"),
    "blip_core.config.train": ("VISION_STAGE", "EvalConfig", "TrainConfig"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'blip_core.config' has no attribute {name!r}")
