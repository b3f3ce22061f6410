"""`make bench`: run every benchmark, then write reports/benchmarks.md.

Each benchmark runs in its own process with `--json`; the report lists the machine (CPU model,
vector flags, threads), then every figure with the reference it is a ratio against (measured in
the same run) and the goal it is measured against. A benchmark that fails is reported as failed,
with the end of its output; the others still run.

    python benchmarks/report.py [--only model data ...] [--out reports/benchmarks.md]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

BENCHMARKS = {  # name -> (script and arguments, what it measures)
    "data": (["bench_data.py", "--scale", "0.2"], "world generation and shard reading"),
    "model-base": (["bench_model.py", "--preset", "base"], "ours vs Hugging Face BLIP at base width (goals)"),
    "model-tiny": (
        ["bench_model.py", "--preset", "tiny", "--train-only", "--train-batch", "32", "--bf16-steps", "100"],
        "the tiny preset of `make run`: training images/s, fp32 and bf16 (HF cannot load its conv stem)",
    ),  # fmt: skip
    "frozen": (["bench_frozen.py"], "work not done twice: a frozen tower's features, retrieval's ITM re-rank"),
    "capfilt-scale": (["bench_capfilt_scale.py", "--scales", "1", "0.25", "4"], "CapFilt as the web pool grows"),
    "dask": (["bench_dask.py"], "CapFilt subflow on a Dask cluster, 1 vs 2 workers"),
    "learning": (
        ["bench_learning.py", "--steps", "150", "--vision-steps", "300"],
        "does the tiny recipe learn; does BLIP pre-training keep the vision start (short budget)",
    ),
}


def run(name: str, tmp: Path) -> dict:
    args, _ = BENCHMARKS[name]
    out = tmp / f"{name}.json"
    flag = "--out" if name == "learning" else "--json"
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, str(HERE / args[0]), *args[1:], flag, str(out)], cwd=REPO,
                       capture_output=True, text=True)  # fmt: skip
    result = {"name": name, "seconds": round(time.perf_counter() - t0), "returncode": r.returncode}
    if r.returncode != 0 or not out.is_file():
        result["error"] = (r.stderr or r.stdout)[-1500:]
        return result
    result |= json.loads(out.read_text())
    result["stdout"] = r.stdout
    return result


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:,.2f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def _machine(m: dict) -> str:
    return (f"{m['cpu']}; flags: {' '.join(m['flags']) or 'no AVX2'}; {m['torch_threads']} torch threads; "
            f"torch {m['torch']}" + (f"; GPU {m['cuda']}" if m["cuda"] else "; no GPU"))  # fmt: skip


def markdown(results: list[dict]) -> str:
    from blip_core.machine import describe

    # `--only` keeps other benchmarks' figures from an earlier report, perhaps measured on another machine
    machines: dict[str, list[str]] = {}
    for r in results:
        machines.setdefault(_machine(r.get("machine") or describe()), []).append(f"`{r['name']}`")
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (benchmarks/report.py). Ratios are against a reference measured in the same run,",
        "so they compare across machines; absolute figures are the machine's that ran the benchmark.",
        "",
        *(f"Machine: {m}" if len(machines) == 1 else f"- {m}: {', '.join(names)}" for m, names in machines.items()),
        "",
        "| benchmark | figure | measured | ratio | against | goal | met |",
        "|---|---|---:|---:|---|---|:--:|",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['name']} | **failed** (exit {r['returncode']}) | | | | | |")
            continue
        for f in r.get("figures", []):
            met = {True: "yes", False: "**no**", None: ""}[f["met"]]
            ratio = f"{f['ratio']:.2f}x" if f["ratio"] is not None else ""
            note = f" ({f['note']})" if f["note"] else ""
            lines.append(f"| {r['name']} | {f['name']}{note} | {_fmt(f['value'])} {f['unit']} | {ratio} | "
                         f"{f['reference']} | {f['goal']} | {met} |")  # fmt: skip
    lines += ["", "## Runs", ""]
    for r in results:
        lines.append(f"- `{r['name']}` ({BENCHMARKS[r['name']][1]}): {r['seconds']} s"
                     + (f", **failed**:\n\n```\n{r['error']}\n```" if "error" in r else ""))  # fmt: skip
    learning = next((r for r in results if r["name"] == "learning" and "stdout" in r), None)
    if learning is not None:
        lines += ["", "## Learning (short budget)", "", "```", learning["stdout"].strip()[-3000:], "```"]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", choices=list(BENCHMARKS), default=list(BENCHMARKS))
    ap.add_argument("--out", type=Path, default=REPO / "reports" / "benchmarks.md")
    args = ap.parse_args()
    from blip_core.machine import banner

    print(banner(), flush=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only:
            print(f"running {name}: {BENCHMARKS[name][1]} ...", flush=True)
            results.append(run(name, Path(tmp)))
            status = "failed" if "error" in results[-1] else "done"
            print(f"  {status} in {results[-1]['seconds']} s", flush=True)
    # `--only` re-measures some benchmarks: the others keep their figures from the last full report
    previous = args.out.with_suffix(".json")
    if set(args.only) != set(BENCHMARKS) and previous.is_file():
        kept = {r["name"]: r for r in json.loads(previous.read_text()) if r["name"] not in args.only}
        fresh = {r["name"]: r for r in results}
        results = [fresh.get(n) or kept[n] for n in BENCHMARKS if n in fresh or n in kept]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown(results))
    previous.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"wrote {args.out}")
    if any("error" in r for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
