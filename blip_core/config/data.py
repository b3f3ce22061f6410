"""Data knobs: the embedded world, the guarded shard reader, the tokenizer."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

SPLITS = ("coco_train", "web", "val", "test", "novel", "objects")
"""The embedded world's splits; `objects` is label-only (no captions): the world's ImageNet."""
NOISE_TYPES = ("clean", "mismatched", "corrupted", "spam", "uninformative")
OBJECT_LABEL_GROUPS = ("shape", "color", "background", "object", "region", "relation")
"""The label groups an `objects` image can carry (blip_core.data.world.samples.object_labels)."""
REGION_GROUP = "region"
"""The group of per-object boxes, each with its attributes (`attribute:value` classes), rather than
image-level classes: a detector's training labels, scored per grid token."""


def region_attributes(classes: list[str]) -> dict[str, list[str]]:
    """The `region` group's classes `["shape:circle", "color:red", ...]` -> {"shape": ["circle", ...],
    "color": ["red", ...]}, in order."""
    out: dict[str, list[str]] = {}
    for name in classes:
        attribute, sep, value = name.partition(":")
        if not sep or not value:
            raise ValueError(f"a {REGION_GROUP} class is 'attribute:value', got {name!r}")
        out.setdefault(attribute, []).append(value)
    return out


RELATION_GROUP = "relation"
"""Per object too (aligned with the region boxes): the relations it is the subject of, with some other
object of the image ("left of something"); needs `region`."""


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
    num_objects: int = 16000
    """Label-only object-recognition images (the world's ImageNet: class labels, no captions), the
    training data of the `pretrain_vision` stage; see `blip_core.data.world.samples.object_labels`."""
    object_labels: list[str] = field(default_factory=lambda: ["shape", "color", "background", "region"])
    """The `objects` split's label groups: shape, color (which an image shows, as ImageNet's labels),
    region (each object's box with its shape, colour and size: a detector's training labels, Visual
    Genome's objects and attributes), background (its texture, as DTD / Places name them), object
    ("large red circle" as an image-level class). Measured (README recipe table): region makes the
    captioner read each object (test fully grounded 0.42 vs 0.32, novel 0.30 vs 0.11, on one chain
    where only the start differs); background, scored on the [CLS] token alone, makes it right about
    backgrounds; object is not learned within make run's 875 vision steps."""
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
    vqa_per_image: int = 3
    """VQA questions per image in `vqa_train` (coco_train images), `vqa_test` and `vqa_novel`;
    0 = no VQA splits. See `blip_core.data.world.vqa`."""
    num_nlvr_train: int = 2000
    """NLVR2-style statements about pairs of coco_train images (`nlvr_train`); 0 = none."""
    num_nlvr_test: int = 300
    """Statements about pairs of test images (`nlvr_test`)."""
    num_nlvr_novel: int = 300
    """Statements about pairs of novel images (`nlvr_novel`)."""
    num_video_test: int = 200
    """Clips (a start scene and one event) starting from test scenes (`video_test`)."""
    num_video_novel: int = 200
    """Clips starting from novel scenes, so each holds a held-out (colour, shape) combination."""
    video_frames: int = 4
    """Frames per video clip (2..16)."""

    _TASK_COUNTS = ("num_nlvr_train", "num_nlvr_test", "num_nlvr_novel", "num_video_test", "num_video_novel")

    def __post_init__(self) -> None:
        if not 16 <= self.image_size <= 384:
            raise ValueError(f"world.image_size must be in [16, 384], got {self.image_size}")
        for name in ("num_coco_train", "num_web", "num_val", "num_test", "num_novel", "num_objects"):
            if getattr(self, name) < 0:
                raise ValueError(f"world.{name} must be >= 0, got {getattr(self, name)}")
        if self.captions_per_image < 1:
            raise ValueError(f"world.captions_per_image must be >= 1, got {self.captions_per_image}")
        unknown = set(self.web_noise) - set(NOISE_TYPES[1:])
        if unknown:
            raise ValueError(f"world.web_noise has unknown noise types {sorted(unknown)}; known: {NOISE_TYPES[1:]}")
        if any(p < 0 for p in self.web_noise.values()) or sum(self.web_noise.values()) > 1.0 + 1e-9:
            raise ValueError(f"world.web_noise rates must be >= 0 and sum to <= 1, got {self.web_noise}")
        bad = [g for g in self.object_labels if g not in OBJECT_LABEL_GROUPS]
        if bad or not self.object_labels or len(set(self.object_labels)) != len(self.object_labels):
            raise ValueError(
                f"world.object_labels must be distinct groups of {OBJECT_LABEL_GROUPS}, got {self.object_labels}"
            )
        if RELATION_GROUP in self.object_labels and REGION_GROUP not in self.object_labels:
            raise ValueError("world.object_labels: 'relation' labels the region boxes, so it needs 'region' too")
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
        if not 0 <= self.vqa_per_image <= 10:
            raise ValueError(f"world.vqa_per_image must be in [0, 10], got {self.vqa_per_image}")
        for name in self._TASK_COUNTS:
            if getattr(self, name) < 0:
                raise ValueError(f"world.{name} must be >= 0, got {getattr(self, name)}")
        if not 2 <= self.video_frames <= 16:
            raise ValueError(f"world.video_frames must be in [2, 16], got {self.video_frames}")

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
            "objects": self.num_objects,
        }

    def task_split_sizes(self) -> dict[str, int]:
        """Items per downstream-task split (`blip_core.data.world.items.TASK_SPLITS`)."""
        return {
            "vqa_train": self.vqa_per_image * self.num_coco_train,
            "vqa_test": self.vqa_per_image * self.num_test,
            "vqa_novel": self.vqa_per_image * self.num_novel,
            "nlvr_train": self.num_nlvr_train,
            "nlvr_test": self.num_nlvr_test,
            "nlvr_novel": self.num_nlvr_novel,
            "video_test": self.num_video_test,
            "video_novel": self.num_video_novel,
        }

    def scaled(self, scale: float) -> WorldConfig:
        """A copy whose split sizes are multiplied by `scale` (at least 1 image per split)."""
        if scale <= 0:
            raise ValueError(f"--scale must be > 0, got {scale}")
        cfg = dataclasses.replace(self, web_noise=dict(self.web_noise), object_labels=list(self.object_labels))
        for name in ("num_coco_train", "num_web", "num_val", "num_test", "num_novel", "num_objects"):
            setattr(cfg, name, max(1, round(getattr(self, name) * scale)))
        for name in self._TASK_COUNTS:  # a task switched off (0) stays off
            setattr(cfg, name, max(1, round(getattr(self, name) * scale)) if getattr(self, name) else 0)
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
    """BLIP's caption cleaning truncates captions to this many words; saved with the tokenizer, so
    training, evaluation, CapFilt and the registry all clean captions this way."""

    def __post_init__(self) -> None:
        if self.vocab_size < 64:
            raise ValueError(f"tokenizer.vocab_size must be >= 64, got {self.vocab_size}")
        if self.min_frequency < 1:
            raise ValueError(f"tokenizer.min_frequency must be >= 1, got {self.min_frequency}")
        if self.max_words < 1:
            raise ValueError(f"tokenizer.max_words must be >= 1, got {self.max_words}")
