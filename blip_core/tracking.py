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
    def log_artifact(self, path: str | Path, artifact_path: str | None = None, *, name: str | None = None) -> None: ...
    def close(self) -> None: ...


class NullLogger:
    """The default: logs nothing (tests, quick runs)."""

    def log(self, metrics: dict[str, float], step: int) -> None:
        for k in metrics:
            check_metric_name(k)

    def log_params(self, params: dict[str, Any]) -> None:
        pass

    def log_artifact(self, path: str | Path, artifact_path: str | None = None, *, name: str | None = None) -> None:
        pass

    def close(self) -> None:
        pass


DEFAULT_TRACKING_URI = "sqlite:///mlflow/mlflow.db"
"""Relative to the working directory (the repo root); `MLFLOW_TRACKING_URI` overrides it."""
DEFAULT_ARTIFACT_ROOT = "mlflow/artifacts"


class MLflowLogger:
    """Logs to one MLflow run through the client API (explicit run ids, so stages running in
    threads or other processes can nest under a parent run by passing `parent_run_id`).

    The store is `tracking_uri`, else `MLFLOW_TRACKING_URI`, else `sqlite:///mlflow/mlflow.db` with
    artifacts under `mlflow/artifacts`.
    """

    def __init__(
        self,
        *,
        experiment: str = "blip",
        run_name: str | None = None,
        tracking_uri: str | None = None,
        tags: dict[str, str] | None = None,
        parent_run_id: str | None = None,
        run_id: str | None = None,
    ) -> None:
        import os

        from mlflow.tracking import MlflowClient  # imported here: the core library must not need MLflow

        self.tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
        if self.tracking_uri == DEFAULT_TRACKING_URI:
            Path("mlflow").mkdir(exist_ok=True)
        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        if run_id is not None:  # attach to an existing run (e.g. the flow's parent run)
            self.run_id = run_id
            self.experiment_id = self.client.get_run(run_id).info.experiment_id
            return
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            location = None
            if self.tracking_uri.startswith("sqlite:") and not os.environ.get("MLFLOW_ARTIFACT_ROOT"):
                db = Path(self.tracking_uri.removeprefix("sqlite:///"))
                location = (db.parent / "artifacts").resolve().as_uri()
            self.experiment_id = self.client.create_experiment(experiment, artifact_location=location)
        else:
            self.experiment_id = exp.experiment_id
        tags = dict(tags or {})
        if parent_run_id:
            tags["mlflow.parentRunId"] = parent_run_id
        self.run_id = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags).info.run_id

    def log(self, metrics: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        batch = [Metric(check_metric_name(k), float(v), ts, step) for k, v in metrics.items()]
        self.client.log_batch(self.run_id, metrics=batch)

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        flat = _flatten(params)
        items = [Param(k, str(v)[:500]) for k, v in flat.items()]
        for i in range(0, len(items), 100):  # MLflow caps a batch at 100 params
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def set_tags(self, tags: dict[str, Any]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, str(v))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None, *, name: str | None = None) -> None:
        """Log a file or folder; `name` stores a file under another name (runs that compare, like the
        two evaluations, use the same artifact names so MLflow's compare view lines them up)."""
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        elif name is not None and name != path.name:
            import shutil
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                shutil.copyfile(path, Path(tmp) / name)
                self.client.log_artifact(self.run_id, str(Path(tmp) / name), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def close(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status)


class LoggerList:
    def __init__(self, *loggers: MetricLogger) -> None:
        self.loggers = list(loggers)

    def log(self, metrics: dict[str, float], step: int) -> None:
        for lg in self.loggers:
            lg.log(metrics, step)

    def log_params(self, params: dict[str, Any]) -> None:
        for lg in self.loggers:
            lg.log_params(params)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None, *, name: str | None = None) -> None:
        for lg in self.loggers:
            lg.log_artifact(path, artifact_path, name=name)

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
