"""CapFilt scoring on a real Dask cluster: throughput with 1 and 2 worker processes.

The CapFilt subflow (`flows.capfilt_flow`, one caption and one filter task per web shard) runs on a
`distributed.LocalCluster` through prefect-dask, each worker a process with one thread (as Dask sets
BLAS threads to 1 per worker). The make-run web pool (2,500 images) is cut into 10 shards so that
2 workers get equal shares. Ratio: 2 workers / 1 worker, measured in this same run (goal >= 1.8x
on 2 cores). Captioner and filter are the `--preset` models with random weights.

    python benchmarks/bench_dask.py [--workers 1 2] [--json reports/dask.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

REPO = Path(__file__).resolve().parents[1]


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

    from blip_core.machine import banner
    from flows.capfilt_flow import capfilt_flow, task_runner

    print(banner())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = tmp / "base.yaml"
        doc = yaml.safe_load((REPO / "params.yaml").read_text())
        doc["world"]["shard_size"] = args.shard_size
        doc["capfilt"] |= {"num_captions": 1, "threshold_mode": "fixed"}
        base.write_text(yaml.safe_dump(doc, sort_keys=False))
        worlds, models = prepare(tmp, [1.0], args.preset, base)
        world, params = tmp / "world_1.0", worlds[1.0]
        n = sum(1 for _ in (world / "web").glob("*.tar"))
        for w in args.workers:
            cluster = distributed.LocalCluster(n_workers=w, threads_per_worker=1, processes=True, host="127.0.0.1",
                                               dashboard_address="127.0.0.1:0", silence_logs=40)  # fmt: skip
            with cluster, distributed.Client(cluster):
                os.environ["BLIP_DASK_ADDRESS"] = cluster.scheduler_address
                t0 = time.perf_counter()
                out = capfilt_flow.with_options(task_runner=task_runner("dask", w))(
                    web_dir=str(world / "web"), work_dir=str(tmp / f"work_{w}"), captioner=str(models / "captioner"),
                    filter_model=str(models / "filter"), params=str(params), policy="both",
                )  # fmt: skip
                dt = time.perf_counter() - t0
            images = out["scored_images"]
            rows.append({"workers": w, "shards": n, "images": images, "seconds": round(dt, 2),
                         "images_per_s": round(images / dt, 2)})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    for r in rows:
        r["ratio"] = round(r["images_per_s"] / rows[0]["images_per_s"], 2)
    print("\n| Dask workers | shards | images | seconds | images/s | vs 1 worker |\n|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['workers']} | {r['shards']} | {r['images']} | {r['seconds']:.1f} | {r['images_per_s']:.1f} | "
              f"{r['ratio']:.2f}x |")  # fmt: skip
    from common import figure, save

    figs = [figure(f"CapFilt subflow on Dask, {r['workers']} worker processes", r["images_per_s"], "images/s",
                   ratio=r["ratio"], reference=f"1 worker: {rows[0]['images_per_s']} images/s", goal=">= 1.8x",
                   met=r["ratio"] >= 1.8) for r in rows if r["workers"] == 2]  # fmt: skip
    save(args.json, figs, rows=rows)


if __name__ == "__main__":  # Dask's nannies spawn: importing this file must start nothing
    main()
