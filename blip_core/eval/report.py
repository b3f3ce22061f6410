"""Baseline vs bootstrapped at a glance: a one-line verdict and a chart of the deltas."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

HEADLINE = (("test", "r_mean"), ("novel", "r_mean"), ("test", "grounded_true_rate"),
            ("novel", "grounded_true_rate"), ("test", "cider"))  # fmt: skip
"""The figures a verdict weighs: retrieval and fully grounded captions on test and novel, test CIDEr."""


def verdict(
    rows: Sequence[dict[str, Any]],
    *,
    web_noise: float | None = None,
    kept_noise: float | None = None,
    spread: dict[tuple[str, str], float] | None = None,
) -> str:
    """Did CapFilt work? One line: which headline figures the bootstrapped model improved and which
    got worse (beyond the seed sd where `spread` gives it: {(split, metric): sd of the delta}), and
    whether the kept set is cleaner than the raw web pool. A delta whose row has a `delta_ci` (95%
    over images, blip_core.eval.intervals) that holds 0 is "within noise", seed spread or not."""
    delta = {(r["split"], r["metric"]): r["delta"] for r in rows}
    cis = {(r["split"], r["metric"]): r.get("delta_ci", (r.get("delta_ci_low"), r.get("delta_ci_high"))) for r in rows}
    cis = {k: v for k, v in cis.items() if None not in v}  # comparison.json stores the interval's ends
    better, worse, within, noise = [], [], [], []
    for key in HEADLINE:
        if key not in delta:
            continue
        d, sd, ci = delta[key], (spread or {}).get(key), cis.get(key)
        text = f"{key[0]} {key[1]} {d:+.3g}" + (f" (sd {sd:.2g})" if sd is not None else "")
        text += f" (95% CI {ci[0]:+.3g} to {ci[1]:+.3g})" if ci is not None else ""
        if ci is not None and ci[0] <= 0 <= ci[1] and d != 0:
            noise.append(text)
        elif sd is not None and abs(d) <= sd or d == 0:
            within.append(text)
        else:
            (better if d > 0 else worse).append(text)
    if spread:
        parts = [f"better beyond the seed sd: {', '.join(better) or 'none'}",
                 f"worse beyond it: {', '.join(worse) or 'none'}",
                 f"within it: {', '.join(within) or 'none'}"]  # fmt: skip
        head = "CapFilt verdict"
    else:
        parts = [f"better: {', '.join(better) or 'none'}", f"worse: {', '.join(worse) or 'none'}"]
        parts += [f"unchanged: {', '.join(within)}"] if within else []
        head = "CapFilt verdict (one run, no seed spread: `make effect` measures it)"
    parts += [f"within noise (the 95% interval over images holds 0): {', '.join(noise)}"] if noise else []
    if web_noise is not None and kept_noise is not None:
        word = (
            "cleaner than" if kept_noise < web_noise else ("dirtier than" if kept_noise > web_noise else "as noisy as")
        )
        parts.append(f"kept set {word} the raw web (noise {kept_noise:.3f} vs {web_noise:.3f})")
    return f"{head}: " + "; ".join(parts) + "."


def plot_comparison(
    rows: Sequence[dict[str, Any]],
    path: str | Path,
    *,
    title: str | None = None,
    spread: dict[tuple[str, str], float] | None = None,
    caption: str | None = None,
) -> Path:
    """`comparison_figure` saved as a PNG at `path`."""
    import matplotlib

    matplotlib.use("Agg")  # headless
    import matplotlib.pyplot as plt

    fig = comparison_figure(rows, title=title, spread=spread, caption=caption)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def comparison_figure(
    rows: Sequence[dict[str, Any]],
    *,
    title: str | None = None,
    spread: dict[tuple[str, str], float] | None = None,
    caption: str | None = None,
):
    """`rows` as the report writes them ({split, metric, baseline, bootstrapped, delta}, and
    `delta_ci` where the evaluation has one) -> a PNG of the deltas (bootstrapped - baseline), what a
    reader needs to see: one panel per metric, since their units differ; a bar per split around zero
    with its error bar (the seed sd where `spread` gives it, else the 95% interval over images);
    green above zero and beyond the error bar, red below, grey where the bar holds zero; both values
    under each bar. Each panel's scale spans at least +-10% of its metric's values, so a change of
    -0.003 on a rate near 0.3 looks small, not like the whole panel.
    `caption`: a line under the panels (the verdict).
    """
    import textwrap

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
    any_ci = False
    for ax, metric in zip(axes.flat, metrics):
        present = [s for s in splits if (metric, s) in by]
        x = np.arange(len(present))
        deltas = np.array([by[(metric, s)]["delta"] for s in present], dtype=float)
        lo, hi = np.zeros(len(present)), np.zeros(len(present))  # the error bar below and above each delta
        for i, (s, d) in enumerate(zip(present, deltas)):
            sd, ci = (spread or {}).get((s, metric)), by[(metric, s)].get("delta_ci")
            if sd is not None:
                lo[i] = hi[i] = sd
            elif ci is not None and spread is None:
                lo[i], hi[i] = max(d - ci[0], 0.0), max(ci[1] - d, 0.0)
                any_ci = True
        colours = [_delta_colour(d, d - a, d + b) for d, a, b in zip(deltas, lo, hi)]
        err = np.array([lo, hi]) if (lo > 0).any() or (hi > 0).any() else None
        bars = ax.bar(x, deltas, 0.6, color=colours, yerr=err, capsize=3 if err is not None else 0)
        ax.bar_label(bars, labels=[f"{d:+.3g}" for d in deltas], fontsize=7, padding=1)
        ax.axhline(0, color="k", linewidth=0.8)
        ax.set_xticks(x, [f"{s}\n{_fmt(by[(metric, s)]['baseline'])} → {_fmt(by[(metric, s)]['bootstrapped'])}"
                          for s in present])  # fmt: skip
        values = [abs(v) for s in present for v in (by[(metric, s)]["baseline"], by[(metric, s)]["bootstrapped"])
                  if v == v]  # fmt: skip
        reach = max([*(np.abs(deltas) + np.maximum(lo, hi)), 0.1 * max(values or [0.0])])
        ax.set_ylim(-1.3 * reach if reach > 0 else -1, 1.3 * reach if reach > 0 else 1)
        ax.set_title(metric, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.axis("off")
    if spread:
        known = "error bars: seed sd (make effect); grey: within it"
    elif any_ci:
        known = "error bars: 95% interval over images; grey: it holds 0"
    else:
        known = "one run, no interval: colour by sign only"
    fig.suptitle(title or f"Bootstrapped − baseline, after fine-tuning (labels: baseline → bootstrapped; green "
                          f"better, red worse; {known})", fontsize=9)  # fmt: skip
    if caption:
        fig.text(0.01, 0.005, textwrap.fill(caption, width=int(30 * ncols)), fontsize=8, va="bottom")
        fig.tight_layout(rect=(0, 0.07, 1, 1))
    else:
        fig.tight_layout()
    return fig


def _delta_colour(delta: float, low: float, high: float) -> str:
    """Grey where the error bar [low, high] around `delta` holds zero (or delta is 0), else by sign."""
    if delta == 0 or low <= 0 <= high and low != high:
        return "0.6"
    return "tab:green" if delta > 0 else "tab:red"


def _fmt(v: float) -> str:
    if v != v:  # NaN: the metric is missing for this split
        return ""
    return f"{v:.1f}" if abs(v) >= 10 else f"{v:.3g}"
