"""The whole bootstrap chain at micro size: the Prefect flow (under prefect_test_harness, with MLflow
tracking and the model registry) and `dvc repro` in a temporary clone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import micro_params, repo_clone

REPO = Path(__file__).resolve().parents[2]


def _outputs(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("model.safetensors")}


@pytest.mark.slow
def test_bootstrap_flow_end_to_end_with_tracking_and_cache(tmp_path, monkeypatch):
    import mlflow
    from prefect.testing.utilities import prefect_test_harness

    from flows.bootstrap import bootstrap

    params = micro_params(tmp_path / "params.yaml")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    token = "hf_FakeTokenInTheEnvironmentOfThisRun0123"
    monkeypatch.setenv("HF_TOKEN", token)  # no secret of the environment may reach the tracking store
    monkeypatch.setenv("BLIP_GX_ROOT", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "data"
    with prefect_test_harness(server_startup_timeout=120):
        result = bootstrap(params=str(params), root=str(root), experiment="test-bootstrap")
        first = _outputs(root)
        assert len(first) == 11  # the vision start, 2 pre-trainings, 8 fine-tunings (caption, retrieval, vqa, nlvr)
        first_times = json.loads((root / "metrics" / "stage_times.json").read_text())
        again = bootstrap(params=str(params), root=str(root), experiment="test-bootstrap")
        assert _outputs(root) == first  # served from the task cache: nothing re-trained
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:  # version tags on the flow runs, none on task runs
            runs = [r for r in client.read_flow_runs() if r.name.startswith("bootstrap-")]
            assert len(runs) == 2
            for r in runs:
                assert {t.split(":")[0] for t in r.tags} >= {"git", "params", "data"}, r.tags
            assert not any(t.tags for t in client.read_task_runs())
            # one markdown artifact per stage, numbered in DAG order with no gap (the CapFilt subflow's too)
            from flows import dag

            keys = {a.key for a in client.read_artifacts() if a.type == "markdown"}
            names = [s.name for s in dag.stages(str(params), str(root))]
            assert keys == {f"{i:02d}-{n.replace('_', '-')}" for i, n in enumerate(names, start=1)}
    assert {r["split"] for r in result["rows"]} == {"test", "novel", "vqa_test", "vqa_novel", "nlvr_test", "nlvr_novel",
                                                  "video_test", "video_novel"}  # fmt: skip
    assert again["rows"] == result["rows"]
    comparison = json.loads((root / "metrics" / "report" / "comparison.json").read_text())
    assert set(comparison["test"]["r_mean"]) == {"baseline", "bootstrapped", "delta"}
    long = root / "metrics" / "report" / "long"  # the same in long format, a file per split and metric
    assert {f"{s}/{m}" for s, ms in comparison.items() for m in ms} == {
        str(f.relative_to(long).with_suffix("")) for f in long.rglob("*.json")
    }
    assert (root / "capfilt" / "shards" / "_stats.json").is_file()
    assert json.loads((root / "metrics" / "validate_capfilt.json").read_text())["success"]
    # Prefect ran the DAG's stages, every one of them, in its order (flows/dag.py, like dvc.yaml)
    ran = list(json.loads((root / "metrics" / "stage_times.json").read_text()))
    assert ran == [s.name for s in dag.stages(str(params), str(root))]
    assert all(Path(o).exists() for s in dag.stages(str(params), str(root)) for o in s.outputs)

    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("test-bootstrap")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    first_run = min(parents, key=lambda r: r.info.start_time)
    audit = first_run.data.tags["capfilt_audit"]  # the parent run links the CapFilt audit page
    assert audit.startswith("file://") and Path(audit.removeprefix("file://")).is_file()
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == first_run.info.run_id]
    stage_names = {r.info.run_name for r in children}
    assert {"pretrain_baseline", "capfilt_score", "capfilt_select", "evaluate_baseline", "evaluate_bootstrapped"} <= (
        stage_names
    )
    ev = next(r for r in children if r.info.run_name == "evaluate_bootstrapped")
    assert "eval/test_r_mean" in ev.data.metrics and ev.data.tags["git_commit"]
    ev_base = next(r for r in children if r.info.run_name == "evaluate_baseline")

    def artifacts(r):
        return {a.path for a in client.list_artifacts(r.info.run_id)}

    # the compare view pairs the two evaluations' artifacts by name
    assert artifacts(ev) == artifacts(ev_base) >= {"evaluation.json", "captions.json", "caption_grid.png"}
    pre = next(r for r in children if r.info.run_name == "pretrain_baseline")
    assert "resolved_config.json" in artifacts(pre)
    assert any(r.data.tags.get("data_hash") for r in parents)
    # the cached re-run made no stage runs: its parent says so and links the one that holds the results
    first_parent, cached_parent = sorted(parents, key=lambda r: r.info.start_time)
    assert cached_parent.data.tags["served_from_cache"] == "true"
    assert cached_parent.data.tags["results_run_id"] == first_parent.info.run_id
    assert cached_parent.data.tags["code_hash"] == first_parent.data.tags["code_hash"]  # found by code, not commit
    assert "served_from_cache" not in first_parent.data.tags
    # the first view: the verdict as the run's description, headline figures on the parent run, a link
    # to the compare view of the two evaluations; comparison.md opens with the verdict
    assert first_parent.data.tags["mlflow.note.content"].startswith("CapFilt verdict")
    assert {"Headline/test_r_mean_delta", "Headline/novel_grounded_true_rate_delta",
            "Headline/filter_auroc", "Headline/web_noise_rate"} <= set(first_parent.data.metrics)  # fmt: skip
    assert sorted(first_parent.data.metrics)[0].startswith("Headline/")  # listed first in the UI
    assert {"comparison.md", "comparison.png"} <= artifacts(first_parent)  # the delta table
    links = json.loads((root / "logs" / "mlflow.json").read_text())
    assert ev.info.run_id in links["compare_url"] and ev_base.info.run_id in links["compare_url"]
    assert (root / "metrics" / "report" / "comparison.md").read_text().startswith("CapFilt verdict")
    # each stage run lasts its stage, registration after the flow included (it reopens the runs)
    for r in children:  # the first run's stage runs against its stage times (the cached re-run rewrote them)
        if r.info.run_name in first_times:
            took = (r.info.end_time - r.info.start_time) / 1000
            assert took <= first_times[r.info.run_name] + 5, (r.info.run_name, took, first_times[r.info.run_name])
    # each trained model is a registered version living in the stage run that trained it, with a
    # signature; baseline and bootstrapped are versions of one name; the cached re-run added none
    from flows.model_registry import registrations

    for reg in registrations(str(params), str(root)):
        (version,) = client.search_model_versions(f"name='{reg.name}' and tag.stage='{reg.stage}'")
        assert client.get_run(version.run_id).info.run_name == reg.stage
        assert version.tags["score_metric"] == reg.metric and reg.stage in version.description
    names = {r.name for r in registrations(str(params), str(root))}
    assert "blip-bootstrapped" not in names  # the two pre-trainings are versions of blip-pretrain
    for name in names:
        assert mlflow.models.get_model_info(f"models:/{name}@best").signature is not None
        assert "`best` follows" in client.get_registered_model(name).description
    # nothing secret or personal in params, tags or artifacts
    home = os.path.expanduser("~").encode() + b"/"
    stored = [tmp_path / "mlflow.db", *(p for p in (tmp_path / "artifacts").rglob("*") if p.is_file())]
    assert len(stored) > 10
    for f in stored:
        blob = f.read_bytes()
        assert token.encode() not in blob and home not in blob, f
    caption = mlflow.pyfunc.load_model("models:/blip-captioner@best")
    img = next((root / "world" / "test").glob("*.tar"))
    from blip_core.data.reader import iter_samples

    sample = next(iter(iter_samples([img], keep_bytes=True)))
    import pandas as pd

    out = caption.predict(pd.DataFrame({"image": [sample["image_bytes"]]}))
    assert isinstance(out["caption_generated"][0], str)
    # the downstream models are registered too, and answer through the same interface
    vqa = mlflow.pyfunc.load_model("models:/blip-vqa@best")
    out = vqa.predict(pd.DataFrame({"image": [sample["image_bytes"]], "question": ["what color is the circle?"]}))
    assert isinstance(out["answer"][0], str)
    nlvr = mlflow.pyfunc.load_model("models:/blip-nlvr@best")
    pair = {"image": [sample["image_bytes"]], "image_right": [sample["image_bytes"]],
            "statement": ["both images contain a red circle"]}  # fmt: skip
    assert 0.0 <= float(nlvr.predict(pd.DataFrame(pair))["p_true"][0]) <= 1.0


@pytest.mark.slow
def test_dvc_status_is_clean_after_the_prefect_flow(tmp_path):
    """A user who ran the pipeline through Prefect (make run) can use DVC without recomputing."""
    clone, env = repo_clone(tmp_path)
    env |= {"PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    run = subprocess.run([sys.executable, "-c", "from flows.bootstrap import bootstrap; bootstrap(track=False)"],
                         cwd=clone, env=env, capture_output=True, text=True, timeout=1200)  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert (clone / "dvc.lock").is_file()
    status = subprocess.run(
        [sys.executable, "-m", "dvc", "status"], cwd=clone, env=env, capture_output=True, text=True, timeout=300
    )
    assert status.returncode == 0 and "up to date" in status.stdout, status.stdout
    repro = subprocess.run(
        [sys.executable, "-m", "dvc", "repro"], cwd=clone, env=env, capture_output=True, text=True, timeout=300
    )
    assert repro.returncode == 0 and "Running stage" not in repro.stdout, repro.stdout


@pytest.mark.slow
def test_dvc_repro_in_a_clone_then_no_op(tmp_path):
    # fixed threshold: then a threshold experiment needs no new scores (threshold_mode is a scoring param);
    # 0.0 keeps every caption, as the p(match) of a filter trained for two steps means nothing
    clone, env = repo_clone(tmp_path, threshold_mode="fixed", threshold=0.0)
    first = subprocess.run(
        [sys.executable, "-m", "dvc", "repro"], cwd=clone, env=env, capture_output=True, text=True, timeout=1200
    )
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert (clone / "dvc.lock").is_file()
    assert json.loads((clone / "data/metrics/report/comparison.json").read_text())["test"]
    second = subprocess.run(
        [sys.executable, "-m", "dvc", "repro"], cwd=clone, env=env, capture_output=True, text=True, timeout=300
    )
    assert second.returncode == 0 and "Running stage" not in second.stdout, second.stdout
    metrics = subprocess.run(
        [sys.executable, "-m", "dvc", "metrics", "show", "--json"], cwd=clone, env=env, capture_output=True, text=True
    )
    assert "comparison.json" in metrics.stdout

    def leaves(o):
        return [x for v in o.values() for x in leaves(v)] if isinstance(o, dict) else [o]

    shown = leaves(json.loads(metrics.stdout))
    assert shown and all(isinstance(x, int | float) and not isinstance(x, bool) for x in shown), sorted(
        {repr(x) for x in shown if not isinstance(x, int | float) or isinstance(x, bool)}
    )[:10]  # `dvc metrics show` lists numbers only
    # an experiment on the CapFilt threshold re-selects from stored scores: no captioning, no filter run
    exp = subprocess.run(
        [sys.executable, "-m", "dvc", "exp", "run", "-S", "capfilt.threshold=0.01"],
        cwd=clone, env=env, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert exp.returncode == 0, exp.stdout[-3000:] + exp.stderr[-3000:]
    ran = {line.split("'")[1] for line in exp.stdout.splitlines() if line.startswith("Running stage")}
    assert "capfilt_select" in ran  # what runs after it depends on whether the kept set changed
    assert not ran & {"world", "pretrain_baseline", "capfilt_score"}, ran
