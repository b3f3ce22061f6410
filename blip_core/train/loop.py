"""The training loop for every trainable task; no model code here.

How a batch reaches the model is the task's `forward` adapter in the registry (blip_core.registry;
BLIP's in blip_core.models.blip.adapters), e.g. pretrain / retrieval: model(images, ids, mask,
image_ids, alpha, generator) -> ITC + ITM (+ LM); caption: model(images, ids, mask, prompt_length)
-> LM. The total loss is the sum of every `*_loss` the model returns. The vision towers a model
names (`vision_towers`) are what the trainer freezes or slows.

Reproducibility: the hard-negative generator is re-seeded from (seed, step) every step, data order
and augmentation derive from (seed, epoch, key), and checkpoints hold RNG states and the position
in the epoch, so a resumed run continues sample-exactly.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from blip_core.config.train import TrainConfig
from blip_core.data.loader import TrainData
from blip_core.distributed import default_device, is_dist, is_main_process, world_info
from blip_core.machine import out_of_memory_hint, uses_bf16
from blip_core.models.common.feature_cache import FeatureCache, attach, same_weights
from blip_core.models.common.vision import vision_tower_names, written_out_attention
from blip_core.registry import get_task, resolve
from blip_core.tracking import MetricLogger, NullLogger
from blip_core.train.checkpoint import latest_checkpoint, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from blip_core.train.optim import create_optimizer, create_scheduler

logger = logging.getLogger(__name__)


def _sync_batch_norm(model: nn.Module, device: torch.device) -> nn.Module:
    """Under DDP, BatchNorm statistics must cover the global batch for N processes to equal one:
    SyncBatchNorm on GPUs. PyTorch's SyncBatchNorm has no CPU kernel, so CPU ranks keep per-rank
    statistics (said once); `vision.stem_norm: group` has no batch statistics at all."""
    has_bn = any(isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d | nn.BatchNorm3d) for m in model.modules())
    if not has_bn:
        return model
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    logger.warning(
        "BatchNorm under CPU DDP uses per-rank batch statistics (SyncBatchNorm needs GPUs): N processes "
        "are close to, not equal to, one process; vision.stem_norm=group makes them equal"
    )
    return model


class Trainer:
    def __init__(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        data: TrainData,
        out_dir: str | Path,
        *,
        prompt_length: int = 0,
        metric_logger: MetricLogger | None = None,
        device: torch.device | None = None,
    ) -> None:
        self.cfg, self.data, self.out_dir = cfg, data, Path(out_dir)
        self.task = get_task(cfg.task)
        self._task_forward = resolve(self.task.forward)  # the registry's adapter: how this task calls its model
        self.device = device or default_device()
        if is_dist():
            model = _sync_batch_norm(model, self.device)
        self.model = model.to(self.device)
        # the state a forward pass changes besides the queues: restored when a step is non-finite
        self._batch_norms = [m for m in self.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.prompt_length = prompt_length
        self.bf16 = uses_bf16(self.device, cfg.cpu_bf16)
        """Forward passes under bf16 autocast (TrainConfig.cpu_bf16 on CPU; always on a GPU)."""
        if self.bf16 and self.device.type == "cpu":
            written_out_attention(self.model)  # the fused CPU kernel is slow in bf16
        self.log = metric_logger or NullLogger()
        self.steps_per_epoch = data.steps_per_epoch // cfg.grad_accum
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"train.grad_accum ({cfg.grad_accum}) exceeds the batches per epoch ({data.steps_per_epoch})"
            )
        total = self.steps_per_epoch * cfg.epochs
        self.total_steps = min(total, cfg.max_steps) if cfg.max_steps else total
        # the vision tower's start is kept by freezing or slowing it (TrainConfig.vision_*)
        self._towers = [getattr(model, n) for n in vision_tower_names(model)]
        if (cfg.vision_frozen or cfg.vision_freeze_steps) and not self._towers:
            raise ValueError(
                f"train.vision_lr_scale / vision_freeze_steps: a {type(model).__name__} has no vision tower"
            )
        if cfg.vision_freeze_steps and not cfg.vision_frozen and is_dist():
            raise ValueError("train.vision_freeze_steps (unfreezing mid-run) is not supported under DDP; "
                             "use vision_lr_scale")  # fmt: skip
        self._vision_frozen: bool | None = None
        self._freeze_vision(cfg.vision_frozen or cfg.vision_freeze_steps > 0)
        self.feature_caches = self._attach_feature_caches() if cfg.frozen_features and self._towers else []
        """A frozen tower's outputs, looked up after their first forward (TrainConfig.frozen_features_mb)."""
        self.opt = create_optimizer(model, cfg)
        self.sched = create_scheduler(self.opt, cfg, self.steps_per_epoch, self.total_steps)
        self.forward_model: nn.Module = model
        if is_dist():
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.forward_model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        if cfg.compile:
            self.forward_model = torch.compile(self.forward_model)
        self.step = 0  # optimizer steps done
        self.epoch = 0
        self.batch_in_epoch = 0  # data batches consumed in the current epoch
        self.history: list[dict[str, float]] = []
        self.nonfinite_steps = 0  # updates skipped for a non-finite loss or gradient
        self.nonfinite_in_a_row = 0
        self.resumed_from: int | None = None

    # -- checkpointing ----------------------------------------------------------------------------------
    @property
    def ckpt_dir(self) -> Path:
        return self.out_dir / "checkpoints"

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "rng": rng_state(),
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
        }

    def save(self) -> Path | None:
        if not is_main_process():
            return None
        return save_checkpoint(self.ckpt_dir, self.state_dict(), self.step, self.cfg.keep_last)

    def resume(self) -> bool:
        """Continue from the latest checkpoint in out_dir, if any."""
        path = latest_checkpoint(self.ckpt_dir)
        if path is None:
            return False
        state = load_checkpoint(path)
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        self.resumed_from = self.step
        self._truncate_loss_log(self.step)
        logger.info("resumed from %s (step %d, epoch %d, batch %d)", path, self.step, self.epoch, self.batch_in_epoch)
        return True

    def _truncate_loss_log(self, step: int) -> None:
        """Drop the loss lines a killed run wrote after its last checkpoint: they are run again."""
        path = self.out_dir / "losses.jsonl"
        if not is_main_process() or not path.is_file():
            return
        from blip_core.fileio import write_text

        kept = [ln for ln in path.read_text().splitlines() if (s := _step_of(ln)) is not None and s <= step]
        write_text(path, "".join(ln + "\n" for ln in kept))

    # -- one step -----------------------------------------------------------------------------------------
    def _freeze_vision(self, frozen: bool) -> None:
        """A frozen tower computes no gradients (no backward through it) and runs its norms in eval
        mode, so it stays exactly the start it was given; its momentum copy then stays equal to it."""
        if frozen == self._vision_frozen or not self._towers:
            return
        for p in self._towers[0].parameters():
            p.requires_grad_(not frozen)
        self._vision_frozen = frozen

    def _attach_feature_caches(self) -> list[FeatureCache]:
        """One cache for the tower, shared by a momentum copy with the same weights (a frozen tower's
        copy is never updated, so it stays the same), another for a copy that differs."""
        online, *copies = self._towers
        budget = self.cfg.frozen_features_mb * 2**20
        caches = [FeatureCache(budget)]
        attach(online, caches[0])
        for tower in copies:
            cache = caches[0] if same_weights(online, tower) else FeatureCache(budget)
            if cache is not caches[0]:
                caches.append(cache)
            attach(tower, cache)
        return caches

    def _set_train_mode(self) -> None:
        self.model.train()
        frozen = self.cfg.vision_frozen or self.step < self.cfg.vision_freeze_steps
        self._freeze_vision(frozen)
        if frozen:
            for tower in self._towers:
                tower.eval()

    def _autocast(self):
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def step_generator(self) -> torch.Generator:
        """A generator seeded by the run's seed and the step: a resumed run draws the same negatives."""
        return torch.Generator(device=self.device).manual_seed(self.cfg.seed * 1_000_003 + self.step)

    def _forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        b = {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
        with self._autocast():
            return self._task_forward(self, b)

    def train_step(self, batches: list[dict[str, Any]]) -> dict[str, float]:
        """One optimizer step over `grad_accum` micro-batches.

        A non-finite loss or gradient norm (on any rank) skips the update: no optimizer step, the
        BatchNorm running statistics restored (the feature queues never take non-finite features,
        see `enqueue`), counted in `nonfinite_steps` with a warning naming the step and batches;
        more than `max_nonfinite_steps` in a row stop the run with FloatingPointError.
        """
        self._set_train_mode()
        # BatchNorm statistics before the forward passes: a non-finite batch would poison them
        saved = [{k: b.clone() for k, b in m.named_buffers(recurse=False)} for m in self._batch_norms]
        sums: dict[str, float] = {}
        where, knob = f"{self.cfg.task} training, step {self.step + 1}", f"{self.task.section}.batch_size"
        for i, batch in enumerate(batches):
            sync = i == len(batches) - 1 or not is_dist()
            ctx = contextlib.nullcontext() if sync else self.forward_model.no_sync()
            oom = out_of_memory_hint(where, knob, self.cfg.batch_size, " (raise grad_accum to keep the global batch)")
            with ctx, oom:
                out = self._forward(batch)
                losses = {k: v for k, v in out.items() if k.endswith("_loss")}
                total = sum(losses.values())
                (total / len(batches)).backward()
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) / len(batches)
        if self.cfg.grad_clip:
            sums["grad_norm"] = float(nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip))
        finite = all(math.isfinite(v) for k, v in sums.items() if k.endswith("_loss") or k == "grad_norm")
        if is_dist():  # every rank skips together (their losses differ; the reduced gradients do not)
            flag = torch.tensor([float(finite)], device=self.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
            finite = bool(flag.item())
        if finite:
            self.opt.step()
            self.nonfinite_in_a_row = 0
        else:
            self._skip_nonfinite(batches, sums, saved)
        self.opt.zero_grad(set_to_none=True)
        sums["lr"] = self.opt.param_groups[0]["lr"]
        self.sched.step()
        sums["loss"] = sum(v for k, v in sums.items() if k.endswith("_loss"))
        if is_dist():  # log the global-batch values, not rank 0's share
            keys = sorted(k for k in sums if k.endswith("loss"))
            vals = torch.tensor([sums[k] for k in keys], device=self.device)
            torch.distributed.all_reduce(vals)
            sums |= dict(zip(keys, (vals / world_info()[1]).tolist()))
        return sums

    def _skip_nonfinite(self, batches: list[dict[str, Any]], sums: dict[str, float], saved: list[dict]) -> None:
        with torch.no_grad():
            for m, buffers in zip(self._batch_norms, saved):
                for k, b in buffers.items():
                    getattr(m, k).copy_(b)
        self.nonfinite_steps += 1
        self.nonfinite_in_a_row += 1
        first = self.batch_in_epoch - len(batches)
        where = f"step {self.step + 1} (epoch {self.epoch}, batches {first}-{self.batch_in_epoch - 1})"
        values = ", ".join(f"{k}={v:.4g}" for k, v in sums.items() if k.endswith("_loss") or k == "grad_norm")
        keys = [k for b in batches for k in (b.get("keys") or [])][:4]
        if self.nonfinite_in_a_row > self.cfg.max_nonfinite_steps:
            raise FloatingPointError(
                f"{self.nonfinite_in_a_row} non-finite steps in a row, the last at {where}: {values}"
                + (f"; samples {keys}" if keys else "")
            )
        logger.warning("non-finite loss at %s: %s; update skipped (%d so far)", where, values, self.nonfinite_steps)

    # -- the loop -----------------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        cfg = self.cfg
        world = world_info()[1]
        global_batch = cfg.batch_size * world * cfg.grad_accum
        bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            desc=f"train {cfg.task}",
            unit="step",
            disable=not is_main_process(),
        )
        losses_path = self.out_dir / "losses.jsonl"
        start = time.perf_counter()
        steps_this_run = 0
        while self.step < self.total_steps:
            it = self.data.batches(self.epoch, skip=self.batch_in_epoch)
            while self.step < self.total_steps:
                micro = list(itertools.islice(it, cfg.grad_accum))
                if len(micro) < cfg.grad_accum:  # epoch exhausted
                    self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                    break
                self.batch_in_epoch += len(micro)
                metrics = self.train_step(micro)
                self.step += 1
                steps_this_run += 1
                self.history.append({"step": self.step, **metrics})
                if is_main_process():
                    with losses_path.open("a") as f:
                        f.write(json.dumps({"step": self.step, **metrics}) + "\n")
                    ips = steps_this_run * global_batch / (time.perf_counter() - start)
                    bar.set_postfix(loss=f"{metrics['loss']:.3f}", lr=f"{metrics['lr']:.1e}", img_s=f"{ips:.0f}")
                    bar.update(1)
                    if self.step % cfg.log_every == 0 or self.step == self.total_steps:
                        self.log.log(
                            {f"train/{k}": v for k, v in metrics.items()} | {"train/images_per_s": ips}, step=self.step
                        )
                if self.step % cfg.ckpt_every == 0:
                    self.save()
        bar.close()
        self.save()
        elapsed = time.perf_counter() - start
        for tower in self._towers:  # the caches live for this run only
            attach(tower, None)
        return {
            "steps": self.step,
            # whole epochs of optimizer steps (the epoch counter only moves when an epoch's
            # iterator runs dry, which never happens when the last step ends the run)
            "epochs_done": self.step // self.steps_per_epoch,
            "seconds": elapsed,
            "final": self.history[-1] if self.history else {},
            "images_per_s": steps_this_run * global_batch / max(elapsed, 1e-9),
            "precision": "bf16" if self.bf16 else "fp32",
            "nonfinite_steps": self.nonfinite_steps,
            "frozen_features": [c.stats() for c in self.feature_caches],
        }


def _step_of(line: str) -> int | None:
    """The step of a losses.jsonl line (None for a line cut by a kill)."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None
