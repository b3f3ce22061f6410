"""Typed, validated configuration.

Every knob that a pipeline stage reads lives in one of these dataclasses. `params.yaml` holds one
section per stage; `load_params_section` turns a section into its dataclass and rejects unknown
keys and wrong types with a message that names the key (nanoGPT's configurator does the same).

One module per kind of knob, so that a stage's code dependencies name only what it reads:
`loader` (the typed params.yaml loader), `data` (world, reader, tokenizer), `model` (BLIP's model
arguments), `train` (training and evaluation runs), `pipeline` (CapFilt, the gates, the downstream
tasks). Importing from `blip_core.config` itself still gives every name.
"""

from blip_core.config.data import NOISE_TYPES, SPLITS, ReaderConfig, TokenizerConfig, WorldConfig
from blip_core.config.loader import PARAMS_SECTIONS, from_dict, load_params_section, params_sections, read_params
from blip_core.models.blip.config import ModelConfig, TextConfig, VisionConfig
from blip_core.config.pipeline import CAPFILT_POLICIES, CapFiltConfig, DownstreamConfig, ValidateConfig
from blip_core.config.train import VISION_STAGE, EvalConfig, TrainConfig

__all__ = [
    "CAPFILT_POLICIES", "NOISE_TYPES", "PARAMS_SECTIONS", "SPLITS", "VISION_STAGE", "CapFiltConfig",
    "DownstreamConfig", "EvalConfig", "ModelConfig", "ReaderConfig", "TextConfig", "TokenizerConfig",
    "TrainConfig", "ValidateConfig", "VisionConfig", "WorldConfig", "from_dict", "load_params_section",
    "params_sections", "read_params",
]  # fmt: skip
