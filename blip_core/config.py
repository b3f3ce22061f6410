"""Typed, validated configuration.

Every knob that a pipeline stage reads lives in one of these dataclasses. `params.yaml` holds one
section per stage; `load_params_section` turns a section into its dataclass and rejects unknown
keys and wrong types with a message that names the key (nanoGPT's configurator does the same).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

SPLITS = ("coco_train", "web", "val", "test", "novel")
NOISE_TYPES = ("clean", "mismatched", "corrupted", "spam", "uninformative")


@dataclass(kw_only=True, slots=True)
class WorldConfig:
    """The embedded image-caption world (see `blip_core.data.world`)."""

    seed: int = 0
    """Master seed; every image, caption and noise draw derives from it."""
    image_size: int = 64
    """Side of the square rendered images in pixels (16..384)."""
    num_coco_train: int = 2000
    """Clean, human-captioned training images (5 captions each)."""
    num_web: int = 10000
    """Noisy web images (one alt-text each); several times larger than coco_train, like real web data."""
    num_val: int = 200
    num_test: int = 200
    num_novel: int = 200
    """Zero-shot split: every image holds at least one (colour, shape) combination absent from coco_train."""
    captions_per_image: int = 5
    """Human captions per clean image (COCO has 5)."""
    web_noise: dict[str, float] = field(
        default_factory=lambda: {"mismatched": 0.12, "corrupted": 0.12, "spam": 0.08, "uninformative": 0.08}
    )
    """Probability of each noise type in the web split; the remainder is clean-but-terse alt-text."""
    novel_fraction: float = 0.12
    """Fraction of the (colour, shape) combinations held out of the clean splits (seen only on the web)."""
    web_novel_rate: float = 0.25
    """Probability that a web scene is forced to contain a held-out combination."""
    shard_size: int = 1000
    """Samples per webdataset tar shard."""
    jpeg_quality: int = 90
    num_workers: int = 2
    """Processes used to render shards in parallel (0 or 1 = in-process)."""

    def __post_init__(self) -> None:
        if not 16 <= self.image_size <= 384:
            raise ValueError(f"world.image_size must be in [16, 384], got {self.image_size}")
        for name in ("num_coco_train", "num_web", "num_val", "num_test", "num_novel"):
            if getattr(self, name) < 0:
                raise ValueError(f"world.{name} must be >= 0, got {getattr(self, name)}")
        if self.captions_per_image < 1:
            raise ValueError(f"world.captions_per_image must be >= 1, got {self.captions_per_image}")
        unknown = set(self.web_noise) - set(NOISE_TYPES[1:])
        if unknown:
            raise ValueError(f"world.web_noise has unknown noise types {sorted(unknown)}; known: {NOISE_TYPES[1:]}")
        if any(p < 0 for p in self.web_noise.values()) or sum(self.web_noise.values()) > 1.0 + 1e-9:
            raise ValueError(f"world.web_noise rates must be >= 0 and sum to <= 1, got {self.web_noise}")
        if not 0.0 < self.novel_fraction < 0.5:
            raise ValueError(f"world.novel_fraction must be in (0, 0.5), got {self.novel_fraction}")
        if not 0.0 <= self.web_novel_rate <= 1.0:
            raise ValueError(f"world.web_novel_rate must be in [0, 1], got {self.web_novel_rate}")
        if self.shard_size < 1:
            raise ValueError(f"world.shard_size must be >= 1, got {self.shard_size}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"world.jpeg_quality must be in [1, 100], got {self.jpeg_quality}")
        if self.num_workers < 0:
            raise ValueError(f"world.num_workers must be >= 0, got {self.num_workers}")

    @property
    def noise_rate(self) -> float:
        return float(sum(self.web_noise.values()))

    def split_sizes(self) -> dict[str, int]:
        return {
            "coco_train": self.num_coco_train,
            "web": self.num_web,
            "val": self.num_val,
            "test": self.num_test,
            "novel": self.num_novel,
        }

    def scaled(self, scale: float) -> WorldConfig:
        """A copy whose split sizes are multiplied by `scale` (at least 1 image per split)."""
        if scale <= 0:
            raise ValueError(f"--scale must be > 0, got {scale}")
        cfg = dataclasses.replace(self, web_noise=dict(self.web_noise))
        for name in ("num_coco_train", "num_web", "num_val", "num_test", "num_novel"):
            setattr(cfg, name, max(1, round(getattr(self, name) * scale)))
        return cfg


@dataclass(kw_only=True, slots=True)
class ReaderConfig:
    """How shards are read back (bad-input guards)."""

    max_image_pixels: int = 40_000_000
    """Decompression-bomb guard: images with more pixels than this are skipped before decoding."""
    min_image_side: int = 8
    """Images whose shorter side is below this are skipped."""
    max_caption_chars: int = 2000
    """Captions longer than this (in characters) are skipped as garbage."""

    def __post_init__(self) -> None:
        if self.max_image_pixels < 1:
            raise ValueError(f"reader.max_image_pixels must be >= 1, got {self.max_image_pixels}")
        if self.min_image_side < 1:
            raise ValueError(f"reader.min_image_side must be >= 1, got {self.min_image_side}")
        if self.max_caption_chars < 1:
            raise ValueError(f"reader.max_caption_chars must be >= 1, got {self.max_caption_chars}")


@dataclass(kw_only=True, slots=True)
class TokenizerConfig:
    """WordPiece tokenizer trained on the world's captions (no hub download)."""

    vocab_size: int = 1200
    """Target vocabulary size, BERT special tokens and BLIP's [DEC]/[ENC] included."""
    min_frequency: int = 2
    max_words: int = 30
    """BLIP's caption cleaning truncates captions to this many words."""

    def __post_init__(self) -> None:
        if self.vocab_size < 64:
            raise ValueError(f"tokenizer.vocab_size must be >= 64, got {self.vocab_size}")
        if self.min_frequency < 1:
            raise ValueError(f"tokenizer.min_frequency must be >= 1, got {self.min_frequency}")
        if self.max_words < 1:
            raise ValueError(f"tokenizer.max_words must be >= 1, got {self.max_words}")


# ------------------------------------------------------------------------------------------------
# params.yaml loading


def _type_ok(value: Any, annotation: Any) -> bool:
    """A small structural type check for the annotations used in our configs."""
    if isinstance(annotation, str):
        annotation = eval(annotation, vars(typing) | {"dict": dict, "list": list, "tuple": tuple})  # noqa: S307
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is dict:
        k_t, v_t = typing.get_args(annotation)
        return isinstance(value, dict) and all(_type_ok(k, k_t) and _type_ok(v, v_t) for k, v in value.items())
    if origin in (list, tuple):
        args = typing.get_args(annotation)
        elem = args[0] if args else Any
        return isinstance(value, list | tuple) and all(_type_ok(v, elem) for v in value)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def from_dict(cls: type[T], values: dict[str, Any], *, section: str) -> T:
    """Build the dataclass `cls` from a mapping; unknown keys and wrong types name the key."""
    if not isinstance(values, dict):
        raise ValueError(f"params section '{section}' must be a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        if key not in fields:
            raise ValueError(f"Unknown config key: {section}.{key} (known: {', '.join(sorted(fields))})")
        if not _type_ok(value, hints[key]):
            raise ValueError(
                f"Wrong type for {section}.{key}: expected {hints[key]}, got {type(value).__name__} ({value!r})"
            )
    return cls(**values)


def load_params_section(path: str | Path, section: str, cls: type[T]) -> T:
    """Load `section` of a params.yaml into `cls` (missing section -> defaults)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"params file not found: {path}")
    with path.open() as f:
        params = yaml.safe_load(f) or {}
    return from_dict(cls, params.get(section, {}) or {}, section=section)
