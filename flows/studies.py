"""Studies: several whole bootstrap runs that differ in a few params.yaml knobs, one report.

A `Study` is a list of `Arm`s; an arm names the knobs it replaces (`overrides`, section -> keys)
and runs the `bootstrap` flow (the same stages and code as `make run`) under its own data root
`<study root>/<arm>/`, with its own `params.yaml` there (the study's params file with the
overrides applied; every arm's sections are checked before the first arm runs). A gate or a failed stage ends that
arm, not the study. Adding an arm is one entry:

    Arm("filter_only", {"capfilt": {"policy": "filter"}}, "CapFilt without the captioner")

`make effect` is the `seeds` study (`flows.effect` writes its report); the ablation issue's arms
are entries of another.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from blip_core.config.loader import check_sections, read_params
from blip_core.fileio import write_text
from flows.results import run_summary

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Arm:
    """One run of a study: its folder name, and the params.yaml keys it replaces."""

    name: str
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    """{section: {key: value}}: replaced in the study's params file (other keys kept)."""
    about: str = ""

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise ValueError(f"an arm's name is its folder: {self.name!r} is not a plain folder name")

    def params(self, base: str | Path) -> dict[str, Any]:
        """The study's params with this arm's overrides applied."""
        doc = copy.deepcopy(read_params(base))
        for section, values in self.overrides.items():
            doc[section] = {**(doc.get(section) or {}), **values}
        return doc

    def checked_params(self, base: str | Path) -> dict[str, Any]:
        """`params(base)` with every section built into its dataclass: a bad override fails here."""
        doc = self.params(base)
        check_sections(doc, f"arm {self.name} (params {base} with {self.overrides})")
        return doc

    def write_params(self, base: str | Path, root: str | Path) -> Path:
        """`<root>/params.yaml` for this arm, checked before it is written."""
        doc = self.checked_params(base)
        out = Path(root) / "params.yaml"
        out.parent.mkdir(parents=True, exist_ok=True)
        write_text(out, yaml.safe_dump(doc, sort_keys=False))
        return out


@dataclass(frozen=True)
class Study:
    name: str
    arms: tuple[Arm, ...]
    about: str = ""

    def __post_init__(self) -> None:
        names = [a.name for a in self.arms]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"study {self.name}: arms need distinct names, got {names}")


def seeds(world_seeds: Iterable[int]) -> Study:
    """The same recipe on several worlds (`make effect`): one arm per world seed."""
    arms = tuple(Arm(f"seed-{s}", {"world": {"seed": int(s)}}, f"world seed {s}") for s in world_seeds)
    return Study("seeds", arms, "does bootstrapping work on worlds the recipe was not developed on")


def run_arm(arm: Arm, params: str | Path, root: str | Path, experiment: str, *,
            flow: Callable[..., Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """Write the arm's params and run the bootstrap flow under `root`; returns its run summary with
    `arm`, `wall_seconds` and, if a gate or stage stopped it, `error`."""
    if flow is None:
        from flows.bootstrap import bootstrap as flow
    root = Path(root)
    arm_params = arm.write_params(params, root)
    t0 = time.perf_counter()
    status: dict[str, Any] = {"arm": arm.name}
    try:
        # the study owns the Prefect API: free gpu slots that a killed earlier run left leased;
        # not registered: an arm's models are a measurement, and their scores on another world or
        # recipe than make run's would move the registry's `best` alias
        flow(
            params=str(arm_params), root=str(root), experiment=experiment, release_gpu_slots=True, register_models=False
        )
    except Exception as e:  # a gate or a failed stage ends this arm, not the study
        status["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
        logger.error("arm %s stopped: %s", arm.name, status["error"])
    status["wall_seconds"] = round(time.perf_counter() - t0, 1)
    return status | run_summary(root)


def run_study(study: Study, params: str | Path, root: str | Path, experiment: str, **kw: Any) -> list[dict[str, Any]]:
    """Every arm in order, each under `<root>/<arm>`; every arm's params are checked before the first runs."""
    for arm in study.arms:
        arm.checked_params(params)
    out = []
    for i, arm in enumerate(study.arms, 1):
        logger.info("study %s: arm %d/%d %s", study.name, i, len(study.arms), arm.name)
        out.append(run_arm(arm, params, Path(root) / arm.name, experiment, **kw))
    return out
