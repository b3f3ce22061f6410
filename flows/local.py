"""`make run`: the bootstrap pipeline through Prefect on this machine, start to finish.

Starts a local Prefect server (sqlite) unless one already answers, serves the `bootstrap/full`
deployment, triggers `prefect deployment run bootstrap/full --watch`, prints the baseline-vs-
bootstrapped table and where to look, and stops what it started.

Killed any way (SIGKILL included), it leaves nothing running: the server and the serve process die
with it (Linux parent-death signal), and the next `make run` stops any that a killed run left behind
(their pids are in `data/logs/local.pids.json`), recreates the `gpu` concurrency limit, and resumes:
finished stages come from the Prefect cache, a killed training continues from its checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from flows import effect, results
from flows.versioning import tool

HOST, PORT = "127.0.0.1", int(os.environ.get("BLIP_PREFECT_PORT", "4200"))
API = f"http://{HOST}:{PORT}/api"


def server_command(port: int = PORT) -> list[str]:
    """The local Prefect server: it listens on 127.0.0.1 only."""
    return [*tool("prefect"), "server", "start", "--host", HOST, "--port", str(port)]


def server_env(port: int = PORT) -> dict[str, str]:
    """The settings a client and the server's UI need for a server on `port`: the UI calls the API
    at PREFECT_UI_API_URL, which defaults to port 4200 whatever port the server listens on."""
    api = f"http://{HOST}:{port}/api"
    return {"PREFECT_API_URL": api, "PREFECT_UI_API_URL": api, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


def healthy(timeout: float = 2.0, api: str = API) -> bool:
    try:
        with urllib.request.urlopen(f"{api}/health", timeout=timeout) as r:
            return r.status == 200
    except OSError:
        return False


READY_TIMEOUT_S = 180.0
"""How long the server and the serve process may take to come up (2 busy CPUs: ~20-60 s)."""


class NotReady(TimeoutError):
    """A process `make run` started did not come up (or exited): one line, no traceback."""


def wait_for(
    check, what: str, seconds: float, proc: subprocess.Popen | None = None, *, log: Path | None = None
) -> None:
    deadline = time.monotonic() + seconds
    see = f"; see {log}" if log else ""
    while time.monotonic() < deadline:
        if check():
            return
        if proc is not None and proc.poll() is not None:
            raise NotReady(f"{what} exited with code {proc.returncode}{see}")
        time.sleep(0.2)
    raise NotReady(f"{what} not ready after {seconds:.0f} s{see}")


def _api(method: str, path: str, body: dict | None = None) -> int:
    """One call to the local server's REST API (the CLI costs ~2 s of imports per call); the status."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{API}{path}", data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def _deployment_ready() -> bool:
    return _api("GET", "/deployments/name/bootstrap/full") == 200


def _die_with_parent(sig: int) -> Callable[[], None]:
    """Runs in the child before exec: signal it with `sig` when this process dies, even by SIGKILL."""

    def preexec() -> None:
        import ctypes

        # not Linux: no prctl; `_stop_leftovers` cleans up on the next run instead
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, sig)  # PR_SET_PDEATHSIG

    return preexec


def _spawn(cmd: list[str], env: dict, log: Path, *, death_signal: int = signal.SIGTERM) -> subprocess.Popen:
    """A background process in its own session (so it can be stopped with its children), sent
    `death_signal` if this process dies first."""
    with open(log, "w") as f:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=_die_with_parent(death_signal))  # fmt: skip


PIDS = Path("data/logs/local.pids.json")
"""The server and serve processes of the current `make run`, for the next one to stop if left over."""


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _stop_leftovers() -> list[int]:
    """Stop the server and serve processes that a killed earlier run left (checked by command line,
    so a reused pid is never touched)."""
    if not PIDS.is_file():
        return []
    try:
        pids = json.loads(PIDS.read_text())
    except ValueError:
        pids = {}
    stopped = []
    for what, pid in pids.items():
        marker = "prefect server start" if what == "server" else "flows.bootstrap serve"
        if isinstance(pid, int) and marker in _cmdline(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGTERM)
                stopped.append(pid)
    deadline = time.monotonic() + 20
    while stopped and time.monotonic() < deadline and any(_cmdline(p) for p in stopped):
        time.sleep(0.5)
    for pid in stopped:
        if _cmdline(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
    PIDS.unlink(missing_ok=True)
    if stopped:
        print(f"Stopped {len(stopped)} process(es) left running by an earlier, killed run: {stopped}")
    return stopped


def _record(**procs: subprocess.Popen | None) -> None:
    PIDS.write_text(json.dumps({k: p.pid for k, p in procs.items() if p is not None}) + "\n")


def _watch(cmd: list[str], env: dict, serve: subprocess.Popen) -> int:
    """Run the watching command; if the serve process dies meanwhile the flow run can never finish:
    stop watching and say so in one line (the next `make run` resumes)."""
    watch = subprocess.Popen(cmd, env=env)
    while watch.poll() is None:
        if serve.poll() is not None:
            watch.terminate()
            watch.wait()
            print(f"\nThe serve process exited (code {serve.returncode}) during the run; see data/logs/serve.log. "
                  "Run `make run` again: finished stages are reused.")  # fmt: skip
            return 1
        time.sleep(0.2)
    return watch.returncode


def _stop(proc: subprocess.Popen | None) -> None:
    """Stop a spawned process and everything in its process group (a flow run the serve process
    started outlives a serve process that died)."""
    if proc is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=20)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    import argparse

    # no options: the run is params.yaml's; --help says so without starting anything
    argparse.ArgumentParser(
        prog="python -m flows.local", description=__doc__.split("\n\n")[0],
        epilog="Every knob is in params.yaml (one section per stage); `make help` lists the other targets.",
    ).parse_args(argv)  # fmt: skip
    # the serve process polls for the run every second, not every 10 s (Prefect's default): a cached
    # re-run lasts ~30 s, and the default poll and watch intervals cost up to 15 s of it
    env = os.environ | server_env() | {"PREFECT_RUNNER_POLL_FREQUENCY": "1", "GX_ANALYTICS_ENABLED": "false",
                                       "PYTHONUNBUFFERED": "1"}  # fmt: skip
    # SIGTERM (e.g. a CI timeout) must still run the `finally` below that stops the server and runner
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    logs = Path("data/logs")
    logs.mkdir(parents=True, exist_ok=True)
    server = serve = None
    t0 = time.monotonic()
    _stop_leftovers()
    try:
        if healthy():
            print(f"Using the Prefect server already running at {API}")
        else:
            print(f"Starting a local Prefect server at http://{HOST}:{PORT} (log: {logs}/prefect-server.log)")
            server = _spawn(server_command(), env, logs / "prefect-server.log")
            _record(server=server)
            wait_for(healthy, "prefect server", READY_TIMEOUT_S, server, log=logs / "prefect-server.log")
        # a fresh `gpu` limit (1 task at a time): slots leased by an earlier run that was killed would
        # otherwise block every gpu-tagged task of this run
        _api("DELETE", "/concurrency_limits/tag/gpu")
        _api("POST", "/concurrency_limits/", {"tag": "gpu", "concurrency_limit": 1})
        print(f"Serving deployment bootstrap/full (log: {logs}/serve.log)")
        # SIGUSR1 on our death: the serve process then kills its process group, its flow run included
        # (its SIGTERM shutdown waits on a flow run that talks to a server that is gone)
        serve = _spawn([sys.executable, "-m", "flows.bootstrap", "serve"], env, logs / "serve.log",
                       death_signal=signal.SIGUSR1)  # fmt: skip
        _record(server=server, serve=serve)
        # the summary at the end reads the CapFilt scores through blip_core (torch: ~3 s of imports),
        # imported meanwhile; in a thread started only now: a fork while another thread imports can
        # deadlock the child before it execs (the children's preexec_fn runs between the two)
        threading.Thread(target=results.import_summary_deps, daemon=True).start()
        wait_for(_deployment_ready, "deployment bootstrap/full", READY_TIMEOUT_S, serve, log=logs / "serve.log")
        print(f"Ready after {time.monotonic() - t0:.0f} s. Running: prefect deployment run bootstrap/full --watch")
        t_run = time.monotonic()
        rc = _watch(
            [*tool("prefect"), "deployment", "run", "bootstrap/full", "--watch", "--watch-interval", "1"], env, serve
        )
        print(f"\nFlow finished in {time.monotonic() - t_run:.0f} s (exit code {rc}); serve log: {logs}/serve.log")
        _summary()
        return rc
    except NotReady as e:
        print(f"make run: {e}", file=sys.stderr)
        return 1
    finally:
        _stop(serve)  # first: its graceful shutdown pauses the deployment through the server
        _stop(server)
        PIDS.unlink(missing_ok=True)


def _summary() -> None:
    report = Path("data/metrics/report/comparison.md")
    times = Path("data/metrics/stage_times.json")
    if times.is_file():
        print("\nWall time per stage (s):")
        for name, s in json.loads(times.read_text()).items():
            print(f"  {name:<32} {s:8.1f}")
    if report.is_file():
        print("\nBaseline vs bootstrapped (test and novel splits; VQA, NLVR² and zero-shot video on theirs):\n")
        table = report.read_text()  # the verdict above its table is the one-run form: ours below may have the spread
        print(table[table.find("|") :] if "|" in table else table)
    summary = results.run_summary("data")
    line = results.run_verdict("data", "params.yaml", summary=summary)
    if line:
        print(line + "\n")
    quality = effect.quality_lines(summary)
    print("CapFilt quality (scored against the world's ground-truth labels):")
    print("\n".join(quality) + "\n")
    print("Where to look:")
    print("  make mlflow-ui            -> http://127.0.0.1:5000 (experiment blip-bootstrap, 'Training runs' view)")
    links = Path("data/logs/mlflow.json")
    url = json.loads(links.read_text()).get("compare_url") if links.is_file() else None
    if url:
        print(f"  the two evaluations       -> {url}")
    print("  Data Docs                 -> gx/uncommitted/data_docs/local_site/index.html")
    print("  CapFilt quality and plots -> data/metrics/capfilt/")
    print("  CapFilt audit page        -> data/capfilt/audit/index.html (each caption: image, scores, decision)")
    print("  DVC                       -> dvc metrics show / dvc plots show")


if __name__ == "__main__":
    sys.exit(main())
