"""A frozen vision tower's outputs, computed once per input image and looked up after that.

A tower that does not train (`TrainConfig.vision_lr_scale: 0`) runs in eval mode without gradients:
a fixed function of its input. Its output for an image it has already seen is looked up instead of
computed again, so the epochs after the first cost no vision forward when the images are not cropped
anew (`TrainConfig.frozen_features_mb`), the captions of one image share one forward, and a momentum
copy equal to its tower (BLIP's `visual_encoder_m`) shares the lookups. Entries are keyed by the
bytes of the input tensor (blake2b), so every model, task and batch layout reads the same entries.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class FeatureCache:
    """Tower outputs by input image within a byte budget; past it, outputs are computed each time
    (counted in `uncached`)."""

    budget_bytes: int
    used: int = 0
    hits: int = 0
    misses: int = 0
    uncached: int = 0

    def __post_init__(self) -> None:
        if self.budget_bytes <= 0:
            raise ValueError(f"a feature cache needs a positive byte budget, got {self.budget_bytes}")
        self._store: dict[bytes, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self._store)

    @staticmethod
    def keys(images: torch.Tensor) -> list[bytes]:
        """One 128-bit digest per image of a (B, ...) batch."""
        rows = images.detach().cpu().contiguous().view(images.shape[0], -1)
        return [hashlib.blake2b(row.numpy().tobytes(), digest_size=16).digest() for row in rows]

    def __call__(self, images: torch.Tensor, compute: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """(B, 3, H, W) -> compute's (B, ...) output, running `compute` once per image not yet kept
        (repeats within the batch included)."""
        keys = self.keys(images)
        first: dict[bytes, int] = {}  # each image not kept yet -> its first row in the batch
        for i, k in enumerate(keys):
            if k not in self._store and k not in first:
                first[k] = i
        self.hits += len(keys) - len(first)
        self.misses += len(first)
        fresh: dict[bytes, torch.Tensor] = {}
        if first:
            rows = list(first.values())
            out = compute(images if len(rows) == len(keys) else images[rows]).detach()  # (M, ...)
            for k, feat in zip(first, out, strict=True):
                fresh[k] = feat
                if self.used + feat.nbytes <= self.budget_bytes:
                    self._store[k] = feat
                    self.used += feat.nbytes
                else:
                    self.uncached += 1
        return torch.stack([fresh[k] if k in fresh else self._store[k] for k in keys])

    def stats(self) -> dict[str, float]:
        return {"hits": self.hits, "misses": self.misses, "uncached": self.uncached, "images": len(self),
                "mb": round(self.used / 2**20, 1)}  # fmt: skip


def attach(tower: nn.Module, cache: FeatureCache | None) -> None:
    """Serve `tower`'s outputs from `cache` while the tower is frozen (`None` detaches it). The cache
    is a plain attribute: it is not part of the state dict."""
    if cache is None:
        tower.__dict__.pop("feature_cache", None)
    else:
        tower.__dict__["feature_cache"] = cache


def cached(tower: nn.Module) -> FeatureCache | None:
    """The cache serving `tower` now: attached, the tower in eval mode and none of its weights
    trainable (a tower that trains or runs its training-mode norms is always run)."""
    cache = tower.__dict__.get("feature_cache")
    if cache is None or tower.training or any(p.requires_grad for p in tower.parameters()):
        return None
    return cache


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    """Two towers with equal parameters and buffers (a momentum copy that is still its tower)."""
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
