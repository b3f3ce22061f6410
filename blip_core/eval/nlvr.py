"""NLVR² evaluation: accuracy of the true/false prediction, overall and per statement type.

Reference: BLIP `train_nlvr.py:evaluate` (argmax of the classifier head against the label).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm import tqdm

from blip_core.config.train import EvalConfig
from blip_core.data.task_data import TaskItem
from blip_core.data.transforms import eval_transform
from blip_core.eval.vqa import accuracy_metrics


@torch.no_grad()
def evaluate_nlvr(
    model, items: Sequence[TaskItem], processor, cfg: EvalConfig, device: torch.device
) -> dict[str, float]:
    """`nlvr_acc`, `nlvr_acc_<type>` and `nlvr_n` for items with fields "statement", "label"
    (bool) and optionally "type", and two images (left, right)."""
    model.eval()
    size = model.cfg.vision.image_size
    correct: list[float] = []
    for s in tqdm(range(0, len(items), cfg.batch_size), desc="nlvr", leave=False):
        batch = items[s : s + cfg.batch_size]
        left = torch.stack([eval_transform(it.images[0], size) for it in batch]).to(device)
        right = torch.stack([eval_transform(it.images[1], size) for it in batch]).to(device)
        ids, mask = (t.to(device) for t in processor([it.fields["statement"] for it in batch]))
        pred = model(left, right, ids, mask)["logits"].argmax(dim=-1).cpu()  # (B,) 1 = true
        correct += [float(bool(p) == bool(it.fields["label"])) for p, it in zip(pred.tolist(), batch)]
    out = accuracy_metrics("nlvr_acc", correct, [it.fields.get("type") for it in items])
    out["nlvr_n"] = float(len(items))
    return out
