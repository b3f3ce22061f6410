"""Typed, validated configuration.

Every knob that a pipeline stage reads lives in one of these dataclasses. `params.yaml` holds one
section per stage; `load_params_section` turns a section into its dataclass and rejects unknown
keys and wrong types with a message that names the key (nanoGPT's configurator does the same).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

SPLITS = ("coco_train", "web", "val", "test", "novel", "objects")
"""The embedded world's splits; `objects` is label-only (no captions): the world's ImageNet."""
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
    num_objects: int = 16000
    """Label-only object-recognition images (the world's ImageNet: class labels, no captions), the
    training data of the `pretrain_vision` stage; see `blip_core.data.world.object_labels`."""
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
    0 = no VQA splits. See `blip_core.data.world_tasks`."""
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
        """Items per downstream-task split (`blip_core.data.world_tasks.TASK_SPLITS`)."""
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
        cfg = dataclasses.replace(self, web_noise=dict(self.web_noise))
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
    built = {}
    for key, value in values.items():
        if key not in fields:
            raise ValueError(f"Unknown config key: {section}.{key} (known: {', '.join(sorted(fields))})")
        hint = hints[key]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):  # nested config section
            value = from_dict(hint, value, section=f"{section}.{key}")
        elif not _type_ok(value, hint):
            raise ValueError(f"Wrong type for {section}.{key}: expected {hint}, got {type(value).__name__} ({value!r})")
        built[key] = value
    return cls(**built)


def load_params_section(path: str | Path, section: str, cls: type[T]) -> T:
    """Load `section` of a params.yaml into `cls` (missing section -> defaults)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"params file not found: {path}")
    params = read_params(path)
    return from_dict(cls, params.get(section, {}) or {}, section=section)


def read_params(path: str | Path) -> dict[str, Any]:
    """A params.yaml as a mapping; malformed YAML is one line naming the file, line and problem."""
    path = Path(path)
    try:
        with path.open() as f:
            params = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        # the context mark is where the broken construct starts (an unclosed quote's line); the
        # problem mark is where the parser gave up, often the end of the file
        mark = getattr(e, "context_mark", None) or getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        what = " ".join(x for x in (getattr(e, "problem", None), getattr(e, "context", None)) if x) or str(e)
        raise ValueError(f"{where}: not valid YAML: {what}") from None
    if not isinstance(params, dict):
        raise ValueError(f"{path}: expected a mapping of sections, got {type(params).__name__}")
    known = params_sections()
    unknown = sorted(str(k) for k in params if k not in known)
    if unknown:  # a misspelt section would otherwise leave every knob in it silently at its default
        raise ValueError(f"{path}: unknown section(s) {unknown} (known: {', '.join(known)})")
    return params


PARAMS_SECTIONS = ("world", "reader", "tokenizer", "evaluate", "capfilt", "validate", "downstream")
"""The sections a params.yaml may hold besides the training section of each registered task (each
one a config dataclass; see `params_sections`)."""


def params_sections() -> tuple[str, ...]:
    """Every section a params.yaml may hold: PARAMS_SECTIONS and each trainable task's (blip_core.tasks)."""
    from blip_core.tasks import TASKS

    return PARAMS_SECTIONS + tuple(t.section for t in TASKS.values() if t.section)


# ------------------------------------------------------------------------------------------------
# model


@dataclass(kw_only=True, slots=True)
class VisionConfig:
    """timm VisionTransformer hyper-parameters (BLIP: ViT-B/16 or ViT-L/16)."""

    image_size: int = 224
    patch_size: int = 16
    width: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    layer_norm_eps: float = 1e-6
    """BLIP's ViT uses 1e-6; Hugging Face's BLIP port uses 1e-5 (kept when converting from HF)."""
    drop_path_rate: float = 0.0
    grad_checkpointing: bool = False
    """Recompute block activations in backward (BLIP enables it for ViT-L)."""
    stem: str = "patch"
    """How pixels become tokens. patch: ViT's linear patchify (BLIP; the only stem official and Hugging
    Face weights have). conv: a hybrid ViT (blip_core.model.vision.HybridViT): a conv stem whose
    feature map is the token grid and whose mean starts token 0; for towers trained from scratch on
    little data, where a patch ViT's [CLS] does not become image-dependent within a CPU budget."""
    stem_channels: list[int] = field(default_factory=list)
    """conv stem: output channels of each 3x3 conv (norm + ReLU after each); the last equals `width`."""
    stem_strides: list[int] = field(default_factory=list)
    """conv stem: stride (1 or 2) of each conv; their product is `patch_size` (one token per patch)."""
    pos_embed_init: str = "normal"
    """conv stem: how the (learned) position embedding of the grid tokens starts. normal: N(0, 0.02),
    as timm's ViT; sincos: the fixed 2D sine-cosine embedding (MAE) as the start. A hybrid tower
    trained on image-level labels has no use for position, so an N(0, 0.02) start stays negligible
    and its tokens do not say where they are (a captioner cannot tell left from right); sincos
    starts position at the scale of the features."""
    stem_norm: str = "batch"
    """conv stem normalisation: batch (BatchNorm; centring over the batch breaks the symmetry of
    mostly-background images, measured ~2x faster to start learning than group) or group (GroupNorm
    with one group: no batch statistics, so N CPU DDP processes equal one process exactly; on GPUs
    BatchNorm is synchronised across ranks instead)."""

    def __post_init__(self) -> None:
        if self.stem not in ("patch", "conv"):
            raise ValueError(f"vision.stem must be patch or conv, got {self.stem!r}")
        if self.pos_embed_init not in ("normal", "sincos"):
            raise ValueError(f"vision.pos_embed_init must be normal or sincos, got {self.pos_embed_init!r}")
        if self.stem_norm not in ("batch", "group"):
            raise ValueError(f"vision.stem_norm must be batch or group, got {self.stem_norm!r}")
        if self.stem == "conv":
            if not self.stem_channels or len(self.stem_channels) != len(self.stem_strides):
                raise ValueError("vision.stem_channels and vision.stem_strides must be non-empty and of equal length")
            if any(s not in (1, 2) for s in self.stem_strides) or math.prod(self.stem_strides) != self.patch_size:
                raise ValueError(
                    f"vision.stem_strides ({self.stem_strides}) must be 1s and 2s whose product is patch_size "
                    f"({self.patch_size})"
                )
            if self.stem_channels[-1] != self.width or min(self.stem_channels) < 1:
                raise ValueError(
                    f"vision.stem_channels ({self.stem_channels}) must be >= 1 and end at width ({self.width})"
                )
        elif self.stem_channels or self.stem_strides or self.pos_embed_init != "normal":
            raise ValueError(
                "vision.stem_channels / stem_strides / pos_embed_init are only used with vision.stem: conv"
            )
        if self.image_size % self.patch_size:
            raise ValueError(
                f"vision.image_size ({self.image_size}) must be divisible by patch_size ({self.patch_size})"
            )
        if self.width % self.num_heads:
            raise ValueError(f"vision.width ({self.width}) must be divisible by num_heads ({self.num_heads})")
        for name in ("image_size", "patch_size", "width", "depth", "num_heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"vision.{name} must be >= 1")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"vision.drop_path_rate must be in [0, 1), got {self.drop_path_rate}")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


@dataclass(kw_only=True, slots=True)
class TextConfig:
    """MED (BERT-style) text transformer; token ids come from the tokenizer."""

    vocab_size: int = 30524
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    layer_norm_eps: float = 1e-12
    hidden_dropout: float = 0.0
    attention_dropout: float = 0.0
    pad_token_id: int = 0
    cls_token_id: int = 101
    sep_token_id: int = 102
    """Also the decoder's end-of-sequence token (BLIP)."""
    bos_token_id: int = 30522
    """`[DEC]`: replaces `[CLS]` as the decoder's first token."""
    enc_token_id: int = 30523
    """`[ENC]`: replaces `[CLS]` for the image-grounded text encoder (ITM)."""
    label_smoothing: float = 0.1
    initializer_range: float = 0.02
    """Std of the N(0, std) weight init (BERT: 0.02). Narrow towers trained from scratch need more:
    with 0.02 at width 128 every caption's [CLS] state starts almost identical (cosine ~0.999)."""
    max_text_len: int = 35
    """Captions are truncated to this many tokens (BLIP: 30-35)."""

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"text.hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads})")
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size", "max_text_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"text.{name} must be >= 1")
        ids = {
            "pad": self.pad_token_id,
            "cls": self.cls_token_id,
            "sep": self.sep_token_id,
            "bos": self.bos_token_id,
            "enc": self.enc_token_id,
        }
        for name, i in ids.items():
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"text.{name}_token_id ({i}) is outside the vocabulary (size {self.vocab_size})")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"text.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.max_text_len > self.max_position_embeddings:
            raise ValueError("text.max_text_len must be <= text.max_position_embeddings")


@dataclass(kw_only=True, slots=True)
class ModelConfig:
    """A BLIP model: towers, projections, momentum encoders and queues."""

    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    embed_dim: int = 256
    """ITC projection size."""
    queue_size: int = 57600
    """Momentum feature queue length; must be divisible by the global batch size."""
    momentum: float = 0.995
    alpha: float = 0.4
    """Weight of the momentum-distillation pseudo-targets in ITC."""
    temp: float = 0.07
    """Initial ITC temperature (learnable, clamped to [0.001, 0.5])."""
    itc_online_batch: bool = False
    """ITC in-batch columns use the online features (gradients through both towers, as CLIP) instead
    of the momentum ones; the queue stays momentum features. BLIP's recipe (False) starts from
    pre-trained towers; from scratch its text features collapse, so the `tiny` preset turns this on."""
    classes: dict[str, list[str]] = field(default_factory=dict)
    """Vision classifiers only (kind `vision`, `pretrain_vision`): the class vocabulary per label
    group, e.g. {"shape": [...], "color": [...]}; empty for BLIP models."""
    prompt: str = "a picture of "
    """Captioner prompt; its tokens are not trained on and are stripped from generated captions."""
    tokenizer: str = ""
    """Tokenizer directory (ours, or a local bert-base-uncased for official weights)."""

    def __post_init__(self) -> None:
        if self.embed_dim < 1:
            raise ValueError(f"model.embed_dim must be >= 1, got {self.embed_dim}")
        if self.queue_size < 1:
            raise ValueError(f"model.queue_size must be >= 1, got {self.queue_size}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"model.momentum must be in [0, 1), got {self.momentum}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"model.alpha must be in [0, 1], got {self.alpha}")
        if not 0.001 <= self.temp <= 0.5:
            raise ValueError(f"model.temp must be in [0.001, 0.5], got {self.temp}")

    def check_batch(self, global_batch_size: int) -> None:
        """The queue is filled a whole global batch at a time, so it must divide evenly."""
        if global_batch_size < 1 or self.queue_size % global_batch_size:
            raise ValueError(
                f"model.queue_size ({self.queue_size}) must be divisible by the global batch size ({global_batch_size})"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "vision": {f.name: getattr(self.vision, f.name) for f in dataclasses.fields(self.vision)},
            "text": {f.name: getattr(self.text, f.name) for f in dataclasses.fields(self.text)},
            **{f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("vision", "text")},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, section: str = "model") -> ModelConfig:
        return from_dict(cls, d, section=section)


# ------------------------------------------------------------------------------------------------
# training and evaluation

VISION_STAGE = "pretrain_vision"
"""`TrainConfig.vision_init` value naming the pipeline stage's supervised tower (the pipeline passes
its folder)."""


@dataclass(kw_only=True, slots=True)
class TrainConfig:
    """One training run (pre-training or a fine-tune); a `params.yaml` section per stage."""

    task: str = "pretrain"
    """A trainable task of the registry (blip_core.tasks): pretrain (ITC+ITM+LM) | caption (LM with
    the prompt) | retrieval (ITC+ITM: the CapFilt filter) | vision (the supervised vision start) |
    vqa (question encoder + answer decoder) | nlvr (two-image encoder + binary head)."""
    preset: str = "tiny"
    batch_size: int = 64
    """Per-process batch; the global batch is batch_size * world size * grad_accum."""
    epochs: int = 1
    max_steps: int = 0
    """Stop after this many optimizer steps (0 = run all epochs)."""
    lr: float = 3e-4
    min_lr: float = 1e-6
    weight_decay: float = 0.05
    warmup_steps: int = 50
    schedule: str = "step"
    """step (x lr_decay per epoch, BLIP pre-training) | cosine (BLIP fine-tuning)."""
    lr_decay: float = 0.9
    grad_clip: float = 5.0
    """Max gradient norm (0 = off)."""
    grad_accum: int = 1
    alpha_ramp_epochs: float = 1.0
    """Momentum-distillation weight ramps from 0 to model.alpha over this many epochs (BLIP: the first)."""
    seed: int = 0
    num_workers: int = 0
    """DataLoader worker processes per training process."""
    shuffle_buffer: int = 2000
    crop_scale_min: float = 0.85
    """RandomResizedCrop lower scale; mild, so that cropped objects and relations stay true."""
    log_every: int = 10
    ckpt_every: int = 200
    """Save a resumable checkpoint every this many optimizer steps (and at the end)."""
    keep_last: int = 2
    max_nonfinite_steps: int = 10
    """Updates skipped in a row for a non-finite loss or gradient before the run stops."""
    compile: bool = False
    """torch.compile the model (off by default: slow to start on CPU)."""
    fused_optimizer: str = "auto"
    """AdamW's fused kernel (one launch for all parameters): auto = on a GPU, the for-each one
    elsewhere; on; off."""
    itm_swap_negatives: bool = False
    """pretrain / retrieval: ITM also sees each image with its own caption, one attribute swapped
    (NegCLIP; blip_core.data.caption_edits), as a negative: a filter must check every attribute,
    which in-batch hard negatives rarely make it do."""
    itm_phrase_positives: bool = False
    """pretrain / retrieval: ITM also sees each image with one noun phrase of its caption (true
    whenever the caption is) as a positive (and, with swap negatives, that phrase swapped as a
    negative): web alt-text is partial, and a filter trained only on complete human captions, whose
    in-batch negatives are often true of the image, learns to reject every partial caption."""
    lm_unlikelihood: float = 0.0
    """caption: weight of blip_core.losses.unlikelihood_loss on a swap negative of each caption (0 = off)."""
    vision_init: str = ""
    """Where a from-scratch pre-training's vision tower starts (BLIP starts its ViT from ImageNet
    DeiT weights): "" = random; `pretrain_vision` = the pipeline's supervised tower (the stage of that
    name, trained on the world's label-only `objects` split); or a local path: one of our checkpoint
    folders, or a timm-layout state dict (.pth/.pt/.bin/.safetensors, e.g. DeiT-B) for base/large."""
    vision_lr_scale: float = 1.0
    """The vision tower trains at lr x this (0 = frozen, LiT / BLIP-2 style). A supervised start is
    erased by the objectives at full lr when they never reward what it knows."""
    vision_freeze_steps: int = 0
    """Freeze-then-unfreeze: the tower is frozen (eval-mode norms, no gradients) for this many
    optimizer steps, then trains at lr x vision_lr_scale."""
    vision_layer_decay: float = 1.0
    """Layer-wise lr decay in the tower (BEiT): block i of D trains at lr x scale x decay^(D + 1 - i),
    the stem at decay^(D + 1); 1 = off."""

    def __post_init__(self) -> None:
        from blip_core.tasks import trainable_tasks  # the registry (imported late: it names model classes)

        if self.task not in trainable_tasks():
            raise ValueError(f"train.task must be one of {tuple(trainable_tasks())}, got {self.task!r}")
        if self.lr <= 0:
            raise ValueError(f"train.lr must be > 0, got {self.lr}")
        if self.min_lr < 0 or self.min_lr > self.lr:
            raise ValueError(f"train.min_lr must be in [0, lr], got {self.min_lr}")
        if self.batch_size < 1:
            raise ValueError(f"train.batch_size must be >= 1, got {self.batch_size}")
        if self.epochs < 1:
            raise ValueError(f"train.epochs must be >= 1, got {self.epochs}")
        if min(self.max_steps, self.warmup_steps, self.weight_decay, self.grad_clip) < 0:
            raise ValueError("train.max_steps, warmup_steps, weight_decay and grad_clip must be >= 0")
        if self.schedule not in ("step", "cosine"):
            raise ValueError(f"train.schedule must be step or cosine, got {self.schedule!r}")
        if not 0 < self.lr_decay <= 1:
            raise ValueError(f"train.lr_decay must be in (0, 1], got {self.lr_decay}")
        if self.grad_accum < 1 or self.keep_last < 1 or self.log_every < 1 or self.ckpt_every < 1:
            raise ValueError("train.grad_accum, keep_last, log_every and ckpt_every must be >= 1")
        if not 0.05 <= self.crop_scale_min <= 1.0:
            raise ValueError(f"train.crop_scale_min must be in [0.05, 1], got {self.crop_scale_min}")
        if self.num_workers < 0 or self.shuffle_buffer < 0 or self.max_nonfinite_steps < 0:
            raise ValueError("train.num_workers, shuffle_buffer and max_nonfinite_steps must be >= 0")
        if self.vision_lr_scale < 0 or self.vision_freeze_steps < 0:
            raise ValueError("train.vision_lr_scale and train.vision_freeze_steps must be >= 0")
        if not 0 < self.vision_layer_decay <= 1:
            raise ValueError(f"train.vision_layer_decay must be in (0, 1], got {self.vision_layer_decay}")
        from blip_core.tasks import get_task

        if (self.itm_swap_negatives or self.itm_phrase_positives) and not get_task(self.task).itm:
            raise ValueError("train.itm_swap_negatives / itm_phrase_positives need an ITM task (pretrain or retrieval)")
        if self.lm_unlikelihood < 0 or (self.lm_unlikelihood and self.task != "caption"):
            raise ValueError("train.lm_unlikelihood is a caption-task weight >= 0")
        if self.fused_optimizer not in ("auto", "on", "off"):
            raise ValueError(f"train.fused_optimizer must be auto, on or off, got {self.fused_optimizer!r}")
        if self.vision_init and self.task == "vision":
            raise ValueError("train.vision_init is the start of BLIP training; the vision task trains that start")

    @property
    def vision_frozen(self) -> bool:
        """The tower never trains (lr x 0)."""
        return self.vision_lr_scale == 0


@dataclass(kw_only=True, slots=True)
class EvalConfig:
    """Evaluation: retrieval (ITC top-k re-ranked by ITM) and captioning."""

    batch_size: int = 64
    k_test: int = 32
    """Candidates re-ranked by ITM per query (BLIP: 256 on COCO, 128 on Flickr)."""
    num_beams: int = 3
    max_length: int = 20
    min_length: int = 5
    max_images: int = 0
    """Evaluate on at most this many images per split (0 = all)."""
    retrieval_max_images: int = 0
    """Retrieval on the first this many of them (0 = all): its ITM re-rank costs per query, and recall@k
    over N images means another thing for another N, so it stays comparable across split sizes."""

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.k_test < 1 or self.num_beams < 1:
            raise ValueError("evaluate.batch_size, k_test and num_beams must be >= 1")
        if not 0 <= self.min_length <= self.max_length:
            raise ValueError("evaluate.min_length must be in [0, max_length]")
        if self.max_images < 0 or self.retrieval_max_images < 0:
            raise ValueError("evaluate.max_images and evaluate.retrieval_max_images must be >= 0")


CAPFILT_POLICIES = ("none", "filter", "captioner", "both", "clip_score")


@dataclass(kw_only=True, slots=True)
class CapFiltConfig:
    """CapFilt (BLIP Sec. 3.3): caption the web pool, filter web and synthetic captions, select, reshard."""

    num_captions: int = 1
    """Synthetic captions per web image (nucleus sampling)."""
    top_p: float = 0.9
    max_length: int = 20
    min_length: int = 5
    repetition_penalty: float = 1.1
    """BLIP's sampling setting (blip.py generate(sample=True))."""
    caption_batch_size: int = 64
    filter_batch_size: int = 64
    caption_bf16: bool = False
    """Opt-in: caption under bf16 autocast on CPU too (GPUs always use it). ~2.2x faster on CPUs with
    AVX512-BF16 or AMX (measured at base width, benchmarks/bench_model.py), but not the fp32 parity
    path: sampled captions can differ from fp32 ones. Slower than fp32 on CPUs without bf16 units."""
    seed: int = 0
    policy: str = "both"
    """none | filter | captioner | both | clip_score (the paper's 2x2 ablation plus a DataComp baseline)."""
    threshold: float = 0.5
    """Keep a caption when the filter's ITM p(match) is at least this (threshold_mode fixed)."""
    threshold_mode: str = "fixed"
    """fixed: `threshold` as is (BLIP). calibrated: the `calibration_quantile` of the filter's p(match)
    on known-clean human pairs (a held-out split): for a filter whose ITM head is not calibrated
    around 0.5 (a small budget leaves p(match) below 0.5 for every pair)."""
    calibration_quantile: float = 0.1
    clip_keep_fraction: float = 0.3
    """clip_score policy: keep this top fraction of web captions by ITC cosine (DataComp keeps 30%)."""

    def __post_init__(self) -> None:
        if self.num_captions < 1:
            raise ValueError(f"capfilt.num_captions must be >= 1, got {self.num_captions}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"capfilt.top_p must be in (0, 1], got {self.top_p}")
        if not 0 <= self.min_length <= self.max_length:
            raise ValueError(f"capfilt.min_length ({self.min_length}) must be in [0, max_length]")
        if self.caption_batch_size < 1 or self.filter_batch_size < 1:
            raise ValueError("capfilt.caption_batch_size and filter_batch_size must be >= 1")
        if self.policy not in CAPFILT_POLICIES:
            raise ValueError(f"capfilt.policy must be one of {', '.join(CAPFILT_POLICIES)}, got {self.policy!r}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"capfilt.threshold must be in [0, 1], got {self.threshold}")
        if self.threshold_mode not in ("fixed", "calibrated"):
            raise ValueError(f"capfilt.threshold_mode must be fixed or calibrated, got {self.threshold_mode!r}")
        if not 0.0 <= self.calibration_quantile <= 1.0:
            raise ValueError(f"capfilt.calibration_quantile must be in [0, 1], got {self.calibration_quantile}")
        if not 0.0 < self.clip_keep_fraction <= 1.0:
            raise ValueError(f"capfilt.clip_keep_fraction must be in (0, 1], got {self.clip_keep_fraction}")


@dataclass(kw_only=True, slots=True)
class ValidateConfig:
    """Great Expectations gates on raw web shards and on CapFilt output (thresholds only)."""

    min_caption_chars: int = 1
    max_caption_chars: int = 300
    max_url_rate: float = 0.05
    max_html_rate: float = 0.05
    max_filename_rate: float = 0.10
    max_boilerplate_rate: float = 0.2
    min_alpha_ratio: float = 0.6
    """Mean share of letters among non-space characters."""
    min_unique_caption_rate: float = 0.3
    min_image_side: int = 16
    min_decoded_rate: float = 0.99
    keep_rate_min: float = 0.2
    """Band for the CapFilt keep rate (kept web + synthetic captions over candidates)."""
    keep_rate_max: float = 0.95
    max_kept_over_raw: float = 1.0
    """The kept captions' ground-truth noise rate may be at most the raw web pool's times this (where
    the world's labels exist): relative, so the gate catches the failure CapFilt must not have, a
    kept set dirtier than what it was given (1.0), whatever the pool's own noise."""
    max_leaked_images: int = 0
    """Evaluation images (val/test/novel) allowed in the pre-training pool, by content hash."""

    def __post_init__(self) -> None:
        for name in (
            "max_url_rate",
            "max_html_rate",
            "max_filename_rate",
            "max_boilerplate_rate",
            "min_alpha_ratio",
            "min_unique_caption_rate",
            "min_decoded_rate",
            "keep_rate_min",
            "keep_rate_max",
        ):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"validate.{name} must be in [0, 1], got {v}")
        if self.keep_rate_min > self.keep_rate_max:
            raise ValueError("validate.keep_rate_min must be <= validate.keep_rate_max")
        if not 0 <= self.min_caption_chars <= self.max_caption_chars:
            raise ValueError("validate.min_caption_chars must be in [0, max_caption_chars]")
        if self.max_leaked_images < 0:
            raise ValueError("validate.max_leaked_images must be >= 0")
        if self.max_kept_over_raw <= 0:
            raise ValueError(f"validate.max_kept_over_raw must be > 0, got {self.max_kept_over_raw}")


@dataclass(kw_only=True, slots=True)
class DownstreamConfig:
    """Which of the paper's downstream tasks (Sec. 5.3-5.6) the pipeline adds: each trainable one is
    fine-tuned from both pre-trainings (`finetune_<task>` section) and every one is evaluated on its
    world splits by both `evaluate_*` stages (blip_core.tasks: vqa, nlvr, video)."""

    tasks: list[str] = field(default_factory=lambda: ["vqa", "nlvr", "video"])

    def __post_init__(self) -> None:
        from blip_core.tasks import downstream_tasks

        unknown = [t for t in self.tasks if t not in downstream_tasks()]
        if unknown:
            raise ValueError(f"downstream.tasks: unknown {unknown}; known: {downstream_tasks()}")
