"""How good is the filter and what did CapFilt keep, measured against the world's ground truth.

The filter is scored as a *noise detector* on web captions: "removed" (ITM p(match) < threshold)
is the positive prediction, "noisy" (noise type other than clean) the positive label.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (scikit-learn; ties count half); nan if one class is empty."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels, dtype=bool)
    if labels.all() or not labels.any():
        return float("nan")
    return float(roc_auc_score(labels, np.asarray(scores, dtype=float)))


def _prf(pred: np.ndarray, label: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import precision_recall_fscore_support

    p, r, f, _ = precision_recall_fscore_support(label, pred, average="binary", zero_division=0)
    return {"precision": float(p), "recall": float(r), "f1": float(f)}


def filter_quality(selection: pd.DataFrame, threshold: float) -> dict[str, Any]:
    """Metrics of one CapFilt selection (rows of `select`, with gt_ columns where the world has them)."""
    out: dict[str, Any] = {"threshold": threshold, "num_candidates": int(len(selection))}
    for source, g in selection.groupby("source"):
        out[f"keep_rate/{source}"] = float(g["keep"].mean())
        out[f"num_kept/{source}"] = int(g["keep"].sum())
    out["keep_rate/all"] = float(selection["keep"].mean()) if len(selection) else 0.0
    if "repeat" in selection:  # kept once: the captioner wrote a caption the image already keeps
        out["kept/repeats_dropped"] = int(selection["repeat"].sum())
    if "over_cap" in selection:  # passed, but not among its image's `max_synthetic` best
        out["kept/over_cap_dropped"] = int(selection["over_cap"].sum())
    if "unsure" in selection:  # the captioner below `min_confidence` in one of its words
        out["kept/unsure_dropped"] = int(selection["unsure"].sum())
    web = selection[selection["source"].eq("web") & selection["gt_noisy"].notna()]
    if len(web):
        noisy = web["gt_noisy"].astype(bool).to_numpy()
        removed = (web["itm_prob"] < threshold).to_numpy()
        out["filter/auroc"] = auroc(noisy, -web["itm_prob"].to_numpy())
        out["filter/itc_auroc"] = auroc(noisy, -web["itc_cosine"].to_numpy())
        out |= {f"filter/{k}": v for k, v in _prf(removed, noisy).items()}
        out["web/noise_rate"] = float(noisy.mean())
        clean = ~noisy
        for nt, g in web.groupby("gt_noise_type"):
            out[f"filter/removed_rate/{nt}"] = float((g["itm_prob"] < threshold).mean())
            if nt != "clean" and clean.any():  # this noise type against the clean web captions
                versus = np.r_[np.zeros(int(clean.sum()), bool), np.ones(len(g), bool)]
                scores = np.r_[web["itm_prob"].to_numpy()[clean], g["itm_prob"].to_numpy()]
                out[f"filter/auroc/{nt}"] = auroc(versus, -scores)
    syn = selection[selection["source"].eq("synthetic") & selection["gt_noisy"].notna()]
    if len(syn):
        noisy = syn["gt_noisy"].astype(bool).to_numpy()
        out["synthetic/grounded_accuracy"] = float(1 - noisy.mean())
        out["synthetic/removed_rate"] = float((syn["itm_prob"] < threshold).mean())
        # can the filter tell the captioner's false captions from its true ones?
        out["synthetic/auroc"] = auroc(noisy, -syn["itm_prob"].to_numpy())
        out |= {f"synthetic/auroc/{kind}": v for kind, v in synthetic_auroc_by_error(syn).items()}
        if "confidence" in syn and syn["confidence"].notna().all():  # the captioner's own confidence, too
            out["synthetic/confidence_auroc"] = auroc(noisy, -syn["confidence"].to_numpy())
        out |= {f"synthetic/precision/{a}": v for a, v in attribute_precision(syn).items()}
    kept = selection[selection["keep"] & selection["gt_noisy"].notna()]
    if len(kept):
        out["kept/noise_rate"] = float(kept["gt_noisy"].astype(bool).mean())
    return out


def synthetic_auroc_by_error(syn: pd.DataFrame) -> dict[str, float]:
    """By error kind (an attribute the checker found false, or `repeated_pair`: one colour-shape pair
    named twice): AUROC of p(match) separating the true synthetic captions from the false ones with
    that error. The filter's blind spots by kind, where it shares the captioner's."""
    from blip_core.data.world.grounding import names_pair_twice

    noisy = syn["gt_noisy"].astype(bool).to_numpy()
    scores = syn["itm_prob"].to_numpy()
    if noisy.all() or not noisy.any():
        return {}
    kinds: dict[str, np.ndarray] = {}
    if "gt_attributes" in syn:
        tallies = [json.loads(t) if isinstance(t, str) else {} for t in syn["gt_attributes"]]
        attrs = sorted({a for t in tallies for a in t})
        for a in attrs:
            kinds[a] = np.array([t.get(a, [0, 0])[1] < t.get(a, [0, 0])[0] for t in tallies]) & noisy
    if "caption" in syn:
        kinds["repeated_pair"] = np.array([names_pair_twice(c) for c in syn["caption"]]) & noisy
    out = {}
    for kind, has in kinds.items():
        if has.any():
            versus = np.r_[np.zeros(int((~noisy).sum()), bool), np.ones(int(has.sum()), bool)]
            out[kind] = auroc(versus, -np.r_[scores[~noisy], scores[has]])
    return out


def attribute_precision(rows: pd.DataFrame) -> dict[str, float]:
    """True mentions over mentions of each attribute, summed over rows' `gt_attributes` tallies
    (synthetic captions; absent for score files written before the column existed)."""
    if "gt_attributes" not in rows:
        return {}
    totals: dict[str, list[int]] = {}
    for tally in rows["gt_attributes"].dropna():
        for attr, (mentions, true) in json.loads(tally).items():
            t = totals.setdefault(attr, [0, 0])
            t[0] += mentions
            t[1] += true
    return {a: t[1] / t[0] for a, t in sorted(totals.items()) if t[0]}


def plot_quality(selection: pd.DataFrame, threshold: float, out_dir: str | Path) -> list[Path]:
    """Score histograms by noise type and the filter's precision-recall curve, as PNG files.

    Made to be read at a glance: the x axis spans where the scores are, the clean web captions are a
    filled area against which each noise type is an outline, AUROC is in the legend, and the
    precision-recall curve shows chance (the noise rate) and the operating point of the threshold.
    """
    import matplotlib

    matplotlib.use("Agg")  # headless
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    labelled = selection[selection["gt_noise_type"].notna()]
    web = labelled[labelled["source"].eq("web")]
    scores = labelled["itm_prob"].to_numpy(dtype=float)
    lo, hi = np.quantile(scores, [0.005, 0.995]) if len(scores) else (0.0, 1.0)
    lo, hi = min(lo, threshold), max(hi, threshold)
    pad = max(hi - lo, 1e-3) * 0.05
    bins = np.linspace(lo - pad, hi + pad, 41)
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    clean = web[web["gt_noise_type"].eq("clean")]["itm_prob"]
    ax.hist(clean, bins=bins, density=True, color="0.8", label=f"clean web ({len(clean)})")
    for nt, g in labelled.groupby("gt_noise_type"):
        if nt == "clean":
            continue
        versus = pd.concat([clean, g["itm_prob"]])
        lab = np.r_[np.zeros(len(clean), bool), np.ones(len(g), bool)]
        a = auroc(lab, -versus.to_numpy()) if len(clean) else float("nan")
        ax.hist(g["itm_prob"], bins=bins, histtype="step", linewidth=1.6, density=True,
                label=f"{nt} ({len(g)}), AUROC vs clean {a:.2f}")  # fmt: skip
    ax.axvline(threshold, color="k", linestyle="--", label=f"threshold {threshold:.3f}")
    total = auroc(web["gt_noisy"].astype(bool).to_numpy(), -web["itm_prob"].to_numpy()) if len(web) else float("nan")
    ax.set(xlabel="filter ITM p(match)", ylabel="density", xlim=(bins[0], bins[-1]),
           title=f"Filter scores by ground-truth noise type (web AUROC {total:.3f})")  # fmt: skip
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(out_dir / "score_hist.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    if len(web) and web["gt_noisy"].nunique() == 2:
        noisy = web["gt_noisy"].astype(bool).to_numpy()
        curve = pr_curve(noisy, -web["itm_prob"].to_numpy())
        op = _prf((web["itm_prob"] < threshold).to_numpy(), noisy)
        fig, ax = plt.subplots(figsize=(5.2, 4.2))
        ax.plot(curve["recall"], curve["precision"], label=f"filter (AUROC {total:.3f})")
        ax.axhline(noisy.mean(), color="0.5", linestyle=":", label=f"chance (noise rate {noisy.mean():.2f})")
        ax.plot([op["recall"]], [op["precision"]], "ko", label=f"threshold {threshold:.3f}: F1 {op['f1']:.2f}")
        ax.set(xlabel="recall (noisy web captions removed)", ylabel="precision", title="Filter as a noise detector",
               xlim=(0, 1), ylim=(0, 1.02))  # fmt: skip
        ax.legend(fontsize=8, loc="lower left")
        fig.tight_layout()
        paths.append(out_dir / "precision_recall.png")
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)

    shares = noise_by_type(selection)
    if shares:
        types = list(shares["raw"])
        x = np.arange(len(types))
        fig, ax = plt.subplots(figsize=(7.0, 3.8))
        for i, (name, colour) in enumerate((("raw", "0.6"), ("kept", "tab:blue"))):
            vals = [shares[name].get(t, 0.0) for t in types]
            label = f"{'raw web pool' if name == 'raw' else 'kept set'} (noise {sum(vals):.3f})"
            bars = ax.bar(x + (i - 0.5) * 0.38, vals, 0.38, color=colour, label=label)
            ax.bar_label(bars, labels=[f"{v:.3f}" for v in vals], fontsize=7, padding=1)
        ax.set_xticks(x, types, fontsize=8)
        ax.set(ylabel="share of the captions", title="Noise by type: the raw web pool vs the kept set")
        ax.legend(fontsize=8)
        fig.tight_layout()
        paths.append(out_dir / "noise_by_type.png")
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    return paths


def noise_by_type(selection: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Share of each noise type among the raw web alt-texts ("raw") and among the kept captions
    ("kept"; a kept synthetic caption that is not fully grounded counts as `synthetic, ungrounded`),
    where the world's labels exist; {} without labels. The shares sum to each set's noise rate."""
    labelled = selection[selection["gt_noisy"].notna()]
    web = labelled[labelled["source"].eq("web")]
    if not len(web):
        return {}
    kind = labelled["gt_noise_type"].where(labelled["source"].eq("web"), "synthetic, ungrounded")
    noisy = labelled["gt_noisy"].astype(bool)
    types = sorted(set(kind[noisy & labelled["source"].eq("web")])) + ["synthetic, ungrounded"]
    kept = labelled["keep"].astype(bool)
    raw_share = kind[noisy & labelled["source"].eq("web")].value_counts() / len(web)
    kept_share = kind[noisy & kept].value_counts() / max(int(kept.sum()), 1)
    return {
        "raw": {t: float(raw_share.get(t, 0.0)) for t in types},
        "kept": {t: float(kept_share.get(t, 0.0)) for t in types},
    }


def pr_curve(labels: np.ndarray, scores: np.ndarray) -> pd.DataFrame:
    """Precision and recall at every distinct threshold of `scores` (higher = predicted positive)."""
    from sklearn.metrics import precision_recall_curve

    precision, recall, thresholds = precision_recall_curve(np.asarray(labels, dtype=bool), np.asarray(scores))
    # scikit-learn appends the (precision 1, recall 0) end point, which has no threshold
    return pd.DataFrame({"score": thresholds, "precision": precision[:-1], "recall": recall[:-1]})
