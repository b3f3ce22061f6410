"""CapFilt as the web pool grows: time, throughput and peak memory, with every sample accounted for.

For each scale (a multiple of the make-run web pool, `world.num_web` in params.yaml) a world is
generated, and CapFilt (caption -> filter -> select -> reshard, the `blip capfilt run` path) runs in
a fresh process, whose peak RSS is measured. Captioner and filter are the `--preset` models with
random weights (trained weights change the caption lengths, not how the pipeline scales), sharing
one tokenizer. Ratios are against the first scale, measured in this same run.

    python benchmarks/bench_capfilt_scale.py --scales 0.25 1 4
    python benchmarks/bench_capfilt_scale.py --scales 1 10 --json reports/capfilt_scale.json

Goals (issue #14/#15): time grows linearly with the pool (throughput steady), peak memory stays flat
(streaming), and kept + dropped = every web sample.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _params(path: Path, num_web: int, base: Path) -> Path:
    doc = yaml.safe_load(base.read_text())
    doc["world"] |= {"num_web": num_web, "num_coco_train": 200, "num_val": 100, "num_test": 20, "num_novel": 20}
    doc["capfilt"] |= {"num_captions": 1}
    doc["validate"] |= {"keep_rate_min": 0.0, "keep_rate_max": 1.0, "max_kept_over_raw": 100.0}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def child(world: Path, work: Path, models: Path, params: Path) -> dict:
    """One CapFilt run in this process; its own peak RSS at the end."""
    import pandas as pd

    from blip_core.capfilt import steps
    from blip_core.capfilt.folders import read_score_index
    from blip_core.data.shards import read_stats
    from flows.stages import stage_capfilt_run

    t0 = time.perf_counter()
    out = stage_capfilt_run([world / "coco_train"], world / "web", work, captioner=models / "captioner",
                            filter_model=models / "filter", metrics_dir=work / "metrics", params=params,
                            calibration_dir=world / "val")  # fmt: skip
    seconds = time.perf_counter() - t0
    scores = steps.read_scores(read_score_index(work)["score_paths"])
    web = scores[scores["source"] == "web"]
    n_web = read_stats(world / "web")["num_samples"]
    sel = pd.read_parquet(work / "selection.parquet")
    kept_images = sel.loc[sel["keep"], "key"].nunique()
    reshard = out["reshard"]
    human = read_stats(world / "coco_train")["num_samples"]
    return {
        "web_images": n_web,
        "seconds": round(seconds, 2),
        "caption_s": out["score"]["caption"]["seconds"],
        "filter_s": out["score"]["filter"]["seconds"],
        "images_per_s": round(n_web / seconds, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        # accounting: every web sample scored once (its own caption), and kept or dropped
        "scored_once": bool(web["key"].is_unique and len(web) == n_web),
        "kept_images": int(kept_images),
        "written_web": reshard["images"] - human,
        "dropped_web": reshard["dropped_images"],
    }


def prepare(tmp: Path, scales: list[float], preset: str, base_params: Path) -> tuple[dict[float, Path], Path]:
    from blip_core.models import pretrained
    from blip_core.models.blip.presets import get_preset, with_tokenizer
    from blip_core.models.common.tokenizer import load_tokenizer
    from flows.stages import stage_tokenizer, stage_world

    base_web = yaml.safe_load(base_params.read_text())["world"]["num_web"]
    worlds = {}
    for s in scales:
        params = _params(tmp / f"params_{s}.yaml", round(base_web * s), base_params)
        t = time.perf_counter()
        stage_world(tmp / f"world_{s}", params=params)
        print(
            f"scale {s:g}: world with {round(base_web * s)} web images in {time.perf_counter() - t:.0f} s", flush=True
        )
        worlds[s] = params
    first = tmp / f"world_{scales[0]}"
    models = tmp / "models"
    stage_tokenizer([first / "coco_train", first / "web"], models / "tok")
    tok = load_tokenizer(models / "tok")
    import torch

    cfg = with_tokenizer(get_preset(preset), tok)
    cfg.tokenizer = str(models / "tok")
    torch.manual_seed(0)
    pretrained.save_pretrained(pretrained.create_model("captioner", cfg), models / "captioner", tokenizer=tok)
    pretrained.save_pretrained(pretrained.create_model("retrieval", cfg), models / "filter", tokenizer=tok)
    return worlds, models


def run(scales: list[float], preset: str = "tiny", base_params: Path = REPO / "params.yaml") -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        worlds, models = prepare(tmp, scales, preset, base_params)
        for s, params in worlds.items():
            args = ["--child", str(tmp / f"world_{s}"), str(tmp / f"work_{s}"), str(models), str(params)]
            r = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, cwd=REPO)
            if r.returncode != 0:
                raise RuntimeError(f"CapFilt at scale {s} failed:\n{r.stderr[-3000:]}")
            row = {"scale": s} | json.loads(r.stdout.strip().splitlines()[-1])
            print(json.dumps(row), flush=True)
            rows.append(row)
    ref = rows[0]
    for row in rows:
        row["time_ratio"] = round(row["seconds"] / ref["seconds"], 2)
        row["pool_ratio"] = round(row["web_images"] / ref["web_images"], 2)
        row["throughput_ratio"] = round(row["images_per_s"] / ref["images_per_s"], 2)
        row["memory_ratio"] = round(row["peak_rss_mb"] / ref["peak_rss_mb"], 2)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        "| pool | web images | seconds | images/s | throughput vs first | peak RSS MB | memory vs first | "
        "scored once | kept + dropped = pool |",
        "|---:|---:|---:|---:|---:|---:|---:|:--:|:--:|",
    ]
    for r in rows:
        accounted = r["written_web"] + r["dropped_web"] == r["web_images"]
        lines.append(
            f"| {r['scale']:g}x | {r['web_images']} | {r['seconds']:.0f} | {r['images_per_s']:.1f} | "
            f"{r['throughput_ratio']:.2f}x | {r['peak_rss_mb']:.0f} | {r['memory_ratio']:.2f}x | "
            f"{'yes' if r['scored_once'] else 'NO'} | {'yes' if accounted else 'NO'} |"
        )
    return "\n".join(lines)


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        world, work, models, params = map(Path, sys.argv[2:6])
        print(json.dumps(child(world, work, models, params)))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scales", type=float, nargs="+", default=[0.25, 1, 4], help="multiples of the make-run web pool")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args()
    from common import save

    from blip_core.machine import banner

    print(banner())
    rows = run(args.scales, args.preset)
    print(markdown(rows))
    save(args.json, scale_figures(rows), preset=args.preset, rows=rows)


def scale_figures(rows: list[dict]) -> list[dict]:
    from common import figure

    ref = rows[0]
    figs = []
    for r in rows[1:]:
        accounted = r["scored_once"] and r["written_web"] + r["dropped_web"] == r["web_images"]
        figs.append(figure(f"CapFilt at {r['scale']:g}x the make-run pool ({r['web_images']} web images)",
                           r["images_per_s"], "images/s", ratio=r["throughput_ratio"],
                           reference=f"{ref['scale']:g}x: {ref['images_per_s']} images/s",
                           goal="time linear: throughput >= 0.8x" if r["scale"] > ref["scale"] else "",
                           met=r["throughput_ratio"] >= 0.8 if r["scale"] > ref["scale"] else None,
                           note=f"every sample accounted for: {accounted}"))  # fmt: skip
        figs.append(figure(f"CapFilt peak RSS at {r['scale']:g}x", r["peak_rss_mb"], "MB", ratio=r["memory_ratio"],
                           reference=f"{ref['scale']:g}x: {ref['peak_rss_mb']} MB", goal="flat: <= 1.25x",
                           met=r["memory_ratio"] <= 1.25))  # fmt: skip
    return figs


if __name__ == "__main__":
    main()
