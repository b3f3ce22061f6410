"""How the trainer calls each BLIP model (the registry's `Task.forward`): the batch's tensors to the
model's arguments, and what the step adds (the momentum-distillation ramp, the hard-negative
generator seeded per step, caption-made ITM rows, unlikelihood negatives)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from blip_core.losses import alpha_ramp

if TYPE_CHECKING:
    from blip_core.train.loop import Trainer


def itc_itm_forward(trainer: Trainer, b: dict[str, Any]) -> dict[str, torch.Tensor]:
    """pretrain / retrieval: ITC + ITM (+ LM), momentum distillation ramped over the first epoch."""
    cfg = trainer.cfg
    ramp = int(cfg.alpha_ramp_epochs * trainer.steps_per_epoch)
    extra = b.get("itm_extra")  # caption-made ITM rows (TrainConfig.itm_swap_negatives / itm_phrase_positives)
    extras = {} if extra is None else {"itm_extra": {k: v.to(trainer.device) for k, v in extra.items()},
                                       "itm_word": cfg.itm_word_loss}  # fmt: skip
    return trainer.forward_model(b["images"], b["input_ids"], b["attention_mask"], b["image_ids"],
                                 alpha=alpha_ramp(trainer.step, ramp, trainer.model.cfg.alpha),
                                 generator=trainer.step_generator(), **extras)  # fmt: skip


def caption_forward(trainer: Trainer, b: dict[str, Any]) -> dict[str, torch.Tensor]:
    negatives = {}
    if "negative_ids" in b:  # TrainConfig.lm_unlikelihood
        negatives = {"negative_ids": b["negative_ids"].to(trainer.device), "unlikelihood": trainer.cfg.lm_unlikelihood}
    return trainer.forward_model(b["images"], b["input_ids"], b["attention_mask"], prompt_length=trainer.prompt_length,
                                 **negatives)  # fmt: skip


def vision_forward(trainer: Trainer, b: dict[str, Any]) -> dict[str, torch.Tensor]:
    if "regions" not in b:
        return trainer.forward_model(b["images"], b["labels"])
    regions = {k: v.to(trainer.device, non_blocking=True) for k, v in b["regions"].items()}  # a nested batch
    return trainer.forward_model(b["images"], b["labels"], regions)


def vqa_forward(trainer: Trainer, b: dict[str, Any]) -> dict[str, torch.Tensor]:
    return trainer.forward_model(b["images"], b["question_ids"], b["question_mask"], b["answer_ids"],
                                 b["answer_mask"], b["answer_index"], b["answer_weight"])  # fmt: skip


def nlvr_forward(trainer: Trainer, b: dict[str, Any]) -> dict[str, torch.Tensor]:
    return trainer.forward_model(b["images_left"], b["images_right"], b["input_ids"], b["attention_mask"],
                                 labels=b["labels"])  # fmt: skip
