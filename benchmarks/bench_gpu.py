"""The GPU figures, on one CUDA device, in one process; every ratio is taken within the run.

1. the device's measured bf16 matmul peak (TFLOP/s), the reference of 2;
2. a base pre-training step (ITC + ITM + LM, forward + backward + AdamW, batch 64, 224 px, bf16
   autocast): achieved TFLOP/s / the peak (goal >= 45%);
3. the tiny recipe's pre-training step at the recipe's batch (params.yaml `pretrain.batch_size`):
   images/s of the model step on device-resident batches (goal >= 5,000; the stage's loader is not in
   this figure: `make run`'s stage log has the end-to-end images/s);
4. base beam-3 captioning, batch 64: ours vs Hugging Face's BLIP with the same weights and autocast,
   images/s ratio (goal >= 3x);
5. base ITM with 2 captions per image (CapFilt), 256 pairs: ours vs HF, pairs/s ratio (goal >= 4x).

Each training figure is measured with the knobs a GPU run uses (`--compile`: torch.compile of the
step; the fused AdamW of `train.fused_optimizer`). Writes reports/benchmarks_gpu.{json,md}.
Random-init weights (no download). Usage:
    python benchmarks/bench_gpu.py [--compile] [--out reports/benchmarks_gpu]
    python benchmarks/bench_gpu.py --device cpu --quick   # the code path at toy sizes: numbers mean nothing
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
from pathlib import Path

import torch
from common import figure
from torch.utils.flop_counter import FlopCounterMode

from blip_core.models.blip.model import BlipCaptioner, BlipPretrain, BlipRetrieval, split_pretrain_state
from blip_core.models.blip.presets import get_preset
from blip_core.models.common.generate import GenerationConfig, generate

REPO = Path(__file__).resolve().parents[1]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_time(fn, repeats: int, device: torch.device) -> float:
    """The fastest of `repeats` timed calls after one warm-up, the device drained around each."""
    fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return min(times)


def autocast(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def matmul_peak(device: torch.device, bf16: bool, n: int, iters: int = 10) -> float:
    dtype = torch.bfloat16 if bf16 else torch.float32
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n**3 * iters / best_time(lambda: [a @ b for _ in range(iters)], 3, device)


def batch(cfg, b: int, device: torch.device, length: int = 30):
    t, s = cfg.text, cfg.vision.image_size
    ids = torch.randint(1000 % t.vocab_size, t.vocab_size, (b, length), device=device)
    ids[:, 0] = t.cls_token_id
    return torch.randn(b, 3, s, s, device=device), ids, torch.ones_like(ids), torch.arange(b, device=device)


def train_step_fn(cfg, b: int, device: torch.device, args):
    """(step function, FLOPs of one step) for BLIP pre-training at batch `b`."""
    cfg.queue_size = 4 * b  # the queue takes whole batches
    model = BlipPretrain(cfg).to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5, fused=device.type == "cuda")  # train.fused_optimizer: auto
    imgs, ids, mask, image_ids = batch(cfg, b, device)

    def loss():
        with autocast(device, args.bf16):
            out = model(imgs, ids, mask, image_ids)
        return out["itc_loss"] + out["itm_loss"] + out["lm_loss"]

    forward = torch.compile(loss) if args.compile else loss

    def step():
        opt.zero_grad(set_to_none=True)
        forward().backward()
        opt.step()

    with FlopCounterMode(display=False) as fc:
        loss().backward()
    opt.zero_grad(set_to_none=True)
    return step, fc.get_total_flops()


def hf_pair(cfg, device: torch.device):
    """Our captioner and filter and HF's, with the same (random) weights, on `device`."""
    import transformers

    from blip_core.models.blip.convert_hf import export_hf

    pre = BlipPretrain(cfg).eval()
    cap_state, ret_state = split_pretrain_state(pre.state_dict())
    cap, ret = BlipCaptioner(cfg).eval(), BlipRetrieval(cfg).eval()
    cap.load_state_dict(cap_state)
    ret.load_state_dict(ret_state)
    with tempfile.TemporaryDirectory() as tmp:
        hf_cap = transformers.BlipForConditionalGeneration.from_pretrained(str(export_hf(cap, f"{tmp}/c"))).eval()
        hf_ret = transformers.BlipForImageTextRetrieval.from_pretrained(str(export_hf(ret, f"{tmp}/r"))).eval()
    return [m.to(device) for m in (cap, ret, hf_cap, hf_ret)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="toy sizes (tiny_vit as 'base'): checks the code runs")
    ap.add_argument("--compile", action="store_true", help="torch.compile the training steps")
    ap.add_argument("--fp32", dest="bf16", action="store_false", help="no bf16 autocast")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=REPO / "reports" / "benchmarks_gpu")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_gpu: no CUDA device here (--device cpu --quick runs the code path at toy sizes)")
    torch.manual_seed(0)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    big = "tiny_vit" if args.quick else "base"
    b_train, b_cap, pairs = (4, 2, 8) if args.quick else (64, 64, 256)
    figs = []

    peak = matmul_peak(device, args.bf16, 512 if args.quick else 8192)
    kind = "bf16" if args.bf16 else "fp32"
    print(f"{name}: measured {kind} matmul peak {peak / 1e12:.1f} TFLOP/s")
    figs.append(figure(f"{kind} matmul peak", round(peak / 1e12, 2), "TFLOP/s", note="the reference of the step"))

    step, flops = train_step_fn(get_preset(big), b_train, device, args)
    dt = best_time(step, args.repeats, device)
    share = flops / dt / peak
    print(f"{big} pre-training step, batch {b_train}: {b_train / dt:.0f} images/s, {flops / dt / 1e12:.1f} "
          f"TFLOP/s = {share:.1%} of the peak")  # fmt: skip
    figs.append(figure(f"{big}: pre-train step, batch {b_train}", round(flops / dt / 1e12, 2), "TFLOP/s",
                       ratio=round(share, 3), reference=f"{kind} matmul peak {peak / 1e12:.0f} TFLOP/s",
                       goal=">= 0.45 of peak", met=share >= 0.45, note=f"{b_train / dt:.0f} images/s"))  # fmt: skip

    import yaml

    recipe = yaml.safe_load((REPO / "params.yaml").read_text())["pretrain"]["batch_size"]
    step, _ = train_step_fn(get_preset("tiny"), recipe, device, args)
    dt = best_time(step, args.repeats, device)
    print(f"tiny pre-training step, the recipe's batch {recipe}: {recipe / dt:.0f} images/s")
    figs.append(figure(f"tiny: pre-train step, batch {recipe} (params.yaml)", round(recipe / dt), "images/s",
                       goal=">= 5000", met=recipe / dt >= 5000,
                       note="model step, device-resident batches"))  # fmt: skip

    cfg = get_preset(big)
    cap, ret, hf_cap, hf_ret = hf_pair(cfg, device)
    t = cfg.text
    imgs = torch.randn(b_cap, 3, cfg.vision.image_size, cfg.vision.image_size, device=device)
    prompt = torch.tensor([t.bos_token_id, 1000 % t.vocab_size, 1001 % t.vocab_size], device=device)
    hf_prompt = torch.cat([prompt, torch.tensor([t.sep_token_id], device=device)])[None].repeat(b_cap, 1)
    gcfg = GenerationConfig(method="beam", num_beams=3, max_length=20, min_length=5)
    with torch.no_grad(), autocast(device, args.bf16):
        t_ours = best_time(lambda: generate(cap, cap.image_embeds(imgs), prompt, gcfg), args.repeats, device)
        t_hf = best_time(lambda: hf_cap.generate(pixel_values=imgs, input_ids=hf_prompt, num_beams=3, max_length=20,
                                                 min_length=5), args.repeats, device)  # fmt: skip
    print(f"{big} beam-3 captioning, batch {b_cap}: ours {b_cap / t_ours:.0f} images/s, HF {b_cap / t_hf:.0f}: "
          f"{t_hf / t_ours:.2f}x")  # fmt: skip
    figs.append(figure(f"{big}: beam-3 captioning, batch {b_cap}", round(b_cap / t_ours, 1), "images/s",
                       ratio=round(t_hf / t_ours, 2), reference=f"HF {b_cap / t_hf:.1f} images/s", goal=">= 3x",
                       met=t_hf / t_ours >= 3))  # fmt: skip

    ids = torch.randint(1000 % t.vocab_size, t.vocab_size, (pairs, 20), device=device)
    ids[:, 0] = t.cls_token_id
    mask = torch.ones_like(ids)
    pix = imgs[:1].repeat(pairs // 2, 1, 1, 1) + torch.randn(pairs // 2, 1, 1, 1, device=device)
    with torch.no_grad(), autocast(device, args.bf16):
        t_ours = best_time(lambda: ret.itm_logits(ret.image_embeds(pix), ids, mask), args.repeats, device)
        pp = pix.repeat_interleave(2, dim=0)  # HF's API takes one image per pair
        t_hf = best_time(lambda: hf_ret(input_ids=ids, attention_mask=mask, pixel_values=pp), args.repeats, device)
    print(f"{big} ITM, 2 captions/image, {pairs} pairs: ours {pairs / t_ours:.0f} pairs/s, HF {pairs / t_hf:.0f}: "
          f"{t_hf / t_ours:.2f}x")  # fmt: skip
    figs.append(figure(f"{big}: ITM, 2 captions/image, {pairs} pairs", round(pairs / t_ours), "pairs/s",
                       ratio=round(t_hf / t_ours, 2), reference=f"HF {pairs / t_hf:.0f} pairs/s", goal=">= 4x",
                       met=t_hf / t_ours >= 4))  # fmt: skip

    write(args.out, figs, device=name, quick=args.quick, compile=args.compile, autocast=kind)
    return 0


def write(out: Path, figs: list[dict], **meta) -> None:
    """OUT.json (the figures) and OUT.md (a table: figure, value, ratio and reference, goal, met)."""
    from blip_core.machine import describe

    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"machine": describe(), "date": time.strftime("%Y-%m-%d"), **meta, "figures": figs}
    out.with_suffix(".json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    lines = [f"# GPU benchmarks ({meta['device']}, {time.strftime('%Y-%m-%d')})", ""]
    if meta.get("quick"):
        lines += ["**--quick: toy sizes, a check that the code runs; these numbers mean nothing.**", ""]
    lines += [f"autocast {meta['autocast']}, torch.compile {meta['compile']}; every ratio within this run.", ""]
    lines += ["| figure | value | ratio | reference | goal | met |", "|---|---:|---:|---|---|---|"]
    for f in figs:
        met = "" if f["met"] is None else ("yes" if f["met"] else "no")
        ratio = "" if f["ratio"] is None else f"{f['ratio']:g}"
        lines.append(f"| {f['name']} | {f['value']:g} {f['unit']} | {ratio} | {f['reference']} | {f['goal']} | {met} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out.with_suffix('.md')}")


if __name__ == "__main__":
    raise SystemExit(main())
