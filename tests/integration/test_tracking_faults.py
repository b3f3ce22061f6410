"""MLflow store failures mid-run, and what reaches the store: a locked sqlite store (a real lock held
by another connection) never stops training and loses no record; nothing secret is logged."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import sys
import time
from pathlib import Path

import pytest

mlflow = pytest.importorskip("mlflow")

from blip_core.tracking import MLflowLogger, redact  # noqa: E402
from flows import cli  # noqa: E402

FAKE_TOKEN = "hf_FakeTokenForTheRedactionTest0123456789"


def _store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"  # MLflow waits 20 s (its busy timeout) on a locked file


class _Lock:
    """An exclusive sqlite transaction held by another connection: the store answers 'database is locked'."""

    def __init__(self, db: Path) -> None:
        self.con = sqlite3.connect(db, isolation_level=None)

    def __enter__(self):
        self.con.execute("BEGIN EXCLUSIVE")
        return self

    def __exit__(self, *exc) -> None:
        self.con.execute("COMMIT")
        self.con.close()


def _history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    client = mlflow.MlflowClient(uri)
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_a_locked_store_mid_run_costs_one_warning_and_no_metric(tmp_path, caplog):
    uri = _store(tmp_path)
    buffer = tmp_path / "buffer"
    lg = MLflowLogger(experiment="t", run_name="r", tracking_uri=uri, buffer_dir=buffer, retry_after_s=0.5)
    lg.log_params({"train": {"lr": 0.1}})
    caplog.set_level(logging.WARNING, logger="blip_core.tracking")
    t0 = time.perf_counter()
    with _Lock(tmp_path / "mlflow.db"):
        for step in range(1, 21):  # a training loop logging every step while the store is locked
            lg.log({"train/loss": 1.0 / step}, step=step)
        lg.set_tags({"phase": "locked"})
        stalled = time.perf_counter() - t0
        assert (buffer / f"{lg.run_id}.jsonl").is_file()  # on disk too: a kill now would lose nothing
    # one stall of the 20 s busy timeout, not one per step (the store is retried after retry_after_s)
    assert stalled < 35, stalled
    failures = [r for r in caplog.records if "failed" in r.getMessage()]
    assert len(failures) == 1 and "training goes on" in failures[0].getMessage()
    time.sleep(0.6)
    lg.log({"train/loss": 0.01}, step=21)  # the store answers again: the buffer is flushed first, in order
    lg.close()
    assert _history(uri, lg.run_id, "train/loss") == [(s, pytest.approx(1.0 / s)) for s in range(1, 21)] + [
        (21, pytest.approx(0.01))
    ]
    run = mlflow.MlflowClient(uri).get_run(lg.run_id)
    assert run.data.tags["phase"] == "locked" and run.info.status == "FINISHED"
    assert not (buffer / f"{lg.run_id}.jsonl").exists()
    assert any("answers again" in r.getMessage() for r in caplog.records)


def test_records_of_a_run_that_ended_during_the_outage_are_replayed_later(tmp_path, capsys, monkeypatch):
    uri = _store(tmp_path)
    buffer = tmp_path / "buffer"
    lg = MLflowLogger(experiment="t", run_name="r", tracking_uri=uri, buffer_dir=buffer, retry_after_s=60)
    with _Lock(tmp_path / "mlflow.db"):
        for step in range(1, 4):
            lg.log({"eval/r1": float(step)}, step=step)
        (tmp_path / "evaluation.json").write_text('{"r1": 3}')
        lg.log_artifact(tmp_path / "evaluation.json")
        lg.close()  # still locked: the records stay in the buffer file
    pending = buffer / f"{lg.run_id}.jsonl"
    assert len(pending.read_text().splitlines()) == 5
    assert _history(uri, lg.run_id, "eval/r1") == []
    assert cli.main(["tracking", "list", str(pending)]) == 0
    assert json.loads(capsys.readouterr().out) == {str(pending): 5}
    assert cli.main(["tracking", "replay", str(pending)]) == 0
    assert _history(uri, lg.run_id, "eval/r1") == [(1, 1.0), (2, 2.0), (3, 3.0)]
    client = mlflow.MlflowClient(uri)
    assert client.get_run(lg.run_id).info.status == "FINISHED"
    assert [a.path for a in client.list_artifacts(lg.run_id)] == ["evaluation.json"]
    assert not pending.exists()


def test_redact_removes_secret_values_token_shapes_url_passwords_and_home(monkeypatch):
    monkeypatch.setenv("MY_SERVICE_TOKEN", "s3cr3t-value-42")
    home = os.path.expanduser("~")
    text = f"a s3cr3t-value-42 b {FAKE_TOKEN} c https://user:pa55word@host/x d {home}/data/world e ghp_" + "A" * 36
    clean = redact(text)
    assert "s3cr3t" not in clean and "hf_" not in clean and "pa55word" not in clean and "ghp_" not in clean
    assert f"{home}/" not in clean and "~/data/world" in clean
    assert redact("lr 0.001, data/world/web") == "lr 0.001, data/world/web"


def test_a_run_with_a_token_in_the_environment_logs_no_secret_or_home_path(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    home = os.path.expanduser("~")
    cmd = f"{home}/bin/blip --token {FAKE_TOKEN}"
    lg = MLflowLogger(experiment="t", run_name="r", tracking_uri=uri, tags={"cmd": cmd})
    # a careless config: the token and a home path end up among the params and in an artifact
    lg.log_params({"data": {"root": f"{home}/datasets/web", "hub_token": FAKE_TOKEN}})
    lg.set_tags({"where": f"{home}/runs"})
    art = tmp_path / "resolved_config.json"
    art.write_text(json.dumps({"root": f"{home}/datasets/web", "auth": FAKE_TOKEN}))
    lg.log_artifact(art)
    lg.close()
    run = mlflow.MlflowClient(uri).get_run(lg.run_id)
    logged = json.dumps([run.data.params, run.data.tags])
    stored = [(tmp_path / "mlflow.db").read_bytes()] + [p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()
                                                        and p.parent != tmp_path]  # fmt: skip
    for blob in [logged.encode(), *stored]:
        assert FAKE_TOKEN.encode() not in blob
        assert f"{home}/datasets".encode() not in blob
    assert run.data.params["data.root"] == "~/datasets/web" and run.data.params["data.hub_token"] == "[redacted]"


def _mlflow_server(port: int, tmp_path: Path):
    import subprocess
    import urllib.request

    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
           "--default-artifact-root", str(tmp_path / "artifacts")]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return proc
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, "mlflow server did not start"
            time.sleep(0.5)


def _stop(proc) -> None:
    import signal

    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_a_tracking_server_that_dies_mid_run_loses_no_metric(tmp_path, monkeypatch, caplog):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail fast: the logger does the retrying
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    server = _mlflow_server(port, tmp_path)
    uri = f"http://127.0.0.1:{port}"
    try:
        lg = MLflowLogger(experiment="t", run_name="r", tracking_uri=uri, buffer_dir=tmp_path / "buffer",
                          retry_after_s=0.2)  # fmt: skip
        lg.log({"train/loss": 1.0}, step=1)
        _stop(server)  # the server dies mid-run
        caplog.set_level(logging.WARNING, logger="blip_core.tracking")
        for step in range(2, 6):
            lg.log({"train/loss": 1.0 / step}, step=step)
            time.sleep(0.1)
        assert len([r for r in caplog.records if "failed" in r.getMessage()]) == 1
        server = _mlflow_server(port, tmp_path)  # back, on the same store
        time.sleep(0.5)
        lg.log({"train/loss": 0.1}, step=6)
        lg.close()
        history = _history(uri, lg.run_id, "train/loss")
        assert [s for s, _ in history] == [1, 2, 3, 4, 5, 6]
        assert mlflow.MlflowClient(uri).get_run(lg.run_id).info.status == "FINISHED"
    finally:
        _stop(server)
