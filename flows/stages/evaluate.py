"""The evaluation stage: every model on every folder its registered tasks evaluate, probes, the caption grid."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from blip_core.fileio import write_json
from flows.stages.params import section

logger = logging.getLogger(__name__)


def stage_evaluate(
    model_dirs: list[str | Path],
    data_dirs: list[str | Path],
    out_file: str | Path,
    *,
    params: str | Path | None = None,
    probe_model: str | Path | None = None,
    probe_fit_dir: str | Path | None = None,
    grid_file: str | Path | None = None,
    metric_logger=None,
) -> dict[str, Any]:
    """Evaluate each model on each folder its task evaluates (the registry, blip_core.registry): captioners
    (COCO metrics + grounding, by attribute too) and filters (recall@k) on image-caption splits (a
    pre-training checkpoint as both), the filter on video clips too (zero-shot, frame features
    averaged), VQA models on questions, NLVR² models on statements. With `probe_model` (the
    pre-trained checkpoint) and `probe_fit_dir` (a split with ground-truth scenes, e.g. coco_train),
    also the linear probes of its frozen image features (`probe_<group>_f1`, `probe_<group>_exact`:
    does the vision tower still know colours and shapes after BLIP pre-training?). Writes one JSON file,
    the generated captions beside it (`<out>_captions.json`) and, with `grid_file`, a PNG grid of the
    first captioned split's images with their captions."""
    import torch

    from blip_core.config.train import EvalConfig
    from blip_core.data.task_data import data_kind
    from blip_core.distributed import default_device
    from blip_core.machine import out_of_memory_hint
    from blip_core.models import pretrained
    from blip_core.registry import evaluations, model_kinds

    cfg: EvalConfig = section(params, "evaluate", EvalConfig)
    device = default_device()
    results: dict[str, Any] = {}
    predictions: dict[str, Any] = {}
    loaded: dict[tuple, Any] = {}  # each folder read once per (resolution, loader), shared by all models
    kinds = {d: data_kind(d) for d in data_dirs}
    for model_dir in model_dirs:
        saved_kind = pretrained.read_meta(model_dir)["kind"]
        # the registry says which task evaluates this checkpoint on which folder (a pre-training
        # checkpoint as each model it splits into)
        jobs = [(t, d) for d in data_dirs for t in evaluations(saved_kind, kinds[d])]
        if not jobs:  # an unregistered kind, or folders none of its tasks reads: say so, never an empty result
            held = ", ".join(f"{Path(d).name} ({kinds[d]})" for d in data_dirs)
            raise ValueError(f"{model_dir}: no registered task evaluates a {saved_kind!r} checkpoint on {held} "
                             f"(model kinds: {', '.join(model_kinds())})")  # fmt: skip
        _, mcfg = pretrained.read_config(model_dir)
        processor = pretrained.text_processor(saved_kind, mcfg) if mcfg.tokenizer else None
        for kind in dict.fromkeys(t.kind for t, _ in jobs):
            model = pretrained.load_for_inference(model_dir, kind=kind, device=device)
            for task, data_dir in ((t, d) for t, d in jobs if t.kind == kind):
                key = (str(data_dir), mcfg.vision.image_size, task.load_eval)
                if key not in loaded:
                    loaded[key] = task.call("load_eval", data_dir, mcfg.vision.image_size, max_images=cfg.max_images)
                name = Path(data_dir).name
                oom = out_of_memory_hint(f"{task.name} evaluation of {model_dir} on {name}", "evaluate.batch_size",
                                         cfg.batch_size)  # fmt: skip
                with torch.no_grad(), oom:
                    result = task.call("evaluate", model, loaded[key], processor, cfg, device)
                metrics, preds = result if isinstance(result, tuple) else (result, None)
                if preds is not None:
                    predictions[name] = preds
                results.setdefault(name, {}).update(metrics)
                logger.info("%s %s on %s: %s", task.name, model_dir, name, metrics)
    if probe_model is not None and probe_fit_dir is not None:  # on the image-caption splits (the others hold items)
        image_splits = [d for d in data_dirs if kinds[d] == "pairs"]
        for name, groups in _image_probes(probe_model, probe_fit_dir, image_splits).items():
            results.setdefault(name, {}).update(groups)
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    write_json(out_file, results)
    captions = out_file.with_name(out_file.stem + "_captions.json")
    write_json(captions, predictions, sort_keys=False)  # {} without a captioner: an output all the same
    if grid_file is not None:
        _caption_grid(predictions, data_dirs, model_dirs, grid_file)
    if metric_logger is not None:
        flat = {f"eval/{split}_{k}": v for split, m in results.items() for k, v in m.items() if isinstance(v, float)}
        metric_logger.log(flat, step=0)
    return results


def _caption_grid(predictions: dict[str, Any], data_dirs, model_dirs, grid_file) -> Path:
    """A PNG grid of the first captioned split's images with the generated captions (a placeholder
    figure saying so when no model captioned anything)."""
    from blip_core.eval.captioning import caption_grid

    split = next((d for d in data_dirs if Path(d).name in predictions), None)
    grid_file = Path(grid_file)
    grid_file.parent.mkdir(parents=True, exist_ok=True)
    if split is None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig = plt.figure(figsize=(4, 1))
        fig.text(0.5, 0.5, "no captioner was evaluated", ha="center", va="center")
        fig.savefig(grid_file)
        plt.close(fig)
        return grid_file
    model = Path(model_dirs[0]).parent.parent.name  # data/runs/<model>/caption/model
    title = (
        f"{model}: {Path(split).name} split (generated caption, \u2713 = true in every attribute; grey: a reference)"
    )
    return caption_grid(split, predictions[Path(split).name], grid_file, title=title)


def _image_probes(model_dir, fit_dir, data_dirs) -> dict[str, dict[str, float]]:
    """Colour and shape probes on a checkpoint's frozen image features: {split: {probe_<group>_<f1|exact>}}."""
    import torch

    from blip_core.data.loader import load_eval_split
    from blip_core.eval.probe import fit_probe, image_features, scene_labels
    from blip_core.models import pretrained
    from blip_core.registry import task_for_role

    kind, mcfg = pretrained.read_config(model_dir)
    filt = task_for_role("filter")  # a pre-training is probed through the filter it starts (its image tower)
    model = pretrained.load_for_inference(model_dir, kind=filt.kind if kind in filt.init_from else kind)
    fit = load_eval_split(fit_dir, mcfg.vision.image_size)
    with torch.no_grad():
        x_fit, y_fit = image_features(model, fit.images), scene_labels(fit.scenes)  # type: ignore[arg-type]
        out = {}
        for d in data_dirs:
            split = load_eval_split(d, mcfg.vision.image_size)
            x, y = image_features(model, split.images), scene_labels(split.scenes)  # type: ignore[arg-type]
            out[Path(d).name] = {f"probe_{g}_{k}": v for g in ("color", "shape")
                                 for k, v in fit_probe(x_fit, y_fit[g], x, y[g]).items()}  # fmt: skip
    return out
