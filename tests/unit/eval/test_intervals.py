"""Intervals over images (a bootstrap), the report's intervals, and a verdict that calls a delta
inside its interval within noise."""

from __future__ import annotations

import numpy as np
import pandas as pd

from blip_core.capfilt.quality import synthetic_auroc_by_error
from blip_core.eval.intervals import mean_interval, paired_delta_interval, per_image_scores
from blip_core.eval.report import verdict


def test_mean_interval_holds_the_mean_and_narrows_with_more_images():
    rng = np.random.default_rng(0)
    small, large = rng.random(100) < 0.45, rng.random(1600) < 0.45
    lo_s, hi_s = mean_interval(small)
    lo_l, hi_l = mean_interval(large)
    assert lo_s <= small.mean() <= hi_s and lo_l <= large.mean() <= hi_l
    assert 0.05 < hi_s - lo_s < 0.3 and (hi_l - lo_l) < (hi_s - lo_s) / 2.5  # ~1/sqrt(16) as wide


def test_paired_delta_interval_separates_a_real_gain_from_noise():
    rng = np.random.default_rng(1)
    base = (rng.random(400) < 0.3).astype(float)
    better = np.where(rng.random(400) < 0.4, 1.0, base)  # a true gain of ~0.28
    lo, hi = paired_delta_interval(base, better)
    assert 0 < lo < better.mean() - base.mean() < hi
    same = np.where(rng.random(400) < 0.05, 1 - base, base)  # a few flips both ways: no gain
    lo, hi = paired_delta_interval(base, same)
    assert lo <= 0 <= hi


def test_per_image_scores_grounding_and_cider():
    scene = {"background": "plain", "objects": [{"shape": "circle", "color": "red", "size": "large", "row": 0,
                                                 "col": 0}]}  # fmt: skip
    refs = {"a": ["a red circle", "one big red circle"], "b": ["a red circle"], "c": ["three green stars"]}
    preds = {"a": "a big red circle", "b": "two blue squares", "c": "three green stars"}
    s = per_image_scores(preds, refs, {"a": scene, "b": scene, "c": None})
    assert s["grounded_true_rate"].tolist() == [1.0, 0.0]  # images with a scene only
    assert s["cider"][0] > s["cider"][1]


def test_verdict_calls_a_delta_inside_its_interval_within_noise():
    rows = [
        {"split": "test", "metric": "grounded_true_rate", "baseline": 0.3, "bootstrapped": 0.33, "delta": 0.03,
         "delta_ci": (-0.02, 0.08)},
        {"split": "novel", "metric": "grounded_true_rate", "baseline": 0.1, "bootstrapped": 0.2, "delta": 0.1,
         "delta_ci_low": 0.05, "delta_ci_high": 0.15},
    ]  # fmt: skip
    line = verdict(rows)
    assert "within noise" in line and "test grounded_true_rate +0.03" in line.split("within noise")[1]
    assert "novel grounded_true_rate +0.1" in line.split("worse")[0]  # better, beyond its interval


def test_filter_auroc_on_synthetic_captions_by_error_kind():
    tallies = ['{"color": [1, 1], "shape": [1, 1]}'] * 4 + ['{"color": [1, 0], "shape": [1, 1]}'] * 2
    tallies += ['{"relation": [1, 0], "color": [2, 2]}'] * 2
    syn = pd.DataFrame({
        "gt_noisy": [False] * 4 + [True] * 4,
        "itm_prob": [0.9, 0.8, 0.7, 0.6, 0.1, 0.2, 0.95, 0.85],  # colour errors caught, relations not
        "gt_attributes": tallies,
        "caption": ["a red circle"] * 6 + ["a red circle left of a red circle"] * 2,
    })  # fmt: skip
    by = synthetic_auroc_by_error(syn)
    assert by["color"] == 1.0 and by["relation"] < 0.5
    assert "repeated_pair" in by and "shape" not in by
