"""Metric logging behind one small interface. MLflow is imported only inside MLflowLogger.

Metric names use '/' namespaces (`train/itc_loss`, `eval/test_tr_r1`); only the main process logs.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Protocol

logger = logging.getLogger(__name__)

_VALID = re.compile(r"^[/\w.\- ]*$")


def check_metric_name(name: str) -> str:
    if not _VALID.match(name) or "//" in name:
        raise ValueError(f"invalid metric name {name!r}: use letters, digits, _ - . space and single '/'")
    return name


class MetricLogger(Protocol):
    def log(self, metrics: dict[str, float], step: int) -> None: ...
    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_artifact(self, path: str | Path) -> None: ...
    def close(self) -> None: ...


class NullLogger:
    """The default: logs nothing (tests, quick runs)."""

    def log(self, metrics: dict[str, float], step: int) -> None:
        for k in metrics:
            check_metric_name(k)

    def log_params(self, params: dict[str, Any]) -> None:
        pass

    def log_artifact(self, path: str | Path) -> None:
        pass

    def close(self) -> None:
        pass


class MLflowLogger:
    """Logs to an MLflow run (nested under an active parent run when there is one)."""

    def __init__(
        self,
        *,
        experiment: str = "blip",
        run_name: str | None = None,
        tracking_uri: str | None = None,
        tags: dict[str, str] | None = None,
        nested: bool = True,
    ) -> None:
        import mlflow  # imported here: the core library must not need MLflow

        self._mlflow = mlflow
        if tracking_uri:
            mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_experiment(experiment)
        self.run = mlflow.start_run(run_name=run_name, nested=nested and mlflow.active_run() is not None, tags=tags)

    def log(self, metrics: dict[str, float], step: int) -> None:
        self._mlflow.log_metrics({check_metric_name(k): float(v) for k, v in metrics.items()}, step=step)

    def log_params(self, params: dict[str, Any]) -> None:
        flat = _flatten(params)
        self._mlflow.log_params({k: str(v)[:500] for k, v in flat.items()})

    def log_artifact(self, path: str | Path) -> None:
        self._mlflow.log_artifact(str(path))

    def close(self) -> None:
        self._mlflow.end_run()


class LoggerList:
    def __init__(self, *loggers: MetricLogger) -> None:
        self.loggers = list(loggers)

    def log(self, metrics: dict[str, float], step: int) -> None:
        for lg in self.loggers:
            lg.log(metrics, step)

    def log_params(self, params: dict[str, Any]) -> None:
        for lg in self.loggers:
            lg.log_params(params)

    def log_artifact(self, path: str | Path) -> None:
        for lg in self.loggers:
            lg.log_artifact(path)

    def close(self) -> None:
        for lg in self.loggers:
            lg.close()


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out |= _flatten(v, key + ".")
        else:
            out[key] = v
    return out
