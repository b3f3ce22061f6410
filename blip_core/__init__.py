"""blip_core: BLIP (ViT + MED, ITC/ITM/LM, CapFilt building blocks) as a plain PyTorch library.

Public entry points (imported lazily, so `import blip_core.data...` stays light):
    from blip_core import get_preset, create_model, load_pretrained, save_pretrained
    cfg = get_preset("tiny"); model = create_model("pretrain", cfg)
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "create_model": "blip_core.model.weights",
    "load_hf": "blip_core.model.weights",
    "load_official": "blip_core.model.weights",
    "load_pretrained": "blip_core.model.weights",
    "save_pretrained": "blip_core.model.weights",
    "get_preset": "blip_core.presets",
    "with_tokenizer": "blip_core.presets",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'blip_core' has no attribute {name!r}")
