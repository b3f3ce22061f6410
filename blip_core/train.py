"""Training entry: config -> model + data -> Trainer.fit() -> checkpoint directory.

Runs as a plain process or under torchrun (DDP), e.g.
    torchrun --nproc_per_node 2 -m flows.cli train --task pretrain --preset tiny --data ... --out ...
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import torch

from blip_core.config import ModelConfig, TrainConfig
from blip_core.data.loader import TrainData
from blip_core.distributed import cleanup_distributed, init_distributed, is_main_process, world_info
from blip_core.model import weights
from blip_core.model.tokenizer import TextProcessor, load_tokenizer, tokenizer_max_words
from blip_core.presets import get_preset, with_tokenizer
from blip_core.tracking import MetricLogger
from blip_core.trainer import Trainer

logger = logging.getLogger(__name__)

TASK_TO_KIND = {"pretrain": "pretrain", "caption": "captioner", "retrieval": "retrieval"}


def build_model(cfg: TrainConfig, *, init: str | Path | None, tokenizer: str | Path | None) -> tuple[Any, Any]:
    """(model, tokenizer): from an init checkpoint (split if it is a pre-training one) or a preset."""
    kind = TASK_TO_KIND[cfg.task]
    if init is not None:
        model = weights.load_pretrained(init, kind=kind)
        tok = load_tokenizer(tokenizer or model.cfg.tokenizer)
        return model, tok
    if tokenizer is None:
        raise ValueError("training from scratch needs a tokenizer directory (blip tokenizer ... or --tokenizer)")
    tok = load_tokenizer(tokenizer)
    model_cfg: ModelConfig = with_tokenizer(get_preset(cfg.preset), tok)
    model_cfg.tokenizer = str(tokenizer)
    torch.manual_seed(cfg.seed)
    return weights.create_model(kind, model_cfg), tok


def run_training(
    cfg: TrainConfig,
    data_dirs: list[str | Path],
    out_dir: str | Path,
    *,
    init: str | Path | None = None,
    tokenizer: str | Path | None = None,
    resume: bool = False,
    metric_logger: MetricLogger | None = None,
) -> dict[str, Any]:
    """Train and write `out_dir/model` (our checkpoint format) and `out_dir/train_summary.json`."""
    for d in data_dirs:
        if not Path(d).is_dir():
            raise FileNotFoundError(f"data directory not found: {d}")
    dist_on = init_distributed()
    try:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        model, tok = build_model(cfg, init=init, tokenizer=tokenizer)
        world = world_info()[1]
        if cfg.task != "caption":
            model.cfg.check_batch(cfg.batch_size * world)
        processor = TextProcessor(
            tok,
            max_len=model.cfg.text.max_text_len,
            max_words=tokenizer_max_words(tokenizer or model.cfg.tokenizer),
            prompt=model.cfg.prompt,
        )
        data = TrainData(
            data_dirs,
            processor,
            batch_size=cfg.batch_size,
            image_size=model.cfg.vision.image_size,
            seed=cfg.seed,
            crop_scale_min=cfg.crop_scale_min,
            shuffle_buffer=cfg.shuffle_buffer,
            num_workers=cfg.num_workers,
            prompt=cfg.task == "caption",
        )
        resolved = {
            "train": dataclasses.asdict(cfg),
            "model": model.cfg.to_dict(),
            "data": [str(d) for d in data_dirs],
            "init": str(init) if init else None,
            "world_size": world,
        }
        if is_main_process():
            (out_dir / "resolved_config.json").write_text(json.dumps(resolved, indent=2, sort_keys=True) + "\n")
            if metric_logger is not None:
                metric_logger.log_params(resolved)
        trainer = Trainer(model, cfg, data, out_dir, prompt_length=processor.prompt_length, metric_logger=metric_logger)
        if resume:
            trainer.resume()
        summary = trainer.fit()
        summary |= {
            "task": cfg.task,
            "num_pairs": data.num_pairs,
            "steps_per_epoch": trainer.steps_per_epoch,
            "read": data.stats.to_dict(),
        }
        if is_main_process():
            weights.save_pretrained(model.cpu(), out_dir / "model", tokenizer=tok)
            (out_dir / "train_summary.json").write_text(
                json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n"
            )
        return summary
    finally:
        if dist_on:
            cleanup_distributed()
