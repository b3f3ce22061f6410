"""Prefect tasks over the DAG's stages: one cached, versioned, tracked task per stage, and model
registration.

The task receives a stage's *name*, the params file and the data root, and looks the stage up in
`flows.dag`, so it runs exactly the call `blip stage NAME` (and so `dvc repro`) runs. Its cache key is
the stage's deps fingerprint, its params.yaml keys, its kwargs and the hash of the source it runs:
an edit to a library file re-runs the stages that use it, and only those.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact

from blip_core.config.loader import read_params
from blip_core.fileio import digest
from flows import dag, versioning

logger = logging.getLogger(__name__)


def params_values(params: str, keys: tuple[str, ...]) -> dict[str, Any]:
    """The values of a stage's params.yaml sections or `section.key`s (its share of the cache key)."""
    doc = read_params(params) if Path(params).is_file() else {}
    out = {}
    for key in keys:
        section, _, name = key.partition(".")
        value = (doc or {}).get(section)
        out[key] = value.get(name) if name and isinstance(value, dict) else value
    return out


def _cache_key(context, parameters: dict[str, Any]) -> str:
    s = dag.by_name(parameters["name"], params=parameters["params"], root=parameters["root"])
    return digest(
        {
            "stage": s.name,
            "deps": versioning.fingerprint(list(s.deps)),
            "params": params_values(parameters["params"], s.params),
            "kwargs": s.kwargs,
            "code": dag.code_hash(s.code_deps),
        }
    )


def retry_on_io(task, task_run, state) -> bool:
    """Retry transient I/O errors only; a missing input or a bad config fails at once."""
    try:
        state.result()
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return False
    except OSError:
        return True
    except Exception:
        return False
    return False


@task(
    task_run_name="{name}",
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=retry_on_io,
    cache_key_fn=_cache_key,
    persist_result=True,
)
def stage_task(name: str, params: str, root: str, run: dict) -> dict:
    """Run one stage of `flows.dag` (a nested MLflow run when the flow tracks one)."""
    s = dag.by_name(name, params=params, root=root)
    tracker = _stage_tracker(s, params, run)
    logs_itself = "metric_logger" in inspect.signature(s.fn).parameters
    extra = {"metric_logger": tracker} if tracker is not None and logs_itself else {}
    try:
        summary = s.run(**extra)
    except BaseException:
        if tracker is not None:
            tracker.close("FAILED")
        raise
    out = json.loads(json.dumps(summary, default=str))
    if tracker is not None:
        _log_stage(tracker, s, summary, numeric=not logs_itself)
        tracker.close()
        if isinstance(out, dict):  # the run that made the outputs (a cached result keeps pointing at it)
            out["mlflow_run_id"] = tracker.run_id
    stage_artifact(name, summary, params, root)
    run_log(summary_line(name, summary))
    return out


SUMMARY_KEYS = 10
"""Figures per stage in the flow-run log line (the artifact has them all)."""


def summary_line(name: str, summary: Any) -> str:
    """One log line of a stage's result: its first figures (losses, CapFilt quality, counts)."""
    flat = _numeric(summary)
    shown = ", ".join(f"{k}={v:.4g}" for k, v in list(flat.items())[:SUMMARY_KEYS])
    more = f" (+{len(flat) - SUMMARY_KEYS} more in the artifact)" if len(flat) > SUMMARY_KEYS else ""
    return f"{name}: {shown or 'done'}{more}"


def run_log(text: str) -> None:
    """A line in the Prefect flow-run log (what each stage produced, what was registered), not only
    "Finished in state Completed()"; the module logger outside a Prefect run."""
    try:
        from prefect.logging import get_run_logger

        get_run_logger().info(text)
    except Exception:  # no run context: a direct call
        logger.info("%s", text)


def log_stage_run(s: dag.Stage, params: str, run: dict, summary: dict) -> str | None:
    """A nested MLflow run for a stage that ran outside `stage_task` (the mapped CapFilt subflow)."""
    tracker = _stage_tracker(s, params, run)
    if tracker is None:
        return None
    _log_stage(tracker, s, summary, numeric=True)
    tracker.close()
    return tracker.run_id


def _stage_tracker(s: dag.Stage, params: str, run: dict):
    if not run.get("mlflow_parent"):
        return None
    from blip_core.tracking import MLflowLogger

    tags_ = {
        "stage": s.name,
        "git_commit": run["git_commit"],
        "params_hash": digest(params_values(params, s.params)),
        "data_hash": digest([versioning.data_hash(p) for p in s.deps]),
    }
    lg = MLflowLogger(experiment=run["experiment"], run_name=s.name, tracking_uri=run["tracking_uri"], tags=tags_,
                      parent_run_id=run["mlflow_parent"])  # fmt: skip
    lg.log_params({"stage": params_values(params, s.params)})
    return lg


def _log_stage(tracker, s: dag.Stage, summary: Any, *, numeric: bool) -> None:
    """The stage's figures, its JSON/PNG/MD outputs, the files its `artifacts` name, and the Data Docs
    site for a stage that validates (`data_docs`)."""
    flat = _numeric(summary, prefix=f"{s.name}/") if numeric else {}
    if flat:
        tracker.log(flat, step=0)
    named = dict(s.artifacts)
    for out in s.outputs:
        p = Path(out)
        if p.suffix in (".json", ".png", ".md") and p.is_file() and out not in named:
            tracker.log_artifact(p)
    for path, name in s.artifacts:
        if Path(path).is_file():
            tracker.log_artifact(Path(path), name=name)
    if s.data_docs:
        from flows.validation import gx_root

        docs = gx_root() / "gx" / "uncommitted" / "data_docs" / "local_site"
        if docs.is_dir():
            tracker.log_artifact(docs, artifact_path="data_docs")


def _numeric(obj: Any, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in ("shards", "results", "rows", "examples", "config", "checkpoints"):
                continue
            out |= _numeric(v, f"{prefix}{k}/")
    elif isinstance(obj, bool | int | float):
        out[prefix.rstrip("/")] = float(obj)
    return {k.replace(":", "_"): v for k, v in out.items()}


def stage_artifact(name: str, summary: Any, params: str = "params.yaml", root: str = "data") -> None:
    """A markdown summary of each stage on the Prefect run page; keys numbered in DAG order, so the
    artifacts list in the order the stages ran, each with a description of what it shows."""
    if isinstance(summary, dict) and "markdown" in summary:
        body = summary["markdown"]
    else:
        flat = _numeric(summary)
        body = "\n".join(["| key | value |", "|---|---:|"] + [f"| {k} | {v:.4g} |" for k, v in flat.items()])
    stages = {s.name: s for s in dag.stages(params, root)}
    names = list(stages)
    index = names.index(name) + 1 if name in stages else 0
    what = stages[name].comment if name in stages and stages[name].comment else f"the figures stage {name} returned"
    key = f"{index:02d}-{name.replace('_', '-').lower()}"
    try:
        create_markdown_artifact(markdown=f"### {name}\n\n{body}\n", key=key,
                                 description=f"Stage {index} of {len(names)}, {name}: {what}")  # fmt: skip
    except Exception as e:  # artifacts are a nicety: never fail a stage over one
        logger.warning("could not create the Prefect artifact of %s: %s", name, e)


def accelerator_tags() -> list[str]:
    """`gpu` (the concurrency limit of one task at a time on the accelerator) when there is one. On
    CPU the limit would serialise the mapped CapFilt tasks of every worker: measured, 2 Dask worker
    processes ran at 0.92x the throughput of one while the tag was set."""
    import torch

    return ["gpu"] if torch.cuda.is_available() else []


def release_stale_gpu_slots() -> None:
    """Free the slots of the `gpu` concurrency limit (if the Prefect API has one).

    A run killed while a gpu-tagged task held a slot leaves it leased, and every gpu-tagged task of
    the next run waits for it forever (measured: a killed `make effect-full` stalled the next one at
    pre-training, idle). Call inside a flow run (it talks to that run's API), for a study that owns
    the API (`make effect`); `make run` recreates the limit instead."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:  # Prefect 3.8 keeps a tag limit as the global limit `tag:gpu`, whose slots hold the leases
            held = client.read_global_concurrency_limit_by_name("tag:gpu").active_slots
            if held:
                client.update_global_concurrency_limit("tag:gpu", GlobalConcurrencyLimitUpdate(active_slots=0))
                logger.info("released %d gpu concurrency slot(s) left leased by an earlier run", held)
        except ObjectNotFound:
            pass
        with contextlib.suppress(ObjectNotFound):  # and the tag's own (v1) record
            client.reset_concurrency_limit_by_tag("gpu")


def _register_key(context, parameters: dict[str, Any]) -> str:
    """Register again only when a model (or the store) changed: a cached re-run adds no versions."""
    models = parameters["models"]
    return digest({"models": versioning.fingerprint(list(models.values())),
                            "store": parameters["run"].get("tracking_uri")})  # fmt: skip


@task(cache_key_fn=_register_key, persist_result=True)
def register_task(
    run: dict,
    rows: list[dict],
    models: dict[str, str],
    run_ids: dict[str, str | None],
    vision_score: float | None = None,
    data_hash: str | None = None,
    params: str = "params.yaml",
    root: str = "data",
) -> dict:
    """Register every trained model (`models`, by the stage that trained it; see
    `flows.model_registry.registrations`), each logged in its stage run (`run_ids`; the parent run if a stage
    has none), baseline and bootstrapped as versions of one registered model whose `best` alias
    follows the measured score: CIDEr for captioners, test mean recall for filters, the shape probe
    for pre-trainings, the val shape F1 for the vision start."""
    from flows.model_registry import describe, describe_model, log_and_register, registrations

    score = {(f"{r['split']}/{r['metric']}", m): r[m] for r in rows for m in ("baseline", "bootstrapped")}
    out = {}
    for reg in registrations(params, root):
        if reg.stage not in models:
            continue
        metric = vision_score if reg.variant == "vision" else score.get((reg.metric, reg.variant))
        try:
            run_id = run_ids.get(reg.stage) or run["mlflow_parent"]
            tags = {"stage": reg.stage, "variant": reg.variant} | ({"data_hash": data_hash} if data_hash else {})
            info = log_and_register(run["tracking_uri"], run_id, models[reg.stage], reg.name, reg.role,
                                    metric=metric,
                                    metric_name=reg.metric, description=describe(reg, metric, run_id, data_hash),
                                    tags=tags, model_description=describe_model(reg))  # fmt: skip
            out[reg.stage] = f"{info['name']} v{info['version']}"
            run_log(f"registered {info['name']} version {info['version']} from {reg.stage} "
                    f"({reg.metric} {metric}; best={info['best']})")  # fmt: skip
        except Exception as e:  # the registry is a nicety of tracking: report, do not lose the run
            logger.warning("could not register %s (%s): %s", reg.role, reg.stage, e)
    return out
