"""Pipeline knobs: CapFilt, the Great Expectations gates, the downstream tasks."""

from __future__ import annotations

from dataclasses import dataclass, field

CAPFILT_POLICIES = ("none", "filter", "captioner", "both", "clip_score", "top_k")


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
    """none | filter | captioner | both | clip_score (the paper's 2x2 ablation plus a DataComp baseline)
    | top_k (BLIP-2's CapFilt: each image's `top_k` best captions, web and synthetic ranked together)."""
    threshold: float = 0.5
    """Keep a caption when the filter's ITM p(match) is at least this (threshold_mode fixed)."""
    threshold_mode: str = "fixed"
    """fixed: `threshold` as is (BLIP). calibrated: the `calibration_quantile` of the filter's p(match)
    on known-clean human pairs (a held-out split): for a filter whose ITM head is not calibrated
    around 0.5 (a small budget leaves p(match) below 0.5 for every pair)."""
    calibration_quantile: float = 0.1
    clip_keep_fraction: float = 0.3
    """clip_score policy: keep this top fraction of web captions by ITC cosine (DataComp keeps 30%)."""
    top_k: int = 2
    """top_k policy: captions kept per image, the web caption and the synthetic ones ranked together by
    `top_k_score`, no threshold (BLIP-2 Sec. 3.4 keeps the top two by CLIP similarity; pre-training
    then samples one per image per step: train.captions_per_image 1)."""
    top_k_score: str = "itc_cosine"
    """What top_k ranks by: itc_cosine (the filter's ITC, our CLIP similarity, BLIP-2's choice) or
    itm_prob (the filter's ITM p(match))."""
    max_synthetic: int = 0
    """Keep at most this many synthetic captions per image, those with the highest p(match) among the
    ones that pass the threshold; 0 keeps every one that passes (BLIP). With `num_captions` N > 1 this
    is best-of-N captioning (BLIP-2 Sec. 3.4 ranks 10 sampled captions and keeps the top two)."""
    min_confidence: float = 0.0
    """A synthetic caption takes part in the selection only when the captioner's confidence in each of
    its attribute words reaches this (blip_core.capfilt.confidence: the word's class probability
    among the classes of its kind); 0 = every one (BLIP). Self-training's confidence threshold."""
    rounds: int = 1
    """Rounds of bootstrapping (a knob that shapes the DAG): round k > 1 runs CapFilt again on the web
    pool with round k-1's fine-tuned captioner and filter, re-pre-trains on what it keeps and
    evaluates that model (the paper does one round; a second is its untested remark)."""

    def __post_init__(self) -> None:
        if self.num_captions < 1:
            raise ValueError(f"capfilt.num_captions must be >= 1, got {self.num_captions}")
        if self.rounds < 1:
            raise ValueError(f"capfilt.rounds must be >= 1, got {self.rounds}")
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
        if self.top_k < 1:
            raise ValueError(f"capfilt.top_k must be >= 1, got {self.top_k}")
        if self.top_k_score not in ("itc_cosine", "itm_prob"):
            raise ValueError(f"capfilt.top_k_score must be itc_cosine or itm_prob, got {self.top_k_score!r}")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ValueError(f"capfilt.min_confidence must be in [0, 1], got {self.min_confidence}")
        if self.max_synthetic < 0:
            raise ValueError(f"capfilt.max_synthetic must be >= 0 (0: no cap), got {self.max_synthetic}")


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
    kept_noise_margin_z: float = 1.96
    """The kept-noise bound allows this many standard errors of the kept set's rate (a one-sided
    z-test, 2.5% false failures at 1.96 for captions drawn independently; kept web and synthetic
    captions of one image are not, so it is looser than that): fail when the kept set is dirtier
    than the bound beyond sampling noise; 0 = the point comparison. At parity (kept = raw) a point
    gate passes or fails with a machine's float kernels."""
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
        if self.kept_noise_margin_z < 0:
            raise ValueError(f"validate.kept_noise_margin_z must be >= 0, got {self.kept_noise_margin_z}")
        if self.max_kept_over_raw <= 0:
            raise ValueError(f"validate.max_kept_over_raw must be > 0, got {self.max_kept_over_raw}")


@dataclass(kw_only=True, slots=True)
class DownstreamConfig:
    """Which of the paper's downstream tasks (Sec. 5.3-5.6) the pipeline adds: each trainable one is
    fine-tuned from both pre-trainings (`finetune_<task>` section) and every one is evaluated on its
    world splits by both `evaluate_*` stages (blip_core.registry: vqa, nlvr, video)."""

    tasks: list[str] = field(default_factory=lambda: ["vqa", "nlvr", "video"])

    def __post_init__(self) -> None:
        from blip_core.registry import downstream_tasks

        unknown = [t for t in self.tasks if t not in downstream_tasks()]
        if unknown:
            raise ValueError(f"downstream.tasks: unknown {unknown}; known: {downstream_tasks()}")
