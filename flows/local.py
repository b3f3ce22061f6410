"""`make run`: the bootstrap pipeline through Prefect on this machine, start to finish.

Starts a local Prefect server (sqlite) unless one already answers, serves the `bootstrap/full`
deployment, triggers `prefect deployment run bootstrap/full --watch`, prints the baseline-vs-
bootstrapped table and where to look, and stops what it started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from flows import effect

HOST, PORT = "127.0.0.1", int(os.environ.get("BLIP_PREFECT_PORT", "4200"))
API = f"http://{HOST}:{PORT}/api"


def _healthy(timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{API}/health", timeout=timeout) as r:
            return r.status == 200
    except OSError:
        return False


def _wait(check, what: str, seconds: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}; see {proc.args}")
        time.sleep(1)
    raise TimeoutError(f"{what} not ready after {seconds:.0f} s")


def _deployment_ready(env: dict) -> bool:
    r = subprocess.run(["prefect", "deployment", "inspect", "bootstrap/full"], env=env, capture_output=True, text=True)
    return r.returncode == 0


def _spawn(cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
    """A background process in its own session (so it can be stopped with its children)."""
    with open(log, "w") as f:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def main() -> int:
    env = os.environ | {"PREFECT_API_URL": API, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                        "GX_ANALYTICS_ENABLED": "false", "PYTHONUNBUFFERED": "1"}  # fmt: skip
    # SIGTERM (e.g. a CI timeout) must still run the `finally` below that stops the server and runner
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    logs = Path("data/logs")
    logs.mkdir(parents=True, exist_ok=True)
    server = serve = None
    t0 = time.monotonic()
    try:
        if _healthy():
            print(f"Using the Prefect server already running at {API}")
        else:
            print(f"Starting a local Prefect server at http://{HOST}:{PORT} (log: {logs}/prefect-server.log)")
            cmd = ["prefect", "server", "start", "--host", HOST, "--port", str(PORT)]
            server = _spawn(cmd, env, logs / "prefect-server.log")
            _wait(_healthy, "prefect server", 180, server)
        # a fresh `gpu` limit (1 task at a time): slots leased by an earlier run that was killed would
        # otherwise block every gpu-tagged task of this run
        subprocess.run(
            ["prefect", "concurrency-limit", "delete", "gpu"], env=env, capture_output=True, input="y\n", text=True
        )
        subprocess.run(["prefect", "concurrency-limit", "create", "gpu", "1"], env=env, capture_output=True)
        print(f"Serving deployment bootstrap/full (log: {logs}/serve.log)")
        serve = _spawn([sys.executable, "-m", "flows.bootstrap", "serve"], env, logs / "serve.log")
        _wait(lambda: _deployment_ready(env), "deployment bootstrap/full", 180, serve)
        print(f"Ready after {time.monotonic() - t0:.0f} s. Running: prefect deployment run bootstrap/full --watch")
        t_run = time.monotonic()
        rc = subprocess.run(["prefect", "deployment", "run", "bootstrap/full", "--watch"], env=env).returncode
        print(f"\nFlow finished in {time.monotonic() - t_run:.0f} s (exit code {rc}); serve log: {logs}/serve.log")
        _summary()
        return rc
    finally:
        _stop(serve)
        _stop(server)


def _summary() -> None:
    report = Path("data/metrics/report/comparison.md")
    times = Path("data/metrics/stage_times.json")
    if times.is_file():
        print("\nWall time per stage (s):")
        for name, s in json.loads(times.read_text()).items():
            print(f"  {name:<32} {s:8.1f}")
    if report.is_file():
        print("\nBaseline vs bootstrapped (test and novel splits):\n")
        print(report.read_text())
    quality = effect.quality_lines(effect.run_summary("data"))
    print("CapFilt quality (scored against the world's ground-truth labels):")
    print("\n".join(quality) + "\n")
    print("Where to look:")
    print("  make mlflow-ui            -> http://127.0.0.1:5000 (experiment blip-bootstrap, 'Training runs' view)")
    print("  Data Docs                 -> gx/uncommitted/data_docs/local_site/index.html")
    print("  CapFilt quality and plots -> data/metrics/capfilt/")
    print("  DVC                       -> dvc metrics show / dvc plots show")


if __name__ == "__main__":
    sys.exit(main())
