"""Faster fp32 inference on CPU: every linear weight pre-packed once for oneDNN.

Why: decoding multiplies a few rows (images x beams) by every weight matrix at each step, so its
time is the weight stream. torch's default CPU GEMM re-packs the weight on every call; at 12 rows
that streamed 7-14 GB/s on the AMD EPYC CI machine, against 25-34 GB/s with the weight packed once
(30,524 x 768 LM head: 15.3 ms -> 4.0 ms). Large inputs (the vision tower, scoring) gain 10-15%.
This is the weight pre-packing torch.compile does on CPU with inductor's `freezing`, done directly
with the same oneDNN op so it costs no compile time.

Numerics stay fp32 (oneDNN's fp32 kernels sum in another order: differences at fp32 rounding,
~1e-6 relative; tokens are checked identical to Hugging Face's in benchmarks/bench_model.py). The
packed path is taken only when no gradient can be needed (grad mode off), for fp32 CPU inputs outside
autocast, and only while the weight is unchanged since packing (its version counter): a
`load_state_dict`, an optimiser step or `.to(...)` sends the call back to `F.linear`.

The packed copy is extra memory (one more copy of the linear weights: ~0.9 GB at base width).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Packed:
    """A oneDNN-layout copy of `weight`, valid while `weight._version == version`."""

    weight: torch.Tensor
    version: int
    tensor: torch.Tensor  # opaque mkldnn layout: no storage, cannot be copied or pickled

    def __reduce__(self):
        # a copied or pickled model (deepcopy, a Dask worker) gets no packed weight and uses F.linear
        return _none, ()


def _none() -> None:
    return None


def _pack(weight: torch.Tensor, rows_hint: int = 12) -> Packed:
    # rows_hint: the batch-size hint oneDNN tunes the layout for; any row count works with it
    return Packed(weight, weight._version, torch.ops.mkldnn._reorder_linear_weight(weight.detach(), rows_hint))


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, packed: Packed | None) -> torch.Tensor:
    """F.linear, through the packed weight when that is valid and no gradient can be needed."""
    if (
        packed is not None
        and packed.weight is weight
        and packed.version == weight._version
        and not torch.is_grad_enabled()
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
    ):
        return _packed_linear(x, packed.tensor, bias)
    return F.linear(x, weight, bias)


def _packed_linear(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")  # no fused activation


class PackedLinear(nn.Linear):
    """nn.Linear whose forward uses a packed weight (same parameters, same state_dict keys)."""

    packed: Packed | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias, self.packed)


_supported: bool | None = None


def supported() -> bool:
    """oneDNN is built in and its packed linear agrees with F.linear here (checked once)."""
    global _supported
    if _supported is None:
        try:
            g = torch.Generator().manual_seed(0)
            w, b, x = (torch.randn(*s, generator=g) for s in ((64, 48), (64,), (5, 48)))
            got = _packed_linear(x, _pack(w).tensor, b)
            _supported = torch.backends.mkldnn.is_available() and torch.allclose(got, F.linear(x, w, b), atol=1e-4)
        except (RuntimeError, AttributeError, NotImplementedError) as e:  # no oneDNN op in this torch build
            log.info("packed CPU linear unavailable (%s); using F.linear", e)
            _supported = False
    return _supported


@torch.no_grad()
def pack_for_cpu_inference(model: nn.Module) -> int:
    """Pre-pack the model's linear weights for CPU inference, in place; returns how many were packed.

    Call after the weights are loaded and the model is on its device. Does nothing on other devices,
    for non-fp32 weights, or where oneDNN's op is missing. Idempotent (re-packs stale weights).
    """
    if not supported():
        return 0
    n = 0
    for module in model.modules():
        if type(module) in (nn.Linear, PackedLinear) and _packable(module.weight):
            module.__class__ = PackedLinear  # in place: same parameters, hooks and owners; only forward differs
            module.packed = _pack(module.weight)
            n += 1
        weight = module.packable_weight() if hasattr(module, "packable_weight") else None
        if weight is not None and _packable(weight):
            module.packed = _pack(weight)  # a weight used through packing.linear, e.g. MED's tied LM head
            n += 1
    return n


def _packable(w: torch.Tensor) -> bool:
    return w.device.type == "cpu" and w.dtype == torch.float32 and w.dim() == 2
