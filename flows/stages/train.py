"""Training stages: pre-training and fine-tunes (any registered task), the supervised vision start."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from blip_core.fileio import write_json
from flows.stages.params import section as load_section

logger = logging.getLogger(__name__)


def stage_train(
    task: str,
    data_dirs: list[str | Path],
    out_dir: str | Path,
    *,
    params: str | Path | None = None,
    section: str | None = None,
    preset: str | None = None,
    init: str | Path | None = None,
    tokenizer: str | Path | None = None,
    vision_init: str | Path | None = None,
    resume: bool | str = False,
    metric_logger=None,
) -> dict[str, Any]:
    """Pre-train or fine-tune; the knobs come from params.yaml (section per task by default).
    `resume="auto"` (the pipeline's stages) continues a killed run of the same config and data.
    `vision_init`: the folder or file the vision tower starts from (the pipeline passes the
    `pretrain_vision` stage's tower when the section's `vision_init` names that stage)."""
    from blip_core.config.train import TrainConfig
    from blip_core.models.blip.presets import get_preset
    from blip_core.registry import section_of, trainable_tasks
    from blip_core.train.entry import run_training

    if task not in trainable_tasks():
        raise ValueError(f"--task must be one of {', '.join(trainable_tasks())}, got {task!r}")
    cfg: TrainConfig = load_section(params, section or section_of(task), TrainConfig)
    cfg.task = task
    if preset is not None:
        get_preset(preset)  # validates the name
        cfg.preset = preset
    return run_training(cfg, data_dirs, out_dir, init=init, tokenizer=tokenizer, vision_init=vision_init,
                        resume=resume, metric_logger=metric_logger)  # fmt: skip


def stage_pretrain_vision(
    data_dirs: list[str | Path],
    out_dir: str | Path,
    *,
    eval_dir: str | Path | None = None,
    params: str | Path | None = None,
    resume: bool | str = False,
    metric_logger=None,
) -> dict[str, Any]:
    """The supervised vision start (BLIP's ImageNet/DeiT role): train the preset's vision tower with a
    classification head on label-only images (`pretrain_vision` section), then score it on
    `eval_dir`'s ground-truth scenes (evaluation only; recorded in `train_summary.json`)."""
    from blip_core.config.train import TrainConfig
    from blip_core.data.loader import load_eval_split
    from blip_core.eval.probe import classifier_metrics
    from blip_core.models import pretrained
    from blip_core.registry import section_of
    from blip_core.train.entry import run_training

    cfg: TrainConfig = load_section(params, section_of("vision"), TrainConfig)
    cfg.task = "vision"
    summary = run_training(cfg, data_dirs, out_dir, resume=resume, metric_logger=metric_logger)
    if eval_dir is not None:
        model = pretrained.load_pretrained(Path(out_dir) / "model").eval()
        split = load_eval_split(eval_dir, model.cfg.vision.image_size)
        summary[Path(eval_dir).name] = scores = classifier_metrics(model, split)
        write_json(Path(out_dir) / "train_summary.json", summary, default=str)
        if metric_logger is not None:
            flat = {f"eval/{Path(eval_dir).name}_{g}_{k}": v for g, m in scores.items() for k, v in m.items()}
            metric_logger.log(flat, step=0)
        logger.info("vision start on %s: %s", eval_dir, scores)
    return summary
