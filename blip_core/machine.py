"""What machine a measurement ran on: CPU model, the vector flags that change float kernels, threads.

Benchmarks and reports print this first, because their absolute numbers differ between CPU types (an AVX2-only
machine vs an AMD EPYC with AVX512-BF16); ratios are measured against a reference in the same run.
"""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path

import torch

FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")


def describe() -> dict:
    model, flags = platform.processor() or "unknown", set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name") and model in ("unknown", "x86_64", ""):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    info = {
        "cpu": model,
        "flags": [f for f in FLAGS if f in flags],
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }
    return info


def has_bf16_units() -> bool:
    """The CPU computes bf16 natively (AVX512-BF16 or AMX): bf16 autocast is faster than fp32 there,
    and emulated, slower, elsewhere."""
    return bool({"avx512_bf16", "amx_bf16"} & set(describe()["flags"]))


def uses_bf16(device: torch.device, cpu: str) -> bool:
    """Whether to run under bf16 autocast: always on a GPU; on CPU as `cpu` says (off | on | auto:
    where the CPU has bf16 units). The one rule of training and CapFilt captioning."""
    if device.type != "cpu":
        return device.type == "cuda"
    return cpu == "on" or (cpu == "auto" and has_bf16_units())


@contextlib.contextmanager
def deterministic_algorithms(on: bool):
    """`torch.use_deterministic_algorithms(on)` for a block, restored after it (it is process-wide).

    Why: with 2 CPU threads some backward kernels accumulate in a varying order, so two runs of one
    seed differ by an ulp from step 2 and drift apart; the deterministic kernels make them equal at no
    measured cost. warn_only: an op with no deterministic kernel (some CUDA ones) warns, not fails.
    cuBLAS needs its workspace setting for reproducible GEMMs, set before its first use."""
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    if on and torch.cuda.is_available():
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(on, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


def banner() -> str:
    i = describe()
    gpu = f", GPU {i['cuda']}" if i["cuda"] else ""
    flags = " ".join(i["flags"]) or "no AVX2"
    return f"machine: {i['cpu']} [{flags}], {i['torch_threads']} torch threads, torch {i['torch']}{gpu}"


class DeviceOutOfMemory(MemoryError):
    """The accelerator ran out of memory; the message names the batch size and the knob to lower."""


@contextlib.contextmanager
def out_of_memory_hint(what: str, knob: str, value: int, extra: str = ""):
    """Inside, a CUDA out-of-memory error becomes one line: what ran, at which batch size, and the
    params.yaml knob to lower (rather than a traceback from deep inside a kernel launch)."""
    try:
        yield
    except torch.OutOfMemoryError as e:
        first = str(e).splitlines()[0] if str(e) else "out of memory"
        raise DeviceOutOfMemory(
            f"{what}: the device ran out of memory at {knob} = {value} ({first[:160]}); lower {knob} in "
            f"params.yaml{extra}"
        ) from None
