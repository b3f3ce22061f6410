"""Data throughput: world generation and shard reading, in images/s.

Ratios are against a reference run in the same process (1 worker process), so the numbers compare
on any machine. Usage: python benchmarks/bench_data.py [--scale 0.2] [--workers 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from common import figure, save

from blip_core.config.data import WorldConfig
from blip_core.data.reader import build_pipeline, iter_samples
from blip_core.data.world.generate import generate_world


def _timed(fn) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scale", type=float, default=0.2, help="fraction of the default world (1.0 = full size)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here (benchmarks/report.py)")
    args = ap.parse_args()
    figs = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        results = {}
        for workers in sorted({1, args.workers}):
            cfg = WorldConfig(num_workers=workers, shard_size=500).scaled(args.scale)
            n = sum(cfg.split_sizes().values())
            dt, _ = _timed(lambda cfg=cfg, w=workers: generate_world(cfg, tmp / f"w{w}", progress=False))
            results[workers] = n / dt
            print(f"world generation, {workers} process(es): {n} images in {dt:.2f} s = {n / dt:,.0f} images/s")
        if args.workers in results and args.workers != 1:
            r = results[args.workers] / results[1]
            print(f"  ratio {args.workers} processes / 1 process: {r:.2f}x")
            figs.append(figure(f"world generation, {args.workers} processes", round(results[args.workers]), "images/s",
                               ratio=round(r, 2), reference="1 process"))  # fmt: skip
        full = sum(WorldConfig().split_sizes().values())
        print(f"  projected default-size world ({full} images): {full / results[max(results)]:.1f} s")

        web = tmp / f"w{max(results)}" / "web"
        dt, n = _timed(lambda: sum(1 for _ in iter_samples(web)))
        ref = n / dt
        print(f"shard read + JPEG decode, in process: {n} images in {dt:.2f} s = {ref:,.0f} images/s")
        pipe = build_pipeline(web, transform=lambda s: s["key"])
        loader = torch.utils.data.DataLoader(pipe, batch_size=None, num_workers=args.workers)
        dt, n2 = _timed(lambda: sum(1 for _ in loader))
        assert n2 == n, (n2, n)
        print(f"shard read via DataLoader, {args.workers} workers: {n2 / dt:,.0f} images/s ({n2 / dt / ref:.2f}x)")
        figs.append(figure("shard read + JPEG decode, in process", round(ref), "images/s"))
        figs.append(figure(f"shard read, DataLoader with {args.workers} workers", round(n2 / dt), "images/s",
                           ratio=round(n2 / dt / ref, 2), reference="in process"))  # fmt: skip
        figs.append(replay_figure(tmp / f"w{max(results)}" / "objects"))
    save(args.json, figs)


def replay_figure(folder: Path, epochs: int = 3) -> dict:
    """Training batches of the label-only split (the vision start's data: crop, collate, no model),
    epochs 2..N replaying epoch 1's reading (train.cache_samples_mb) against reading every epoch."""
    from blip_core.data.labelled import read_classes
    from blip_core.data.loader import TrainData

    kw = dict(batch_size=64, image_size=64, seed=0, crop_scale_min=0.85, shuffle_buffer=2000, num_workers=0,
              classes=read_classes([folder]))  # fmt: skip
    rates = {}
    for name, budget in (("read", 0), ("replay", 2**30)):
        data = TrainData([folder], None, cache_bytes=budget, **kw)
        next(iter(data.batches(0)))  # imports and first allocations out of the timing
        data = TrainData([folder], None, cache_bytes=budget, **kw)
        list(data.batches(0))
        dt, n = _timed(lambda data=data: sum(len(b["keys"]) for e in range(1, epochs) for b in data.batches(e)))
        rates[name] = n / dt
    r = rates["replay"] / rates["read"]
    print(f"training batches, epochs after the first: read {rates['read']:,.0f}, replayed {rates['replay']:,.0f} "
          f"images/s ({r:.2f}x)")  # fmt: skip
    name = "training batches (crop + collate), epochs after the first replayed"
    return figure(name, round(rates["replay"]), "images/s", ratio=round(r, 2),
                  reference=f"read every epoch: {rates['read']:,.0f} images/s")  # fmt: skip


if __name__ == "__main__":
    main()
