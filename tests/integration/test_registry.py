"""The model registry as the flow fills it: every fine-tuned model a version, `best` following the score,
descriptions that say what each version is, and stage runs that keep their own durations."""

from __future__ import annotations

import mlflow
from helpers import micro_capfilt_models

from flows.model_registry import registrations
from flows.prefect_tasks import register_task

FINETUNES = [r.stage for r in registrations() if r.role in ("captioner", "filter")]


def test_baseline_and_bootstrapped_finetunes_are_versions_and_best_follows_the_score(tiny_world, tmp_path):
    captioner, filter_ = micro_capfilt_models(tiny_world, tmp_path / "models")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    exp = client.create_experiment("registry", artifact_location=str(tmp_path / "artifacts"))
    parent = client.create_run(exp, run_name="bootstrap").info.run_id
    runs, ends = {}, {}
    for stage in FINETUNES:  # finished stage runs of 15 s each, as the flow leaves them
        r = client.create_run(exp, run_name=stage, tags={"mlflow.parentRunId": parent})
        ends[stage] = r.info.start_time + 15_000
        client.set_terminated(r.info.run_id, "FINISHED", end_time=ends[stage])
        runs[stage] = r.info.run_id
    rows = [
        {"split": "test", "metric": "cider", "baseline": 1.0, "bootstrapped": 1.2},
        {"split": "test", "metric": "r_mean", "baseline": 80.0, "bootstrapped": 79.0},
    ]
    models = {s: str(captioner if "caption" in s else filter_) for s in FINETUNES}
    out = register_task.fn({"tracking_uri": uri, "mlflow_parent": parent}, rows, models, runs, data_hash="abc123")
    assert set(out) == set(FINETUNES)

    def versions(name):
        return {v.tags["stage"]: v for v in client.search_model_versions(f"name='{name}'")}

    cap, filt = versions("blip-captioner"), versions("blip-filter")
    assert set(cap) == {"finetune_caption_baseline", "finetune_caption_bootstrapped"}
    assert set(filt) == {"finetune_retrieval_baseline", "finetune_retrieval_bootstrapped"}
    # best follows the measured score: the bootstrapped captioner (CIDEr 1.2), the baseline filter (80)
    assert client.get_model_version_by_alias("blip-captioner", "best").version == (
        cap["finetune_caption_bootstrapped"].version
    )
    assert client.get_model_version_by_alias("blip-filter", "best").version == (
        filt["finetune_retrieval_baseline"].version
    )
    boot = cap["finetune_caption_bootstrapped"]
    assert boot.tags["score"] == "1.2" and boot.tags["score_metric"] == "test/cider"
    assert boot.tags["variant"] == "bootstrapped" and boot.tags["data_hash"] == "abc123"
    assert "bootstrapped pre-training" in boot.description and "test/cider 1.2" in boot.description
    assert runs["finetune_caption_bootstrapped"] in boot.description and "abc123" in boot.description
    for stage, run_id in runs.items():  # each version lives in its stage run, which keeps its own end
        v = (cap | filt)[stage]
        assert v.run_id == run_id
        info = client.get_run(run_id).info
        assert info.end_time == ends[stage] and info.status == "FINISHED"
        assert not v.tags["mlflow.source.name"].startswith("/"), v.tags["mlflow.source.name"]


def test_signatures_by_role_and_the_vision_start_names_its_own_label_groups():
    from flows.model_registry import signature

    def outputs(sig):
        return [c.name for c in sig.outputs.inputs]

    assert outputs(signature("vision", ("shape", "color", "background"))) == ["shape", "color", "background"]
    assert outputs(signature("pretrain")) == ["caption_generated", "itm_prob", "itc_cosine"]
    assert outputs(signature("filter")) == ["itm_prob", "itc_cosine"]
    assert outputs(signature("captioner")) == ["caption_generated"]
