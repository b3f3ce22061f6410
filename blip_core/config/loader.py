"""The typed params.yaml loader: a section into its dataclass, unknown keys and wrong types named."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


def _type_ok(value: Any, annotation: Any) -> bool:
    """A small structural type check for the annotations used in our configs."""
    if isinstance(annotation, str):
        annotation = eval(annotation, vars(typing) | {"dict": dict, "list": list, "tuple": tuple})  # noqa: S307
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is dict:
        k_t, v_t = typing.get_args(annotation)
        return isinstance(value, dict) and all(_type_ok(k, k_t) and _type_ok(v, v_t) for k, v in value.items())
    if origin in (list, tuple):
        args = typing.get_args(annotation)
        elem = args[0] if args else Any
        return isinstance(value, list | tuple) and all(_type_ok(v, elem) for v in value)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def from_dict(cls: type[T], values: dict[str, Any], *, section: str) -> T:
    """Build the dataclass `cls` from a mapping; unknown keys and wrong types name the key."""
    if not isinstance(values, dict):
        raise ValueError(f"params section '{section}' must be a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    built = {}
    for key, value in values.items():
        if key not in fields:
            raise ValueError(f"Unknown config key: {section}.{key} (known: {', '.join(sorted(fields))})")
        hint = hints[key]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):  # nested config section
            value = from_dict(hint, value, section=f"{section}.{key}")
        elif not _type_ok(value, hint):
            raise ValueError(f"Wrong type for {section}.{key}: expected {hint}, got {type(value).__name__} ({value!r})")
        built[key] = value
    return cls(**built)


def load_params_section(path: str | Path, section: str, cls: type[T]) -> T:
    """Load `section` of a params.yaml into `cls` (missing section -> defaults)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"params file not found: {path}")
    params = read_params(path)
    return from_dict(cls, params.get(section, {}) or {}, section=section)


def read_params(path: str | Path) -> dict[str, Any]:
    """A params.yaml as a mapping; malformed YAML is one line naming the file, line and problem."""
    path = Path(path)
    try:
        with path.open() as f:
            params = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        # the context mark is where the broken construct starts (an unclosed quote's line); the
        # problem mark is where the parser gave up, often the end of the file
        mark = getattr(e, "context_mark", None) or getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        what = " ".join(x for x in (getattr(e, "problem", None), getattr(e, "context", None)) if x) or str(e)
        raise ValueError(f"{where}: not valid YAML: {what}") from None
    if not isinstance(params, dict):
        raise ValueError(f"{path}: expected a mapping of sections, got {type(params).__name__}")
    _check_known(params, str(path))
    return params


def _check_known(params: dict[str, Any], where: str) -> None:
    known = params_sections()
    unknown = sorted(str(k) for k in params if k not in known)
    if unknown:  # a misspelt section would otherwise leave every knob in it silently at its default
        raise ValueError(f"{where}: unknown section(s) {unknown} (known: {', '.join(known)})")


SECTION_CLASSES = {
    "world": "blip_core.config.data:WorldConfig",
    "reader": "blip_core.config.data:ReaderConfig",
    "tokenizer": "blip_core.config.data:TokenizerConfig",
    "evaluate": "blip_core.config.train:EvalConfig",
    "capfilt": "blip_core.config.pipeline:CapFiltConfig",
    "validate": "blip_core.config.pipeline:ValidateConfig",
    "downstream": "blip_core.config.pipeline:DownstreamConfig",
}
"""The sections a params.yaml may hold besides the training section of each registered task (a
`TrainConfig` each), and the dataclass each one loads into ("module:Class", imported on use)."""
PARAMS_SECTIONS = tuple(SECTION_CLASSES)
TRAIN_SECTION_CLASS = "blip_core.config.train:TrainConfig"
"""What each registered task's training section loads into."""


def params_sections() -> tuple[str, ...]:
    """Every section a params.yaml may hold: PARAMS_SECTIONS and each trainable task's (blip_core.registry)."""
    from blip_core.registry import tasks

    return PARAMS_SECTIONS + tuple(t.section for t in tasks().values() if t.section)


def section_class(name: str) -> type:
    """The dataclass a params.yaml section loads into."""
    from blip_core.registry import resolve

    if name in SECTION_CLASSES:
        return resolve(SECTION_CLASSES[name])
    if name in params_sections():  # a task's training section (by name: no import for codedeps to follow)
        return resolve(TRAIN_SECTION_CLASS)
    raise ValueError(f"unknown params section {name!r} (known: {', '.join(params_sections())})")


def check_params(path: str | Path) -> dict[str, Any]:
    """Every section of a params file built into its dataclass, so a bad key or value anywhere in it
    is one clear error now, not when the stage that reads it starts; returns the file's mapping."""
    doc = read_params(path)
    check_sections(doc, str(path))
    return doc


def check_sections(doc: dict[str, Any], where: str) -> None:
    """`check_params` of a mapping already in memory (`where` names it in the error)."""
    _check_known(doc, where)
    for name, values in doc.items():
        from_dict(section_class(name), values or {}, section=name)
