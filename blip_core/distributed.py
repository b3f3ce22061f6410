"""Minimal distributed helpers; every function is a no-op in a single plain process."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_info() -> tuple[int, int]:
    """(rank, world size)."""
    return (dist.get_rank(), dist.get_world_size()) if is_dist() else (0, 1)


def is_main_process() -> bool:
    return world_info()[0] == 0


def all_gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` from all ranks along dim 0 (no gradient), as BLIP's concat_all_gather."""
    if not is_dist():
        return x
    out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out, dim=0)


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def init_distributed() -> bool:
    """Initialise the process group when launched by torchrun (WORLD_SIZE > 1): NCCL on GPUs,
    gloo on CPU. Returns whether distributed mode is on."""
    if is_dist():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend=backend)
    return True


def cleanup_distributed() -> None:
    if is_dist():
        dist.destroy_process_group()


def default_device() -> torch.device:
    """The GPU of this process when there is one (under torchrun: the rank's), else the CPU."""
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
