"""CapFilt over whole folders: load the two models once, run the per-shard steps with progress.

`CapFiltModels` is what a worker holds (Prefect maps `caption_one` / `filter_one` over shards; a
Dask or Ray worker builds its own from the checkpoint paths). `run_*` loop over all shards in
this process, which is what `blip capfilt` and the DVC stages do.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from blip_core.capfilt import (
    CALIBRATION,
    CAPTIONS,
    QUALITY_FILE,
    SCORE_INDEX,
    SCORES,
    SELECTION,
    SELECTION_META,
    steps,
)
from blip_core.capfilt.quality import filter_quality, plot_quality
from blip_core.config.pipeline import CapFiltConfig
from blip_core.data.shards import list_shards, write_stats
from blip_core.distributed import default_device
from blip_core.fileio import json_text, write_json, write_text
from blip_core.registry import task_for_role

logger = logging.getLogger(__name__)


@dataclass
class CapFiltModels:
    """The captioner and the filter (loaded lazily, once) plus their checkpoint ids."""

    captioner_dir: str | Path | None
    filter_dir: str | Path
    device: torch.device = field(default_factory=default_device)
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _load(self, kind: str, path: str | Path):
        with self._lock:  # mapped tasks in threads share one instance: load each model once
            return self._load_locked(kind, path)

    def _load_locked(self, kind: str, path: str | Path):
        if kind not in self._cache:
            from blip_core.models import pretrained

            model = pretrained.load_for_inference(path, kind=kind, device=self.device)
            processor = pretrained.text_processor(kind, model.cfg)
            role = "captioner" if kind == task_for_role("captioner").kind else "filter"
            self._cache[kind] = (model, processor, self.ids()[role])
        return self._cache[kind]

    def captioner(self):
        if self.captioner_dir is None:
            raise ValueError("this CapFilt policy needs a captioner checkpoint")
        return self._load(task_for_role("captioner").kind, self.captioner_dir)

    def filter(self):
        return self._load(task_for_role("filter").kind, self.filter_dir)

    def ids(self) -> dict[str, str]:
        """Checkpoint ids (weight-file hashes), computed once and without loading the models."""
        if "ids" not in self._cache:
            ids = {"filter": steps.checkpoint_id(self.filter_dir)}
            if self.captioner_dir is not None:
                ids["captioner"] = steps.checkpoint_id(self.captioner_dir)
            self._cache["ids"] = ids
        return self._cache["ids"]


def uses_captioner(cfg: CapFiltConfig) -> bool:
    return cfg.policy in ("captioner", "both")


def _done(out: Path, shard: str | Path) -> dict | None:
    """A finished shard is skipped before any model is loaded (a cached re-run takes seconds)."""
    return {"shard": Path(shard).stem, "path": str(out), "skipped": True} if out.is_file() else None


def caption_one(shard: str | Path, models: CapFiltModels, cfg: CapFiltConfig, work_dir: str | Path) -> dict:
    if models.captioner_dir is None:
        raise ValueError("this CapFilt policy needs a captioner checkpoint")
    done = _done(steps.caption_output(Path(work_dir) / CAPTIONS, shard, models.ids()["captioner"], cfg), shard)
    if done:
        return done
    model, processor, ckpt = models.captioner()
    return steps.caption_shard(shard, model, processor, cfg, Path(work_dir) / CAPTIONS, ckpt=ckpt, device=models.device)


def filter_one(shard: str | Path, models: CapFiltModels, cfg: CapFiltConfig, work_dir: str | Path) -> dict:
    ids = models.ids()
    captions = None
    if uses_captioner(cfg):
        captions = steps.caption_output(Path(work_dir) / CAPTIONS, shard, ids["captioner"], cfg)
        if not captions.is_file():
            raise FileNotFoundError(
                f"captions of {Path(shard).name} not found ({captions}); run the caption step first"
            )
    done = _done(steps.score_output(Path(work_dir) / SCORES, shard, ids["filter"], captions), shard)
    if done:
        return done
    model, processor, ckpt = models.filter()
    return steps.filter_shard(
        shard, model, processor, cfg, Path(work_dir) / SCORES, ckpt=ckpt, captions=captions, device=models.device
    )


def calibrate_one(shard: str | Path, models: CapFiltModels, cfg: CapFiltConfig, work_dir: str | Path) -> dict:
    """Score the human captions of a clean held-out shard (for threshold_mode=calibrated)."""
    out = steps.score_output(Path(work_dir) / CALIBRATION, shard, models.ids()["filter"], None, "human")
    if done := _done(out, shard):
        return done
    model, processor, ckpt = models.filter()
    return steps.filter_shard(
        shard, model, processor, cfg, Path(work_dir) / CALIBRATION, ckpt=ckpt, source="human", device=models.device
    )


def _each(shards: list[Path], fn, desc: str) -> list[dict]:
    out, t0, images = [], time.perf_counter(), 0
    bar = tqdm(shards, desc=desc, unit="shard")
    for shard in bar:
        out.append(fn(shard))
        images += out[-1].get("images", 0)
        bar.set_postfix(
            img_s=f"{images / max(time.perf_counter() - t0, 1e-9):.0f}", skipped=sum(r["skipped"] for r in out)
        )
    return out


def run_caption(web_dir: str | Path, models: CapFiltModels, cfg: CapFiltConfig, work_dir: str | Path) -> dict[str, Any]:
    """Caption every web shard; finished shards are skipped."""
    t0 = time.perf_counter()
    res = _each(list_shards(web_dir), lambda s: caption_one(s, models, cfg, work_dir), "capfilt caption")
    return _throughput(res, time.perf_counter() - t0)


def run_filter(
    web_dir: str | Path,
    models: CapFiltModels,
    cfg: CapFiltConfig,
    work_dir: str | Path,
    *,
    calibration_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Score every web shard's web and synthetic captions (and the calibration split's human
    captions, when one is given: the calibrated threshold uses them, and with a fixed threshold
    the quality report still shows that operating point); finished shards are skipped."""
    t0 = time.perf_counter()
    res = _each(list_shards(web_dir), lambda s: filter_one(s, models, cfg, work_dir), "capfilt filter")
    out = _throughput(res, time.perf_counter() - t0)
    if cfg.threshold_mode == "calibrated" and calibration_dir is None:
        raise ValueError("capfilt.threshold_mode=calibrated needs a clean held-out split (--calibration DIR)")
    if calibration_dir is not None:
        _each(list_shards(calibration_dir), lambda s: calibrate_one(s, models, cfg, work_dir), "capfilt calibrate")
    write_score_index(web_dir, models, cfg, work_dir, calibration_dir=calibration_dir)
    return out


def run_score(
    web_dir: str | Path,
    models: CapFiltModels,
    cfg: CapFiltConfig,
    work_dir: str | Path,
    *,
    calibration_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Caption (if the policy uses the captioner), then filter."""
    summary: dict[str, Any] = {"shards": len(list_shards(web_dir))}
    if uses_captioner(cfg):
        summary["caption"] = run_caption(web_dir, models, cfg, work_dir)
    summary["filter"] = run_filter(web_dir, models, cfg, work_dir, calibration_dir=calibration_dir)
    return summary


def _throughput(results: list[dict], seconds: float) -> dict[str, Any]:
    images = sum(r.get("images", 0) for r in results)
    return {
        "seconds": round(seconds, 2),
        "images": images,
        "images_per_s": round(images / seconds, 2) if images else None,
        "shards_skipped": sum(r["skipped"] for r in results),
    }


def score_files(web_dir: str | Path, models: CapFiltModels, cfg: CapFiltConfig, work_dir: str | Path) -> list[Path]:
    """The score files of the current shards and checkpoints (never a stale file of an earlier run)."""
    ids = models.ids()
    paths = []
    for shard in list_shards(web_dir):
        captions = (
            steps.caption_output(Path(work_dir) / CAPTIONS, shard, ids["captioner"], cfg)
            if uses_captioner(cfg)
            else None
        )
        p = steps.score_output(Path(work_dir) / SCORES, shard, ids["filter"], captions)
        if not p.is_file():
            raise FileNotFoundError(f"scores of {shard.name} not found ({p}); run the filter step first")
        paths.append(p)
    return paths


def write_score_index(
    web_dir: str | Path,
    models: CapFiltModels,
    cfg: CapFiltConfig,
    work_dir: str | Path,
    *,
    calibration_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Record the score files of the current shards and checkpoints (after every shard is scored)."""
    work_dir = Path(work_dir)
    index = score_index(web_dir, models, cfg, work_dir, calibration_dir=calibration_dir)
    text = json_text(index)
    target = work_dir / SCORE_INDEX
    # unchanged: keep the file (and its mtime), so a re-run with nothing new re-runs nothing downstream
    if not target.is_file() or target.read_text() != text:
        write_text(target, text)
    return index


def score_index(
    web_dir: str | Path,
    models: CapFiltModels,
    cfg: CapFiltConfig,
    work_dir: str | Path,
    *,
    calibration_dir: str | Path | None = None,
) -> dict[str, Any]:
    """The index of the score files the current shards, checkpoints and config need (what the filter
    step writes to `scores.json`); FileNotFoundError when one of them is missing."""
    return {
        "policy": cfg.policy,
        "threshold_mode": cfg.threshold_mode,
        "checkpoints": models.ids(),
        "scores": [p.name for p in score_files(web_dir, models, cfg, work_dir)],
        "calibration": (
            [p.name for p in calibration_files(calibration_dir, models, work_dir)]
            if calibration_dir is not None
            else []
        ),
    }


def read_score_index(work_dir: str | Path) -> dict[str, Any]:
    """The score index the filter step wrote, with absolute score and calibration paths."""
    f = Path(work_dir) / SCORE_INDEX
    if not f.is_file():
        raise FileNotFoundError(f"{f} not found: run the CapFilt filter step (blip capfilt filter) first")
    index = json.loads(f.read_text())
    index["score_paths"] = [Path(work_dir) / SCORES / n for n in index["scores"]]
    index["calibration_paths"] = [Path(work_dir) / CALIBRATION / n for n in index["calibration"]]
    missing = [p for p in index["score_paths"] + index["calibration_paths"] if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{f} lists {missing[0]}, which is missing: run the CapFilt filter step again")
    return index


def calibration_files(calibration_dir: str | Path, models: CapFiltModels, work_dir: str | Path) -> list[Path]:
    ckpt = models.ids()["filter"]
    paths = [
        steps.score_output(Path(work_dir) / CALIBRATION, s, ckpt, None, "human") for s in list_shards(calibration_dir)
    ]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"calibration scores not found ({missing[0]}); run the filter step with --calibration")
    return paths


def run_select(cfg: CapFiltConfig, work_dir: str | Path, *, metrics_dir: str | Path) -> dict[str, Any]:
    """Apply the policy to the stored scores (no model runs); write selection, quality metrics, plots.

    Returns the quality metrics with the threshold in use (`threshold`: fixed, or calibrated on
    the held-out human pairs the filter step scored)."""
    work_dir, metrics_dir = Path(work_dir), Path(metrics_dir)
    index = read_score_index(work_dir)
    if uses_captioner(cfg) and not uses_captioner(CapFiltConfig(policy=index["policy"])):
        raise ValueError(
            f"capfilt.policy={cfg.policy} needs synthetic captions, but the scores were made with policy "
            f"{index['policy']} (none written): run the caption and filter steps with this policy"
        )
    calibration = steps.read_scores(index["calibration_paths"]) if index["calibration_paths"] else None
    if cfg.threshold_mode == "calibrated" and calibration is None:
        raise ValueError("capfilt.threshold_mode=calibrated, but the filter step scored no calibration split")
    threshold = steps.resolve_threshold(cfg, calibration)
    scores = steps.read_scores(index["score_paths"])
    sel = steps.select(scores, cfg, threshold=threshold)
    sel.to_parquet(work_dir / SELECTION, index=False)
    meta = {"policy": cfg.policy, "threshold": threshold, "threshold_mode": cfg.threshold_mode,
            "max_synthetic": cfg.max_synthetic, "min_confidence": cfg.min_confidence}  # fmt: skip
    if calibration is not None:
        meta |= {"calibration_quantile": cfg.calibration_quantile, "calibration_pairs": int(len(calibration))}
    write_json(work_dir / SELECTION_META, meta)
    quality = meta | filter_quality(sel, threshold)
    if calibration is not None and cfg.threshold_mode == "fixed":  # the other operating point, for comparison
        calibrated = dataclasses.replace(cfg, threshold_mode="calibrated")
        t_cal = steps.resolve_threshold(calibrated, calibration)
        q_cal = filter_quality(steps.select(scores, cfg, threshold=t_cal), t_cal)
        quality |= {f"calibrated/{k}": q_cal[k] for k in ("threshold", "keep_rate/web", "keep_rate/synthetic",
                                                           "kept/noise_rate") if k in q_cal}  # fmt: skip
    metrics_dir.mkdir(parents=True, exist_ok=True)
    # a DVC metrics file holds numbers only; the policy and threshold mode are in SELECTION_META
    numbers = {k: v for k, v in quality.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    write_json(metrics_dir / QUALITY_FILE, numbers)
    plot_quality(sel, threshold, metrics_dir / "plots")
    return quality


def run_reshard(
    human_dirs: list[str | Path],
    web_dir: str | Path,
    work_dir: str | Path,
    out_dir: str | Path,
) -> dict[str, Any]:
    """Write the bootstrapped dataset: human shards unfiltered, then web shards with their kept captions."""
    import pandas as pd

    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)  # derived output: a smaller selection must not leave stale shards behind
    sel = pd.read_parquet(Path(work_dir) / SELECTION)
    kept = sel[sel["keep"]]
    by_shard = dict(tuple(kept.groupby("shard")))
    provenance = {f"{k}_ckpt": v for k, v in read_score_index(work_dir)["checkpoints"].items()}
    jobs: list[tuple[Path, Any]] = [(s, None) for d in human_dirs for s in list_shards(d)]
    jobs += [(s, by_shard.get(s.stem, kept.iloc[:0])) for s in list_shards(web_dir)]
    results = []
    for i, (shard, rows) in enumerate(tqdm(jobs, desc="capfilt reshard", unit="shard")):
        results.append(steps.reshard_shard(shard, out_dir, i, kept=rows, provenance=provenance))
    summary = {
        "images": sum(r["written"] for r in results),
        "dropped_images": sum(r["dropped"] for r in results),
        "captions": sum(r["captions"] for r in results),
        "selection": json.loads((Path(work_dir) / SELECTION_META).read_text())
        if (Path(work_dir) / SELECTION_META).is_file()
        else {},  # the policy and threshold that chose what is copied
        "checkpoints": provenance,
        "shards": results,
    }
    write_stats(out_dir, summary)
    return summary
