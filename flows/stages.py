"""Stage functions: one per pipeline step.

`flows/dag.py` says with which arguments each pipeline step calls them (`blip stage NAME`, which
dvc.yaml runs, and the Prefect task of the step make that same call); the other `blip`
subcommands call them with paths of the user's choosing. Stage functions read their own
`params.yaml` section, take explicit input/output paths, import only `blip_core` (never Prefect)
and return a small JSON-able summary.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from blip_core.config import ReaderConfig, TokenizerConfig, WorldConfig, load_params_section

logger = logging.getLogger(__name__)

DEFAULT_PARAMS = Path("params.yaml")


def _section(params: str | Path | None, name: str, cls):
    """A params section as its dataclass; defaults when no params file is given or present."""
    if params is None:
        params = DEFAULT_PARAMS if DEFAULT_PARAMS.is_file() else None
    return load_params_section(params, name, cls) if params is not None else cls()


def stage_world(
    out_dir: str | Path,
    *,
    params: str | Path | None = None,
    seed: int | None = None,
    scale: float | None = None,
    num_workers: int | None = None,
) -> dict[str, Any]:
    """Generate the embedded image-caption world into `out_dir/<split>/`."""
    from blip_core.data.world import generate_world

    cfg: WorldConfig = _section(params, "world", WorldConfig)
    if seed is not None:
        cfg.seed = seed
    if num_workers is not None:
        cfg.num_workers = num_workers
    if scale is not None:
        cfg = cfg.scaled(scale)
    return generate_world(cfg, out_dir)


def stage_tokenizer(
    data_dirs: list[str | Path], out_dir: str | Path, *, params: str | Path | None = None
) -> dict[str, Any]:
    """Train the WordPiece tokenizer on the captions of the given training shard folders."""
    from blip_core.data.reader import ReadStats, iter_samples
    from blip_core.model.tokenizer import BLIP_PROMPT, train_tokenizer

    cfg: TokenizerConfig = _section(params, "tokenizer", TokenizerConfig)
    stats = ReadStats()
    captions = [c for d in data_dirs for s in iter_samples(d, stats=stats) for c in s["captions"]]
    # the captioner's prompt must tokenize into whole words even if no caption contains it
    captions += [BLIP_PROMPT] * cfg.min_frequency
    tok = train_tokenizer(
        captions, out_dir, vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency, max_words=cfg.max_words
    )
    summary = {"vocab_size": len(tok), "num_captions": len(captions), "read": stats.to_dict()}
    (Path(out_dir) / "tokenizer_stats.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary


def stage_inspect(
    data_dirs: list[str | Path], *, params: str | Path | None = None, out_file: str | Path | None = None
) -> dict[str, Any]:
    """Read every sample of the given shard folders with the guarded reader; report counts and skips
    (also as JSON in `out_file`)."""
    from blip_core.data.loader import is_labelled
    from blip_core.data.reader import ReadStats, iter_samples

    reader_cfg: ReaderConfig = _section(params, "reader", ReaderConfig)
    out: dict[str, Any] = {}
    for d in data_dirs:
        stats = ReadStats()
        samples = iter_samples(d, stats=stats, reader_cfg=reader_cfg, labelled=is_labelled(d))
        num_captions = sum(len(s["captions"]) for s in samples)
        out[Path(d).name] = {
            "num_ok": stats.num_ok,
            "num_skipped": stats.num_skipped,
            "num_captions": num_captions,
            "skipped": stats.by_reason(),
        }
    if out_file is not None:
        Path(out_file).parent.mkdir(parents=True, exist_ok=True)
        Path(out_file).write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
    return out


def stage_convert(
    src: str | Path,
    out_dir: str | Path,
    *,
    src_format: str,
    dst_format: str = "ours",
    kind: str | None = None,
    preset: str = "base",
    tokenizer: str | Path | None = None,
) -> dict[str, Any]:
    """Convert checkpoints between our format, official salesforce/BLIP .pth files and HF directories.

    - `blip`: needs `kind` (pretrain | captioner | retrieval), the architecture `preset` and a local
      tokenizer directory (bert-base-uncased for official weights);
    - `hf`: a BlipForConditionalGeneration / BlipForImageTextRetrieval directory;
    - `ours`: one of our checkpoint directories (with `kind`, a pre-training checkpoint is split).
    """
    from blip_core.model import weights
    from blip_core.model.tokenizer import load_tokenizer
    from blip_core.presets import get_preset, with_tokenizer

    tok = load_tokenizer(tokenizer) if tokenizer else None
    if src_format == "blip":
        if kind is None:
            raise ValueError("converting an official BLIP checkpoint needs --kind (pretrain, captioner or retrieval)")
        if tok is None:
            raise ValueError("converting an official BLIP checkpoint needs --tokenizer (a local bert-base-uncased dir)")
        cfg = with_tokenizer(get_preset(preset), tok)
        model = weights.load_official(src, kind, cfg)
    elif src_format == "hf":
        model = weights.load_hf(src, tokenizer_dir=str(tokenizer or ""))
    elif src_format == "ours":
        model = weights.load_pretrained(src, kind=kind)
    else:
        raise ValueError(f"unknown source format {src_format!r} (blip, hf or ours)")
    if tok is None and model.cfg.tokenizer:
        tok = load_tokenizer(model.cfg.tokenizer)
    if dst_format == "hf":
        weights.export_hf(model, out_dir, tokenizer=tok)
    elif dst_format == "ours":
        weights.save_pretrained(model, out_dir, tokenizer=tok)
    else:
        raise ValueError(f"unknown target format {dst_format!r} (ours or hf)")
    n = sum(p.numel() for p in model.parameters())
    return {"kind": weights.kind_of(model), "out": str(out_dir), "format": dst_format, "parameters": n}


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
    from blip_core.config import TrainConfig
    from blip_core.presets import get_preset
    from blip_core.tasks import section_of, trainable_tasks
    from blip_core.train import run_training

    if task not in trainable_tasks():
        raise ValueError(f"--task must be one of {', '.join(trainable_tasks())}, got {task!r}")
    cfg: TrainConfig = _section(params, section or section_of(task), TrainConfig)
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
    from blip_core.config import TrainConfig
    from blip_core.data.loader import load_eval_split
    from blip_core.eval.probe import classifier_metrics
    from blip_core.fileio import write_json
    from blip_core.model import weights
    from blip_core.tasks import section_of
    from blip_core.train import run_training

    cfg: TrainConfig = _section(params, section_of("vision"), TrainConfig)
    cfg.task = "vision"
    summary = run_training(cfg, data_dirs, out_dir, resume=resume, metric_logger=metric_logger)
    if eval_dir is not None:
        model = weights.load_pretrained(Path(out_dir) / "model").eval()
        split = load_eval_split(eval_dir, model.cfg.vision.image_size)
        summary[Path(eval_dir).name] = scores = classifier_metrics(model, split)
        write_json(Path(out_dir) / "train_summary.json", json.loads(json.dumps(summary, default=str)))
        if metric_logger is not None:
            flat = {f"eval/{Path(eval_dir).name}_{g}_{k}": v for g, m in scores.items() for k, v in m.items()}
            metric_logger.log(flat, step=0)
        logger.info("vision start on %s: %s", eval_dir, scores)
    return summary


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
    """Evaluate each model on each folder its task evaluates (the registry, blip_core.tasks): captioners
    (COCO metrics + grounding, by attribute too) and filters (recall@k) on image-caption splits (a
    pre-training checkpoint as both), the filter on video clips too (zero-shot, frame features
    averaged), VQA models on questions, NLVR² models on statements. With `probe_model` (the
    pre-trained checkpoint) and `probe_fit_dir` (a split with ground-truth scenes, e.g. coco_train),
    also the linear probes of its frozen image features (`probe_<group>_f1`, `probe_<group>_exact`:
    does the vision tower still know colours and shapes after BLIP pre-training?). Writes one JSON file,
    the generated captions beside it (`<out>_captions.json`) and, with `grid_file`, a PNG grid of the
    first captioned split's images with their captions."""
    import torch

    from blip_core.config import EvalConfig
    from blip_core.data.task_data import data_kind
    from blip_core.distributed import default_device
    from blip_core.machine import out_of_memory_hint
    from blip_core.model import weights
    from blip_core.model.tokenizer import TextProcessor
    from blip_core.tasks import evaluations, model_kinds

    cfg: EvalConfig = _section(params, "evaluate", EvalConfig)
    device = default_device()
    results: dict[str, Any] = {}
    predictions: dict[str, Any] = {}
    loaded: dict[tuple, Any] = {}  # each folder read once per (resolution, loader), shared by all models
    kinds = {d: data_kind(d) for d in data_dirs}
    for model_dir in model_dirs:
        saved_kind, mcfg = weights.read_config(model_dir)
        processor = TextProcessor.for_model(mcfg) if mcfg.tokenizer else None
        # the registry says which task evaluates this checkpoint on which folder (a pre-training
        # checkpoint as each model it splits into)
        jobs = [(t, d) for d in data_dirs for t in evaluations(saved_kind, kinds[d])]
        if not jobs:  # an unregistered kind, or folders none of its tasks reads: say so, never an empty result
            held = ", ".join(f"{Path(d).name} ({kinds[d]})" for d in data_dirs)
            raise ValueError(f"{model_dir}: no registered task evaluates a {saved_kind!r} checkpoint on {held} "
                             f"(model kinds: {', '.join(model_kinds())})")  # fmt: skip
        for kind in dict.fromkeys(t.kind for t, _ in jobs):
            model = weights.load_for_inference(model_dir, kind=kind, device=device)
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
    out_file.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    captions = out_file.with_name(out_file.stem + "_captions.json")
    captions.write_text(json.dumps(predictions, indent=2) + "\n")  # {} without a captioner: an output all the same
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
    from blip_core.model import weights

    kind, mcfg = weights.read_config(model_dir)
    model = weights.load_for_inference(model_dir, kind="retrieval" if kind == "pretrain" else kind)
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


# ------------------------------------------------------------------------------------------------
# CapFilt


def capfilt_config(params, **overrides):
    """params.yaml's `capfilt` section with any non-None overrides (CLI flags), type-checked by `from_dict`."""
    import dataclasses

    from blip_core.config import CapFiltConfig, from_dict

    cfg: CapFiltConfig = _section(params, "capfilt", CapFiltConfig)
    changes = {k: v for k, v in overrides.items() if v is not None}
    return from_dict(CapFiltConfig, dataclasses.asdict(cfg) | changes, section="capfilt") if changes else cfg


def _capfilt_models(cfg, captioner, filter_model):
    from blip_core.capfilt.pipeline import CapFiltModels, uses_captioner

    if uses_captioner(cfg) and captioner is None:
        raise ValueError(f"capfilt.policy={cfg.policy} needs a captioner checkpoint (--captioner)")
    for name, d in (("captioner", captioner), ("filter", filter_model)):
        if d is not None and not (Path(d) / "config.json").is_file():
            raise FileNotFoundError(f"{name} checkpoint not found: {d}")
    return CapFiltModels(captioner if uses_captioner(cfg) else None, filter_model)


def stage_capfilt_score(
    web_dir,
    work_dir,
    *,
    captioner=None,
    filter_model,
    params=None,
    policy: str | None = None,
    step: str = "both",
    calibration_dir=None,
) -> dict[str, Any]:
    """CapFilt caption (`step="caption"`), filter (`"filter"`) or both over every web shard.

    Resumable: a shard whose output (named by the hash of its inputs) exists is skipped. The filter
    step ends by writing `scores.json`, the index that `select` and `reshard` read.
    """
    from blip_core.capfilt import pipeline

    cfg = capfilt_config(params, policy=policy)
    models = _capfilt_models(cfg, captioner, filter_model)
    for sub in (pipeline.CAPTIONS, pipeline.SCORES, pipeline.CALIBRATION):
        Path(work_dir, sub).mkdir(parents=True, exist_ok=True)
    if step == "caption":
        if not pipeline.uses_captioner(cfg):
            return {"skipped": f"capfilt.policy={cfg.policy} writes no synthetic captions"}
        return pipeline.run_caption(web_dir, models, cfg, work_dir)
    if step == "filter":
        return pipeline.run_filter(web_dir, models, cfg, work_dir, calibration_dir=calibration_dir)
    summary = pipeline.run_score(web_dir, models, cfg, work_dir, calibration_dir=calibration_dir)
    Path(work_dir, "score_summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary


def stage_capfilt_select(web_dir, work_dir, *, metrics_dir, params=None, policy=None, threshold=None) -> dict[str, Any]:
    """Apply the selection policy to the stored scores; write quality metrics and plots (seconds, no models).

    `web_dir` is part of the stage's identity (the scores are of its shards); the scores are found
    through the index the filter step wrote."""
    from blip_core.capfilt.pipeline import run_select

    return run_select(capfilt_config(params, policy=policy, threshold=threshold), work_dir, metrics_dir=metrics_dir)


def stage_capfilt_reshard(human_dirs, web_dir, work_dir, *, params=None, policy=None, out_dir=None) -> dict[str, Any]:
    """Write the bootstrapped webdataset (human shards unfiltered + kept web images) to work_dir/shards."""
    from blip_core.capfilt import SHARDS
    from blip_core.capfilt.pipeline import run_reshard

    cfg = capfilt_config(params, policy=policy)
    summary = run_reshard(human_dirs, web_dir, cfg, work_dir, out_dir or Path(work_dir) / SHARDS)
    return {k: v for k, v in summary.items() if k != "shards"}


def stage_capfilt_run(
    human_dirs,
    web_dir,
    work_dir,
    *,
    captioner=None,
    filter_model,
    metrics_dir,
    params=None,
    policy=None,
    threshold=None,
    calibration_dir=None,
) -> dict[str, Any]:
    """caption -> filter -> select -> reshard."""
    score = stage_capfilt_score(web_dir, work_dir, captioner=captioner, filter_model=filter_model, params=params,
                                policy=policy, calibration_dir=calibration_dir)  # fmt: skip
    select = stage_capfilt_select(web_dir, work_dir, metrics_dir=metrics_dir, params=params, policy=policy,
                                  threshold=threshold)  # fmt: skip
    reshard = stage_capfilt_reshard(human_dirs, web_dir, work_dir, params=params, policy=policy)
    return {"score": score, "select": select, "reshard": reshard}


# ------------------------------------------------------------------------------------------------
# data-quality gates and leakage


def stage_validate(
    kind: str, path: str | Path, *, params=None, out_file: str | Path | None = None, gx_root=None
) -> dict[str, Any]:
    """Run the Great Expectations suites on raw web shards (`raw`) or a CapFilt work folder (`capfilt`).

    Raises flows.validation.DataQualityError (a readable report) when an expectation fails.
    """
    from blip_core.config import CapFiltConfig, ReaderConfig, ValidateConfig
    from flows import validation as v

    cfg: ValidateConfig = _section(params, "validate", ValidateConfig)
    if not Path(path).is_dir():
        raise FileNotFoundError(f"folder to validate not found: {path}")
    if kind == "raw":
        from blip_core.capfilt.tables import raw_caption_table

        df = raw_caption_table(path, reader_cfg=_section(params, "reader", ReaderConfig))
        reports = [v.run_suite("raw_web", v.raw_web_suite(cfg), df, data_asset=path, root=gx_root)]
    elif kind == "capfilt":
        out, sel, meta = v.capfilt_tables(path)
        capfilt_cfg: CapFiltConfig = _section(params, "capfilt", CapFiltConfig)
        capfilt_cfg.threshold = meta.get("threshold", capfilt_cfg.threshold)  # the one selection used
        reports = [
            v.run_suite("capfilt_output", v.capfilt_output_suite(cfg, capfilt_cfg), out, data_asset=path, root=gx_root),
            v.run_suite(
                "capfilt_selection",
                v.capfilt_selection_suite(cfg, v.raw_web_noise(sel)),
                sel,
                data_asset=path,
                root=gx_root,
            ),
        ]
    else:
        raise ValueError(f"validate kind must be raw or capfilt, got {kind!r}")
    return v.gate(reports, out_file)


def stage_leakage(
    eval_dirs: list[str | Path], pool_dirs: list[str | Path], *, params=None, out_file: str | Path | None = None
) -> dict[str, Any]:
    """Evaluation images found in the pre-training pool (by content hash); fails above the configured count."""
    from blip_core.capfilt.leakage import leakage_report
    from blip_core.config import ValidateConfig

    cfg: ValidateConfig = _section(params, "validate", ValidateConfig)
    report = leakage_report(eval_dirs, pool_dirs)
    report["max_leaked_images"] = cfg.max_leaked_images
    report["success"] = report["leaked_total"] <= cfg.max_leaked_images
    if out_file is not None:
        Path(out_file).parent.mkdir(parents=True, exist_ok=True)
        Path(out_file).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    if not report["success"]:
        from flows.validation import DataQualityError

        per_split = {k: v["leaked"] for k, v in report["splits"].items()}
        raise DataQualityError(
            f"{report['leaked_total']} evaluation images are in the pre-training pool "
            f"(validate.max_leaked_images={cfg.max_leaked_images}): {per_split}"
        )
    return report


# ------------------------------------------------------------------------------------------------
# comparison report

REPORT_METRICS = (
    "tr_r1", "ir_r1", "r_mean", "cider", "bleu4", "meteor", "grounded_precision", "grounded_true_rate",
    *(f"grounded_precision_{a}" for a in ("color", "shape", "size", "count", "relation", "background")),
    "probe_shape_f1", "probe_color_f1",
)  # fmt: skip
"""Compared baseline vs bootstrapped: retrieval, COCO metrics, grounding (overall and by attribute) and
the probes of the pre-trained image tower; plus every registered task's `metrics` (report_metrics())."""


def report_metrics() -> tuple[str, ...]:
    from blip_core.tasks import TASKS

    extra = [m for t in TASKS.values() for m in t.metrics if m not in REPORT_METRICS]
    return REPORT_METRICS + tuple(dict.fromkeys(extra))


def stage_report(
    baseline: str | Path, bootstrapped: str | Path, out_dir: str | Path, *, quality: str | Path | None = None
) -> dict[str, Any]:
    """Baseline vs bootstrapped evaluation: comparison.json (DVC metric), .png (the deltas, DVC plot),
    .csv (one row per split, metric and model) and .md (the one-line verdict and the table). `quality`:
    the CapFilt quality JSON, for the verdict's kept-vs-raw-web noise."""
    from blip_core.eval.report import plot_comparison, verdict

    base, boot = json.loads(Path(baseline).read_text()), json.loads(Path(bootstrapped).read_text())
    rows, compared = [], report_metrics()
    for split in sorted(set(base) & set(boot)):
        for m in compared:
            a, b = base[split].get(m), boot[split].get(m)
            if isinstance(a, int | float) and isinstance(b, int | float):
                rows.append({"split": split, "metric": m, "baseline": a, "bootstrapped": b, "delta": b - a})
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    nested: dict[str, Any] = {}
    for r in rows:
        nested.setdefault(r["split"], {})[r["metric"]] = {k: r[k] for k in ("baseline", "bootstrapped", "delta")}
    (out_dir / "comparison.json").write_text(json.dumps(nested, indent=2, sort_keys=True) + "\n")
    lines = ["split,metric,model,value"]
    lines += [f"{r['split']},{r['metric']},{m},{r[m]:.6g}" for r in rows for m in ("baseline", "bootstrapped")]
    (out_dir / "comparison.csv").write_text("\n".join(lines) + "\n")
    q = json.loads(Path(quality).read_text()) if quality is not None and Path(quality).is_file() else {}
    line = verdict(rows, web_noise=q.get("web/noise_rate"), kept_noise=q.get("kept/noise_rate"))
    table = format_comparison(rows)
    (out_dir / "comparison.md").write_text(f"{line}\n\n{table}\n")
    plot_comparison(rows, out_dir / "comparison.png", caption=line)
    return {"rows": rows, "markdown": table, "verdict": line}


def format_comparison(rows: list[dict[str, Any]]) -> str:
    out = ["| split | metric | baseline | bootstrapped | delta |", "|---|---|---:|---:|---:|"]
    out += [
        f"| {r['split']} | {r['metric']} | {r['baseline']:.3f} | {r['bootstrapped']:.3f} | {r['delta']:+.3f} |"
        for r in rows
    ]
    return "\n".join(out)
