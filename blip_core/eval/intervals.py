"""Confidence intervals for the caption figures: a bootstrap over images (scipy.stats.bootstrap).

A split of a few hundred images gives a rate near 0.45 an sd of ~0.025-0.05, as large as the deltas
a verdict weighs, so every compared caption figure carries an interval: of each model's mean and of
the paired delta (the same images under both models, resampled together).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from blip_core.data.world.grounding import Scene, ground_caption

CONFIDENCE = 0.95
NUM_RESAMPLES = 2000
PER_IMAGE = ("grounded_true_rate", "grounded_precision", "cider")
"""The compared metrics that are means over images, so a bootstrap over images gives their interval."""


def split_references(folder: str | Path) -> tuple[dict[str, list[str]], dict[str, dict | None]]:
    """({key: reference captions}, {key: ground-truth scene or None}) of an image-caption split."""
    from blip_core.data.reader import iter_samples

    refs, scenes = {}, {}
    for s in iter_samples(folder):
        refs[s["key"]] = s["captions"]
        scenes[s["key"]] = s["meta"].get("gt", {}).get("scene")
    return refs, scenes


def per_image_scores(
    preds: dict[str, str], refs: dict[str, list[str]], scenes: dict[str, dict | None]
) -> dict[str, np.ndarray]:
    """Per image, in sorted key order (the images both `preds` and `refs` have): whether the caption
    is fully grounded and its grounded precision (images with a scene), and its CIDEr (all)."""
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    keys = sorted(set(preds) & set(refs))
    out: dict[str, np.ndarray] = {}
    grounded = [ground_caption(preds[k], Scene.from_dict(scenes[k])) for k in keys if scenes.get(k) is not None]
    if grounded:
        out["grounded_true_rate"] = np.array([g.is_true for g in grounded], dtype=float)
        out["grounded_precision"] = np.array([g.precision for g in grounded], dtype=float)
    if keys:
        tok = PTBTokenizer()
        g = tok.tokenize({k: [{"caption": c} for c in refs[k]] for k in keys})
        r = tok.tokenize({k: [{"caption": preds[k]}] for k in keys})
        _, per = Cider().compute_score(g, r)  # CIDEr's per-image scores, in the dict's key order
        order = list(g)
        by_key = dict(zip(order, np.asarray(per, dtype=float)))
        out["cider"] = np.array([by_key[k] for k in keys])
    return out


def mean_interval(values: Iterable[float], *, seed: int = 0) -> tuple[float, float]:
    """The bootstrap percentile interval of a mean over images."""
    x = np.asarray(list(values), dtype=float)
    if len(x) < 2 or np.all(x == x[0]):  # no spread to resample
        m = float(x.mean()) if len(x) else float("nan")
        return m, m
    res = stats.bootstrap((x,), np.mean, confidence_level=CONFIDENCE, n_resamples=NUM_RESAMPLES,
                          method="percentile", random_state=seed)  # fmt: skip
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def paired_delta_interval(baseline: np.ndarray, other: np.ndarray, *, seed: int = 0) -> tuple[float, float]:
    """The bootstrap percentile interval of mean(other) - mean(baseline) over the same images,
    resampled in pairs."""
    a, b = np.asarray(baseline, dtype=float), np.asarray(other, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired interval needs the same images: {a.shape} vs {b.shape}")
    d = b - a
    if len(d) < 2 or np.all(d == d[0]):
        return (float(d.mean()), float(d.mean())) if len(d) else (float("nan"), float("nan"))
    res = stats.bootstrap((a, b), lambda x, y, axis=-1: y.mean(axis=axis) - x.mean(axis=axis), paired=True,
                          vectorized=True, confidence_level=CONFIDENCE, n_resamples=NUM_RESAMPLES,
                          method="percentile", random_state=seed)  # fmt: skip
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def caption_intervals(
    baseline: dict[str, str], bootstrapped: dict[str, str], folder: str | Path
) -> dict[str, dict[str, Any]]:
    """{metric: {baseline_ci, bootstrapped_ci, delta_ci, num_images}} of one split, from both models'
    captions of it and the split's references and scenes."""
    refs, scenes = split_references(folder)
    common = set(baseline) & set(bootstrapped)
    a = per_image_scores({k: baseline[k] for k in common}, refs, scenes)
    b = per_image_scores({k: bootstrapped[k] for k in common}, refs, scenes)
    return {
        m: {
            "baseline_ci": list(mean_interval(a[m])),
            "bootstrapped_ci": list(mean_interval(b[m])),
            "delta_ci": list(paired_delta_interval(a[m], b[m])),
            "num_images": len(a[m]),
        }
        for m in PER_IMAGE
        if m in a and m in b
    }
