"""Training batches of downstream-task items (VQA, NLVR²; blip_core.data.task_data).

The task splits are small (a few thousand items of 64 px images on the default world), so the
items are read once and their JPEGs kept in memory; images are augmented per (seed, epoch, key)
like the image-caption loader, and the item order is a seeded shuffle per epoch, so a resumed run
continues sample-exactly. Under DDP each rank takes every world-size-th item.
"""

from __future__ import annotations

import functools
import io
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from blip_core.data.task_data import iter_task_items
from blip_core.data.transforms import TrainTransform
from blip_core.distributed import world_info


@dataclass
class ItemStats:
    """What the loader read (run_training records it as the summary's `read`)."""

    items: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"items": self.items}


class TaskTrainData:
    """Epochs of batches over task-item folders, drop-last over the global batch."""

    def __init__(self, dirs: list[str | Path], collate, *, batch_size: int, image_size: int, seed: int,
                 crop_scale_min: float | None) -> None:  # fmt: skip
        if not dirs:
            raise ValueError("training needs at least one data directory")
        self.items = [it for d in dirs for it in iter_task_items(d, decode=False)]
        rank, world = world_info()[0], world_info()[1]
        self.batch_size, self.seed, self.collate = batch_size, seed, collate
        self.num_pairs = len(self.items)
        self.steps_per_epoch = self.num_pairs // (batch_size * world)
        if self.steps_per_epoch < 1:
            raise ValueError(f"{self.num_pairs} task items are fewer than one global batch ({batch_size * world})")
        self.rank, self.world = rank, world
        self.transform = TrainTransform(image_size, crop_scale_min, seed)
        self.stats = ItemStats(items=self.num_pairs)

    def batches(self, epoch: int, skip: int = 0) -> Iterator[dict[str, Any]]:
        from PIL import Image

        order = list(range(len(self.items)))
        random.Random(f"{self.seed}/{epoch}/items").shuffle(order)
        mine = order[self.rank :: self.world]
        self.transform.epoch = epoch
        for b in range(skip, self.steps_per_epoch):
            batch = []
            for i in mine[b * self.batch_size : (b + 1) * self.batch_size]:
                item = self.items[i]
                images = [self.transform(Image.open(io.BytesIO(j)).convert("RGB"), f"{item.key}/{n}")
                          for n, j in enumerate(item.images)]  # fmt: skip
                batch.append((item, images))
            yield self.collate(batch)


def answer_weights(answers: list[str]) -> list[tuple[str, float]]:
    """BLIP's VQA targets: each distinct human answer, weighted by its share of the answers."""
    counts = Counter(a for a in answers if a)
    return [(a, n / sum(counts.values())) for a, n in counts.items()]


@dataclass
class VQACollate:
    """Questions and their weighted answers: `answer_index` says which question row each answer
    row belongs to (a question has one row per distinct answer)."""

    processor: Any

    def __call__(self, batch: list[tuple[Any, list[torch.Tensor]]]) -> dict[str, Any]:
        q_ids, q_mask = self.processor([it.fields["question"] for it, _ in batch])
        rows = [(row, a, w) for row, (it, _) in enumerate(batch)
                for a, w in answer_weights(it.fields.get("answers") or [it.fields["answer"]])]  # fmt: skip
        if len(rows) == 0:
            raise ValueError("a VQA training batch has no answers (items without annotations cannot train)")
        a_ids, a_mask = self.processor([a for _, a, _ in rows])
        return {
            "images": torch.stack([imgs[0] for _, imgs in batch]),
            "question_ids": q_ids,
            "question_mask": q_mask,
            "answer_ids": a_ids,
            "answer_mask": a_mask,
            "answer_index": torch.tensor([r for r, _, _ in rows], dtype=torch.long),
            "answer_weight": torch.tensor([w for _, _, w in rows], dtype=torch.float),
            "keys": [it.key for it, _ in batch],
        }


@dataclass
class NLVRCollate:
    """A statement about two images, true or false."""

    processor: Any

    def __call__(self, batch: list[tuple[Any, list[torch.Tensor]]]) -> dict[str, Any]:
        ids, mask = self.processor([it.fields["statement"] for it, _ in batch])
        return {
            "images_left": torch.stack([imgs[0] for _, imgs in batch]),
            "images_right": torch.stack([imgs[1] for _, imgs in batch]),
            "input_ids": ids,
            "attention_mask": mask,
            "labels": torch.tensor([int(bool(it.fields["label"])) for it, _ in batch], dtype=torch.long),
            "keys": [it.key for it, _ in batch],
        }


def task_train_data(collate_cls, cfg, data_dirs: list[str | Path], processor, model) -> TaskTrainData:
    """The registry's `train_data` of an item task: its items batched by `collate_cls(processor)`."""
    size = model.cfg.vision.image_size
    return TaskTrainData(data_dirs, collate_cls(processor), batch_size=cfg.batch_size, image_size=size, seed=cfg.seed,
                         crop_scale_min=cfg.train_crop_scale_min)  # fmt: skip


vqa_train_data = functools.partial(task_train_data, VQACollate)
"""VQA: question / answer items."""
nlvr_train_data = functools.partial(task_train_data, NLVRCollate)
"""NLVR²: two images and a statement."""
