"""The bootstrap-effect report: per-seed figures from a run's files, mean and sd, markdown."""

from __future__ import annotations

import json
import statistics

import pandas as pd
import pytest

from flows import effect


def _fake_run(root, *, auroc, base_r, boot_r, threshold_mode="calibrated"):
    m = root / "metrics"
    (m / "capfilt").mkdir(parents=True)
    quality = {"filter/auroc": auroc, "web/noise_rate": 0.4, "kept/noise_rate": 0.2, "policy": "both",
               "synthetic/grounded_accuracy": 0.3, "threshold": 0.31, "threshold_mode": threshold_mode,
               "keep_rate/web": 0.5, "keep_rate/synthetic": 0.4, "filter/auroc/corrupted": auroc - 0.1,
               "synthetic/precision/shape": 0.6, "synthetic/precision/relation": 0.1, "synthetic/auroc": 0.65,
               "synthetic/auroc/relation": 0.6, "synthetic/auroc/repeated_pair": 0.7}  # fmt: skip
    (m / "capfilt" / "capfilt_quality.json").write_text(json.dumps(quality))
    for model, r in (("baseline", base_r), ("bootstrapped", boot_r)):
        ev = {
            s: {
                "r_mean": r,
                "grounded_true_rate": r / 100,
                "cider": 1.0,
                "grounded_precision_shape": r / 50,
                "grounded_precision_color": 0.9,
                "probe_shape_f1": 0.5 + r / 100,
                "grounded_repeated_pair_rate": 0.9 - r / 100,
                "scene_repeated_pair_rate": 0.4,
                "binding_acc": 0.99,
                "itm_binding_acc": 0.5 + r / 100,
                "relation_direction_acc": 0.5,
                "itm_relation_direction_acc": 0.48,
                "count_acc": 0.55,
                "itm_count_acc": 0.52,
            }
            for s in ("test", "novel")
        }
        (m / f"eval_{model}.json").write_text(json.dumps(ev))
    # scores of 4 web captions (2 noisy) and 2 synthetic ones, for the fixed-threshold figures
    sel = pd.DataFrame({
        "key": ["a", "b", "c", "d", "a", "b"], "caption": ["w1", "w2", "w3", "w4", "s1", "s2"],
        "source": ["web"] * 4 + ["synthetic"] * 2, "itm_prob": [0.9, 0.6, 0.4, 0.2, 0.7, 0.3],
        "itc_cosine": [0.5] * 6, "gt_noisy": [False, True, False, True, False, True],
        "gt_noise_type": ["clean", "spam", "clean", "mismatched", None, None],
    })  # fmt: skip
    (root / "capfilt").mkdir()
    sel.to_parquet(root / "capfilt" / "selection.parquet")
    meta = {q: quality.pop(q) for q in ("policy", "threshold_mode")}  # as run_select writes them
    (root / "capfilt" / "selection.json").write_text(json.dumps(meta | {"threshold": quality["threshold"]}))
    (m / "capfilt" / "capfilt_quality.json").write_text(json.dumps(quality))


def test_run_summary_reads_a_finished_run(tmp_path):
    _fake_run(tmp_path, auroc=0.8, base_r=10.0, boot_r=13.0)
    s = effect.run_summary(tmp_path)
    assert s["filter_auroc"] == 0.8 and s["kept_noise_rate"] == 0.2
    assert s["baseline"]["test_r_mean"] == 10.0 and s["delta"]["novel_r_mean"] == pytest.approx(3.0)
    # at the paper's 0.5, policy both keeps web 0.9, 0.6 and synthetic 0.7: one of the three is noisy
    assert s["at_threshold_0.5"]["kept_noise_rate"] == pytest.approx(1 / 3)
    assert s["at_threshold_0.5"]["keep_rate_web"] == pytest.approx(0.5)
    # the 2x2 at the run's threshold (0.31): filter keeps web 0.9, 0.6 (noisy), 0.4; captioner keeps all
    by_policy = s["kept_noise_by_policy"]
    assert by_policy["none"] == pytest.approx(0.5) and by_policy["filter"] == pytest.approx(1 / 3)
    assert by_policy["captioner"] == pytest.approx(0.5) and by_policy["both"] == pytest.approx(1 / 4)
    assert any("filter AUROC" in line and "0.800" in line for line in effect.quality_lines(s))
    # the figures of the vision-start issue: probe, corrupted AUROC, kept noise at 0.5, by attribute
    assert s["shape_probe_f1"] == pytest.approx(0.6) and s["filter_auroc_corrupted"] == pytest.approx(0.7)
    assert s["kept_noise_rate_fixed_0_5"] == pytest.approx(1 / 3) and s["kept_over_raw"] == pytest.approx(0.5)
    assert s["baseline"]["attribute_precision"] == {"color": 0.9, "shape": 0.2}
    assert s["synthetic_attribute_precision"] == {"shape": 0.6, "relation": 0.1}
    assert s["delta"]["shape_probe_f1"] == pytest.approx(0.03)
    # the true-captions issue's figures: the repeated pair against the scenes, the filter on synthetic captions
    assert s["baseline"]["repeated_pair_rate"] == pytest.approx(0.8)
    assert s["baseline"]["scene_repeated_pair_rate"] == 0.4
    assert s["baseline"]["repeated_pair_excess"] == pytest.approx(0.4)
    assert s["baseline"]["composition"] == {
        "binding_acc": 0.99,
        "relation_direction_acc": 0.5,
        "itm_binding_acc": pytest.approx(0.6),
        "itm_relation_direction_acc": 0.48,
        "count_acc": 0.55,
        "itm_count_acc": 0.52,
    }
    assert s["synthetic_auroc"] == 0.65 and s["synthetic_auroc_by_error"] == {"relation": 0.6, "repeated_pair": 0.7}
    assert any("p(match): AUROC 0.650" in line for line in effect.quality_lines(s))
    assert any("named twice in 0.800" in line and "0.400" in line for line in effect.quality_lines(s))
    lines = effect.quality_lines(s)
    assert any("corrupted" in line and "0.700" in line for line in lines)
    table = next(i for i, line in enumerate(lines) if "attribute precision" in line)
    assert "shape" in lines[table + 1] and "0.20" in lines[table + 2] and "0.60" in lines[table + 4]


def test_run_summary_of_a_missing_run_is_empty(tmp_path):
    assert effect.run_summary(tmp_path) == {}
    assert all("n/a" in line for line in effect.quality_lines({})[:2])


def test_aggregate_and_markdown(tmp_path):
    per_seed = []
    for seed, (auroc, base, boot) in enumerate([(0.8, 10.0, 13.0), (0.9, 11.0, 12.0), (0.85, 9.0, 14.0)], start=1):
        _fake_run(tmp_path / str(seed), auroc=auroc, base_r=base, boot_r=boot)
        per_seed.append({"seed": seed} | effect.run_summary(tmp_path / str(seed)))
    per_seed.append({"seed": 4, "error": "DataQualityError: kept noise 0.8 > 0.7"})
    mean, sd = effect.aggregate(per_seed)
    assert mean["filter_auroc"] == pytest.approx(0.85)
    assert sd["filter_auroc"] == pytest.approx(statistics.stdev([0.8, 0.9, 0.85]))
    assert mean["delta"]["test_r_mean"] == pytest.approx(3.0) and sd["delta"]["test_r_mean"] == pytest.approx(2.0)
    assert "seed" not in mean
    report = {"params": "params.yaml", "date": "2026-11-23", "machine": "cpu", "wall_seconds": 60.0,
              "per_seed": per_seed, "mean": mean, "sd": sd}  # fmt: skip
    md = effect.render_markdown(report)
    assert "| 4 | stopped: DataQualityError" in md
    assert "| test_r_mean | +3.000 | 2.000 | yes |" in md
    # a repeated pair is a fall to gain; the scenes' own rate is no model's delta
    assert "| repeated_pair_rate | -0.030 | 0.020 | yes |" in md and "scene_repeated_pair_rate" not in mean["delta"]
    assert mean["kept_noise_by_policy"]["filter"] == pytest.approx(1 / 3)
    assert "| 1 | 0.500 | 0.333 | 0.500 | 0.250 |" in md
    # nested figures aggregate too, and the targets table says which are met
    assert mean["baseline"]["attribute_precision"]["shape"] == pytest.approx(0.2)
    assert sd["baseline"]["attribute_precision"]["shape"] == pytest.approx(statistics.stdev([0.2, 0.22, 0.18]))
    assert "| filter AUROC, noisy vs clean web captions | >= 0.95 | 0.850 ± 0.050 | no |" in md
    assert "| filter AUROC, synthetic captions true vs false | >= 0.85 | 0.650 ± 0.000 | no |" in md
    assert "| precision of color in test beam captions (baseline) | >= 0.95 | 0.900 ± 0.000 | no |" in md
    assert "| repeated colour-shape pair, captions - scenes (baseline) | <= 0.1 | 0.400 ± 0.010 | no |" in md
    assert "| baseline | 0.800 ± 0.010 | 0.400 |" in md and "| relation | 0.600 ± 0.000 |" in md
    assert "| kept-set noise / raw web noise (calibrated threshold) | <= 0.5 | 0.500 ± 0.000 | yes |" in md
    assert "| baseline, test beam | 0.90 | 0.20 |" in md
    row = "| baseline | 0.990 ± 0.000 | 0.500 ± 0.000 | 0.550 ± 0.000 | 0.600 ± 0.010 | 0.480 ± 0.000 | 0.520 ± 0.000 |"
    assert row in md
    # the study's verdict: mean deltas against their sd over the seeds that finished
    assert "CapFilt verdict: better beyond the seed sd: test r_mean +3 (sd 2)" in md
    assert "kept set cleaner than the raw web (noise 0.200 vs 0.400)" in md


def test_a_run_borrows_the_seed_spread_of_a_study_with_its_recipe_only(tmp_path):
    """make run's verdict quotes `make effect`'s seed sd when the study ran the same recipe (any world
    seed, any gate bounds); another recipe, or a one-seed study, gives the one-run verdict."""
    import yaml

    _fake_run(tmp_path / "run", auroc=0.8, base_r=10.0, boot_r=13.0)
    (tmp_path / "run" / "metrics" / "report").mkdir()
    nested = {s: {"r_mean": {"baseline": 10.0, "bootstrapped": 13.0, "delta": 3.0}} for s in ("test", "novel")}
    (tmp_path / "run" / "metrics" / "report" / "comparison.json").write_text(json.dumps(nested))
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"world": {"seed": 0, "num_web": 100}, "validate": {"max_kept_over_raw": 1.0}}))
    seeds = [{"seed": s, "delta": {}} for s in (1, 2, 3)]
    study = tmp_path / "effect.json"
    doc = {"recipe_hash": effect.recipe_hash(params), "per_seed": seeds, "sd": {"delta": {"test_r_mean": 4.0}}}
    study.write_text(json.dumps(doc))
    other = tmp_path / "other.yaml"  # another world seed and gate bound: the same recipe
    other.write_text(yaml.safe_dump({"world": {"seed": 5, "num_web": 100}, "validate": {"max_kept_over_raw": 2.0}}))
    assert effect.recipe_hash(other) == effect.recipe_hash(params)
    assert effect.seed_spread(other, study) == {("test", "r_mean"): 4.0}
    line = effect.run_verdict(tmp_path / "run", params, study)
    assert "within it: test r_mean +3 (sd 4)" in line and "novel r_mean +3" in line
    assert "kept set cleaner than the raw web (noise 0.200 vs 0.400)" in line
    bigger = tmp_path / "bigger.yaml"
    bigger.write_text(yaml.safe_dump({"world": {"seed": 0, "num_web": 200}}))
    assert effect.seed_spread(bigger, study) is None
    assert effect.run_verdict(tmp_path / "run", bigger, study).startswith("CapFilt verdict (one run")
    study.write_text(json.dumps(doc | {"per_seed": seeds[:1]}))
    assert effect.seed_spread(params, study) is None
    assert effect.run_verdict(tmp_path / "nothing", params, study) is None


def test_a_study_seed_runs_the_flow_without_registering_models(tmp_path, monkeypatch):
    import flows.bootstrap

    calls = []
    monkeypatch.setattr(flows.bootstrap, "bootstrap", lambda **kw: calls.append(kw))
    params = tmp_path / "params.yaml"
    params.write_text("world:\n  seed: 0\n")
    from flows import studies

    (arm,) = studies.seeds([3]).arms
    status = studies.run_arm(arm, params, tmp_path / "seed-3", "blip-effect")  # the default flow: bootstrap
    (kw,) = calls
    assert kw["register_models"] is False and kw["experiment"] == "blip-effect"
    assert "world:\n  seed: 3" in (tmp_path / "seed-3" / "params.yaml").read_text() and status["arm"] == "seed-3"
