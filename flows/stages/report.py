"""The comparison report: baseline vs bootstrapped, the verdict, the table and the chart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from blip_core.fileio import write_json

REPORT_METRICS = (
    "tr_r1", "ir_r1", "r_mean", "cider", "bleu4", "meteor", "grounded_precision", "grounded_true_rate",
    *(f"grounded_precision_{a}" for a in ("color", "shape", "size", "count", "relation", "background")),
    "probe_shape_f1", "probe_color_f1",
    "binding_acc", "itm_binding_acc", "relation_direction_acc", "itm_relation_direction_acc",
    "count_acc", "itm_count_acc",
)  # fmt: skip
"""Compared baseline vs bootstrapped: retrieval, COCO metrics, grounding (overall and by attribute) and
the probes of the pre-trained image tower, binding, which way relations point and counts (teacher-forced,
captioner and ITM: blip_core.eval.composition);
plus every registered task's `metrics` (report_metrics())."""


def report_metrics() -> tuple[str, ...]:
    from blip_core.registry import tasks

    extra = [m for t in tasks().values() for m in t.metrics if m not in REPORT_METRICS]
    return REPORT_METRICS + tuple(dict.fromkeys(extra))


def stage_report(
    baseline: str | Path,
    bootstrapped: str | Path,
    out_dir: str | Path,
    *,
    quality: str | Path | None = None,
    captions: tuple[str | Path, str | Path] | None = None,
    split_dirs: list[str | Path] = (),
) -> dict[str, Any]:
    """Baseline vs bootstrapped evaluation: comparison.json (DVC metric), .png (the deltas, DVC plot),
    .csv (one row per split, metric and model) and .md (the one-line verdict and the table). `quality`:
    the CapFilt quality JSON, for the verdict's kept-vs-raw-web noise. `captions` (both evaluations'
    `_captions.json`) and `split_dirs` (the captioned splits): 95% intervals over images of each
    model's caption figures and of their paired delta (blip_core.eval.intervals)."""
    from blip_core.eval.intervals import caption_intervals
    from blip_core.eval.report import plot_comparison, verdict

    base, boot = json.loads(Path(baseline).read_text()), json.loads(Path(bootstrapped).read_text())
    intervals: dict[str, dict[str, Any]] = {}
    if captions is not None:
        cap_a, cap_b = (json.loads(Path(c).read_text()) for c in captions)
        for d in split_dirs:
            name = Path(d).name
            if name in cap_a and name in cap_b:
                intervals[name] = caption_intervals(cap_a[name], cap_b[name], d)
    rows, compared = [], report_metrics()
    for split in sorted(set(base) & set(boot)):
        for m in compared:
            a, b = base[split].get(m), boot[split].get(m)
            if isinstance(a, int | float) and isinstance(b, int | float):
                row = {"split": split, "metric": m, "baseline": a, "bootstrapped": b, "delta": b - a}
                rows.append(row | intervals.get(split, {}).get(m, {}))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    nested: dict[str, Any] = {}
    for r in rows:
        nested.setdefault(r["split"], {})[r["metric"]] = {
            k: r[k]
            for k in ("baseline", "bootstrapped", "delta", "delta_ci", "baseline_ci", "bootstrapped_ci")
            if k in r
        }
    write_json(out_dir / "comparison.json", nested)
    write_long_table(nested, out_dir / LONG_DIR)
    lines = ["split,metric,model,value"]
    lines += [f"{r['split']},{r['metric']},{m},{r[m]:.6g}" for r in rows for m in ("baseline", "bootstrapped")]
    (out_dir / "comparison.csv").write_text("\n".join(lines) + "\n")
    q = json.loads(Path(quality).read_text()) if quality is not None and Path(quality).is_file() else {}
    line = verdict(rows, web_noise=q.get("web/noise_rate"), kept_noise=q.get("kept/noise_rate"))
    table = format_comparison(rows)
    (out_dir / "comparison.md").write_text(f"{line}\n\n{table}\n")
    plot_comparison(rows, out_dir / "comparison.png", caption=line)
    return {"rows": rows, "markdown": table, "verdict": line}


LONG_DIR = "long"
"""The comparison in long format: `long/<split>/<metric>.json`, one row each in `dvc metrics show`."""


def write_long_table(nested: dict[str, dict[str, dict[str, Any]]], folder: Path) -> int:
    """One small metrics file per split and metric ({baseline, bootstrapped, delta} and the delta's
    95% interval as delta_low / delta_high where there is one), so that `dvc metrics show
    data/metrics/report/long --md` is a table of one row per split and metric, a few columns wide.
    Files of metrics no longer compared are removed. Returns the number of files."""
    import shutil

    if folder.exists():
        shutil.rmtree(folder)
    n = 0
    for split, metrics in nested.items():
        for metric, r in metrics.items():
            row = {k: r[k] for k in ("baseline", "bootstrapped", "delta")}
            if "delta_ci" in r:
                row |= {"delta_low": r["delta_ci"][0], "delta_high": r["delta_ci"][1]}
            (folder / split).mkdir(parents=True, exist_ok=True)
            write_json(folder / split / f"{metric}.json", row)
            n += 1
    return n


def format_comparison(rows: list[dict[str, Any]]) -> str:
    out = ["| split | metric | baseline | bootstrapped | delta | delta 95% CI |", "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        ci = f"[{r['delta_ci'][0]:+.3f}, {r['delta_ci'][1]:+.3f}]" if "delta_ci" in r else ""
        values = f"{r['baseline']:.3f} | {r['bootstrapped']:.3f} | {r['delta']:+.3f}"
        out.append(f"| {r['split']} | {r['metric']} | {values} | {ci} |")
    return "\n".join(out)
