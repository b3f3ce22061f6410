"""One DAG for both runners: dvc.yaml is generated from flows/dag.py, code deps follow imports, and
a library edit invalidates exactly the stages that run the edited file, under DVC and Prefect."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import yaml

from flows import codedeps, dag, prefect_tasks

REPO = Path(__file__).resolve().parents[2]


def test_dvc_yaml_is_generated_from_the_dag():
    committed = (REPO / "dvc.yaml").read_text()
    assert committed == dag.dvc_yaml(), "dvc.yaml differs from flows/dag.py: run `blip dag --dvc > dvc.yaml`"


def test_dvc_stages_are_the_dag_stages_with_the_same_io_and_params():
    doc = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    described = dag.stages()
    assert list(doc) == [s.name for s in described]
    for s in described:
        d = doc[s.name]
        assert d["cmd"] == f"blip stage {s.name}"
        assert set(d["deps"]) == set(s.deps) | set(s.code_deps)
        assert [next(iter(o)) if isinstance(o, dict) else o for o in d.get("outs", [])] == [*s.outs, *s.reports]
        assert all(
            o[f]["cache"] is False for o in d.get("outs", []) if isinstance(o, dict) for f in o if f in s.reports
        )
        assert d.get("params", []) == list(s.params)
        assert [next(iter(m)) for m in d.get("metrics", [])] == list(s.metrics)


def test_every_dep_is_made_by_an_earlier_stage_or_is_code():
    made: set[str] = set()
    for s in dag.stages():
        for dep in s.deps:
            assert any(dep == o or dep.startswith(o + "/") for o in made), f"{s.name} reads {dep} before it exists"
        made |= set(s.outputs)


def test_code_deps_follow_imports_per_module():
    code = {s.name: set(s.code_deps) for s in dag.stages()}
    assert {
        "blip_core/train/loop.py",
        "blip_core/train/entry.py",
        "blip_core/models/blip/model.py",
        "blip_core/data/loader.py",
    } <= code["pretrain_baseline"]
    assert "blip_core/train/loop.py" not in code["world"] and not any(
        c.startswith("blip_core/models/") for c in code["world"]
    )
    assert {"blip_core/eval/captioning.py", "blip_core/eval/retrieval.py", "blip_core/models/blip/model.py"} <= code[
        "evaluate_baseline"
    ]
    assert "flows/validation.py" in code["validate_raw"] and "flows/validation.py" in code["validate_capfilt"]
    assert "blip_core/capfilt/folders.py" in code["capfilt_select"]
    # CapFilt runs the captioner's and the filter's model code (reached through the registry)
    assert {"blip_core/models/blip/model.py", "blip_core/models/common/tokenizer.py"} <= code["capfilt_score"]
    # a training config edit re-runs trainings, not the world or the data gates
    assert not {"blip_core/config/train.py", "blip_core/train/loop.py"} & (code["world"] | code["validate_raw"])
    assert all(not p.endswith("/") and (REPO / p).is_file() for c in code.values() for p in c)  # files, not packages
    # a stage runs its own family's module, not every stage function's
    assert "flows/stages/train.py" in code["pretrain_baseline"] and "flows/stages/evaluate.py" not in code["world"]
    # training a task runs its model and forward, not its evaluator
    train_stages = [n for n in code if n.startswith(("pretrain", "finetune"))]
    assert train_stages and all("blip_core/eval/captioning.py" not in code[n] for n in train_stages)


def test_an_evaluation_edit_leaves_world_pretrainings_and_finetunes_cached(tmp_path, monkeypatch):
    """Under DVC (the stage's deps) and Prefect (its cache key) alike."""
    for pkg in ("blip_core", "flows"):
        shutil.copytree(REPO / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(codedeps, "REPO", tmp_path)
    codedeps._module_closure.cache_clear()
    names = [s.name for s in dag.stages()]

    def state():
        return {
            n: (
                prefect_tasks._cache_key(None, {"name": n, "params": "params.yaml", "root": "data"}),
                dag.code_hash(s.code_deps),
            )
            for n, s in ((s.name, s) for s in dag.stages())
        }

    before = state()
    with (tmp_path / "blip_core" / "eval" / "captioning.py").open("a") as f:
        f.write("\n# an edit\n")
    after = state()
    changed = {n for n in names if after[n] != before[n]}
    assert changed == {"evaluate_baseline", "evaluate_bootstrapped"}, changed
    codedeps._module_closure.cache_clear()


def test_a_stage_reading_undeclared_params_fails_loudly(tmp_path):
    from flows.stages.params import UndeclaredParamsError

    world = dag.by_name("world", root=str(tmp_path))
    sneaky = dataclasses.replace(world, fn=_reads_capfilt, kwargs={"params": str(REPO / "params.yaml")})
    with pytest.raises(UndeclaredParamsError, match="stage world reads params section 'capfilt'"):
        sneaky.run()
    declared = dataclasses.replace(sneaky, params=("world", "capfilt.top_p"))
    assert declared.run() == yaml.safe_load((REPO / "params.yaml").read_text())["capfilt"]["top_p"]


def _reads_capfilt(params):
    from blip_core.config.pipeline import CapFiltConfig
    from flows.stages.params import section

    return section(params, "capfilt", CapFiltConfig).top_p


def test_a_library_edit_changes_the_prefect_cache_key_of_the_stages_using_it(tmp_path, monkeypatch):
    for pkg in ("blip_core", "flows"):
        shutil.copytree(REPO / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(codedeps, "REPO", tmp_path)
    codedeps._module_closure.cache_clear()
    names = ["world", "capfilt_select", "evaluate_baseline", "pretrain_baseline"]

    def keys():
        return {n: prefect_tasks._cache_key(None, {"name": n, "params": "params.yaml", "root": "data"}) for n in names}

    before = keys()
    with (tmp_path / "blip_core" / "eval" / "retrieval.py").open("a") as f:
        f.write("\n# an edit\n")
    after = keys()
    assert after["evaluate_baseline"] != before["evaluate_baseline"]
    assert after["world"] == before["world"] and after["pretrain_baseline"] == before["pretrain_baseline"]
    with (tmp_path / "blip_core" / "train" / "loop.py").open("a") as f:
        f.write("\n# another edit\n")
    again = keys()
    assert again["pretrain_baseline"] != after["pretrain_baseline"] and again["world"] == after["world"]
    codedeps._module_closure.cache_clear()


def test_blip_stage_runs_the_described_call(tmp_path, monkeypatch):
    from flows import cli

    calls = []
    monkeypatch.setattr(dag.Stage, "run", lambda self: calls.append((self.name, self.kwargs)) or {"ok": True})
    assert cli.main(["stage", "report", "--root", str(tmp_path)]) == 0
    assert calls == [("report", dag.by_name("report", root=str(tmp_path)).kwargs)]


def test_the_layout_places_a_round_beside_the_first():
    L = dag.Layout("data")
    assert (L.capfilt(), L.bootstrapped(), L.variant()) == ("data/capfilt", "data/capfilt/shards", "bootstrapped")
    assert (L.capfilt(2), L.bootstrapped(2), L.variant(2)) == ("data/capfilt_r2", "data/capfilt_r2/shards",
                                                               "bootstrapped_r2")  # fmt: skip
    assert L.quality(2) == "data/metrics/capfilt_r2/capfilt_quality.json" and L.cf("scores.json", 2).endswith(
        "capfilt_r2/scores.json"
    )
    with pytest.raises(ValueError, match="rounds count from 1"):
        L.capfilt(0)
    # round 1 is the DAG's one round: its CapFilt writes where the layout says
    (score,) = [s for s in dag.stages() if s.name == "capfilt_score"]
    assert score.kwargs["work_dir"] == L.capfilt() and L.bootstrapped() in dag.by_name("capfilt_reshard").outs


def test_a_second_round_of_bootstrapping_is_one_knob(tmp_path):
    doc = yaml.safe_load((REPO / "params.yaml").read_text())
    doc["capfilt"]["rounds"] = 2
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(doc))
    one, two = dag.stages(), dag.stages(str(params))
    new = {s.name: s for s in two if s.name not in {o.name for o in one}}
    assert set(new) >= {"capfilt_score_r2", "capfilt_select_r2", "capfilt_reshard_r2", "validate_capfilt_r2",
                        "pretrain_bootstrapped_r2", "finetune_caption_bootstrapped_r2",
                        "finetune_retrieval_bootstrapped_r2", "evaluate_bootstrapped_r2"}  # fmt: skip
    L = dag.Layout()
    # round 2's CapFilt runs round 1's fine-tuned captioner and filter, and its re-pre-training waits on its own gate
    assert new["capfilt_score_r2"].kwargs["captioner"] == L.model("bootstrapped", "caption")
    assert new["capfilt_score_r2"].kwargs["filter_model"] == L.model("bootstrapped", "retrieval")
    assert (
        L.gate(2) in new["pretrain_bootstrapped_r2"].deps and L.bootstrapped(2) in new["pretrain_bootstrapped_r2"].deps
    )
    assert all(s.registers is None for s in new.values())  # unscored by the report: never the registry's best
    made: set[str] = set()
    for s in two:  # every input exists before its reader, and no two stages write one path
        assert all(any(d == o or d.startswith(o + "/") for o in made) for d in s.deps), s.name
        assert not set(s.outputs) & made, s.name
        made |= set(s.outputs)
    assert "capfilt_score_r2:" in dag.dvc_yaml(str(params)) and "capfilt_score_r2" not in dag.dvc_yaml()


def test_count_statements_give_the_capfilt_fine_tunes_the_objects_split(tmp_path):
    """A fine-tune with count statements reads the `objects` split too (a dependency, so a change of
    it reruns them); with the knob at 0 it reads its caption split alone."""
    doc = yaml.safe_load((REPO / "params.yaml").read_text())
    objects = dag.Layout().split("objects")
    for section in ("finetune_caption", "finetune_retrieval"):
        doc[section]["count_statements"] = 0
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(doc))
    off = {s.name: s for s in dag.stages(str(params))}
    doc["finetune_caption"]["count_statements"] = 4
    params.write_text(yaml.safe_dump(doc))
    on = {s.name: s for s in dag.stages(str(params))}
    for model in ("baseline", "bootstrapped"):
        caption, filt = f"finetune_caption_{model}", f"finetune_retrieval_{model}"
        assert objects not in off[caption].deps and objects not in off[filt].deps
        assert on[caption].kwargs["data_dirs"] == [dag.Layout().split("coco_train"), objects]
        assert objects in on[caption].deps and objects not in on[filt].deps
    assert objects not in on["finetune_vqa_baseline"].deps
