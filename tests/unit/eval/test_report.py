"""Does CapFilt work, in one line and one chart: the verdict, the delta chart, the noise by type."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from blip_core.capfilt.quality import noise_by_type, plot_quality
from blip_core.eval.report import plot_comparison, verdict

ROWS = [
    {"split": "test", "metric": "r_mean", "baseline": 80.0, "bootstrapped": 82.0, "delta": 2.0},
    {"split": "novel", "metric": "r_mean", "baseline": 70.0, "bootstrapped": 70.5, "delta": 0.5},
    {"split": "test", "metric": "grounded_true_rate", "baseline": 0.5, "bootstrapped": 0.4, "delta": -0.1},
    {"split": "test", "metric": "bleu4", "baseline": 0.2, "bootstrapped": 0.9, "delta": 0.7},  # not a headline
]


def test_the_verdict_of_one_run_says_what_improved_what_got_worse_and_the_kept_noise():
    line = verdict(ROWS, web_noise=0.4, kept_noise=0.3)
    assert "\n" not in line and line.startswith("CapFilt verdict (one run")
    assert "better: test r_mean +2, novel r_mean +0.5" in line and "worse: test grounded_true_rate -0.1" in line
    assert "bleu4" not in line  # the headline figures only
    assert "kept set cleaner than the raw web (noise 0.300 vs 0.400)" in line
    assert "dirtier than the raw web (noise 0.500 vs 0.400)" in verdict(ROWS, web_noise=0.4, kept_noise=0.5)


def test_with_the_seed_spread_a_delta_within_it_is_neither_better_nor_worse():
    spread = {("test", "r_mean"): 1.0, ("novel", "r_mean"): 1.0, ("test", "grounded_true_rate"): 0.2}
    line = verdict(ROWS, spread=spread)
    assert "better beyond the seed sd: test r_mean +2 (sd 1)" in line
    assert "worse beyond it: none" in line
    assert "within it: novel r_mean +0.5 (sd 1), test grounded_true_rate -0.1 (sd 0.2)" in line
    assert "kept set" not in line  # no noise figures given


def test_the_comparison_chart_plots_the_deltas(tmp_path):
    path = plot_comparison(ROWS, tmp_path / "c.png", spread={("test", "r_mean"): 1.0})
    with Image.open(path) as im:
        assert im.size[0] > 400 and im.size[1] > 200


def test_the_chart_draws_intervals_greys_those_that_hold_zero_and_keeps_small_deltas_small():
    import matplotlib.pyplot as plt

    from blip_core.eval.report import comparison_figure

    rows = [
        {"split": "test", "metric": "grounded_true_rate", "baseline": 0.30, "bootstrapped": 0.297, "delta": -0.003,
         "delta_ci": [-0.04, 0.035]},
        {"split": "novel", "metric": "grounded_true_rate", "baseline": 0.15, "bootstrapped": 0.25, "delta": 0.10,
         "delta_ci": [0.06, 0.14]},
        {"split": "test", "metric": "cider", "baseline": 1.50, "bootstrapped": 1.497, "delta": -0.003},
    ]  # fmt: skip
    fig = comparison_figure(rows)
    rate, cider = fig.axes[0], fig.axes[1]
    colours = {t.get_text().split("\n")[0]: p.get_facecolor() for t, p in zip(rate.get_xticklabels(), rate.patches)}
    grey, green = matplotlib.colors.to_rgba("0.6"), matplotlib.colors.to_rgba("tab:green")
    assert colours == {"novel": green, "test": grey}  # the test interval holds 0, novel's does not
    assert "95% interval" in fig._suptitle.get_text() and "sd" not in fig._suptitle.get_text()
    low, high = cider.get_ylim()  # no interval: the scale is at least +-10% of the values (1.5)
    assert high >= 0.15 and low <= -0.15
    plt.close(fig)


def _selection() -> pd.DataFrame:
    # 4 web alt-texts (1 spam, 1 corrupted) and 2 synthetic captions (1 not grounded)
    return pd.DataFrame({
        "source": ["web"] * 4 + ["synthetic"] * 2,
        "gt_noisy": pd.array([False, True, True, False, False, True], dtype="boolean"),
        "gt_noise_type": ["clean", "spam", "corrupted", "clean", None, None],
        "keep": [True, False, True, True, True, True],
        "itm_prob": [0.9, 0.1, 0.6, 0.8, 0.7, 0.6],
    })  # fmt: skip


def test_noise_by_type_sums_to_the_raw_and_kept_noise_rates():
    shares = noise_by_type(_selection())
    assert shares["raw"] == {"corrupted": 0.25, "spam": 0.25, "synthetic, ungrounded": 0.0}
    # kept: 3 web (1 corrupted) + 2 synthetic (1 ungrounded) = 5 captions, 2 of them noise
    assert shares["kept"] == pytest.approx({"corrupted": 0.2, "spam": 0.0, "synthetic, ungrounded": 0.2})
    unlabelled = _selection().assign(gt_noisy=pd.array([None] * 6, dtype="boolean"))
    assert noise_by_type(unlabelled) == {}


def test_plot_quality_writes_the_noise_by_type_chart(tmp_path):
    paths = plot_quality(_selection(), 0.5, tmp_path)
    assert (tmp_path / "noise_by_type.png") in paths
    assert np.asarray(Image.open(tmp_path / "noise_by_type.png")).size > 0


def test_the_caption_grid_title_clears_the_top_row_and_references_are_readable():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from blip_core.eval.captioning import grid_figure

    long = "there are two large red circles to the left of one small blue square on a striped background"
    samples = [{"key": f"k{i}", "image": Image.new("RGB", (64, 64)), "captions": [long], "meta": {}} for i in range(8)]
    fig = grid_figure(samples, {f"k{i}": long for i in range(8)}, title="test beam captions (baseline)")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    title = fig._suptitle.get_window_extent(renderer)
    tops = [ax.title.get_window_extent(renderer) for ax in fig.axes]
    assert title.y0 > max(t.y1 for t in tops)  # the title is above every caption of the top row
    assert title.y1 <= fig.bbox.y1  # and inside the figure
    refs = [t for ax in fig.axes for t in ax.texts]
    assert refs and all(t.get_fontsize() >= 7 for t in refs)
    plt.close(fig)


def test_the_long_table_is_one_small_file_per_split_and_metric(tmp_path):
    import json

    from flows.stages.report import write_long_table

    nested = {
        "test": {"r_mean": {"baseline": 80.0, "bootstrapped": 82.0, "delta": 2.0},
                 "cider": {"baseline": 1.5, "bootstrapped": 1.6, "delta": 0.1, "delta_ci": [0.02, 0.18],
                           "baseline_ci": [1.4, 1.6]}},
        "novel": {"r_mean": {"baseline": 70.0, "bootstrapped": 69.0, "delta": -1.0}},
    }  # fmt: skip
    stale = tmp_path / "long" / "test" / "meteor.json"  # a metric no longer compared
    stale.parent.mkdir(parents=True)
    stale.write_text("{}")
    assert write_long_table(nested, tmp_path / "long") == 3
    files = sorted(str(f.relative_to(tmp_path / "long")) for f in (tmp_path / "long").rglob("*.json"))
    assert files == ["novel/r_mean.json", "test/cider.json", "test/r_mean.json"]
    cider = json.loads((tmp_path / "long" / "test" / "cider.json").read_text())
    assert cider == {"baseline": 1.5, "bootstrapped": 1.6, "delta": 0.1, "delta_low": 0.02, "delta_high": 0.18}
