"""The results of one finished bootstrap run: its summary figures and its one-line verdict.

Read by the run itself (flows.bootstrap, make run's closing lines) and by the seed study
(flows.effect), which is why neither of those holds it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from blip_core.capfilt import QUALITY_FILE, SELECTION, SELECTION_META
from blip_core.config.loader import read_params
from blip_core.fileio import digest

MODEL_METRICS = {
    "test_r_mean": ("test", "r_mean"),
    "novel_r_mean": ("novel", "r_mean"),
    "test_grounded_true_rate": ("test", "grounded_true_rate"),
    "novel_grounded_true_rate": ("novel", "grounded_true_rate"),
    "test_cider": ("test", "cider"),
}
QUALITY_METRICS = {
    "filter_auroc": "filter/auroc",
    "filter_auroc_corrupted": "filter/auroc/corrupted",
    "web_noise_rate": "web/noise_rate",
    "kept_noise_rate": "kept/noise_rate",
    "synthetic_grounded_accuracy": "synthetic/grounded_accuracy",
    "synthetic_auroc": "synthetic/auroc",
    "synthetic_confidence_auroc": "synthetic/confidence_auroc",
}
ATTRIBUTES = ("color", "shape", "size", "count", "relation", "background")
"""The attributes whose precision in test beam captions (and synthetic captions) is reported."""
RECIPE_SECTIONS = ["world", "tokenizer", "pretrain_vision", "pretrain", "finetune_caption", "finetune_retrieval",
                   "capfilt", "evaluate"]  # fmt: skip
"""The params sections that shape a run's figures (the gates' bounds do not): a study's seed spread
applies to a run whose recipe matches, whatever its world seed."""
REPORT = Path("reports/bootstrap_effect.json")


def recipe_hash(params: str | Path) -> str:
    """The recipe of a params file, world seed aside."""

    doc = read_params(params) if Path(params).is_file() else {}
    recipe = {k: doc.get(k) for k in RECIPE_SECTIONS}
    recipe["world"] = {k: v for k, v in (recipe["world"] or {}).items() if k != "seed"}
    return digest(recipe)


def seed_spread(params: str | Path, report: str | Path = REPORT) -> dict[tuple[str, str], float] | None:
    """{(split, metric): sd over world seeds of bootstrapped - baseline} from a `make effect` report
    measured with the same recipe as `params`; None when there is none."""
    report = Path(report)
    if not report.is_file():
        return None
    doc = json.loads(report.read_text())
    return spread_of(doc) if doc.get("recipe_hash") == recipe_hash(params) else None


def spread_of(report: dict[str, Any]) -> dict[tuple[str, str], float] | None:
    """A study report's sd over seeds of each verdict figure's delta, by (split, metric); None when
    fewer than two seeds finished (one seed has no spread)."""
    if sum("delta" in r for r in report.get("per_seed", [])) < 2:
        return None
    sd = report.get("sd", {}).get("delta", {})
    return {MODEL_METRICS[k]: v for k, v in sd.items() if k in MODEL_METRICS and isinstance(v, int | float)}


def run_verdict(
    root: str | Path, params: str | Path, report: str | Path = REPORT, *, summary: dict[str, Any] | None = None
) -> str | None:
    """The one-line verdict of a finished run under `root` (None before its comparison exists), with
    the seed spread of a `make effect` report of the same recipe. `summary`: the run's `run_summary`,
    when the caller has it already."""
    from blip_core.eval.report import verdict

    comparison = Path(root) / "metrics" / "report" / "comparison.json"
    if not comparison.is_file():
        return None
    nested = json.loads(comparison.read_text())
    rows = [{"split": s, "metric": m, **v} for s, ms in nested.items() for m, v in ms.items()]
    s = run_summary(root) if summary is None else summary
    return verdict(rows, web_noise=s.get("web_noise_rate"), kept_noise=s.get("kept_noise_rate"),
                   spread=seed_spread(params, report))  # fmt: skip


COMPOSITION = ("binding_acc", "relation_direction_acc", "count_acc", "itm_binding_acc", "itm_relation_direction_acc",
               "itm_count_acc")  # fmt: skip
"""Test-split probes of binding, relation direction and count, captioner and filter (blip_core.eval.composition)."""


def run_summary(root: str | Path) -> dict[str, Any]:
    """The effect figures of one finished bootstrap run under `root` (missing files -> absent keys)."""
    metrics = Path(root) / "metrics"
    out: dict[str, Any] = {}
    quality_file = metrics / "capfilt" / QUALITY_FILE
    if quality_file.is_file():
        q = json.loads(quality_file.read_text())
        meta_file = Path(root) / "capfilt" / SELECTION_META  # the selection's policy and threshold mode
        q = (json.loads(meta_file.read_text()) if meta_file.is_file() else {}) | q
        out |= {k: q[v] for k, v in QUALITY_METRICS.items() if v in q}
        out["threshold"] = q.get("threshold")
        out["threshold_mode"] = q.get("threshold_mode")
        out["keep_rate_web"] = q.get("keep_rate/web")
        out["keep_rate_synthetic"] = q.get("keep_rate/synthetic")
        out["synthetic_auroc_by_error"] = {
            k.rpartition("/")[2]: v for k, v in q.items() if k.startswith("synthetic/auroc/")
        }  # the filter on the captioner's own errors, by kind
        out["synthetic_attribute_precision"] = {
            a: q[f"synthetic/precision/{a}"] for a in ATTRIBUTES if f"synthetic/precision/{a}" in q
        }
        selection = Path(root) / "capfilt" / SELECTION
        gates = (q.get("max_synthetic", 0), q.get("min_confidence", 0.0))  # the run's synthetic cap and confidence gate
        if selection.is_file():
            if q.get("threshold_mode") != "fixed":
                out["at_threshold_0.5"] = kept_at(selection, q["policy"], 0.5, *gates)
            at05 = out.get("at_threshold_0.5", {}).get("kept_noise_rate", out.get("kept_noise_rate"))
            out["kept_noise_rate_fixed_0_5"] = at05  # the paper's threshold, whatever the run used
        # the calibrated operating point (the 10% quantile of clean held-out pairs), whatever the run used
        cal = (
            q.get("kept/noise_rate") if q.get("threshold_mode") == "calibrated" else q.get("calibrated/kept/noise_rate")
        )
        if cal is not None:
            out["kept_noise_rate_calibrated"] = cal
        raw = out.get("web_noise_rate")
        if raw:  # kept-set noise relative to the raw web's: < 1 means CapFilt cleaned the pool
            for key, src in (("kept_over_raw", "kept_noise_rate"), ("kept_over_raw_0_5", "kept_noise_rate_fixed_0_5"),
                             ("kept_over_raw_calibrated", "kept_noise_rate_calibrated")):  # fmt: skip
                if out.get(src) is not None:
                    out[key] = out[src] / raw
            # the paper's 2x2 (Table 1) on the same scores: what each policy would have kept (the run's cap)
            out["kept_noise_by_policy"] = {
                pol: kept_at(selection, pol, q["threshold"], *gates)["kept_noise_rate"]
                for pol in ("none", "filter", "captioner", "both")
            }
    for model in ("baseline", "bootstrapped"):
        f = metrics / f"eval_{model}.json"
        if f.is_file():
            ev = json.loads(f.read_text())
            out[model] = {k: ev[s][m] for k, (s, m) in MODEL_METRICS.items() if m in ev.get(s, {})}
            test = ev.get("test", {})
            out[model]["attribute_precision"] = {
                a: test[f"grounded_precision_{a}"] for a in ATTRIBUTES if f"grounded_precision_{a}" in test
            }
            composition = {k: test[k] for k in COMPOSITION if k in test}  # teacher-forced, chance 0.5
            if composition:
                out[model]["composition"] = composition
            if "probe_shape_f1" in test:  # the pre-trained image tower, probed on test
                out[model]["shape_probe_f1"] = test["probe_shape_f1"]
            if "grounded_repeated_pair_rate" in test:  # one colour-shape pair named twice, vs scenes that hold one
                rep, scenes = test["grounded_repeated_pair_rate"], test.get("scene_repeated_pair_rate")
                out[model]["repeated_pair_rate"] = rep
                if scenes is not None:
                    out[model]["scene_repeated_pair_rate"] = scenes
                    out[model]["repeated_pair_excess"] = rep - scenes
    if "shape_probe_f1" in out.get("baseline", {}):
        out["shape_probe_f1"] = out["baseline"]["shape_probe_f1"]
    if "baseline" in out and "bootstrapped" in out:
        out["delta"] = {
            k: out["bootstrapped"][k] - out["baseline"][k]
            for k, v in out["baseline"].items()
            # the scenes' rate is the split's, not a model's; the excess moves with the caption rate
            if isinstance(v, int | float)
            and isinstance(out["bootstrapped"].get(k), int | float)
            and k not in ("scene_repeated_pair_rate", "repeated_pair_excess")
        }
    return out


def import_summary_deps() -> None:
    """Import what `kept_at` needs (pandas, blip_core.capfilt: torch), e.g. in a thread ahead of time."""
    import pandas  # noqa: F401

    import blip_core.capfilt.quality  # noqa: F401
    import blip_core.capfilt.steps  # noqa: F401


def kept_at(
    selection: Path, policy: str, threshold: float, max_synthetic: int = 0, min_confidence: float = 0.0
) -> dict[str, float]:
    """The kept set a policy, threshold, synthetic cap and confidence gate would give, from the stored
    scores (no model runs)."""
    import pandas as pd

    from blip_core.capfilt.quality import filter_quality
    from blip_core.capfilt.steps import select
    from blip_core.config.pipeline import CapFiltConfig

    cfg = CapFiltConfig(policy=policy, max_synthetic=max_synthetic, min_confidence=min_confidence)
    sel = select(pd.read_parquet(selection), cfg, threshold=threshold)
    q = filter_quality(sel, threshold)
    return {
        "kept_noise_rate": q.get("kept/noise_rate", float("nan")),
        "keep_rate_web": q.get("keep_rate/web", float("nan")),
        "keep_rate_synthetic": q.get("keep_rate/synthetic", float("nan")),
    }
