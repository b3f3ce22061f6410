"""CapFilt scoring on a real Dask cluster: throughput with 1 and 2 worker processes.

The CapFilt subflow (`flows.capfilt_flow`, one caption and one filter task per web shard) runs on a
`distributed.LocalCluster` through prefect-dask, each worker a process with one thread (as Dask sets
BLAS threads to 1 per worker). The make-run web pool (2,500 images) is cut into 10 shards so that
2 workers get equal shares. Ratio: 2 workers / 1 worker, measured in this same run (goal >= 1.8x
on 2 cores), for cold workers (fresh processes: the first task imports the code) and warm ones
(`--preload blip_core.capfilt.folders`, as a long-lived cluster is). The Prefect API is started before
any timing. Captioner and filter are the `--preset` models with random weights.

    python benchmarks/bench_dask.py [--workers 1 2] [--json reports/dask.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

REPO = Path(__file__).resolve().parents[1]


def _cpu_seconds(server_pid: int) -> dict[str, float]:
    """CPU seconds (user + system) so far of this process and of the Prefect server with its children."""
    import psutil

    def total(p: psutil.Process) -> float:
        t = p.cpu_times()
        return t.user + t.system

    server = psutil.Process(server_pid)
    return {"flow_and_scheduler": total(psutil.Process()),
            "prefect_server": total(server) + sum(total(c) for c in server.children(recursive=True))}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--shard-size", type=int, default=250)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    import distributed
    import yaml
    from bench_capfilt_scale import prepare
    from common import prefect_server

    from blip_core.machine import banner
    from flows.capfilt_flow import WORKER_CONFIG, capfilt_flow, task_runner

    print(banner())
    rows = []
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        tmp = Path(tmp)
        base = tmp / "base.yaml"
        doc = yaml.safe_load((REPO / "params.yaml").read_text())
        doc["world"]["shard_size"] = args.shard_size
        doc["capfilt"] |= {"num_captions": 1, "threshold_mode": "fixed"}
        base.write_text(yaml.safe_dump(doc, sort_keys=False))
        worlds, models = prepare(tmp, [1.0], args.preset, base)
        world, params = tmp / "world_1.0", worlds[1.0]
        n = sum(1 for _ in (world / "web").glob("*.tar"))
        # a Prefect server that every process (workers included) talks to, as under `make run`, up
        # before any timing
        server = stack.enter_context(prefect_server(tmp))
        print(f"Prefect API: {os.environ['PREFECT_API_URL']}")
        # a first flow run pays the server's first-use costs (~6 s, measured): not inside a figure
        capfilt_flow.with_options(task_runner=task_runner("threads", 1))(
            web_dir=str(world / "web"), work_dir=str(tmp / "warm_api"), captioner=str(models / "captioner"),
            filter_model=str(models / "filter"), params=str(params), policy="both",
        )  # fmt: skip
        for warm in (False, True):
            for w in args.workers:
                # warm: workers that imported the task code at start (`dask worker --preload
                # flows.capfilt_flow`), as a long-lived cluster has; cold: fresh worker processes
                # whose first task imports prefect, torch and blip_core (~5 s each)
                preload = ["flows.capfilt_flow", "blip_core.capfilt.folders"] if warm else []
                cluster = distributed.LocalCluster(n_workers=w, threads_per_worker=1, processes=True, host="127.0.0.1",
                                                   dashboard_address="127.0.0.1:0", silence_logs=40,
                                                   preload=preload, config=WORKER_CONFIG)  # fmt: skip
                with cluster, distributed.Client(cluster) as client:
                    if warm:
                        client.run(lambda: None)  # every worker has started (and preloaded)
                    os.environ["BLIP_DASK_ADDRESS"] = cluster.scheduler_address
                    # CPU the workers share their 2 cores with: this process (flow engine, Dask
                    # scheduler) and the Prefect server (every task state is a database write)
                    cpu0 = _cpu_seconds(server.pid)
                    t0 = time.perf_counter()
                    out = capfilt_flow.with_options(task_runner=task_runner("dask", w))(
                        web_dir=str(world / "web"), work_dir=str(tmp / f"work_{w}_{warm}"),
                        captioner=str(models / "captioner"), filter_model=str(models / "filter"), params=str(params),
                        policy="both",
                    )  # fmt: skip
                    dt = time.perf_counter() - t0
                    overhead = {k: round(v - cpu0[k], 1) for k, v in _cpu_seconds(server.pid).items()}
                images = out["scored_images"]
                rows.append({"workers": w, "warm": warm, "shards": n, "images": images, "seconds": round(dt, 2),
                             "images_per_s": round(images / dt, 2), "cpu_s_outside_workers": overhead})  # fmt: skip
                print(json.dumps(rows[-1]), flush=True)
    for r in rows:
        one = next(x for x in rows if x["warm"] == r["warm"] and x["workers"] == rows[0]["workers"])
        r["ratio"] = round(r["images_per_s"] / one["images_per_s"], 2)
    print("\n| Dask workers | cluster | shards | images | seconds | images/s | vs 1 worker |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['workers']} | {'warm' if r['warm'] else 'cold'} | {r['shards']} | {r['images']} | "
              f"{r['seconds']:.1f} | {r['images_per_s']:.1f} | {r['ratio']:.2f}x |")  # fmt: skip
    from common import figure, save

    figs = []
    for r in rows:
        if r["workers"] == 1:
            continue
        one = next(x for x in rows if x["warm"] == r["warm"] and x["workers"] == 1)
        kind = "warm workers (preloaded)" if r["warm"] else "cold workers (first task imports)"
        figs.append(figure(f"CapFilt subflow on Dask, {r['workers']} worker processes, {kind}", r["images_per_s"],
                           "images/s", ratio=r["ratio"], reference=f"1 worker: {one['images_per_s']} images/s",
                           goal=">= 1.8x", met=r["ratio"] >= 1.8))  # fmt: skip
    save(args.json, figs, rows=rows)


if __name__ == "__main__":  # Dask's nannies spawn: importing this file must start nothing
    main()
