"""The Prefect CLI a user runs after `make run` works against a local server, offline.

With fastapi >= 0.151 the pinned Prefect's server answered `prefect deployment ls`, `prefect
flow-run ls` and `prefect artifact ls` with `422 'limit': Input should be a valid integer` (its
client sends explicit nulls); pyproject.toml pins a set that works and this test keeps it working.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

FLOW = textwrap.dedent(
    """
    from prefect import flow
    from prefect.artifacts import create_markdown_artifact

    @flow(name="cli-check")
    def cli_check():
        create_markdown_artifact("| a |\\n|---|\\n| 1 |", key="cli-check-table")
        return 1

    if __name__ == "__main__":
        cli_check.to_deployment(name="full").apply()  # registered, not served
        cli_check()
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect-home")
    port = _free_port()
    env = os.environ | {
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    log = open(home / "server.log", "w")  # noqa: SIM115 (closed below)
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    pytest.fail(f"prefect server did not start:\n{(home / 'server.log').read_text()[-3000:]}")
                time.sleep(0.5)
        yield env, home, port
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def _prefect(env, *args) -> subprocess.CompletedProcess:
    # wide enough that rich does not cut names and states
    return subprocess.run(
        [sys.executable, "-m", "prefect", *args],
        env=env | {"COLUMNS": "250"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_lists_deployments_flow_runs_and_artifacts(prefect_server, tmp_path):
    env, _, port = prefect_server
    script = tmp_path / "cli_check.py"
    script.write_text(FLOW)
    r = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]

    deployments = _prefect(env, "deployment", "ls")
    assert deployments.returncode == 0, deployments.stdout[-3000:] + deployments.stderr[-3000:]
    assert "cli-check/full" in deployments.stdout
    runs = _prefect(env, "flow-run", "ls")
    assert runs.returncode == 0, runs.stdout[-3000:] + runs.stderr[-3000:]
    assert "cli-check" in runs.stdout and "COMPLETED" in runs.stdout
    artifacts = _prefect(env, "artifact", "ls")
    assert artifacts.returncode == 0, artifacts.stdout[-3000:] + artifacts.stderr[-3000:]
    assert "cli-check-table" in artifacts.stdout

    # the UI is served by the same process, from the installed package (no CDN)
    page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10).read().decode()
    assert "<html" in page.lower()


STALE = textwrap.dedent(
    """
    from prefect import flow
    from prefect.client.orchestration import get_client

    from flows.prefect_tasks import release_stale_gpu_slots

    with get_client(sync_client=True) as c:  # a run killed while a gpu-tagged task held the slot
        c.create_concurrency_limit(tag="gpu", concurrency_limit=1)
        c.increment_concurrency_slots_with_lease(names=["tag:gpu"], slots=1, mode="concurrency",
                                                 lease_duration=3600)
        print("HELD", c.read_global_concurrency_limit_by_name("tag:gpu").active_slots)

    @flow(name="release")
    def release():
        release_stale_gpu_slots()

    release()
    with get_client(sync_client=True) as c:
        print("AFTER", c.read_global_concurrency_limit_by_name("tag:gpu").active_slots)
    """
)


def test_stale_gpu_slot_of_a_killed_run_is_released(prefect_server, tmp_path):
    env, _, _ = prefect_server
    script = tmp_path / "stale.py"
    script.write_text(STALE)
    env = env | {"PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "HELD 1" in r.stdout and "AFTER 0" in r.stdout
