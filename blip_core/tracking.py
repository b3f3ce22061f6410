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

    A store that fails mid-run (server down, sqlite busy) never stops training: one warning, then
    every record (metrics, params, tags, artifacts, the end status) is kept in order, in memory and
    in `buffer_dir/<run_id>.jsonl`, and sent when the store answers again (tried again after
    `retry_after_s`, doubling while it fails, and at `close`). What `close` still cannot send stays in that file:
    `blip tracking replay` sends it later. Params, tags and text artifacts are redacted
    (`redact`): no token or home path reaches the store.
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
        buffer_dir: str | Path | None = None,
        retry_after_s: float = 30.0,
    ) -> None:
        import os

        from mlflow.tracking import MlflowClient  # imported here: the core library must not need MLflow

        self.tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
        if self.tracking_uri == DEFAULT_TRACKING_URI:
            Path("mlflow").mkdir(exist_ok=True)
        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        self.buffer_dir = Path(buffer_dir or os.environ.get("BLIP_MLFLOW_BUFFER") or DEFAULT_BUFFER_DIR)
        self.retry_after_s = retry_after_s
        self._pending: list[dict[str, Any]] = []
        self._retry_at = 0.0
        self._warned = False  # one warning per outage
        self._failed_tries = 0
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
        tags = {k: redact(str(v)) for k, v in (tags or {}).items()}
        if parent_run_id:
            tags["mlflow.parentRunId"] = parent_run_id
        self.run_id = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags).info.run_id

    # -- the MetricLogger interface: each call is one record ----------------------------------------
    def log(self, metrics: dict[str, float], step: int) -> None:
        import time

        ts = int(time.time() * 1000)
        self._send({"kind": "metrics", "step": step, "ts": ts,
                    "metrics": {check_metric_name(k): float(v) for k, v in metrics.items()}})  # fmt: skip

    def log_params(self, params: dict[str, Any]) -> None:
        flat = {k: redact(str(v))[:500] for k, v in _flatten(params).items()}
        self._send({"kind": "params", "params": flat})

    def set_tags(self, tags: dict[str, Any]) -> None:
        self._send({"kind": "tags", "tags": {k: redact(str(v)) for k, v in tags.items()}})

    def log_artifact(self, path: str | Path, artifact_path: str | None = None, *, name: str | None = None) -> None:
        """Log a file or folder; `name` stores a file under another name (runs that compare, like the
        two evaluations, use the same artifact names so MLflow's compare view lines them up)."""
        self._send({"kind": "artifact", "path": str(Path(path).resolve()), "artifact_path": artifact_path,
                    "name": name})  # fmt: skip

    def close(self, status: str = "FINISHED") -> None:
        self._retry_at = 0.0  # the last chance in this process: try the store now
        self._send({"kind": "end", "status": status})
        if self._pending:
            logger.warning(
                "MLflow store %s still fails: %d record(s) of run %s are kept in %s; send them later with "
                "`blip tracking replay %s`", self.tracking_uri, len(self._pending), self.run_id,
                self._buffer_file(), self._buffer_file(),
            )  # fmt: skip

    # -- sending, buffering --------------------------------------------------------------------------
    def _send(self, record: dict[str, Any]) -> None:
        import time

        if self._pending and time.monotonic() < self._retry_at:  # still failing: do not stall each step
            self._buffer(record)
            return
        try:
            self._flush()
            apply_record(self.client, self.run_id, record)
        except Exception as e:  # any store failure: the run goes on, the record waits
            self._buffer(record)
            # a locked sqlite store stalls each call for MLflow's 20 s busy timeout: back off
            # (doubling, at most 10 min) so a long outage costs training a few stalls, not one a step
            self._failed_tries += 1
            self._retry_at = time.monotonic() + min(600.0, self.retry_after_s * 2 ** (self._failed_tries - 1))
            if not self._warned:
                self._warned = True
                logger.warning(
                    "MLflow store %s failed (%s: %s); training goes on, records are buffered in %s and "
                    "sent when the store answers again", self.tracking_uri, type(e).__name__,
                    str(e).splitlines()[0][:200], self._buffer_file(),
                )  # fmt: skip

    def _flush(self) -> None:
        """Send the buffered records in order; raises on the first that fails (the rest stay)."""
        if not self._pending:
            return
        n = len(self._pending)
        while self._pending:
            apply_record(self.client, self.run_id, self._pending[0])
            self._pending.pop(0)
            self._write_buffer()
        self._warned, self._failed_tries = False, 0
        logger.warning("MLflow store %s answers again: sent %d buffered record(s)", self.tracking_uri, n)

    def _buffer(self, record: dict[str, Any]) -> None:
        self._pending.append(record)
        self._write_buffer()

    def _buffer_file(self) -> Path:
        return self.buffer_dir / f"{self.run_id}.jsonl"

    def _write_buffer(self) -> None:
        """The pending records on disk too: a process killed during an outage loses none of them."""
        import json

        f = self._buffer_file()
        if not self._pending:
            f.unlink(missing_ok=True)
            return
        from blip_core.fileio import write_text

        f.parent.mkdir(parents=True, exist_ok=True)
        head = {"run_id": self.run_id, "tracking_uri": self.tracking_uri}
        write_text(f, "".join(json.dumps(head | {"record": r}) + "\n" for r in self._pending))


DEFAULT_BUFFER_DIR = "mlflow/buffer"
"""Where records wait while the store fails (relative to the working directory)."""


def apply_record(client, run_id: str, record: dict[str, Any]) -> None:
    """Send one buffered record to the store."""
    from mlflow.entities import Metric, Param

    kind = record["kind"]
    if kind == "metrics":
        batch = [Metric(k, v, record["ts"], record["step"]) for k, v in record["metrics"].items()]
        client.log_batch(run_id, metrics=batch)
    elif kind == "params":
        items = [Param(k, v) for k, v in record["params"].items()]
        for i in range(0, len(items), 100):  # MLflow caps a batch at 100 params
            client.log_batch(run_id, params=items[i : i + 100])
    elif kind == "tags":
        for k, v in record["tags"].items():
            client.set_tag(run_id, k, v)
    elif kind == "artifact":
        _log_artifact(client, run_id, Path(record["path"]), record["artifact_path"], record["name"])
    elif kind == "end":
        client.set_terminated(run_id, record["status"])
    else:
        raise ValueError(f"unknown buffered record kind {kind!r}")


def _log_artifact(client, run_id: str, path: Path, artifact_path: str | None, name: str | None) -> None:
    import shutil
    import tempfile

    if not path.exists():
        logger.warning("artifact %s no longer exists; not logged to run %s", path, run_id)
        return
    with tempfile.TemporaryDirectory() as tmp:
        if path.is_dir():
            staged = Path(tmp) / path.name
            shutil.copytree(path, staged)
            for f in staged.rglob("*"):
                _redact_file(f)
            client.log_artifacts(run_id, str(staged), artifact_path)
            return
        staged = Path(tmp) / (name or path.name)
        shutil.copyfile(path, staged)
        _redact_file(staged)
        client.log_artifact(run_id, str(staged), artifact_path)


def replay_buffer(path: str | Path) -> int:
    """Send the records a failed store left in a buffer file (`blip tracking replay`); the file is
    removed once every record is in. Returns how many were sent."""
    import json

    from mlflow.tracking import MlflowClient

    path = Path(path)
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    sent = 0
    for i, line in enumerate(lines):
        try:
            apply_record(MlflowClient(tracking_uri=line["tracking_uri"]), line["run_id"], line["record"])
        except Exception:
            from blip_core.fileio import write_text

            write_text(path, "".join(json.dumps(x) + "\n" for x in lines[i:]))
            raise
        sent += 1
    path.unlink()
    return sent


# -- redaction: what reaches the store never holds a secret or a home path ---------------------------
_SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|ACCESS_KEY|CREDENTIAL|AUTH", re.I)
_SECRET_SHAPES = re.compile(
    r"\b(?:hf_[A-Za-z0-9]{20,}|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|AKIA[0-9A-Z]{16}"
    r"|sk-[A-Za-z0-9_-]{20,}|xox[abpr]-[A-Za-z0-9-]{10,}|eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,})"
)
REDACTED = "[redacted]"


def _environ() -> dict[str, str]:
    """A snapshot of the environment that another thread may change while it is read (MLflow's
    telemetry deletes `_MLFLOW_TELEMETRY_SESSION_ID`: `os.environ.items()` once failed a cached
    make run with a KeyError). `list(os.environ)` copies the names first; a name deleted since is
    skipped."""
    import os

    return {name: value for name in list(os.environ) if (value := os.environ.get(name)) is not None}


def redact(text: str) -> str:
    """`text` without secrets or home paths: the values of environment variables named like secrets
    (TOKEN, SECRET, PASSWORD, API_KEY, ...), strings shaped like well-known tokens, and URL
    passwords become `[redacted]`; the home folder becomes `~`."""
    import os

    for name, value in _environ().items():
        if len(value) >= 8 and _SECRET_NAME.search(name) and value in text:
            text = text.replace(value, REDACTED)
    text = _SECRET_SHAPES.sub(REDACTED, text)
    text = re.sub(r"(://[^/\s:@]+:)[^@\s/]+@", rf"\1{REDACTED}@", text)
    home = os.path.expanduser("~")
    if len(home) > 1:
        text = re.sub(re.escape(home) + r"(?=/|\b|$)", "~", text)
    return text


_TEXT_SUFFIXES = {".json", ".jsonl", ".md", ".txt", ".yaml", ".yml", ".csv", ".html", ".log"}


def _redact_file(path: Path, max_bytes: int = 20_000_000) -> None:
    if not path.is_file() or path.suffix not in _TEXT_SUFFIXES or path.stat().st_size > max_bytes:
        return
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return
    clean = redact(text)
    if clean != text:
        path.write_text(clean, encoding="utf-8")


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
