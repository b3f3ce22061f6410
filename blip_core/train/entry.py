"""Training entry: config -> model + data -> Trainer.fit() -> checkpoint directory.

Runs as a plain process or under torchrun (DDP), e.g.
    torchrun --nproc_per_node 2 -m flows.cli train --task pretrain --preset tiny --data ... --out ...
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from pathlib import Path
from typing import Any

import torch

from blip_core.config.train import VISION_STAGE, TrainConfig
from blip_core.data.labelled import is_labelled, read_classes
from blip_core.data.loader import TrainData
from blip_core.distributed import cleanup_distributed, init_distributed, is_main_process, world_info
from blip_core.fileio import digest, source_hash, write_json
from blip_core.machine import deterministic_algorithms
from blip_core.models import pretrained
from blip_core.models.common import vision_start
from blip_core.registry import get_family, get_task
from blip_core.tracking import MetricLogger
from blip_core.train.loop import Trainer

logger = logging.getLogger(__name__)


def build_model(
    cfg: TrainConfig,
    *,
    init: str | Path | None,
    tokenizer: str | Path | None,
    classes: dict[str, list[str]] | None = None,
    vision_init: str | Path | None = None,
) -> tuple[Any, Any]:
    """(model, tokenizer): from an init checkpoint (converted if it is of a kind the task starts
    from, e.g. a pre-training) or a preset of the task's family; from a preset, the vision tower
    optionally starts from `vision_init` (BLIP's ImageNet start)."""
    task = get_task(cfg.task)
    family = get_family(task.family)
    kind = task.kind
    if init is not None:
        if vision_init is not None:
            raise ValueError("vision_init is the start of training from scratch; an init checkpoint has its tower")
        model = pretrained.load_pretrained(init, kind=kind)
        tok = family.call("load_tokenizer", tokenizer or model.cfg.tokenizer) if task.text else None
        return model, tok
    torch.manual_seed(cfg.seed)
    if not task.text:  # the supervised start itself: no text side
        model_cfg = family.call("preset", cfg.preset)
        model_cfg.classes = dict(classes or {})
        return pretrained.create_model(kind, model_cfg), None
    if tokenizer is None:
        raise ValueError("training from scratch needs a tokenizer directory (blip tokenizer ... or --tokenizer)")
    tok = family.call("load_tokenizer", tokenizer)
    model_cfg = family.call("with_tokenizer", family.call("preset", cfg.preset), tok)
    model_cfg.tokenizer = str(tokenizer)
    model = pretrained.create_model(kind, model_cfg)
    if vision_init is not None:
        vision_start.load_vision_start(model, vision_init)
    return model, tok


def resolve_vision_init(cfg: TrainConfig, vision_init: str | Path | None) -> str | Path | None:
    """The vision start to load: the explicit path (the pipeline resolves `pretrain_vision` to its
    stage's output), else `cfg.vision_init` when it is a path, else none."""
    if vision_init is not None:
        return vision_init
    if cfg.vision_init == VISION_STAGE:
        raise ValueError(f"train.vision_init={VISION_STAGE} names the pipeline stage's tower; outside the "
                         "pipeline pass its folder (blip train --vision-init data/runs/vision/model)")  # fmt: skip
    return cfg.vision_init or None


def run_training(
    cfg: TrainConfig,
    data_dirs: list[str | Path],
    out_dir: str | Path,
    *,
    init: str | Path | None = None,
    tokenizer: str | Path | None = None,
    vision_init: str | Path | None = None,
    resume: bool | str = False,
    metric_logger: MetricLogger | None = None,
) -> dict[str, Any]:
    """Train and write `out_dir/model` (our checkpoint format) and `out_dir/train_summary.json`.

    `resume`: True continues from the latest checkpoint in `out_dir`; "auto" does so only when the
    checkpoints were made by this same run (config, data and init fingerprint; what a pipeline stage
    re-run after a kill wants); False, or "auto" on a different run, starts afresh and removes the
    old checkpoints and loss log, so two runs never mix in one folder.
    """
    if resume not in (True, False, "auto"):
        raise ValueError(f"resume must be true, false or 'auto', got {resume!r}")
    for d in data_dirs:
        if not Path(d).is_dir():
            raise FileNotFoundError(f"data directory not found: {d}")
    dist_on = init_distributed()
    try:
        with deterministic_algorithms(cfg.deterministic):
            return _run(cfg, data_dirs, out_dir, init, tokenizer, vision_init, resume, metric_logger)
    finally:
        if dist_on:
            cleanup_distributed()


def _run(
    cfg: TrainConfig,
    data_dirs: list[str | Path],
    out_dir: str | Path,
    init: str | Path | None,
    tokenizer: str | Path | None,
    vision_init: str | Path | None,
    resume: bool | str,
    metric_logger: MetricLogger | None,
) -> dict[str, Any]:
    """The body of `run_training`, under its algorithm setting and process group."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    vision_init = resolve_vision_init(cfg, vision_init)
    task = get_task(cfg.task)
    classes = read_classes(data_dirs) if task.data == "labels" else None
    model, tok = build_model(cfg, init=init, tokenizer=tokenizer, classes=classes, vision_init=vision_init)
    world = world_info()[1]
    if task.queue:
        model.cfg.check_batch((cfg.batch_size + cfg.count_statements) * world)  # the statements join each batch
    processor = None if tok is None else get_family(task.family).call("processor", model.cfg, tok, tokenizer)
    if task.train_data is not None:  # the task's own items (VQA, NLVR², ...)
        data = task.call("train_data", cfg, data_dirs, processor, model)
    else:
        # label-only folders among image-text data are the count statements' source (TrainData checks the knob)
        statements = [d for d in data_dirs if classes is None and is_labelled(d)]
        captions = [d for d in data_dirs if d not in statements]
        data = TrainData(captions, processor, batch_size=cfg.batch_size, image_size=model.cfg.vision.image_size,
                         seed=cfg.seed, crop_scale_min=cfg.train_crop_scale_min, shuffle_buffer=cfg.shuffle_buffer,
                         num_workers=cfg.num_workers, prompt=task.prompt, classes=classes,
                         cache_bytes=cfg.cache_samples_mb * 2**20, captions_per_image=cfg.captions_per_image,
                         swap_negatives=cfg.itm_swap_negatives,
                         phrase_positives=cfg.itm_phrase_positives,
                         lm_negatives=cfg.lm_unlikelihood > 0, word_labels=cfg.itm_word_loss > 0,
                         statement_dirs=statements, statements_per_batch=cfg.count_statements,
                         statement_kind=cfg.count_statement_kind)  # fmt: skip
    resolved = {
        "train": dataclasses.asdict(cfg),
        "model": model.cfg.to_dict(),
        "data": [str(d) for d in data_dirs],
        "init": str(init) if init else None,
        "vision_init": str(vision_init) if vision_init else None,
        "world_size": world,
    }
    fingerprint = run_fingerprint(resolved, data_dirs, init, vision_init)
    prompt_length = processor.prompt_length if processor is not None else 0
    trainer = Trainer(model, cfg, data, out_dir, prompt_length=prompt_length, metric_logger=metric_logger)
    resumed = False
    if resume is True or (resume == "auto" and _same_run(out_dir, fingerprint)):
        resumed = trainer.resume()
    if not resumed and is_main_process():
        _clear_run(out_dir)
    if is_main_process():
        write_json(out_dir / "resolved_config.json", resolved | {"fingerprint": fingerprint})
        if metric_logger is not None:
            metric_logger.log_params(resolved)
    summary = trainer.fit()
    summary |= {
        "resumed_from_step": trainer.resumed_from if resumed else None,
        "task": cfg.task,
        "num_pairs": data.num_pairs,
        "steps_per_epoch": trainer.steps_per_epoch,
        "read": data.stats.to_dict(),
    }
    if getattr(data, "statements_per_batch", 0):
        summary["read_count_statements"] = data.statement_stats.to_dict()
    if is_main_process():
        pretrained.save_pretrained(model.cpu(), out_dir / "model", tokenizer=tok)
        write_json(out_dir / "train_summary.json", summary, default=str)
    return summary


@functools.cache
def library_digest() -> str:
    """The blip_core source this process runs (its files, hashed once per process)."""
    return source_hash(("blip_core",), root=Path(__file__).resolve().parents[2])


def run_fingerprint(
    resolved: dict[str, Any],
    data_dirs: list[str | Path],
    init: str | Path | None,
    vision_init: str | Path | None = None,
) -> str:
    """What makes two runs the same run: the resolved config, the data (each folder's `_stats.json`
    and shard names and sizes), the init weights, vision start included (size and mtime), and the
    library's code: a run killed and restarted on the same code resumes, but an edited model, loss or
    loop starts afresh instead of "resuming" (re-saving) a finished run of the old code."""
    data = []
    for d in map(Path, data_dirs):
        stats = d / "_stats.json"
        data.append({"stats": stats.read_text() if stats.is_file() else None,
                     "shards": [(tar.name, tar.stat().st_size) for tar in sorted(d.glob("*.tar"))]})  # fmt: skip
    starts = []
    for start in (init, vision_init):
        if start is not None:
            files = [Path(start)] if Path(start).is_file() else sorted(Path(start).glob("*"))
            starts.append([(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.is_file()])
    return digest({"resolved": resolved, "data": data, "starts": starts, "code": library_digest()}, 16)


def _same_run(out_dir: Path, fingerprint: str) -> bool:
    try:
        return json.loads((out_dir / "resolved_config.json").read_text()).get("fingerprint") == fingerprint
    except (OSError, ValueError):
        return False


def _clear_run(out_dir: Path) -> None:
    """A fresh start: checkpoints and the loss log of an earlier, different run must not mix in."""
    import shutil

    ckpts = out_dir / "checkpoints"
    if ckpts.is_dir() and any(ckpts.iterdir()):
        logger.info("starting afresh in %s: removing the checkpoints of an earlier run", out_dir)
        shutil.rmtree(ckpts)
    (out_dir / "losses.jsonl").unlink(missing_ok=True)
