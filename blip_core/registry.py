"""The task registry: every task the library trains or evaluates, described once.

A `Task` names its model class, the params.yaml section of its training, what its data folders
hold, how the trainer calls its model (`forward`), how its training batches are built (`train_data`),
how it is evaluated and under which metric names, and which registered model it becomes. Training
(`blip_core.train.entry`, `blip_core.train.loop`), checkpoints (`blip_core.models.pretrained`), evaluation
(`flows.stages.stage_evaluate`), the DAG, the CLI and the model registry all read this table, so
adding a task is one model class plus one `register(Task(...))`:

    register(Task(name="toy", kind="toy", model=ToyModel, section="finetune_toy", data="vqa",
                  forward=lambda trainer, b: trainer.forward_model(b["images"]), train_data=...))

Classes and callables may be given as "module:attr" strings: they are imported on first use, so
that this module imports no model, data or evaluation code (and those modules may import it).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

IMAGE_DATA = ("pairs", "labels")
"""What an image split holds: image-caption shards or label-only images. Any other `Task.data` names
the task whose items (blip_core.data.task_data) its folders hold, e.g. "vqa"."""


@dataclass(frozen=True)
class Task:
    """One task as every runner sees it."""

    name: str
    """The task word of `train.task`, `blip train --task` and the stage names (`finetune_<name>_*`)."""
    kind: str
    """The model kind its checkpoints are saved as (`config.json`'s `kind`); several tasks may share
    one (video retrieval evaluates the retrieval model)."""
    model: type | str | None = None
    """Its model class (or "module:Class"); None for an evaluation-only task that reuses `kind`'s."""
    section: str | None = None
    """The params.yaml section of its training (None: not trained)."""
    data: str = "pairs"
    """What its data folders hold: "pairs", "labels", or the name under which its items are written
    (`write_task_items(task=...)`; a folder's `_stats.json` says it)."""
    forward: Callable[[Any, dict[str, Any]], dict[str, Any]] | str | None = None
    """(trainer, batch on the device) -> the model's output dict; the loss is the sum of its `*_loss`."""
    train_data: Callable[..., Any] | str | None = None
    """(cfg: TrainConfig, data_dirs, processor, model) -> an object with `batches(epoch, skip)`,
    `steps_per_epoch`, `num_pairs` and `stats`; None: the image-caption / label loader."""
    load_eval: Callable[..., Any] | str | None = None
    """(folder, image_size, *, max_images) -> what `evaluate` reads (loaded once per folder and
    resolution, shared by every model evaluated on it)."""
    evaluate: Callable[..., Any] | str | None = None
    """(model, loaded data, processor, cfg: EvalConfig, device) -> metrics, or (metrics, predictions)."""
    metrics: tuple[str, ...] = ()
    """The metric names `evaluate` reports that the baseline-vs-bootstrapped report compares."""
    from_pretrain: Callable[[dict[str, Any]], tuple[dict[str, Any], Any]] | str | None = None
    """A pre-training state dict -> (this model's state, keys left at their fresh init)."""
    role: str | None = None
    """The registered model (flows.model_registry.REGISTERED key) a fine-tune of it becomes."""
    registry_metric: str = ""
    """"<split>/<metric>" the registry's `best` alias follows."""
    text: bool = True
    """Reads text (a tokenizer); the vision start does not."""
    prompt: bool = False
    """Trains on captions with the captioner's prompt (LM loss after it)."""
    itm: bool = False
    """Trains ITC/ITM: the global batch must divide the feature queue; ITM extras allowed."""
    train_split: str | None = None
    """The world split a downstream task fine-tunes on (the pipeline's `finetune_<name>_*` stages)."""
    eval_splits: tuple[str, ...] = ()
    """The world splits a downstream task is evaluated on (the pipeline's `evaluate_*` stages)."""
    about: str = ""
    """What a fine-tune of it is, for stage descriptions and model-version descriptions."""

    @property
    def downstream(self) -> bool:
        """A downstream task of the paper's Sec. 5 that the pipeline adds when `downstream.tasks` names
        it: fine-tuned from each pre-training (if trainable) and evaluated on its own splits."""
        return bool(self.eval_splits)

    @property
    def model_class(self) -> type:
        if self.model is None:
            return TASKS[kind_task(self.kind)].model_class
        return resolve(self.model)

    @property
    def modules(self) -> tuple[str, ...]:
        """The modules its "module:attr" references name (a stage evaluating it runs their code)."""
        return tuple(dict.fromkeys(self.train_modules + self._modules((self.load_eval, self.evaluate))))

    @property
    def train_modules(self) -> tuple[str, ...]:
        """The modules a training of it runs (model, forward, data, state conversion), not its evaluator."""
        found = list(self._modules((self.model, self.forward, self.train_data, self.from_pretrain)))
        if self.model is None:
            found += TASKS[kind_task(self.kind)].train_modules
        return tuple(dict.fromkeys(found))

    @staticmethod
    def _modules(refs: tuple[Any, ...]) -> tuple[str, ...]:
        found = [r.partition(":")[0] for r in refs if isinstance(r, str)]
        found += [r.__module__ for r in refs if r is not None and not isinstance(r, str)]
        return tuple(dict.fromkeys(found))

    def call(self, what: str, *args: Any, **kwargs: Any) -> Any:
        """Call one of its references (`forward`, `train_data`, `load_eval`, `evaluate`, `from_pretrain`)."""
        ref = getattr(self, what)
        if ref is None:
            raise ValueError(f"task {self.name} has no {what}")
        return resolve(ref)(*args, **kwargs)

    @property
    def trainable(self) -> bool:
        return self.section is not None and self.forward is not None

    @property
    def owns_kind(self) -> bool:
        """The task whose model class defines `kind` (not one that only evaluates it)."""
        return self.model is not None


TASKS: dict[str, Task] = {}


def register(task: Task, *, replace: bool = False) -> Task:
    if task.name in TASKS and not replace:
        raise ValueError(f"task {task.name!r} is already registered")
    if not task.data or not task.data.isidentifier():
        raise ValueError(f"task {task.name}: data must be 'pairs', 'labels' or an item task name, got {task.data!r}")
    if task.model is not None:
        for other in TASKS.values():
            if other.kind == task.kind and other.owns_kind and other.name != task.name:
                raise ValueError(f"task {task.name}: model kind {task.kind!r} already belongs to task {other.name}")
    TASKS[task.name] = task
    return task


def downstream_tasks() -> list[str]:
    return [t.name for t in TASKS.values() if t.downstream]


def unregister(name: str) -> None:
    TASKS.pop(name, None)


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(TASKS)}")
    return TASKS[name]


def trainable_tasks() -> list[str]:
    return [t.name for t in TASKS.values() if t.trainable]


def kind_task(kind: str) -> str:
    """The task whose model class a checkpoint kind is."""
    for t in TASKS.values():
        if t.kind == kind and t.owns_kind:
            return t.name
    raise ValueError(f"unknown model kind {kind!r}; known: {', '.join(model_kinds())}")


def model_kinds() -> dict[str, type]:
    """{kind: model class} of every registered task that owns a model class."""
    return {t.kind: t.model_class for t in TASKS.values() if t.owns_kind}


def section_of(task: str) -> str:
    t = get_task(task)
    if t.section is None:
        raise ValueError(f"task {task!r} is not trained (evaluation only)")
    return t.section


def evaluations(kind: str, data: str) -> list[Task]:
    """The tasks that evaluate a `kind` checkpoint on a folder holding `data`. A pre-training
    checkpoint is evaluated as each kind it splits into (`from_pretrain`)."""
    kinds = {kind}
    if kind == "pretrain":
        kinds = {t.kind for t in TASKS.values() if t.owns_kind and t.from_pretrain is not None
                 and t.data == "pairs"}  # fmt: skip
    return [t for t in TASKS.values() if t.kind in kinds and t.data == data and t.evaluate is not None]


def resolve(ref: Any) -> Any:
    """A task's callable or class: itself, or a "module:attr" string imported on first use."""
    if isinstance(ref, str):
        module, _, name = ref.partition(":")
        return getattr(importlib.import_module(module), name)
    return ref


# ------------------------------------------------------------------------------------------------
# the tasks. References are "module:attr" strings, so that importing the registry imports no model,
# data or evaluation code: a pipeline stage depends on the code it runs, not on every task's.

register(
    Task(
        name="vision",
        kind="vision",
        model="blip_core.models.blip.classifier:VisionClassifier",
        section="pretrain_vision",
        data="labels",
        forward="blip_core.train.loop:vision_forward",
        role="vision",
        registry_metric="val/shape_f1",
        text=False,
        about="supervised vision start, trained on the world's label-only objects split",
    )
)
register(
    Task(
        name="pretrain",
        kind="pretrain",
        model="blip_core.models.blip.model:BlipPretrain",
        section="pretrain",
        forward="blip_core.train.loop:itc_itm_forward",
        itm=True,
        role="pretrain",
        registry_metric="test/probe_shape_f1",
        about="BLIP pre-training (ITC + ITM + LM)",
    )
)
register(
    Task(
        name="caption",
        kind="captioner",
        model="blip_core.models.blip.model:BlipCaptioner",
        section="finetune_caption",
        forward="blip_core.train.loop:caption_forward",
        prompt=True,
        load_eval="blip_core.data.loader:load_eval_split",
        evaluate="blip_core.eval.captioning:evaluate_captioning",
        from_pretrain="blip_core.models.blip.model:captioner_from_pretrain",
        metrics=("cider", "bleu4", "grounded_true_rate", "grounded_precision"),
        role="captioner",
        registry_metric="test/cider",
        about="captioner (LM) fine-tuned on human captions",
    )
)
register(
    Task(
        name="retrieval",
        kind="retrieval",
        model="blip_core.models.blip.model:BlipRetrieval",
        section="finetune_retrieval",
        forward="blip_core.train.loop:itc_itm_forward",
        itm=True,
        load_eval="blip_core.data.loader:load_eval_split",
        evaluate="blip_core.eval.retrieval:evaluate_retrieval",
        from_pretrain="blip_core.models.blip.model:retrieval_from_pretrain",
        metrics=("r_mean", "tr_r1", "ir_r1"),
        role="filter",
        registry_metric="test/r_mean",
        about="filter (ITC + ITM) fine-tuned on human captions",
    )
)
register(
    Task(
        name="vqa",
        kind="vqa",
        model="blip_core.models.blip.vqa:BlipVQA",
        section="finetune_vqa",
        data="vqa",
        forward="blip_core.train.loop:vqa_forward",
        train_data="blip_core.data.task_loader:vqa_train_data",
        load_eval="blip_core.data.task_data:load_eval_items",
        evaluate="blip_core.eval.vqa:evaluate_vqa",
        from_pretrain="blip_core.models.blip.vqa:vqa_state_from_pretrain",
        metrics=("vqa_acc_rank", "vqa_acc_generate"),
        role="vqa",
        registry_metric="vqa_test/vqa_acc_rank",
        train_split="vqa_train",
        eval_splits=("vqa_test", "vqa_novel"),
        about="VQA model (question encoder + answer decoder) fine-tuned on the world's questions",
    )
)
register(
    Task(
        name="nlvr",
        kind="nlvr",
        model="blip_core.models.blip.nlvr:BlipNLVR",
        section="finetune_nlvr",
        data="nlvr",
        forward="blip_core.train.loop:nlvr_forward",
        train_data="blip_core.data.task_loader:nlvr_train_data",
        load_eval="blip_core.data.task_data:load_eval_items",
        evaluate="blip_core.eval.nlvr:evaluate_nlvr",
        from_pretrain="blip_core.models.blip.nlvr:nlvr_state_from_pretrain",
        metrics=("nlvr_acc",),
        role="nlvr",
        registry_metric="nlvr_test/nlvr_acc",
        train_split="nlvr_train",
        eval_splits=("nlvr_test", "nlvr_novel"),
        about="NLVR² model (two-image encoder + binary head) fine-tuned on the world's statements",
    )
)
register(
    Task(
        name="video",
        kind="retrieval",
        data="video",
        load_eval="blip_core.data.task_data:load_eval_items",
        evaluate="blip_core.eval.video:evaluate_video_retrieval",
        metrics=("r_mean", "tr_r1", "ir_r1"),
        eval_splits=("video_test", "video_novel"),
        about="zero-shot text-to-video retrieval with the retrieval model (frame features averaged)",
    )
)
