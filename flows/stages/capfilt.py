"""CapFilt stages: score (caption + filter), select, reshard, and all four in one call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from blip_core.fileio import write_json
from flows.stages.params import section


def capfilt_config(params, **overrides):
    """params.yaml's `capfilt` section with any non-None overrides (CLI flags), type-checked by `from_dict`."""
    import dataclasses

    from blip_core.config.loader import from_dict
    from blip_core.config.pipeline import CapFiltConfig

    cfg: CapFiltConfig = section(params, "capfilt", CapFiltConfig)
    changes = {k: v for k, v in overrides.items() if v is not None}
    return from_dict(CapFiltConfig, dataclasses.asdict(cfg) | changes, section="capfilt") if changes else cfg


def _capfilt_models(cfg, captioner, filter_model):
    from blip_core.capfilt.folders import CapFiltModels, uses_captioner

    if uses_captioner(cfg) and captioner is None:
        raise ValueError(f"capfilt.policy={cfg.policy} needs a captioner checkpoint (--captioner)")
    for name, d in (("captioner", captioner), ("filter", filter_model)):
        if d is not None and not (Path(d) / "config.json").is_file():
            raise FileNotFoundError(f"{name} checkpoint not found: {d}")
    return CapFiltModels(captioner if uses_captioner(cfg) else None, filter_model)


def _require_dirs(**dirs) -> None:
    """Every given input folder exists (None: not given), or one error naming the missing one."""
    for name, d in dirs.items():
        if d is not None and not Path(d).is_dir():
            raise FileNotFoundError(f"capfilt: {name} folder not found: {d}")


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
    from blip_core.capfilt import folders

    cfg = capfilt_config(params, policy=policy)
    models = _capfilt_models(cfg, captioner, filter_model)
    _require_dirs(web=web_dir, calibration=calibration_dir)  # before any output folder is made
    for sub in (folders.CAPTIONS, folders.SCORES, folders.CALIBRATION):
        Path(work_dir, sub).mkdir(parents=True, exist_ok=True)
    if step == "caption":
        if not folders.uses_captioner(cfg):
            return {"skipped": f"capfilt.policy={cfg.policy} writes no synthetic captions"}
        return folders.run_caption(web_dir, models, cfg, work_dir)
    if step == "filter":
        return folders.run_filter(web_dir, models, cfg, work_dir, calibration_dir=calibration_dir)
    summary = folders.run_score(web_dir, models, cfg, work_dir, calibration_dir=calibration_dir)
    write_json(Path(work_dir, "score_summary.json"), summary)
    return summary


def stage_capfilt_select(web_dir, work_dir, *, metrics_dir, params=None, policy=None, threshold=None) -> dict[str, Any]:
    """Apply the selection policy to the stored scores; write quality metrics and plots (seconds, no models).

    `web_dir` is part of the stage's identity (the scores are of its shards); the scores are found
    through the index the filter step wrote."""
    from blip_core.capfilt.folders import run_select

    return run_select(capfilt_config(params, policy=policy, threshold=threshold), work_dir, metrics_dir=metrics_dir)


def stage_capfilt_reshard(human_dirs, web_dir, work_dir, *, out_dir=None) -> dict[str, Any]:
    """Write the bootstrapped webdataset (human shards unfiltered + kept web images) to work_dir/shards.
    It reads no params: the selection it copies was made by `select`."""
    from blip_core.capfilt import SHARDS
    from blip_core.capfilt.folders import run_reshard

    _require_dirs(web=web_dir, **{f"human[{i}]": d for i, d in enumerate(human_dirs)})
    summary = run_reshard(human_dirs, web_dir, work_dir, out_dir or Path(work_dir) / SHARDS)
    return {k: v for k, v in summary.items() if k != "shards"}


def stage_capfilt_audit(web_dir, work_dir, *, out_dir=None) -> dict[str, Any]:
    """The CapFilt audit page (blip_core.capfilt.audit): every caption with its image, scores and
    decision, for a person to see why it was kept or dropped. Reads no params: select decided."""
    from blip_core.capfilt import AUDIT
    from blip_core.capfilt.audit import write_audit

    summary = write_audit(work_dir, web_dir, out_dir or Path(work_dir) / AUDIT)
    url = Path(summary["page"]).resolve().as_uri()
    summary["markdown"] = (f"[The CapFilt audit page]({url}) (`{summary['page']}`): {summary['rows']} captions of "
                           f"{summary['images']} web images, {summary['kept']} kept; filter, sort, page.")  # fmt: skip
    return summary


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
    _require_dirs(web=web_dir, **{f"human[{i}]": d for i, d in enumerate(human_dirs)})
    score = stage_capfilt_score(web_dir, work_dir, captioner=captioner, filter_model=filter_model, params=params,
                                policy=policy, calibration_dir=calibration_dir)  # fmt: skip
    select = stage_capfilt_select(web_dir, work_dir, metrics_dir=metrics_dir, params=params, policy=policy,
                                  threshold=threshold)  # fmt: skip
    reshard = stage_capfilt_reshard(human_dirs, web_dir, work_dir)
    return {"score": score, "select": select, "reshard": reshard}
