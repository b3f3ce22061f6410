"""The BLIP bootstrap pipeline as a Prefect flow (deployment `bootstrap/full`).

    world -> tokenizer -> validate raw + leakage -> pre-train (baseline)
      -> fine-tune captioner + filter -> CapFilt (mapped per shard) -> validate CapFilt
      -> re-pre-train from scratch on the bootstrapped set -> fine-tune it
      -> evaluate baseline and bootstrapped -> comparison report -> register models

Every step calls the same stage function as its `dvc.yaml` stage (flows/stages.py), with the same
paths (`Layout`), so `dvc repro` and this flow cannot drift apart.

Serve the deployment and trigger it (a local server must be running, see README):
    python -m flows.bootstrap serve
    prefect deployment run bootstrap/full --watch
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import flow, tags, task, unmapped
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from flows import stages, versioning

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Layout:
    """Where every stage reads and writes (the same paths as dvc.yaml)."""

    root: str = "data"

    def p(self, *parts: str) -> str:
        return str(Path(self.root, *parts))

    @property
    def world(self) -> str:
        return self.p("world")

    def split(self, name: str) -> str:
        return self.p("world", name)

    @property
    def tokenizer(self) -> str:
        return self.p("tokenizer")

    @property
    def metrics(self) -> str:
        return self.p("metrics")

    def run(self, model: str, task: str) -> str:
        return self.p("runs", model, task)

    def model(self, model: str, task: str) -> str:
        return self.p("runs", model, task, "model")

    @property
    def capfilt(self) -> str:
        return self.p("capfilt")

    @property
    def bootstrapped(self) -> str:
        return self.p("capfilt", "shards")


# ------------------------------------------------------------------------------------------------
# one generic, versioned, cached stage task


def _cache_key(context, parameters: dict[str, Any]) -> str | None:
    """Inputs' fingerprints + the stage's params + the code: unchanged inputs hit the cache."""
    return versioning._sha(
        {
            "stage": parameters["name"],
            "inputs": versioning.fingerprint(parameters["inputs"]),
            "key": parameters["key"],
            "kwargs": parameters["kwargs"],
            "code": versioning.code_hash(),
        }
    )


def _retry_on_io(task, task_run, state) -> bool:
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
    retry_condition_fn=_retry_on_io,
    cache_key_fn=_cache_key,
    persist_result=True,
)
def stage_task(name: str, fn: str, kwargs: dict, inputs: list[str], outputs: list[str], key: dict, run: dict) -> dict:
    """Run `flows.stages.<fn>(**kwargs)`, with a nested MLflow run when the flow tracks one."""
    tracker = _stage_tracker(name, run, key, inputs)
    if tracker is not None and fn in ("stage_train", "stage_evaluate"):
        kwargs = kwargs | {"metric_logger": tracker}
    try:
        summary = getattr(stages, fn)(**kwargs)
    except BaseException:
        if tracker is not None:
            tracker.close("FAILED")
        raise
    if tracker is not None:
        _log_stage(tracker, name, summary, kwargs, outputs)
        tracker.close()
    _artifact(name, summary)
    return _jsonable_summary(summary)


def _stage_tracker(name: str, run: dict, key: dict, inputs: list[str]):
    if not run.get("mlflow_parent"):
        return None
    from blip_core.tracking import MLflowLogger

    tags_ = {
        "stage": name,
        "git_commit": run["git_commit"],
        "params_hash": versioning._sha(key),
        "data_hash": versioning._sha([versioning.data_hash(p) for p in inputs]),
    }
    lg = MLflowLogger(
        experiment=run["experiment"], run_name=name, tracking_uri=run["tracking_uri"], tags=tags_,
        parent_run_id=run["mlflow_parent"],
    )  # fmt: skip
    lg.log_params({"stage": key})
    return lg


def _log_stage(tracker, name: str, summary: Any, kwargs: dict, outputs: list[str]) -> None:
    flat = _numeric(summary, prefix=f"{name}/") if not name.startswith(("evaluate", "pretrain", "finetune")) else {}
    if flat:
        tracker.log(flat, step=0)
    for out in outputs:
        p = Path(out)
        if p.is_dir() and (p / "resolved_config.json").is_file():
            tracker.log_artifact(p / "resolved_config.json")
        elif p.suffix in (".json", ".png", ".md") and p.is_file():
            tracker.log_artifact(p)
        elif p.is_dir() and p.name in ("capfilt", "plots"):
            tracker.log_artifact(p, artifact_path=p.name)
    if name.startswith("validate"):
        from flows.validation import gx_root

        docs = gx_root() / "gx" / "uncommitted" / "data_docs" / "local_site"
        if docs.is_dir():
            tracker.log_artifact(docs, artifact_path="data_docs")
    if name.startswith("evaluate"):
        grid = _caption_grid(kwargs)
        if grid is not None:
            tracker.log_artifact(grid)


def _caption_grid(kwargs: dict) -> Path | None:
    """A PNG grid of test images with the generated captions, for the MLflow run."""
    out = Path(kwargs["out_file"])
    preds_file = out.with_name(out.stem + "_captions.json")
    if not preds_file.is_file():
        return None
    from blip_core.eval.captioning import caption_grid

    preds = json.loads(preds_file.read_text())
    split = next((d for d in kwargs["data_dirs"] if Path(d).name in preds), None)
    if split is None:
        return None
    return caption_grid(split, preds[Path(split).name], out.with_name(out.stem + "_grid.png"))


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


def _jsonable_summary(summary: Any) -> Any:
    return json.loads(json.dumps(summary, default=str))


def _artifact(name: str, summary: Any) -> None:
    """A markdown summary of each stage on the Prefect run page."""

    if isinstance(summary, dict) and "markdown" in summary:
        body = summary["markdown"]
    else:
        flat = _numeric(summary)
        body = "\n".join(["| key | value |", "|---|---:|"] + [f"| {k} | {v:.4g} |" for k, v in list(flat.items())[:40]])
    try:
        create_markdown_artifact(markdown=f"### {name}\n\n{body}\n", key=name.replace("_", "-").lower())
    except Exception as e:  # artifacts are a nicety: never fail a stage over one
        logger.warning("could not create the Prefect artifact of %s: %s", name, e)


# ------------------------------------------------------------------------------------------------
# CapFilt: one task per shard


_MODELS: dict[tuple, Any] = {}
_MODELS_LOCK = threading.Lock()


def _capfilt_models(captioner: str | None, filter_model: str):
    """One CapFiltModels per process (threads share it; each Dask worker builds its own)."""
    from blip_core.capfilt.pipeline import CapFiltModels

    with _MODELS_LOCK:
        key = (captioner, filter_model)
        if key not in _MODELS:
            _MODELS[key] = CapFiltModels(captioner, filter_model)  # models load on first use, once
        return _MODELS[key]


@task(task_run_name="caption-{shard}", tags=["gpu"], cache_policy=NO_CACHE, retries=1, retry_condition_fn=_retry_on_io)
def caption_shard_task(shard: str, captioner: str, filter_model: str, cfg: dict, work: str) -> dict:
    from blip_core.capfilt.pipeline import caption_one
    from blip_core.config import CapFiltConfig

    return caption_one(shard, _capfilt_models(captioner, filter_model), CapFiltConfig(**cfg), work)


@task(task_run_name="filter-{shard}", tags=["gpu"], cache_policy=NO_CACHE, retries=1, retry_condition_fn=_retry_on_io)
def filter_shard_task(shard: str, captioner: str | None, filter_model: str, cfg: dict, work: str) -> dict:
    from blip_core.capfilt.pipeline import filter_one
    from blip_core.config import CapFiltConfig

    return filter_one(shard, _capfilt_models(captioner, filter_model), CapFiltConfig(**cfg), work)


@task(
    task_run_name="calibrate-{shard}", tags=["gpu"], cache_policy=NO_CACHE, retries=1, retry_condition_fn=_retry_on_io
)
def calibrate_shard_task(shard: str, captioner: str | None, filter_model: str, cfg: dict, work: str) -> dict:
    from blip_core.capfilt.pipeline import calibrate_one
    from blip_core.config import CapFiltConfig

    return calibrate_one(shard, _capfilt_models(captioner, filter_model), CapFiltConfig(**cfg), work)


def task_runner(kind: str, workers: int):
    if kind == "threads":
        return ThreadPoolTaskRunner(max_workers=workers)
    if kind == "dask":
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError:
            raise ValueError("task_runner=dask needs prefect-dask: pip install -e '.[dask]'") from None
        address = os.environ.get("BLIP_DASK_ADDRESS")  # a running cluster (several machines), else a local one
        return DaskTaskRunner(address=address) if address else DaskTaskRunner()
    raise ValueError(f"task_runner must be threads or dask, got {kind!r}")


@flow(name="capfilt", flow_run_name="capfilt-{policy}")
def capfilt_flow(
    web: str,
    work: str,
    captioner: str | None,
    filter_model: str,
    cfg: dict,
    policy: str,
    calibration: str | None = None,
) -> dict:
    """Caption then filter every web shard, one task per shard, on the flow's task runner."""
    from blip_core.data.shards import list_shards

    shards = [str(s) for s in list_shards(web)]
    caption_results = []
    if captioner is not None:
        caption_results = caption_shard_task.map(shards, unmapped(captioner), unmapped(filter_model), unmapped(cfg),
                                                 unmapped(work)).result()  # fmt: skip
    filtered = filter_shard_task.map(shards, unmapped(captioner), unmapped(filter_model), unmapped(cfg),
                                     unmapped(work)).result()  # fmt: skip
    if cfg["threshold_mode"] == "calibrated":
        calib = [str(s) for s in list_shards(calibration)]
        calibrate_shard_task.map(calib, unmapped(captioner), unmapped(filter_model), unmapped(cfg),
                                 unmapped(work)).result()  # fmt: skip
    return {
        "shards": len(shards),
        "captioned_images": sum(r.get("images", 0) for r in caption_results),
        "scored_images": sum(r.get("images", 0) for r in filtered),
        "skipped_shards": sum(r["skipped"] for r in filtered),
    }


# ------------------------------------------------------------------------------------------------
# the parent flow


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
) -> dict:
    """Run the whole bootstrap pipeline; returns the baseline-vs-bootstrapped comparison."""
    import yaml

    L = Layout(root)
    doc = yaml.safe_load(Path(params).read_text()) if Path(params).is_file() else {}
    commit = versioning.git_commit()
    run: dict[str, Any] = {"git_commit": commit, "experiment": experiment, "mlflow_parent": None}
    parent = None
    if track:
        from blip_core.tracking import MLflowLogger

        parent = MLflowLogger(experiment=experiment, run_name=f"bootstrap-{commit}", tags={
            "git_commit": commit, "params_hash": versioning.params_hash(params), "pipeline": "prefect"})  # fmt: skip
        parent.log_params({k: v for k, v in doc.items() if isinstance(v, dict)})
        run |= {"mlflow_parent": parent.run_id, "tracking_uri": parent.tracking_uri}

    Path(L.metrics).mkdir(parents=True, exist_ok=True)
    Path(L.metrics, "stage_times.json").write_text("{}\n")

    def stage(name, fn, kwargs, inputs, outputs, sections, *, gpu=False):
        key = {s: doc.get(s) for s in sections}
        # outputs deleted since the cached run: the cache must not pretend they exist
        opts: dict[str, Any] = {"refresh_cache": not all(Path(o).exists() for o in outputs)}
        if gpu:
            opts["tags"] = ["gpu"]
        t0 = time.perf_counter()
        with tags(f"git:{commit}", f"params:{versioning._sha(key)}"):
            out = stage_task.with_options(**opts)(name, fn, kwargs, inputs, outputs, key, run)
        _add_time(L, name, time.perf_counter() - t0)
        return out

    try:
        stage("world", "stage_world", {"out_dir": L.world, "params": params}, [], [L.world], ["world"])
        data_tag = versioning.data_hash(L.world)
        with tags(f"data:{data_tag}"):
            result = _pipeline(stage, L, params, task_runner_kind, capfilt_workers)
        if parent is not None:
            parent.set_tags({"data_hash": data_tag})
            parent.log({f"compare/{r['split']}_{r['metric']}_delta": r["delta"] for r in result["rows"]}, step=0)
            register_task(run, L.root, result["rows"], _model_paths(L))
            parent.close()
        return result
    except BaseException:
        if parent is not None:
            parent.close("FAILED")
        raise


def _pipeline(stage, L: Layout, params, runner_kind, workers) -> dict:
    from blip_core.capfilt.pipeline import uses_captioner
    from blip_core.config import CapFiltConfig

    stage("tokenizer", "stage_tokenizer", {"data_dirs": [L.split("coco_train"), L.split("web")], "out_dir": L.tokenizer,
          "params": params}, [L.split("coco_train"), L.split("web")], [L.tokenizer], ["tokenizer"])  # fmt: skip
    m = L.metrics
    stage("validate_raw", "stage_validate", {"kind": "raw", "path": L.split("web"), "params": params,
          "out_file": f"{m}/validate_raw.json"}, [L.split("web")], [f"{m}/validate_raw.json"],
          ["validate", "reader"])  # fmt: skip
    evals = [L.split(s) for s in ("val", "test", "novel")]
    pool = [L.split("coco_train"), L.split("web")]
    stage("leakage", "stage_leakage", {"eval_dirs": evals, "pool_dirs": pool, "params": params,
          "out_file": f"{m}/leakage.json"}, evals + pool, [f"{m}/leakage.json"], ["validate"])  # fmt: skip

    def train(model: str, task: str, data: list[str], init: str | None, section: str):
        kwargs = {"task": task, "data_dirs": data, "out_dir": L.run(model, task), "params": params, "section": section}
        kwargs |= {"init": init} if init else {"tokenizer": L.tokenizer}
        inputs = data + ([init] if init else [L.tokenizer])
        stage(f"{'pretrain' if task == 'pretrain' else 'finetune_' + task}_{model}", "stage_train", kwargs, inputs,
              [L.model(model, task)], [section], gpu=True)  # fmt: skip

    train("baseline", "pretrain", pool, None, "pretrain")
    human = [L.split("coco_train")]
    train("baseline", "caption", human, L.model("baseline", "pretrain"), "finetune_caption")
    train("baseline", "retrieval", human, L.model("baseline", "pretrain"), "finetune_retrieval")

    # CapFilt: the baseline's fine-tuned captioner and filter clean the web split
    cfg = stages._section(params, "capfilt", CapFiltConfig)
    captioner = L.model("baseline", "caption") if uses_captioner(cfg) else None
    filt = L.model("baseline", "retrieval")
    t0 = time.perf_counter()
    with _threads_per_worker(runner_kind, workers):
        capfilt_flow.with_options(task_runner=task_runner(runner_kind, workers))(
            L.split("web"), L.capfilt, captioner, filt, dataclasses.asdict(cfg), cfg.policy, L.split("val")
        )
    _add_time(L, "capfilt_caption_filter", time.perf_counter() - t0)
    cf = {"web_dir": L.split("web"), "work_dir": L.capfilt, "captioner": captioner, "filter_model": filt,
          "params": params}  # fmt: skip
    stage("capfilt_select", "stage_capfilt_select", cf | {"metrics_dir": f"{m}/capfilt", "calibration_dir":
          L.split("val")}, [L.p("capfilt", "scores"), L.p("capfilt", "calibration"), filt], [f"{m}/capfilt"],
          ["capfilt"])  # fmt: skip
    stage("capfilt_reshard", "stage_capfilt_reshard", cf | {"human_dirs": human},
          [L.p("capfilt", "selection.parquet"), *human], [L.bootstrapped], ["capfilt"])  # fmt: skip
    stage("validate_capfilt", "stage_validate", {"kind": "capfilt", "path": L.capfilt, "params": params,
          "out_file": f"{m}/validate_capfilt.json"}, [L.bootstrapped], [f"{m}/validate_capfilt.json"],
          ["validate", "capfilt"])  # fmt: skip

    # the bootstrapped model: pre-trained from scratch on the cleaned data, then fine-tuned the same way
    train("bootstrapped", "pretrain", [L.bootstrapped], None, "pretrain")
    train("bootstrapped", "caption", human, L.model("bootstrapped", "pretrain"), "finetune_caption")
    train("bootstrapped", "retrieval", human, L.model("bootstrapped", "pretrain"), "finetune_retrieval")

    test_splits = [L.split("test"), L.split("novel")]
    for model in ("baseline", "bootstrapped"):
        models = [L.model(model, "caption"), L.model(model, "retrieval")]
        stage(f"evaluate_{model}", "stage_evaluate", {"model_dirs": models, "data_dirs": test_splits, "params": params,
              "out_file": f"{m}/eval_{model}.json"}, models + test_splits, [f"{m}/eval_{model}.json"],
              ["evaluate"], gpu=True)  # fmt: skip
    report = stage("report", "stage_report", {"baseline": f"{m}/eval_baseline.json", "bootstrapped":
                   f"{m}/eval_bootstrapped.json", "out_dir": f"{m}/report"},
                   [f"{m}/eval_baseline.json", f"{m}/eval_bootstrapped.json"], [f"{m}/report"], [])  # fmt: skip
    try:
        create_table_artifact(table=report["rows"], key="baseline-vs-bootstrapped")
    except Exception as e:
        logger.warning("could not create the comparison table artifact: %s", e)
    print(report["markdown"])
    return report


def _add_time(L: Layout, name: str, seconds: float) -> None:
    path = Path(L.metrics, "stage_times.json")
    times = json.loads(path.read_text()) if path.is_file() else {}
    path.write_text(json.dumps(times | {name: round(seconds, 2)}, indent=2) + "\n")


@contextlib.contextmanager
def _threads_per_worker(kind: str, workers: int):
    """Mapped CapFilt tasks run in threads of one process: split the cores between them, or the
    BLAS thread pools oversubscribe the CPU (measured: 40x slower decoding on 2 cores). The
    process-wide setting is restored afterwards, so the stages after CapFilt train on every core."""
    import torch

    before = torch.get_num_threads()
    if kind == "threads" and not torch.cuda.is_available():
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(workers, 1)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _model_paths(L: Layout) -> dict[str, str]:
    return {
        "pretrain": L.model("baseline", "pretrain"),
        "captioner": L.model("baseline", "caption"),
        "filter": L.model("baseline", "retrieval"),
        "bootstrapped": L.model("bootstrapped", "pretrain"),
    }


def _register_key(context, parameters: dict[str, Any]) -> str:
    """Register again only when a model (or the store) changed: a cached re-run adds no versions."""
    models = parameters["models"]
    return versioning._sha({"models": versioning.fingerprint(list(models.values())),
                            "store": parameters["run"].get("tracking_uri")})  # fmt: skip


@task(cache_key_fn=_register_key, persist_result=True)
def register_task(run: dict, root: str, rows: list[dict], models: dict[str, str]) -> dict:
    """Register the four models; the `best` alias follows test mean recall (CIDEr for the captioner)."""
    from flows.registry import log_and_register

    score = {(r["split"], r["metric"], m): r[m] for r in rows for m in ("baseline", "bootstrapped")}
    metric = {
        "pretrain": score.get(("test", "r_mean", "baseline")),
        "captioner": score.get(("test", "cider", "baseline")),
        "filter": score.get(("test", "r_mean", "baseline")),
        "bootstrapped": score.get(("test", "r_mean", "bootstrapped")),
    }
    out = {}
    for role, path in models.items():
        try:
            info = log_and_register(run["tracking_uri"], run["mlflow_parent"], path, role, metric=metric[role])
            out[role] = info["version"]
            logger.info("registered %s version %s (best=%s)", info["name"], info["version"], info["best"])
        except Exception as e:  # the registry is a nicety of tracking: report, do not lose the run
            logger.warning("could not register %s: %s", role, e)
    return out


def main(argv: list[str] | None = None) -> int:
    # run as `python -m flows.bootstrap`, this file is __main__, which cloudpickle would copy by value
    # (locks included) into the flow-run subprocess: use the importable module's flow instead
    from flows.bootstrap import bootstrap as flow_

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:
        flow_.serve(name="full", tags=["blip"], parameters={"params": "params.yaml", "root": "data"})
        return 0
    flow_()
    return 0


if __name__ == "__main__":
    sys.exit(main())
