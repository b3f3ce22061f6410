"""CapFilt scoring on Prefect: the `capfilt_score` stage of `flows.dag`, mapped one task per shard.

Same inputs and outputs as `blip stage capfilt_score` (which loops the shards in one process): a
caption task and a filter task per web shard, a calibration task per held-out shard, then the score
index that `select` and `reshard` read. Tasks run on threads (default) or on a Dask cluster
(`task_runner_kind="dask"`, prefect-dask; `BLIP_DASK_ADDRESS=tcp://host:8786` for several machines).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import threading
from pathlib import Path
from typing import Any

from prefect import flow, task, unmapped
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from flows.prefect_tasks import accelerator_tags, retry_on_io

_MODELS: dict[tuple, Any] = {}
_MODELS_LOCK = threading.Lock()


def _models(captioner: str | None, filter_model: str):
    """One CapFiltModels per process (threads share it; each Dask worker builds its own)."""
    from blip_core.capfilt.folders import CapFiltModels

    with _MODELS_LOCK:
        key = (captioner, filter_model)
        if key not in _MODELS:
            _MODELS[key] = CapFiltModels(captioner, filter_model)  # models load on first use, once
        return _MODELS[key]


def _cfg(cfg: dict):
    """The CapFilt config shipped to a worker as a dict, rebuilt with params.yaml's type checks."""
    from blip_core.config.loader import from_dict
    from blip_core.config.pipeline import CapFiltConfig

    return from_dict(CapFiltConfig, cfg, section="capfilt")


@task(task_run_name="caption-{shard}", cache_policy=NO_CACHE, retries=1, retry_condition_fn=retry_on_io)
def caption_shard_task(shard: str, captioner: str, filter_model: str, cfg: dict, work: str) -> dict:
    from blip_core.capfilt.folders import caption_one

    return caption_one(shard, _models(captioner, filter_model), _cfg(cfg), work)


@task(task_run_name="filter-{shard}", cache_policy=NO_CACHE, retries=1, retry_condition_fn=retry_on_io)
def filter_shard_task(
    shard: str, captioner: str | None, filter_model: str, cfg: dict, work: str, captioned: dict | None = None
) -> dict:
    """`captioned`: this shard's caption result. Taking it makes the filter task wait for its own
    shard's captions only, not for every caption task (no barrier between the two maps)."""
    from blip_core.capfilt.folders import filter_one

    return filter_one(shard, _models(captioner, filter_model), _cfg(cfg), work)


@task(task_run_name="calibrate-{shard}", cache_policy=NO_CACHE, retries=1, retry_condition_fn=retry_on_io)
def calibrate_shard_task(shard: str, captioner: str | None, filter_model: str, cfg: dict, work: str) -> dict:
    from blip_core.capfilt.folders import calibrate_one

    return calibrate_one(shard, _models(captioner, filter_model), _cfg(cfg), work)


WORKER_CONFIG = {"distributed.worker.profile.enabled": False}
"""Dask config of local CapFilt workers (remote ones: `DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=False`
in their environment): Dask's statistical profiler walks the task thread's stack every 10 ms and reads
source lines for it, holding the GIL (~1 s of every 7 s of a worker's event loop, profiled). 2 vs 1
workers on 2 cores, back to back: 1.74-1.83x without it, 1.47-1.68x with it; but a later run without
it gave 1.50x, so the gain is within this VM's run-to-run spread (+-15%)."""


def task_runner(kind: str, workers: int):
    if kind == "threads":
        return ThreadPoolTaskRunner(max_workers=workers)
    if kind == "dask":
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError:
            raise ValueError("task_runner=dask needs prefect-dask: pip install -e '.[dask]'") from None
        address = os.environ.get("BLIP_DASK_ADDRESS")  # a running cluster (several machines), else a local one
        if address:
            return DaskTaskRunner(address=address)
        # a local cluster: scheduler, workers and dashboard listen on this machine only
        local = {"n_workers": workers, "threads_per_worker": 1, "host": "127.0.0.1", "dashboard_address": "127.0.0.1:0",
                 "config": WORKER_CONFIG}  # fmt: skip
        return DaskTaskRunner(cluster_kwargs=local)
    raise ValueError(f"task_runner must be threads or dask, got {kind!r}")


@flow(name="capfilt", flow_run_name="capfilt-{policy}")
def capfilt_flow(
    web_dir: str,
    work_dir: str,
    captioner: str | None,
    filter_model: str,
    params: str,
    policy: str,
    calibration_dir: str | None = None,
) -> dict:
    """Caption then filter every web shard, one task per shard, on the flow's task runner."""
    from blip_core.capfilt import CALIBRATION, CAPTIONS, SCORES
    from blip_core.capfilt.folders import uses_captioner, write_score_index
    from blip_core.data.shards import list_shards
    from flows.stages import capfilt_config

    cfg = capfilt_config(params)
    for sub in (CAPTIONS, SCORES, CALIBRATION):
        os.makedirs(os.path.join(work_dir, sub), exist_ok=True)
    captioner = captioner if uses_captioner(cfg) else None
    shards = [str(s) for s in list_shards(web_dir)]
    args = (unmapped(captioner), unmapped(filter_model), unmapped(dataclasses.asdict(cfg)), unmapped(work_dir))
    tags = {"tags": accelerator_tags()}
    # shard i's filter task takes shard i's caption future: a worker that runs out of caption tasks
    # starts filtering at once instead of idling until the slowest caption task ends
    captions = caption_shard_task.with_options(**tags).map(shards, *args) if captioner is not None else None
    per_shard = captions if captions is not None else unmapped(None)
    filtered = filter_shard_task.with_options(**tags).map(shards, *args, captioned=per_shard).result()
    captioned = captions.result() if captions is not None else []
    if cfg.threshold_mode == "calibrated" and calibration_dir is None:
        raise ValueError("capfilt.threshold_mode is calibrated: the subflow needs calibration_dir (e.g. val)")
    if calibration_dir is not None:  # also with a fixed threshold: the quality report shows both operating points
        calibrate_shard_task.with_options(**tags).map([str(s) for s in list_shards(calibration_dir)], *args).result()
    write_score_index(web_dir, _models(captioner, filter_model), cfg, work_dir, calibration_dir=calibration_dir)
    return {
        "shards": len(shards),
        "captioned_images": sum(r.get("images", 0) for r in captioned),
        "scored_images": sum(r.get("images", 0) for r in filtered),
        "skipped_shards": sum(r["skipped"] for r in filtered),
    }


def already_scored(
    web_dir: str, work_dir: str, captioner: str | None, filter_model: str, params: str,
    calibration_dir: str | None = None, **_: Any,
) -> dict | None:  # fmt: skip
    """The subflow's summary when every score file of the current shards, checkpoints and config is
    there and indexed (a cached re-run): the subflow, its tasks and its model loads are skipped."""
    from blip_core.capfilt.folders import SCORE_INDEX, CapFiltModels, score_index, uses_captioner
    from flows.stages import capfilt_config

    cfg = capfilt_config(params)
    if cfg.threshold_mode == "calibrated" and calibration_dir is None:
        return None  # the subflow says what is missing
    models = CapFiltModels(captioner if uses_captioner(cfg) else None, filter_model)
    try:  # the index the filter step would write now, against the one it wrote
        expected = score_index(web_dir, models, cfg, work_dir, calibration_dir=calibration_dir)
        stored = json.loads((Path(work_dir) / SCORE_INDEX).read_text())
    except (FileNotFoundError, ValueError):
        return None
    if stored != expected:
        return None
    n = len(expected["scores"])
    return {"shards": n, "captioned_images": 0, "scored_images": 0, "skipped_shards": n, "served_from_outputs": True}


@contextlib.contextmanager
def threads_per_worker(kind: str, workers: int):
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
