"""The task registry: every model family and every task the library trains or evaluates, described once.

A `Family` (one folder `blip_core/models/<name>/`) names its config class, its presets and its text
side (tokenizer and processor). A `Task` names its model class, the params.yaml section of its
training, what its data folders hold, how the trainer calls its model (`forward`), how its
training batches are built (`train_data`), which checkpoint kinds it can start from (`init_from`),
how it is evaluated and under which metric names, and which registered model it becomes. Training
(`blip_core.train`), checkpoints (`blip_core.models.pretrained`), evaluation
(`flows.stages.stage_evaluate`), the DAG, the CLI and the MLflow model registry all read this
table, so adding a task is one model class plus one `register(Task(...))`, and adding a model family
is one folder `blip_core/models/<name>/` whose `tasks.py` registers its family and tasks:

    register(Task(name="toy", kind="toy", model=ToyModel, section="finetune_toy", data="vqa",
                  forward=lambda trainer, b: trainer.forward_model(b["images"]), train_data=...))

Classes and callables may be given as "module:attr" strings: they are imported on first use, so
that this module imports no model, data or evaluation code (and those modules may import it). The
families' entries are loaded on the first lookup, not on import, for the same reason.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

IMAGE_DATA = ("pairs", "labels")
"""What an image split holds: image-caption shards or label-only images. Any other `Task.data` names
the task whose items (blip_core.data.task_data) its folders hold, e.g. "vqa"."""

FAMILIES_PACKAGE = "blip_core.models"
"""Each folder `blip_core/models/<name>/` with a `tasks.py` is a model family; its `tasks` module
registers the family and its tasks, imported on the first lookup of the registry."""


def family_module(name: str) -> str:
    return f"{FAMILIES_PACKAGE}.{name}.tasks"


def family_names() -> list[str]:
    """The model families found under `blip_core/models/` (folders with a `tasks.py`), sorted."""
    import importlib.util
    import pkgutil

    package = importlib.import_module(FAMILIES_PACKAGE)
    return sorted(m.name for m in pkgutil.iter_modules(package.__path__)
                  if m.ispkg and importlib.util.find_spec(family_module(m.name)) is not None)  # fmt: skip


Conversion = Callable[[dict[str, Any], Any], tuple[dict[str, Any], Any]]
"""(a state dict of another kind, the receiving model's config) -> (its state, keys left fresh)."""


@dataclass(frozen=True)
class Family:
    """One model family (BLIP; later BLIP-2, InstructBLIP): what its tasks share."""

    name: str
    """Its folder `blip_core/models/<name>/`, and the prefix of its registered models (`<name>-<role>`)."""
    config: type | str
    """Its model config class (`from_dict`, `to_dict`): what a checkpoint's config.json holds."""
    preset: Callable[[str], Any] | str
    """(preset name) -> a fresh config (`tiny`, `base`, `large`, ...)."""
    load_tokenizer: Callable[[Any], Any] | str
    """(tokenizer folder) -> its tokenizer."""
    with_tokenizer: Callable[[Any, Any], Any] | str
    """(config, tokenizer) -> the config with the tokenizer's vocabulary size and special ids."""
    processor: Callable[..., Any] | str
    """(config, tokenizer or None, tokenizer folder or None) -> the text processor its models'
    data loaders and evaluators tokenize with (None, None: the config's own tokenizer)."""

    def call(self, what: str, *args: Any, **kwargs: Any) -> Any:
        return resolve(getattr(self, what))(*args, **kwargs)


@dataclass(frozen=True)
class Task:
    """One task as every runner sees it."""

    name: str
    """The task word of `train.task`, `blip train --task` and the stage names (`finetune_<name>_*`)."""
    kind: str
    """The model kind its checkpoints are saved as (`config.json`'s `kind`); several tasks may share
    one (video retrieval evaluates the retrieval model)."""
    family: str
    """The model family whose config, presets and text side it uses (`blip_core/models/<family>/`)."""
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
    init_from: dict[str, Conversion | str] = field(default_factory=dict)
    """{other checkpoint kind: conversion} for the kinds a model of it can start from (BLIP's fine-tunes:
    "pretrain"; BLIP-2's second stage: its first); a conversion maps that kind's state dict and this
    model's config (which BLIP's conversions do not need) to (this model's state, keys left at their
    fresh init). A checkpoint of its own kind always can."""
    config_from: Callable[[Any], Any] | str | None = None
    """(the config of an `init_from` checkpoint of another family) -> this model's config (a Q-Former's
    sizes from the BLIP pre-training it starts from)."""
    role: str | None = None
    """The registered model a fine-tune of it becomes (`<family>-<role>` in MLflow's registry)."""
    registry_metric: str = ""
    """"<split>/<metric>" the registry's `best` alias follows."""
    text: bool = True
    """Reads text (a tokenizer); the vision start does not."""
    prompt: bool = False
    """Trains on captions with the captioner's prompt (LM loss after it)."""
    itm: bool = False
    """Trains ITM: the caption-made ITM extras (swap negatives, phrase positives) apply."""
    queue: bool = False
    """Keeps a feature queue filled a global batch at a time: the global batch must divide it."""
    frozen_vision: bool = False
    """Its vision tower never trains (BLIP-2's frozen image encoder): `vision_lr_scale` must be 0."""
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
            return tasks()[kind_task(self.kind)].model_class
        return resolve(self.model)

    @property
    def config_class(self) -> type:
        """The config class its checkpoints hold (its family's)."""
        return resolve(get_family(self.family).config)

    def registered_name(self, role: str | None = None) -> str:
        """Its model's name in MLflow's registry: `<family>-<role>` (another role may be passed; the
        pipeline registers a task's baseline and bootstrapped models as versions of one name)."""
        return f"{self.family}-{role or self.role}"

    @property
    def modules(self) -> tuple[str, ...]:
        """The modules its "module:attr" references name (a stage evaluating it runs their code)."""
        return tuple(dict.fromkeys(self.train_modules + self._modules((self.load_eval, self.evaluate))))

    @property
    def train_modules(self) -> tuple[str, ...]:
        """The modules a training of it runs (its family's entries, model, forward, data, state
        conversion), not its evaluator."""
        _load_families()
        found = [family_module(self.family)] if self.family in _FAMILIES else []
        found += self._modules((self.model, self.forward, self.train_data, *self.init_from.values()))
        if (f := _FAMILIES.get(self.family)) is not None:
            found += self._modules((f.config, f.preset, f.load_tokenizer, f.with_tokenizer, f.processor))
        if self.model is None:
            found += tasks()[kind_task(self.kind)].train_modules
        return tuple(dict.fromkeys(found))

    @staticmethod
    def _modules(refs: tuple[Any, ...]) -> tuple[str, ...]:
        found = [r.partition(":")[0] for r in refs if isinstance(r, str)]
        found += [r.__module__ for r in refs if r is not None and not isinstance(r, str)]
        return tuple(dict.fromkeys(found))

    def convert(self, from_kind: str, state: dict[str, Any], cfg: Any = None) -> tuple[dict[str, Any], Any]:
        """A `from_kind` checkpoint's state dict as this task's model's (`init_from`); `cfg` is the
        receiving model's config (a Q-Former's conversion reads which layers it has)."""
        if from_kind not in self.init_from:
            raise ValueError(f"task {self.name} cannot start from a {from_kind} checkpoint (init_from: "
                             f"{', '.join(self.init_from) or 'none'})")  # fmt: skip
        return resolve(self.init_from[from_kind])(state, cfg)

    def call(self, what: str, *args: Any, **kwargs: Any) -> Any:
        """Call one of its references (`forward`, `train_data`, `load_eval`, `evaluate`, `config_from`)."""
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


_TASKS: dict[str, Task] = {}
_FAMILIES: dict[str, Family] = {}
_loaded: set[str] = set()


def _load_families() -> None:
    if _loaded:
        return
    for name in family_names():
        _loaded.add(name)  # first: the family module registers through this module's functions
        importlib.import_module(family_module(name))


def register_family(family: Family, *, replace: bool = False) -> Family:
    if family.name in _FAMILIES and not replace:
        raise ValueError(f"model family {family.name!r} is already registered")
    _FAMILIES[family.name] = family
    return family


def get_family(name: str) -> Family:
    _load_families()
    if name not in _FAMILIES:
        raise ValueError(f"unknown model family {name!r}; known: {', '.join(_FAMILIES)}")
    return _FAMILIES[name]


def register(task: Task, *, replace: bool = False) -> Task:
    _load_families()
    if task.family not in _FAMILIES:
        raise ValueError(f"task {task.name}: unknown model family {task.family!r} (known: {', '.join(_FAMILIES)})")
    if task.name in _TASKS and not replace:
        raise ValueError(f"task {task.name!r} is already registered")
    if not task.data or not task.data.isidentifier():
        raise ValueError(f"task {task.name}: data must be 'pairs', 'labels' or an item task name, got {task.data!r}")
    if task.model is not None:
        for other in _TASKS.values():
            if other.kind == task.kind and other.owns_kind and other.name != task.name:
                raise ValueError(f"task {task.name}: model kind {task.kind!r} already belongs to task {other.name}")
    _TASKS[task.name] = task
    return task


def tasks() -> dict[str, Task]:
    """Every registered task by name, in registration order."""
    _load_families()
    return _TASKS


def downstream_tasks() -> list[str]:
    return [t.name for t in tasks().values() if t.downstream]


def unregister(name: str) -> None:
    _TASKS.pop(name, None)


def get_task(name: str) -> Task:
    if name not in tasks():
        raise ValueError(f"unknown task {name!r}; known: {', '.join(_TASKS)}")
    return _TASKS[name]


def trainable_tasks() -> list[str]:
    return [t.name for t in tasks().values() if t.trainable]


def task_for_role(role: str) -> Task:
    """The task whose fine-tunes play `role` (CapFilt's "captioner" and "filter", ...)."""
    found = [t for t in tasks().values() if t.role == role]
    if len(found) != 1:
        raise ValueError(f"{len(found)} registered tasks have role {role!r} (one expected)")
    return found[0]


def kind_owner(kind: str) -> Task | None:
    """The task whose model class a checkpoint kind is; None for an unknown kind."""
    return next((t for t in tasks().values() if t.kind == kind and t.owns_kind), None)


def kind_task(kind: str) -> str:
    """The name of the task whose model class a checkpoint kind is."""
    owner = kind_owner(kind)
    if owner is None:
        raise ValueError(f"unknown model kind {kind!r}; known: {', '.join(model_kinds())}")
    return owner.name


def model_kinds() -> dict[str, type]:
    """{kind: model class} of every registered task that owns a model class."""
    return {t.kind: t.model_class for t in tasks().values() if t.owns_kind}


def section_of(task: str) -> str:
    t = get_task(task)
    if t.section is None:
        raise ValueError(f"task {task!r} is not trained (evaluation only)")
    return t.section


def evaluations(kind: str, data: str) -> list[Task]:
    """The tasks that evaluate a `kind` checkpoint on a folder holding `data`. A checkpoint that other
    kinds start from (a pre-training) is evaluated as each image-caption kind of its own family it
    becomes (`init_from`; BLIP's pre-training as captioner and filter, not as a fresh Q-Former)."""
    owner = kind_owner(kind)  # None: an unknown kind, which no task evaluates
    family = owner.family if owner else None
    kinds = {kind} | {t.kind for t in tasks().values()
                      if t.owns_kind and kind in t.init_from and t.data == "pairs" and t.family == family}  # fmt: skip
    return [t for t in tasks().values() if t.kind in kinds and t.data == data and t.evaluate is not None]


def resolve(ref: Any) -> Any:
    """A task's callable or class: itself, or a "module:attr" string imported on first use."""
    if isinstance(ref, str):
        module, _, name = ref.partition(":")
        return getattr(importlib.import_module(module), name)
    return ref
