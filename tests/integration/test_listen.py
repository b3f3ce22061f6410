"""Every server the project starts listens on 127.0.0.1 only: the Prefect server of `make run` and
`make prefect-server`, the MLflow UI of `make mlflow-ui`, and the local Dask cluster (scheduler,
workers, dashboard) of the CapFilt subflow. Checked on the sockets the processes really hold."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]
LOOPBACK = {"127.0.0.1", "::1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(pid: int) -> set[tuple[str, int]]:
    """(ip, port) of the listening TCP sockets of a process and its descendants."""
    out = set()
    try:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return out
    for p in procs:
        try:
            conns = p.net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        out |= {(c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN}
    return out


def _serve_and_check(
    cmd: str | list[str], port: int, tmp_path: Path, *, seconds: float = 120, also=None, env=None
) -> set:
    """The sockets the server holds once it listens on `port`; `also(port)` runs while it is up."""
    env = (env or os.environ) | {"PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    proc = subprocess.Popen(cmd, shell=isinstance(cmd, str), cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + seconds
        while not any(p == port for _, p in _listening(proc.pid)):
            assert proc.poll() is None, proc.stderr.read()[-2000:]
            assert time.monotonic() < deadline, f"nothing listens on {port} after {seconds} s"
            time.sleep(0.5)
        if also is not None:
            also(port)
        return _listening(proc.pid)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stderr.close()


def _make_command(target: str, **variables: str) -> str:
    """The shell command a Makefile target runs (make -n), continuation lines joined."""
    args = ["make", "-n", "--no-print-directory", "-C", str(REPO), target, *(f"{k}={v}" for k, v in variables.items())]
    text = subprocess.run(args, capture_output=True, text=True, check=True).stdout.replace("\\\n", " ")
    return [line for line in text.splitlines() if "pip install" not in line and line.strip()][-1]


def test_the_prefect_server_of_make_run_listens_on_loopback_only(tmp_path):
    from flows.local import server_command, server_env

    port = _free_port()
    env = os.environ | server_env(port)
    listening = _serve_and_check(server_command(port), port, tmp_path, also=_ui_calls_the_api_on, env=env)
    assert listening and {ip for ip, _ in listening} <= LOOPBACK, listening


@pytest.mark.parametrize(("target", "var"), [("prefect-server", "PREFECT_PORT"), ("mlflow-ui", "MLFLOW_PORT")])
def test_make_targets_that_start_servers_listen_on_loopback_only(tmp_path, target, var):
    port = _free_port()
    (tmp_path / "mlflow").mkdir()
    also = _ui_calls_the_api_on if target == "prefect-server" else None
    listening = _serve_and_check(_make_command(target, **{var: str(port)}), port, tmp_path, also=also)
    assert listening and {ip for ip, _ in listening} <= LOOPBACK, listening


def _ui_calls_the_api_on(port: int) -> None:
    """The Prefect UI in the browser calls the API URL the server hands it (PREFECT_UI_API_URL): on
    another port than 4200 it must be that port, or the UI shows "Can't connect to Server API"."""
    import json
    import urllib.request

    deadline = time.monotonic() + 60
    while True:  # the socket listens a moment before the app answers
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ui-settings", timeout=5) as r:
                settings = json.loads(r.read())
            break
        except OSError:
            assert time.monotonic() < deadline, "the Prefect UI settings never answered"
            time.sleep(0.5)
    assert settings["api_url"] == f"http://127.0.0.1:{port}/api", settings


def test_the_local_dask_cluster_listens_on_loopback_only():
    distributed = pytest.importorskip("distributed")
    from flows.capfilt_flow import task_runner

    kwargs = task_runner("dask", 2).cluster_kwargs
    with distributed.LocalCluster(**kwargs, processes=True, silence_logs=50) as cluster:
        cluster.wait_for_workers(2)
        listening = _listening(os.getpid())
        assert len(listening) >= 4  # scheduler, dashboard, and each worker (and its nanny)
        assert {ip for ip, _ in listening} <= LOOPBACK, listening
        with distributed.Client(cluster) as client:  # and its workers run without Dask's profiler
            enabled = client.run(lambda: __import__("dask").config.get("distributed.worker.profile.enabled"))
        assert list(enabled.values()) == [False, False]
