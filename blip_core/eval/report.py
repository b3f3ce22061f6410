"""Baseline vs bootstrapped at a glance: one grouped bar chart of the evaluation metrics."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

MODELS = ("baseline", "bootstrapped")
COLOURS = {"baseline": "0.65", "bootstrapped": "tab:blue"}


def plot_comparison(rows: Sequence[dict[str, Any]], path: str | Path, *, title: str | None = None) -> Path:
    """`rows` as the report writes them ({split, metric, baseline, bootstrapped, delta}) -> a PNG.

    One panel per metric, since their scales differ (recall in %, CIDEr around 1, rates in 0-1); in
    each, the splits side by side, a bar per model with its value, and the delta in the panel title,
    green where the bootstrapped model is better.
    """
    import matplotlib

    matplotlib.use("Agg")  # headless
    import matplotlib.pyplot as plt
    import numpy as np

    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    splits = sorted({r["split"] for r in rows})
    by = {(r["metric"], r["split"]): r for r in rows}
    ncols = min(4, max(1, len(metrics)))
    nrows = max(1, -(-len(metrics) // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 2.9 * nrows), squeeze=False)
    width = 0.38
    for ax, metric in zip(axes.flat, metrics):
        x = np.arange(len(splits))
        top = 0.0
        for i, model in enumerate(MODELS):
            values = [by[(metric, s)][model] if (metric, s) in by else np.nan for s in splits]
            bars = ax.bar(x + (i - 0.5) * width, values, width, color=COLOURS[model], label=model)
            ax.bar_label(bars, labels=[_fmt(v) for v in values], fontsize=7, padding=1)
            top = max([top, *[v for v in values if np.isfinite(v)]])
        deltas = [f"{s} {by[(metric, s)]['delta']:+.3g}" for s in splits if (metric, s) in by]
        better = [by[(metric, s)]["delta"] > 0 for s in splits if (metric, s) in by]
        colour = "tab:green" if better and all(better) else ("tab:red" if better and not any(better) else "k")
        ax.set_title(f"{metric}\nΔ {', '.join(deltas)}", fontsize=9, color=colour)
        ax.set_xticks(x, splits)
        ax.set_ylim(0, top * 1.2 if top > 0 else 1)
        ax.tick_params(labelsize=8)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="lower left")
    fig.suptitle(title or "Baseline vs bootstrapped (after fine-tuning)", fontsize=11)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _fmt(v: float) -> str:
    if v != v:  # NaN: the metric is missing for this split
        return ""
    return f"{v:.1f}" if abs(v) >= 10 else f"{v:.3g}"
