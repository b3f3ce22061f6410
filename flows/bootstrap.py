"""The BLIP bootstrap pipeline as a Prefect flow (deployment `bootstrap/full`).

The recipe is `flows.dag`'s list of stages, in order:

    world -> tokenizer, inspect_world, validate_raw, leakage -> pretrain_baseline
      -> finetune_{caption,retrieval}_baseline -> capfilt_score (mapped per shard) -> capfilt_select
      -> capfilt_reshard -> validate_capfilt -> pretrain_bootstrapped -> finetune_{caption,retrieval}_bootstrapped
      -> evaluate_{baseline,bootstrapped} -> report -> register models
    (pretrain_vision, the supervised vision start, runs before pretrain_baseline when configured)

Each stage is a cached, tracked task (`flows.prefect_tasks.stage_task`) that runs exactly what `blip stage
NAME` (dvc.yaml's command) runs; CapFilt scoring is the one stage Prefect runs its own way, mapped
one task per shard (`flows.capfilt_flow`), with the same inputs and outputs.

Serve the deployment and trigger it (a local server must be running, see README):
    python -m flows.bootstrap serve
    prefect deployment run bootstrap/full --watch
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import create_table_artifact

from blip_core import capfilt
from blip_core.config.loader import read_params
from blip_core.fileio import digest, write_json
from flows import dag, versioning
from flows.capfilt_flow import already_scored, capfilt_flow, task_runner, threads_per_worker
from flows.prefect_tasks import (
    accelerator_tags,
    log_stage_run,
    params_values,
    register_task,
    release_stale_gpu_slots,
    stage_artifact,
    stage_task,
)

logger = logging.getLogger(__name__)


def _run_name() -> str:
    from prefect.runtime import flow_run

    p = flow_run.parameters
    return f"bootstrap-{versioning.git_commit()}-p{versioning.params_hash(p.get('params', 'params.yaml'))}"


@flow(name="bootstrap", flow_run_name=_run_name, log_prints=True)
def bootstrap(
    params: str = "params.yaml",
    root: str = "data",
    track: bool = True,
    experiment: str = "blip-bootstrap",
    task_runner_kind: str = "threads",
    capfilt_workers: int = 1,
    release_gpu_slots: bool = False,
    register_models: bool = True,
) -> dict:
    """Run the whole bootstrap pipeline; returns the baseline-vs-bootstrapped comparison.

    `release_gpu_slots`: first free the `gpu` concurrency slots that a killed earlier run left
    leased (for a caller that owns the Prefect API, e.g. `make effect`). `register_models`: the trained models
    become versions in the model registry (a study's seeds are measurements: `make effect` does not)."""

    if release_gpu_slots:
        release_stale_gpu_slots()
    commit = versioning.git_commit()
    run: dict[str, Any] = {"git_commit": commit, "experiment": experiment, "mlflow_parent": None}
    parent = None
    if track:
        from blip_core.tracking import MLflowLogger

        doc = read_params(params) if Path(params).is_file() else {}
        parent = MLflowLogger(experiment=experiment, run_name=f"bootstrap-{commit}", tags={
            "git_commit": commit, "code_hash": versioning.code_hash(), "params_hash": versioning.params_hash(params),
            "pipeline": "prefect"})  # fmt: skip
        parent.log_params({k: v for k, v in doc.items() if isinstance(v, dict)})
        run |= {"mlflow_parent": parent.run_id, "tracking_uri": parent.tracking_uri}
    L = dag.Layout(root)
    times = Path(L.metrics, "stage_times.json")
    times.parent.mkdir(parents=True, exist_ok=True)
    times.write_text("{}\n")
    try:
        results: dict[str, Any] = {}
        _tag_flow_run(f"git:{commit}", f"params:{versioning.params_hash(params)}")
        for s in dag.stages(params, root):
            t0 = time.perf_counter()
            with stage_errors(s.name):
                if s.mapped:  # one Prefect task per shard (dvc runs the plain call)
                    policy = params_values(params, ("capfilt.policy",))["capfilt.policy"] or "both"
                    # a cached re-run: every score file is there, so no subflow, tasks or model loads
                    results[s.name] = already_scored(**s.kwargs)
                    if results[s.name] is None:
                        with threads_per_worker(task_runner_kind, capfilt_workers):
                            runner = task_runner(task_runner_kind, capfilt_workers)
                            results[s.name] = capfilt_flow.with_options(task_runner=runner)(**s.kwargs, policy=policy)
                    if results[s.name]["skipped_shards"] < results[s.name]["shards"]:  # it scored something
                        results[s.name]["mlflow_run_id"] = log_stage_run(s, params, run, results[s.name])
                    stage_artifact(s.name, results[s.name], params, root)  # as stage_task does for the others
                else:
                    # outputs deleted since the cached run: the cache must not pretend they exist
                    opts: dict[str, Any] = {"refresh_cache": not all(Path(o).exists() for o in s.outputs)}
                    if s.gpu:
                        opts["tags"] = accelerator_tags()
                    results[s.name] = stage_task.with_options(**opts)(s.name, params, root, run)
            _add_time(times, s.name, time.perf_counter() - t0)
            if s.name == "world":  # the world's DVC md5 (or fingerprint)
                _tag_flow_run(f"data:{versioning.data_hash(L.world)}")
        report = results["report"]
        from flows.results import run_summary, run_verdict

        summary = run_summary(root)
        line = run_verdict(root, params, summary=summary) or report.get("verdict", "")
        try:
            create_table_artifact(table=_rounded(report["rows"]), key="baseline-vs-bootstrapped", description=line)
        except Exception as e:
            logger.warning("could not create the comparison table artifact: %s", e)
        print(line + "\n")
        print(report["markdown"])
        results["dvc"] = record_in_dvc(params, root)
        if parent is not None:
            from flows.model_registry import registrations

            data_hash = versioning.data_hash(L.world)
            # the run's description (MLflow shows mlflow.note.content on the run page) is the verdict
            audit = Path(L.cf(capfilt.AUDIT), capfilt.AUDIT_PAGE).resolve().as_uri()
            parent.set_tags({"data_hash": data_hash, "verdict": line, "mlflow.note.content": line,
                             "capfilt_audit": audit})  # fmt: skip
            parent.log({f"compare/{r['split']}_{r['metric']}_delta": r["delta"] for r in report["rows"]}, step=0)
            parent.log(headline_metrics(report["rows"], summary), step=0)
            report_dir = Path(L.report)
            for name in ("comparison.md", "comparison.png", "comparison.json"):  # the delta table on the parent run
                if (report_dir / name).is_file():
                    parent.log_artifact(report_dir / name)
            _write_links(root, parent, results)
            trained = [reg for reg in registrations(params, root) if reg.stage in results]
            models = {reg.stage: reg.model for reg in trained}
            run_ids = {reg.stage: (results.get(reg.stage) or {}).get("mlflow_run_id") for reg in trained}
            vision_score = (results.get("pretrain_vision") or {}).get("val", {}).get("shape", {}).get("f1")
            if register_models:
                register_task(run, report["rows"], models, run_ids, vision_score, data_hash, params, root)
            _mark_if_served_from_cache(parent)
            parent.close()
        return report
    except BaseException:
        if parent is not None:
            parent.close("FAILED")
        raise


HEADLINE_PREFIX = "Headline/"
"""Capitalised: MLflow lists metrics in code-point order, so these come before compare/ and eval/."""


def headline_metrics(rows: list[dict], summary: dict[str, Any]) -> dict[str, float]:
    """The few figures the experiment's first view should show on the parent run: test/novel mean
    recall and fully grounded rate (both models and the delta), filter AUROC, raw and kept noise
    (from the run's `flows.results.run_summary`)."""
    from blip_core.eval.report import HEADLINE

    out = {}
    for r in rows:
        if (r["split"], r["metric"]) in HEADLINE:
            for col in ("baseline", "bootstrapped", "delta"):
                out[f"{HEADLINE_PREFIX}{r['split']}_{r['metric']}_{col}"] = r[col]
    for key in ("filter_auroc", "web_noise_rate", "kept_noise_rate"):
        if isinstance(summary.get(key), int | float):
            out[f"{HEADLINE_PREFIX}{key}"] = summary[key]
    return out


def _write_links(root: str | Path, parent, results: dict[str, Any]) -> None:
    """`<root>/logs/mlflow.json`: the parent run and a link to MLflow's compare view of the two
    evaluations (for `make run`'s summary; the UI of `make mlflow-ui`)."""
    import urllib.parse

    ids = [(results.get(f"evaluate_{m}") or {}).get("mlflow_run_id") for m in ("baseline", "bootstrapped")]
    links = {"experiment_id": parent.experiment_id, "parent_run_id": parent.run_id}
    if all(ids):
        query = urllib.parse.urlencode({"runs": json.dumps(ids), "experiments": json.dumps([parent.experiment_id])})
        links["compare_url"] = f"http://127.0.0.1:5000/#/compare-runs?{query}"
    path = Path(root, "logs", "mlflow.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, links, sort_keys=False)


def _tag_flow_run(*new: str) -> None:
    """Version tags (git commit, params and data hashes) on this flow run, where the Prefect UI
    filters by them. Not on each task run: Prefect checks a task run's tags for concurrency limits
    with a write on the server, which on SQLite often meets "database is locked" and a 2 s client
    retry (measured: 1-8 stalls of 2 s per cached make run, with a new tag set per stage)."""
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    if not flow_run.id:
        return
    try:
        with get_client(sync_client=True) as client:
            current = client.read_flow_run(flow_run.id).tags
            client.update_flow_run(flow_run.id, tags=sorted(set(current) | set(new)))
    except Exception as e:  # tags are a nicety: never fail the run over them
        logger.warning("could not tag the flow run with %s: %s", new, e)


class StageFailed(RuntimeError):
    """A stage failed for good (after its retries): one line naming the stage and the cause."""

    def __init__(self, stage: str, cause: BaseException) -> None:
        first = (str(cause).strip().splitlines() or [""])[0][:300]
        super().__init__(f"stage {stage} failed: {type(cause).__name__}: {first}")
        self.stage = stage


@contextlib.contextmanager
def stage_errors(stage: str):
    """Turn a stage's exception into `StageFailed` (the flow run's state message says which stage
    and why; the traceback stays in the task run's log)."""
    try:
        yield
    except StageFailed:
        raise
    except Exception as e:
        raise StageFailed(stage, e) from e


def record_in_dvc(params: str, root: str) -> str:
    """Record what this run produced in dvc.lock (`dvc commit`), so `dvc status` is clean and `dvc
    repro` recomputes nothing after a Prefect run: both runners run the same stages (flows/dag.py).

    Skipped when dvc.lock and every output are as the last successful commit left them (a cached
    re-run: `dvc commit` would change nothing, and costs ~1.3 s). Only for the layout dvc.yaml
    describes (root `data`, `params.yaml`, run from the repo root); another root or params file is a
    separate study that DVC does not track."""
    import subprocess

    if Path(root) != Path("data") or Path(params) != Path("params.yaml") or not Path("dvc.yaml").is_file():
        return "not recorded (a layout other than dvc.yaml's)"
    if not Path(".dvc").is_dir():
        return "not recorded (no DVC repository here: dvc init)"
    marker = Path(root, "logs", "dvc_recorded.json")
    if marker.is_file() and marker.read_text().strip() == _dvc_state(params, root):
        return "recorded in dvc.lock (unchanged since the last commit)"

    r = subprocess.run([*versioning.tool("dvc"), "commit", "--force", "--quiet"], capture_output=True, text=True)
    if r.returncode != 0:  # the run itself succeeded: say why DVC did not take it, do not fail it
        logger.warning("dvc commit failed (dvc status will show the stages as changed): %s", r.stderr.strip()[-500:])
        marker.unlink(missing_ok=True)
        return "dvc commit failed"
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(_dvc_state(params, root) + "\n")  # after the commit: it relinks outputs
    return "recorded in dvc.lock"


def _dvc_state(params: str, root: str) -> str:
    """dvc.lock's bytes and every stage output's fingerprint, at the time of a commit."""
    outs = [o for s in dag.stages(params, root) for o in s.outputs]
    lock = Path("dvc.lock").read_bytes() if Path("dvc.lock").is_file() else b""
    return digest({"lock": hashlib.sha256(lock).hexdigest(), "outs": versioning.fingerprint(outs)})


def _mark_if_served_from_cache(parent) -> None:
    """A re-run whose every stage came from the task cache made no stage run of its own: say so on the
    parent run and link the parent run whose stage runs hold these results (same code and params: not the
    same commit, whose `-dirty` flag the earlier run's own `dvc commit` sets)."""
    client, exp = parent.client, [parent.experiment_id]

    def has_children(run_id: str) -> bool:
        return bool(client.search_runs(exp, f"tags.mlflow.parentRunId = '{run_id}'", max_results=1))

    if has_children(parent.run_id):
        return
    tags = client.get_run(parent.run_id).data.tags
    same = f"tags.code_hash = '{tags.get('code_hash')}' and tags.params_hash = '{tags.get('params_hash')}'"
    earlier = client.search_runs(exp, same, order_by=["attributes.start_time DESC"], max_results=50)
    holder = next((r.info.run_id for r in earlier if r.info.run_id != parent.run_id and has_children(r.info.run_id)),
                  None)  # fmt: skip
    note = "Every stage was served from the Prefect task cache: nothing ran again."
    if holder:
        note += f" The stage runs that produced these results are under parent run {holder}."
    parent.set_tags({"served_from_cache": "true", "results_run_id": holder or "unknown", "mlflow.note.content": note})


def _rounded(rows: list[dict]) -> list[dict]:
    return [{k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()} for r in rows]


def _add_time(path: Path, name: str, seconds: float) -> None:
    times = json.loads(path.read_text()) if path.is_file() else {}
    write_json(path, times | {name: round(seconds, 2)}, sort_keys=False)


def main(argv: list[str] | None = None) -> int:
    # run as `python -m flows.bootstrap`, this file is __main__, which cloudpickle would copy by value
    # (locks included) into the flow-run subprocess: use the importable module's flow instead
    from flows.bootstrap import bootstrap as flow_

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:
        # `make run` (flows.local) sends SIGUSR1 when it dies: take the whole process group down at
        # once, flow-run subprocess included, rather than Prefect's graceful SIGTERM shutdown, which
        # waits on a flow run whose server is gone (see flows.local)
        signal.signal(signal.SIGUSR1, lambda *_: os.killpg(0, signal.SIGKILL))
        flow_.serve(name="full", tags=["blip"], parameters={"params": "params.yaml", "root": "data"})
        return 0
    flow_()
    return 0


if __name__ == "__main__":
    sys.exit(main())
