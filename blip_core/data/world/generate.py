"""Write the whole embedded world: every image split's shards and every downstream-task split, in
one worker pool, and the `world.json` summary.

It sits above both the image samples (blip_core.data.world.samples, on render, captions and noise)
and the task items built on the same scenes (blip_core.data.world.tasks, on vqa, nlvr and video), so
neither imports the other's caller.
"""

from __future__ import annotations

import logging
import shutil
import signal
from collections import Counter
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from tqdm import tqdm

from blip_core.config.data import SPLITS, WorldConfig
from blip_core.data.shards import ShardWriter, write_stats
from blip_core.data.world.items import TASK_SPLITS
from blip_core.data.world.render import held_out_combos
from blip_core.data.world.samples import label_classes, make_sample
from blip_core.data.world.tasks import write_task_split
from blip_core.fileio import write_json

logger = logging.getLogger(__name__)


def write_shard(job: tuple[WorldConfig, str, str, int, int, int]) -> dict[str, Any]:
    cfg, out_dir, split, shard_index, start, stop = job
    noise: Counter[str] = Counter()
    writer = ShardWriter(Path(out_dir) / split, shard_index, split=split)
    try:
        for i in range(start, stop):
            s = make_sample(cfg, split, i)
            writer.write(s["key"], s["jpeg"], s["captions"], source=s["source"], meta=s["meta"], size=s["size"])
            if split == "web":
                noise[s["meta"]["gt"]["noise_type"]] += 1
    except BaseException:
        writer.abort()
        raise
    summary = writer.close()
    return {
        "split": split,
        **summary.to_dict(),
        "noise_counts": dict(sorted(noise.items())),
    }


def _default_sigterm() -> None:
    """Forked workers inherit the parent's SIGTERM handler; under Prefect that handler raises
    TerminationSignal when the pool stops its workers at the end, which logs a traceback for a run
    that succeeded. Workers only render shards: the default handling (exit) is right for them."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _write_task_split(job: tuple[WorldConfig, str, str, int, int, int]) -> dict[str, Any]:
    cfg, out_dir, split = job[:3]
    return {**write_task_split(cfg, out_dir, split), "num_samples": job[5], "is_task": True}


def _run_job(job: tuple[WorldConfig, str, str, int, int, int]) -> dict[str, Any]:
    return _write_task_split(job) if job[3] < 0 else write_shard(job)


def generate_world(cfg: WorldConfig, out_dir: str | Path, *, progress: bool = True) -> dict[str, Any]:
    """Write every split under `out_dir/<split>/` and a `world.json` summary; returns the summary.

    The downstream-task splits of `blip_core.data.world.tasks` (`vqa_*`, `nlvr_*`, `video_*`; one
    whose size is 0 is not written) are made in the same worker pool, one job per split.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = []
    for split, n in cfg.split_sizes().items():
        split_dir = out_dir / split
        if split_dir.exists():  # stale shards from a larger earlier run must not survive
            shutil.rmtree(split_dir)
        split_dir.mkdir()
        for shard_index, start in enumerate(range(0, n, cfg.shard_size)):
            jobs.append((cfg, str(out_dir), split, shard_index, start, min(n, start + cfg.shard_size)))
    task_sizes = cfg.task_split_sizes()
    for split in TASK_SPLITS:
        if (out_dir / split).exists():
            shutil.rmtree(out_dir / split)
        if task_sizes[split]:  # one job per task split (shard index -1); its "size" counts items
            jobs.append((cfg, str(out_dir), split, -1, 0, task_sizes[split]))
    # largest jobs first keeps both processes busy until the end (a task item costs less than an image)
    jobs.sort(key=lambda j: -(j[5] - j[4]) // (4 if j[3] < 0 else 1))
    results: list[dict[str, Any]] = []
    total = sum(j[5] - j[4] for j in jobs)
    with tqdm(total=total, desc="world", unit="item", disable=not progress) as bar:
        if cfg.num_workers > 1 and len(jobs) > 1:
            with get_context("fork").Pool(min(cfg.num_workers, len(jobs)), initializer=_default_sigterm) as pool:
                for r in pool.imap_unordered(_run_job, jobs):
                    results.append(r)
                    bar.update(r["num_samples"])
        else:
            for job in jobs:
                results.append(_run_job(job))
                bar.update(results[-1]["num_samples"])
    task_results = {r["split"]: r for r in results if r.get("is_task")}
    results = [r for r in results if not r.get("is_task")]
    summary: dict[str, Any] = {"splits": {}}
    for split in SPLITS:
        shards = sorted((r for r in results if r["split"] == split), key=lambda r: r["shard"])
        noise = Counter()
        for r in shards:
            noise.update(r["noise_counts"])
        stats = {
            "split": split,
            "num_samples": sum(r["num_samples"] for r in shards),
            "num_captions": sum(r["num_captions"] for r in shards),
            "num_shards": len(shards),
            "bytes": sum(r["bytes"] for r in shards),
            "shards": [{k: v for k, v in r.items() if k != "split"} for r in shards],
        }
        if split == "web":
            stats["noise_counts"] = dict(sorted(noise.items()))
        if split == "objects":  # the label vocabulary, for whoever trains on it
            stats["classes"] = label_classes(cfg)
        write_stats(out_dir / split, stats)
        summary["splits"][split] = {k: stats[k] for k in ("num_samples", "num_captions", "num_shards", "bytes")}
    summary["config"] = {f: getattr(cfg, f) for f in cfg.__slots__ if f != "num_workers"}  # type: ignore[attr-defined]
    summary["held_out_combos"] = [list(c) for c in held_out_combos(cfg)]
    summary["task_splits"] = {
        split: {k: task_results[split][k] for k in ("task", "items", "num_shards", "bytes")}
        for split in TASK_SPLITS
        if split in task_results
    }
    write_json(out_dir / "world.json", summary)
    logger.info("wrote world to %s: %s", out_dir, {s: v["num_samples"] for s, v in summary["splits"].items()})
    return summary
