"""blip_core: BLIP (ViT + MED, ITC/ITM/LM, CapFilt building blocks) as a plain PyTorch library.

Public entry points (imported lazily, so `import blip_core.data...` stays light):
    from blip_core import get_preset, create_model, load_pretrained, save_pretrained
    cfg = get_preset("tiny"); model = create_model("pretrain", cfg)
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "create_model": "blip_core.models.pretrained",
    "load_hf": "blip_core.models.blip.convert_hf",
    "load_official": "blip_core.models.blip.convert_official",
    "load_pretrained": "blip_core.models.pretrained",
    "save_pretrained": "blip_core.models.pretrained",
    "get_preset": "blip_core.models.blip.presets",
    "with_tokenizer": "blip_core.models.blip.presets",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'blip_core' has no attribute {name!r}")
