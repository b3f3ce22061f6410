"""Training and evaluation runs: one `params.yaml` section per stage."""

from __future__ import annotations

from dataclasses import dataclass

VISION_STAGE = "pretrain_vision"
"""`TrainConfig.vision_init` value naming the pipeline stage's supervised tower (the pipeline passes
its folder)."""


@dataclass(kw_only=True, slots=True)
class TrainConfig:
    """One training run (pre-training or a fine-tune); a `params.yaml` section per stage."""

    task: str = "pretrain"
    """A trainable task of the registry (blip_core.registry): pretrain (ITC+ITM+LM) | caption (LM with
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
    cache_samples_mb: int = 1024
    """Keep the first epoch's reading (tar members and decoded images) in memory and replay it in the
    later epochs when it fits in this many MB: the same batches without re-reading and re-decoding
    (0: read the shards every epoch). In-process loading only (num_workers 0, one process)."""
    captions_per_image: int = 0
    """Captions of an image trained on per epoch: 0 = every caption is a pair (BLIP); n = n of them,
    drawn per epoch (BLIP-2 keeps two per image and samples one per step: 1 with capfilt.policy top_k)."""
    frozen_features_mb: int = 0
    """With the tower frozen (vision_lr_scale 0): its images are not cropped (resized whole, as in
    evaluation) and its output for each image is kept, up to this many MB, and looked up in later
    epochs, by the other captions of the image and by a momentum copy equal to the tower
    (`blip_core.models.common.feature_cache`). 0 = crop every epoch and run the tower every step."""
    log_every: int = 10
    ckpt_every: int = 200
    """Save a resumable checkpoint every this many optimizer steps (and at the end)."""
    keep_last: int = 2
    max_nonfinite_steps: int = 10
    """Updates skipped in a row for a non-finite loss or gradient before the run stops."""
    compile: bool = False
    """torch.compile the model (off by default: slow to start on CPU)."""
    cpu_bf16: str = "off"
    """bf16 autocast on CPU (GPUs always train under it): off (fp32, the parity path the tests use);
    on; auto = on where the CPU has bf16 units (AVX512-BF16 or AMX), where it is faster, fp32 where
    it would be emulated and slower. Other numerics, so other weights: opt-in per stage."""
    deterministic: bool = True
    """torch.use_deterministic_algorithms during training: two runs of one seed on one machine give
    the same weights (with 2 CPU threads they did not: an ulp at step 2, then drift). Off = the
    kernels torch picks by default."""
    fused_optimizer: str = "auto"
    """AdamW's fused kernel (one kernel for all parameters, on GPUs and CPUs): auto and on use it;
    off = torch's default (per-tensor on CPU, for-each on GPU)."""
    itm_swap_negatives: bool = False
    """pretrain / retrieval: ITM also sees each image with its own caption, one attribute swapped
    (NegCLIP; blip_core.data.caption_edits), as a negative: a filter must check every attribute,
    which in-batch hard negatives rarely make it do."""
    itm_phrase_positives: bool = False
    """pretrain / retrieval: ITM also sees each image with one noun phrase of its caption (true
    whenever the caption is) as a positive (and, with swap negatives, that phrase swapped as a
    negative): web alt-text is partial, and a filter trained only on complete human captions, whose
    in-batch negatives are often true of the image, learns to reject every partial caption."""
    itm_word_loss: float = 0.0
    """pretrain / retrieval, with itm_swap_negatives: weight of blip_core.losses.itm_word_loss, the ITM
    head read at every word of the positives and caption-made rows, told which words a swap made
    false (0 = off). One bit per caption did not teach the filter which colour belongs to which
    object; a label per word says where the mismatch is, as the captioner's per-token loss does."""
    count_statements: int = 0
    """caption / retrieval: count statements per batch (beside batch_size captions), written from the
    region labels of the label-only folders among the stage's data (`blip_core.data.region_text`; the
    `objects` split, Visual Genome's role). 0 = captions only."""
    count_statement_kind: str = "scene"
    """scene (every colour-shape group of the image, counted) | group (one group, via a random object)."""
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
        from blip_core.registry import trainable_tasks  # the registry (imported late: it names model classes)

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
        if self.cache_samples_mb < 0:
            raise ValueError(f"train.cache_samples_mb must be >= 0, got {self.cache_samples_mb}")
        if self.captions_per_image < 0:
            raise ValueError(f"train.captions_per_image must be >= 0 (0: every caption), got {self.captions_per_image}")
        if self.frozen_features_mb < 0:
            raise ValueError(f"train.frozen_features_mb must be >= 0, got {self.frozen_features_mb}")
        if not 0.05 <= self.crop_scale_min <= 1.0:
            raise ValueError(f"train.crop_scale_min must be in [0.05, 1], got {self.crop_scale_min}")
        if self.num_workers < 0 or self.shuffle_buffer < 0 or self.max_nonfinite_steps < 0:
            raise ValueError("train.num_workers, shuffle_buffer and max_nonfinite_steps must be >= 0")
        if self.vision_lr_scale < 0 or self.vision_freeze_steps < 0:
            raise ValueError("train.vision_lr_scale and train.vision_freeze_steps must be >= 0")
        if not 0 < self.vision_layer_decay <= 1:
            raise ValueError(f"train.vision_layer_decay must be in (0, 1], got {self.vision_layer_decay}")
        from blip_core.registry import get_task

        if (self.itm_swap_negatives or self.itm_phrase_positives) and not get_task(self.task).itm:
            raise ValueError("train.itm_swap_negatives / itm_phrase_positives need an ITM task (pretrain or retrieval)")
        if get_task(self.task).frozen_vision and self.vision_lr_scale != 0:
            raise ValueError(f"train.vision_lr_scale must be 0 for {self.task}: its image tower is frozen")
        if self.itm_word_loss < 0 or (self.itm_word_loss and not self.itm_swap_negatives):
            raise ValueError("train.itm_word_loss must be >= 0 and needs train.itm_swap_negatives (its false words)")
        if self.lm_unlikelihood < 0 or (self.lm_unlikelihood and self.task != "caption"):
            raise ValueError("train.lm_unlikelihood is a caption-task weight >= 0")
        if self.count_statements < 0 or (self.count_statements and self.task not in ("caption", "retrieval")):
            raise ValueError(f"train.count_statements is a caption / retrieval count >= 0, got {self.count_statements}")
        from blip_core.data.region_text import STATEMENT_KINDS

        if self.count_statement_kind not in STATEMENT_KINDS:
            raise ValueError(f"train.count_statement_kind must be one of {STATEMENT_KINDS}, "
                             f"got {self.count_statement_kind!r}")  # fmt: skip
        if self.cpu_bf16 not in ("auto", "on", "off"):
            raise ValueError(f"train.cpu_bf16 must be auto, on or off, got {self.cpu_bf16!r}")
        if self.fused_optimizer not in ("auto", "on", "off"):
            raise ValueError(f"train.fused_optimizer must be auto, on or off, got {self.fused_optimizer!r}")
        if self.vision_init and self.task == "vision":
            raise ValueError("train.vision_init is the start of BLIP training; the vision task trains that start")

    @property
    def vision_frozen(self) -> bool:
        """The tower never trains (lr x 0)."""
        return self.vision_lr_scale == 0

    @property
    def frozen_features(self) -> bool:
        """The frozen tower's outputs are kept and looked up; its images are not cropped."""
        return self.vision_frozen and self.frozen_features_mb > 0

    @property
    def train_crop_scale_min(self) -> float | None:
        """The crop the training images get: None (resized whole) under `frozen_features`."""
        return None if self.frozen_features else self.crop_scale_min


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
