"""A study is a list of arms, each the whole bootstrap flow under its own root with a few knobs
replaced: adding an arm is one entry, a bad override fails before anything runs, and an arm that
stops does not stop the others."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from flows import studies

REPO = Path(__file__).resolve().parents[2]


def test_an_arm_replaces_only_its_knobs_and_checks_them(tmp_path):
    arm = studies.Arm("filter_only", {"capfilt": {"policy": "filter"}})
    written = arm.write_params(REPO / "params.yaml", tmp_path / "filter_only")
    doc, base = yaml.safe_load(written.read_text()), yaml.safe_load((REPO / "params.yaml").read_text())
    assert doc["capfilt"]["policy"] == "filter"
    assert {k: v for k, v in doc["capfilt"].items() if k != "policy"} == {
        k: v for k, v in base["capfilt"].items() if k != "policy"
    }
    assert {k: doc[k] for k in doc if k != "capfilt"} == {k: base[k] for k in base if k != "capfilt"}
    with pytest.raises(ValueError, match=r"capfilt\.polcy"):
        studies.Arm("typo", {"capfilt": {"polcy": "filter"}}).write_params(REPO / "params.yaml", tmp_path / "typo")
    assert not (tmp_path / "typo" / "params.yaml").exists()  # nothing invalid left behind
    with pytest.raises(ValueError, match="not a plain folder name"):
        studies.Arm("../up")
    with pytest.raises(ValueError, match="distinct names"):
        studies.Study("twice", (studies.Arm("a"), studies.Arm("a")))


def test_the_seeds_study_is_one_arm_per_world_seed():
    study = studies.seeds([1, 2, 3])
    assert [a.name for a in study.arms] == ["seed-1", "seed-2", "seed-3"]
    assert study.arms[1].overrides == {"world": {"seed": 2}}


def test_a_study_runs_every_arm_under_its_root_and_survives_a_stopped_arm(tmp_path):
    calls = []

    def flow(*, params, root, experiment, release_gpu_slots, register_models):
        calls.append((Path(root).name, yaml.safe_load(Path(params).read_text())["world"]["seed"], register_models))
        if Path(root).name == "seed-2":
            raise RuntimeError("validate_capfilt failed: kept noise above its bound\nmore detail")

    bad = studies.Study("bad", (studies.Arm("ok"), studies.Arm("typo", {"world": {"sed": 1}})))
    with pytest.raises(ValueError, match=r"world\.sed"):  # the last arm's typo stops the study before the first runs
        studies.run_study(bad, REPO / "params.yaml", tmp_path / "bad", "exp", flow=flow)
    assert calls == [] and not (tmp_path / "bad").exists()
    study = studies.seeds([1, 2, 3])
    runs = studies.run_study(study, REPO / "params.yaml", tmp_path, "exp", flow=flow)
    assert calls == [("seed-1", 1, False), ("seed-2", 2, False), ("seed-3", 3, False)]
    assert [r["arm"] for r in runs] == ["seed-1", "seed-2", "seed-3"]
    assert runs[1]["error"] == "RuntimeError: validate_capfilt failed: kept noise above its bound"
    assert "error" not in runs[0] and all((tmp_path / a.name / "params.yaml").is_file() for a in study.arms)
