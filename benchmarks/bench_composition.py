"""Composition benchmark: can a chain model learn which way a relation points, or how many objects
a group has, and from how many scenes?

Every model of the chain picks the true direction of "a <A> <relation> a <B>" against the reversed
one in about half of the test pairs (`relation_direction_acc`, chance 0.5), and the filter says
"one" for groups of two (`itm_count_acc`). This asks whether the signal is learnable at all or the
chain lacks data and steps for it: from a trained checkpoint of a run (the filter's ITM, `--model
.../retrieval/model`, or the captioner's LM, `.../caption/model`), the text side alone (the tower
frozen, its features computed once) trains on statements of `--scenes` scenes of `--train`, the
pairs `blip_core.eval.composition` judges (`--probe relation`: each unambiguous pair, true against
reversed; `--probe count`: each colour-shape group, "two red circles" against one fewer and one
more): the ITM on true against false, the captioner's LM on the true one. For each size, in the
same run, it reports train and held-out accuracy (on `--test`, scenes never trained on) every
`--eval-every` steps. The first size is the reference its ratios are against: 500 is the number of
human-captioned scenes in make run (coco_train), 2,500 a Visual Genome-sized corpus at make-run
scale (the `objects` split's labelled scenes play that role: `--train data/world/objects`).
Scene ground truth is read only to write the statements: this is a probe, not a recipe. Usage:
    python benchmarks/bench_composition.py --model data/runs/baseline/retrieval/model
        [--probe relation|count] [--train data/world/objects] [--test data/world/test]
        [--scenes 500,2500] [--steps 2500] [--lr 1e-4] [--json FILE.json]
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from common import figure, save

from blip_core.data.loader import EvalSplit, eval_transform, load_eval_split
from blip_core.data.reader import iter_samples
from blip_core.data.shards import list_shards, manifest_path
from blip_core.eval.composition import caption_log_likelihood, count_pairs, direction_pairs
from blip_core.machine import describe
from blip_core.models import pretrained


def load_scenes(folder: str, image_size: int, n: int) -> EvalSplit:
    """The first `n` images of a split with ground-truth scenes (an image-text split or `objects`)."""
    keys, images, scenes = [], [], []
    first = list_shards(folder)[:1]
    # `objects` holds label-only samples (source "labels"), read with labelled=True
    labelled = bool(first) and (pd.read_parquet(manifest_path(folder, first[0].stem)).source == "labels").all()
    for s in iter_samples(folder, labelled=labelled):
        scene = s["meta"].get("gt", {}).get("scene")
        if scene is None:
            continue
        keys.append(s["key"])
        images.append(eval_transform(s["image"], image_size))
        scenes.append(scene)
        if len(keys) >= n:
            break
    if not keys:
        raise ValueError(f"no images with ground-truth scenes in {folder}")
    return EvalSplit(keys, torch.stack(images), [[] for _ in keys], scenes)


PROBES = {"relation": direction_pairs, "count": count_pairs}
"""(scenes) -> [(image index, true statement, false statement, ...)] per probe."""


class Probe:
    """One checkpoint's text side trained on a probe's statements over frozen image features."""

    def __init__(self, path: str, lr: float) -> None:
        self.kind = pretrained.read_meta(path)["kind"]
        if self.kind not in ("retrieval", "captioner"):
            raise ValueError(f"--model must be a filter (retrieval) or captioner checkpoint, not {self.kind}")
        _, self.mcfg = pretrained.read_config(path)
        self.model = pretrained.load_pretrained(path, kind=self.kind)
        self.proc = pretrained.text_processor(self.kind, self.mcfg)
        for p in self.model.visual_encoder.parameters():
            p.requires_grad_(False)
        params = [p for n, p in self.model.named_parameters() if p.requires_grad and "_m." not in n]
        self.opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        self.model.eval()
        return torch.cat([self.model.image_embeds(images[s : s + 128]) for s in range(0, len(images), 128)])

    def _scores(self, feats: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """(b, N, D) features, 2b statements (each image's true then reversed) -> (2b,) scores."""
        if self.kind == "retrieval":
            ids, mask = self.proc(texts)
            return self.model.itm_logits(feats, ids, mask).float().log_softmax(-1)[:, 1]
        return caption_log_likelihood(self.model, None, texts, self.proc, torch.device("cpu"), per_image=2,
                                      image_embeds=feats)  # fmt: skip

    def step(self, feats: torch.Tensor, pairs: list[tuple]) -> float:
        self.model.train()
        f = feats[[p[0] for p in pairs]]
        if self.kind == "retrieval":  # true vs reversed, as the ITM's own binary task
            ids, mask = self.proc([t for p in pairs for t in p[1:3]])
            logits = self.model.itm_logits(f.repeat_interleave(2, 0), ids, mask).float()
            loss = F.cross_entropy(logits, torch.tensor([1, 0] * len(pairs)))
        else:  # the captioner's own task: the true statement's LM loss
            ids, mask = self.proc([p[1] for p in pairs], prompt=True)
            loss = self.model(None, ids, mask, prompt_length=self.proc.prompt_length, image_embeds=f)["lm_loss"]
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return loss.item()

    @torch.no_grad()
    def accuracy(self, feats: torch.Tensor, pairs: list[tuple]) -> float:
        self.model.eval()
        wins = 0
        for s in range(0, len(pairs), 100):
            chunk = pairs[s : s + 100]
            both = self._scores(feats[[p[0] for p in chunk]], [t for p in chunk for t in p[1:3]]).view(-1, 2)
            wins += int((both[:, 0] > both[:, 1]).sum())
        return wins / len(pairs)


def run_size(args, n: int, test: EvalSplit) -> dict:
    torch.manual_seed(0)
    probe = Probe(args.model, args.lr)
    train = load_scenes(args.train, probe.mcfg.vision.image_size, n)
    train_feats, test_feats = probe.features(train.images), probe.features(test.images)
    pairs = PROBES[args.probe]
    train_pairs, test_pairs = pairs(train.scenes), pairs(test.scenes)
    test_pairs = test_pairs[: args.max_test] if args.max_test else test_pairs
    print(f"{args.probe}, {n} scenes of {args.train}: {len(train_pairs)} statement pairs; held out: "
          f"{len(test_pairs)}", flush=True)  # fmt: skip
    before = probe.accuracy(test_feats, test_pairs)  # the checkpoint as the chain left it
    print(f"  step     0 held-out {before:.3f} (the checkpoint as trained)", flush=True)
    rng, curve, step, start = random.Random(0), [], 0, time.perf_counter()
    while step < args.steps:
        rng.shuffle(train_pairs)
        for s in range(0, len(train_pairs) - args.batch + 1, args.batch):
            loss = probe.step(train_feats, train_pairs[s : s + args.batch])
            step += 1
            if step % args.eval_every == 0 or step == args.steps:
                row = {"step": step, "seconds": round(time.perf_counter() - start, 1), "loss": round(loss, 4),
                       "train": probe.accuracy(train_feats, train_pairs[: len(test_pairs)]),
                       "test": probe.accuracy(test_feats, test_pairs)}  # fmt: skip
                curve.append(row)
                print(f"  step {step:5d} {row['seconds']:6.1f}s loss {loss:.3f} train {row['train']:.3f} "
                      f"held-out {row['test']:.3f}", flush=True)  # fmt: skip
            if step >= args.steps:
                break
    return {"scenes": n, "statements": len(train_pairs), "before": before, "curve": curve}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a filter (retrieval) or captioner (caption) model dir")
    ap.add_argument("--probe", choices=sorted(PROBES), default="relation")
    ap.add_argument("--train", default="data/world/objects", help="a split with ground-truth scenes")
    ap.add_argument("--test", default="data/world/test")
    ap.add_argument("--scenes", default="500,2500", help="training scene counts; the first is the reference")
    ap.add_argument("--steps", type=int, default=2500)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--max-test", type=int, default=0, help="held-out pairs scored (0: all)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print(describe(), flush=True)
    probe_cfg = pretrained.read_config(args.model)[1]
    test = load_eval_split(args.test, probe_cfg.vision.image_size)
    runs = [run_size(args, int(n), test) for n in args.scenes.split(",")]
    ref = runs[0]["curve"][-1]["test"]
    figures = []
    for r in runs:
        last = r["curve"][-1]
        name = f"held-out {args.probe} accuracy, {r['scenes']} scenes, {last['step']} steps"
        figures.append(figure(name, last["test"],
                              ratio=last["test"] / ref if ref else None, reference=f"{runs[0]['scenes']} scenes",
                              note=f"train {last['train']:.3f}; before {r['before']:.3f}; "
                                   f"{last['seconds']} s"))  # fmt: skip
        print(f"{r['scenes']:6d} scenes: held-out {r['before']:.3f} -> {last['test']:.3f} "
              f"(x{last['test'] / ref:.2f} of {runs[0]['scenes']} scenes), train {last['train']:.3f}, "
              f"{last['seconds']} s", flush=True)  # fmt: skip
    save(args.json, figures, model=args.model, probe=args.probe, train=args.train, runs=runs)


if __name__ == "__main__":
    main()
