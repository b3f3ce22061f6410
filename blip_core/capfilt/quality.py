"""How good is the filter and what did CapFilt keep, measured against the world's ground truth.

The filter is scored as a *noise detector* on web captions: "removed" (ITM p(match) < threshold)
is the positive prediction, "noisy" (noise type other than clean) the positive label.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties); nan if one class is empty."""
    labels = np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = pd.Series(np.asarray(scores, dtype=float)).rank(method="average").to_numpy()
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _prf(pred: np.ndarray, label: np.ndarray) -> dict[str, float]:
    tp = int((pred & label).sum())
    precision = tp / max(int(pred.sum()), 1)
    recall = tp / max(int(label.sum()), 1)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def filter_quality(selection: pd.DataFrame, threshold: float) -> dict[str, Any]:
    """Metrics of one CapFilt selection (rows of `select`, with gt_ columns where the world has them)."""
    out: dict[str, Any] = {"threshold": threshold, "num_candidates": int(len(selection))}
    for source, g in selection.groupby("source"):
        out[f"keep_rate/{source}"] = float(g["keep"].mean())
        out[f"num_kept/{source}"] = int(g["keep"].sum())
    out["keep_rate/all"] = float(selection["keep"].mean()) if len(selection) else 0.0
    web = selection[selection["source"].eq("web") & selection["gt_noisy"].notna()]
    if len(web):
        noisy = web["gt_noisy"].astype(bool).to_numpy()
        removed = (web["itm_prob"] < threshold).to_numpy()
        out["filter/auroc"] = auroc(noisy, -web["itm_prob"].to_numpy())
        out["filter/itc_auroc"] = auroc(noisy, -web["itc_cosine"].to_numpy())
        out |= {f"filter/{k}": v for k, v in _prf(removed, noisy).items()}
        out["web/noise_rate"] = float(noisy.mean())
        for nt, g in web.groupby("gt_noise_type"):
            out[f"filter/removed_rate/{nt}"] = float((g["itm_prob"] < threshold).mean())
    syn = selection[selection["source"].eq("synthetic") & selection["gt_noisy"].notna()]
    if len(syn):
        out["synthetic/grounded_accuracy"] = float(1 - syn["gt_noisy"].astype(bool).mean())
        out["synthetic/removed_rate"] = float((syn["itm_prob"] < threshold).mean())
    kept = selection[selection["keep"] & selection["gt_noisy"].notna()]
    if len(kept):
        out["kept/noise_rate"] = float(kept["gt_noisy"].astype(bool).mean())
    return out


def plot_quality(selection: pd.DataFrame, threshold: float, out_dir: str | Path) -> list[Path]:
    """Score histograms by noise type and the filter's precision-recall curve, as PNG files."""
    import matplotlib

    matplotlib.use("Agg")  # headless
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    labelled = selection[selection["gt_noise_type"].notna()]
    fig, ax = plt.subplots(figsize=(7, 4))
    bins = np.linspace(0, 1, 41)
    for nt, g in labelled.groupby("gt_noise_type"):
        ax.hist(g["itm_prob"], bins=bins, histtype="step", density=True, label=f"{nt} ({len(g)})")
    ax.axvline(threshold, color="k", linestyle="--", label=f"threshold {threshold}")
    ax.set(xlabel="filter ITM p(match)", ylabel="density", title="Filter scores by ground-truth noise type")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(out_dir / "score_hist.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    web = labelled[labelled["source"].eq("web")]
    if len(web) and web["gt_noisy"].nunique() == 2:
        curve = pr_curve(web["gt_noisy"].astype(bool).to_numpy(), -web["itm_prob"].to_numpy())
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.plot(curve["recall"], curve["precision"])
        ax.set(xlabel="recall (noisy web captions removed)", ylabel="precision", title="Filter as a noise detector")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        fig.tight_layout()
        paths.append(out_dir / "precision_recall.png")
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    return paths


def pr_curve(labels: np.ndarray, scores: np.ndarray) -> pd.DataFrame:
    """Precision and recall at every threshold of `scores` (higher = predicted positive)."""
    order = np.argsort(-scores, kind="stable")
    labels = np.asarray(labels, dtype=bool)[order]
    tp = np.cumsum(labels)
    k = np.arange(1, len(labels) + 1)
    return pd.DataFrame(
        {"score": np.asarray(scores)[order], "precision": tp / k, "recall": tp / max(int(labels.sum()), 1)}
    )
