"""Learning benchmark: does each tower of the `tiny` recipe learn the embedded world, and how fast.

Generates the `make run` world (params.yaml `world`, --seed) in a temporary folder, trains the
tokenizer, then pre-trains with params.yaml's `pretrain` section (the make-run budget, or --steps)
twice in this process:
- reference: the `tiny_vit` preset (BLIP's own patch-ViT tower, 16 px patches);
- the `tiny` preset as shipped (or --preset).
For each model, and for the untrained `tiny` model, it prints:
- training images/s;
- attribute probes on frozen features (blip_core.eval.probe): image tower (colours, shapes,
  colour-shape pairs present) and text tower (colours, shapes mentioned), micro F1;
- the end tasks CapFilt needs: ITM AUROC of noisy vs clean web captions (overall and per noise
  type) and the share of fully grounded beam captions on the test split.
Ratios are against the reference trained in the same run. Usage:
    python benchmarks/bench_learning.py [--params params.yaml] [--seed 0] [--steps N] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import torch

from blip_core.config import EvalConfig, TrainConfig, WorldConfig, load_params_section
from blip_core.data.loader import load_eval_split
from blip_core.data.world import generate_world
from blip_core.eval.captioning import evaluate_captioning
from blip_core.eval.probe import noise_auroc, probe_towers
from blip_core.machine import banner, describe
from blip_core.model import weights
from blip_core.model.tokenizer import TextProcessor
from blip_core.train import build_model, run_training
from flows.stages import stage_tokenizer


def measure(model_dir: Path, world: Path, eval_cfg: EvalConfig, model=None) -> dict:
    model = model if model is not None else weights.load_pretrained(model_dir, kind="pretrain")
    model.eval()
    processor = TextProcessor.for_model(model.cfg)
    size = model.cfg.vision.image_size
    train = load_eval_split(world / "coco_train", size)
    tests = {s: load_eval_split(world / s, size) for s in ("test", "novel")}
    with torch.no_grad():
        probes = probe_towers(model, processor, train, tests)
        auroc = noise_auroc(model, processor, world / "web", image_size=size)
        caption, _ = evaluate_captioning(model, tests["test"], processor, eval_cfg, torch.device("cpu"))
    return {"probe": probes, "noise_auroc": auroc, "test_grounded_true_rate": caption.get("grounded_true_rate", 0.0)}


def row(name: str, r: dict) -> str:
    img, txt = r["probe"]["image"]["test"], r["probe"]["text"]["test"]
    a = r["noise_auroc"]
    probes = f"img colour {img['color']['f1']:.2f} shape {img['shape']['f1']:.2f} pair {img['pair']['f1']:.2f}"
    probes += f" | txt colour {txt['color']['f1']:.2f} shape {txt['shape']['f1']:.2f}"
    itm = f"ITM AUROC {a['itm']:.3f} (corrupted {a.get('itm_corrupted', 0):.2f}"
    itm += f", mismatched {a.get('itm_mismatched', 0):.2f})"
    captions = f"captions true {r['test_grounded_true_rate']:.2f}"
    return f"{name:<22} {r.get('images_per_s', 0):>6.1f}  {probes} | {itm} | {captions}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--seed", type=int, default=0, help="world seed")
    ap.add_argument("--steps", type=int, default=0, help="optimizer steps (0 = the pretrain section's epochs)")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--reference", default="tiny_vit", help="reference preset ('' = skip it)")
    ap.add_argument("--out", default="", help="also write the results as JSON here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(banner())
    world_cfg = load_params_section(args.params, "world", WorldConfig)
    world_cfg.seed = args.seed
    train_cfg = load_params_section(args.params, "pretrain", TrainConfig)
    eval_cfg = load_params_section(args.params, "evaluate", EvalConfig)
    if args.steps:
        train_cfg.max_steps = args.steps
        train_cfg.epochs = max(train_cfg.epochs, 100)  # max_steps decides
    results: dict = {"machine": describe(), "world_seed": args.seed, "train": {"batch_size": train_cfg.batch_size}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        world = tmp / "world"
        generate_world(world_cfg, world, progress=False)
        stage_tokenizer([world / "coco_train", world / "web"], tmp / "tok", params=args.params)
        data = [world / "coco_train", world / "web"]
        train_cfg.preset = args.preset
        untrained, _ = build_model(train_cfg, init=None, tokenizer=tmp / "tok")
        results["untrained"] = measure(None, world, eval_cfg, model=untrained)
        for name in [n for n in (args.reference, args.preset) if n]:
            train_cfg.preset = name
            t = time.perf_counter()
            summary = run_training(train_cfg, data, tmp / name, tokenizer=tmp / "tok")
            results[name] = measure(tmp / name / "model", world, eval_cfg) | {
                "images_per_s": summary["images_per_s"],
                "steps": summary["steps"],
                "train_seconds": time.perf_counter() - t,
            }
    new = results[args.preset]
    print(f"\n{'model':<22} {'img/s':>6}  (probes: micro F1 on test; AUROC on the web split)")
    print(row(f"{args.preset} untrained", results["untrained"]))
    if args.reference:
        print(row(f"{args.reference} (ref)", results[args.reference]))
    print(row(args.preset, new))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    if not args.reference:
        return
    ref = results[args.reference]
    print(
        f"\n{args.preset} / {args.reference}: images/s x{new['images_per_s'] / ref['images_per_s']:.2f}, "
        f"ITM AUROC {new['noise_auroc']['itm']:.3f} vs {ref['noise_auroc']['itm']:.3f}, image shape F1 "
        f"{new['probe']['image']['test']['shape']['f1']:.2f} vs {ref['probe']['image']['test']['shape']['f1']:.2f}, "
        f"steps {new['steps']}"
    )


if __name__ == "__main__":
    main()
