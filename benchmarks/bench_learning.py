"""Learning benchmark: does the `tiny` recipe learn the embedded world, and does BLIP pre-training keep
what the supervised vision start knows?

Generates the `make run` world (params.yaml `world`, --seed; the label-only `objects` split included)
in a temporary folder, trains the tokenizer, then in this process:
1. `pretrain_vision`: the supervised vision start on the objects split (params.yaml's section, or
   --vision-steps);
2. BLIP pre-training from that start, with params.yaml's `pretrain` section (the pipeline's recipe:
   its vision_lr_scale etc.; the make-run budget, or --steps);
3. the reference: the same BLIP pre-training from a random vision tower (BLIP without its ImageNet
   start; --reference '' skips it).
For each model, and for the untrained `tiny` model, it prints attribute probes on frozen features
(blip_core.eval.probe): image tower (colours, shapes, colour-shape pairs present; micro F1 on test)
and, for the BLIP models, the text tower, the ITM AUROC of noisy vs clean web captions (overall and
per noise type) and the share of fully grounded beam captions on test. The shape probe after
`pretrain_vision` against after BLIP pre-training answers "does BLIP pre-training keep shape?".
Ratios are against the reference trained in the same run. Usage:
    python benchmarks/bench_learning.py [--params params.yaml] [--seed 0] [--steps N] [--vision-steps N]
                                        [--out FILE.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import tempfile
import time
from pathlib import Path

import torch

from blip_core.config.data import WorldConfig
from blip_core.config.loader import load_params_section
from blip_core.config.train import EvalConfig, TrainConfig
from blip_core.data.loader import load_eval_split
from blip_core.data.world.generate import generate_world
from blip_core.eval.captioning import evaluate_captioning
from blip_core.eval.probe import fit_probe, image_features, noise_auroc, probe_towers, scene_labels
from blip_core.machine import banner, describe
from blip_core.models import pretrained
from blip_core.train.entry import build_model, run_training
from flows.stages import stage_tokenizer


def image_probes(model, world: Path) -> dict:
    """Colour / shape / pair probes of a model's frozen image features (fit on coco_train, test)."""
    size = model.cfg.vision.image_size
    fit, test = load_eval_split(world / "coco_train", size), load_eval_split(world / "test", size)
    with torch.no_grad():
        x_fit, x_test = image_features(model, fit.images), image_features(model, test.images)
    y_fit, y_test = scene_labels(fit.scenes), scene_labels(test.scenes)  # type: ignore[arg-type]
    return {"probe": {"image": {"test": {g: fit_probe(x_fit, y_fit[g], x_test, y_test[g]) for g in y_fit}}}}


def measure(model_dir: Path | None, world: Path, eval_cfg: EvalConfig, model=None) -> dict:
    model = model if model is not None else pretrained.load_pretrained(model_dir, kind="pretrain")
    model.eval()
    processor = pretrained.text_processor("pretrain", model.cfg)
    size = model.cfg.vision.image_size
    train = load_eval_split(world / "coco_train", size)
    tests = {s: load_eval_split(world / s, size) for s in ("test", "novel")}
    with torch.no_grad():
        probes = probe_towers(model, processor, train, tests)
        auroc = noise_auroc(model, processor, world / "web", image_size=size)
        caption, _ = evaluate_captioning(model, tests["test"], processor, eval_cfg, torch.device("cpu"))
    return {"probe": probes, "noise_auroc": auroc, "test_grounded_true_rate": caption.get("grounded_true_rate", 0.0)}


def row(name: str, r: dict) -> str:
    img = r["probe"]["image"]["test"]
    probes = f"img colour {img['color']['f1']:.2f} shape {img['shape']['f1']:.2f} pair {img['pair']['f1']:.2f}"
    if "text" not in r["probe"]:  # the vision start: an image tower only
        return f"{name:<24} {r.get('images_per_s', 0):>6.1f}  {probes}"
    txt, a = r["probe"]["text"]["test"], r["noise_auroc"]
    probes += f" | txt colour {txt['color']['f1']:.2f} shape {txt['shape']['f1']:.2f}"
    itm = f"ITM AUROC {a['itm']:.3f} (corrupted {a.get('itm_corrupted', 0):.2f}"
    itm += f", mismatched {a.get('itm_mismatched', 0):.2f})"
    captions = f"captions true {r['test_grounded_true_rate']:.2f}"
    return f"{name:<24} {r.get('images_per_s', 0):>6.1f}  {probes} | {itm} | {captions}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--seed", type=int, default=0, help="world seed")
    ap.add_argument("--steps", type=int, default=0, help="BLIP pre-training steps (0 = the pretrain section's epochs)")
    ap.add_argument("--vision-steps", type=int, default=0, help="pretrain_vision steps (0 = its section's epochs)")
    ap.add_argument("--reference", default="scratch", help="'scratch': also pre-train from a random tower; '' = skip")
    ap.add_argument("--out", default="", help="also write the results as JSON here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(banner())
    world_cfg = load_params_section(args.params, "world", WorldConfig)
    world_cfg.seed = args.seed
    vision_cfg = load_params_section(args.params, "pretrain_vision", TrainConfig)
    train_cfg = load_params_section(args.params, "pretrain", TrainConfig)
    eval_cfg = load_params_section(args.params, "evaluate", EvalConfig)
    for cfg, steps in ((train_cfg, args.steps), (vision_cfg, args.vision_steps)):
        if steps:
            cfg.max_steps, cfg.epochs = steps, max(cfg.epochs, 100)  # max_steps decides
    results: dict = {"machine": describe(), "world_seed": args.seed, "recipe": dataclasses.asdict(train_cfg)}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        world = tmp / "world"
        generate_world(world_cfg, world, progress=False)
        stage_tokenizer([world / "coco_train", world / "web"], tmp / "tok", params=args.params)
        data = [world / "coco_train", world / "web"]
        untrained, _ = build_model(dataclasses.replace(train_cfg, vision_init=""), init=None, tokenizer=tmp / "tok")
        results["untrained"] = measure(None, world, eval_cfg, model=untrained)
        t = time.perf_counter()
        summary = run_training(vision_cfg, [world / "objects"], tmp / "vision")
        start = pretrained.load_pretrained(tmp / "vision" / "model").eval()
        results["vision_start"] = image_probes(start, world) | {
            "images_per_s": summary["images_per_s"],
            "steps": summary["steps"],
            "train_seconds": time.perf_counter() - t,
        }
        runs = {"blip_from_start": tmp / "vision" / "model"}
        if args.reference == "scratch":
            runs["blip_from_scratch"] = None
        for name, vision_init in runs.items():
            cfg = dataclasses.replace(train_cfg, vision_init="")
            if vision_init is None:  # BLIP without its supervised start: the tower trains at the full lr
                cfg.vision_lr_scale, cfg.vision_freeze_steps, cfg.vision_layer_decay = 1.0, 0, 1.0
            t = time.perf_counter()
            summary = run_training(cfg, data, tmp / name, tokenizer=tmp / "tok", vision_init=vision_init)
            results[name] = measure(tmp / name / "model", world, eval_cfg) | {
                "images_per_s": summary["images_per_s"],
                "steps": summary["steps"],
                "train_seconds": time.perf_counter() - t,
            }
    print(f"\n{'model':<24} {'img/s':>6}  (probes: micro F1 on test; AUROC on the web split)")
    print(row("tiny untrained", results["untrained"]))
    print(row("pretrain_vision", results["vision_start"]))
    for name in runs:
        print(row(name, results[name]))
    shape = {k: results[k]["probe"]["image"]["test"]["shape"]["f1"] for k in ("vision_start", *runs)}
    print(
        f"\ndoes BLIP pre-training keep shape? image shape F1 {shape['vision_start']:.2f} after pretrain_vision -> "
        f"{shape['blip_from_start']:.2f} after BLIP pre-training (vision_lr_scale {train_cfg.vision_lr_scale}, "
        f"freeze {train_cfg.vision_freeze_steps} steps, layer decay {train_cfg.vision_layer_decay}, "
        f"{results['blip_from_start']['steps']} steps)"
    )
    if "blip_from_scratch" in results:
        new, ref = results["blip_from_start"], results["blip_from_scratch"]
        print(
            f"from the start / from scratch: ITM AUROC {new['noise_auroc']['itm']:.3f} vs "
            f"{ref['noise_auroc']['itm']:.3f}, image shape F1 {shape['blip_from_start']:.2f} vs "
            f"{shape['blip_from_scratch']:.2f}, captions true {new['test_grounded_true_rate']:.2f} vs "
            f"{ref['test_grounded_true_rate']:.2f}, images/s x{new['images_per_s'] / ref['images_per_s']:.2f}"
        )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
