"""Prefect-level faults: a stage that fails transiently is retried and the flow completes; one that
fails for good fails the flow with the stage and the cause in one line. Also: `make run` killed
with SIGKILL leaves no server or serve process behind, and the next `make run` resumes and ends
green (slow)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from helpers import prefect_subprocess_env, repo_clone

SCRIPT = textwrap.dedent(
    """
    import errno, json, sys
    from pathlib import Path

    from prefect import flow
    from prefect.testing.utilities import prefect_test_harness

    from flows import dag
    from flows import prefect_tasks
    from flows.bootstrap import bootstrap

    work = Path(sys.argv[1])

    def attempts(name):
        f = work / f"{name}.attempts"
        n = int(f.read_text()) + 1 if f.exists() else 1
        f.write_text(str(n))
        return n

    def flaky(out_file):  # the shared disk hiccups once
        if attempts("flaky") == 1:
            raise OSError(errno.EIO, "Input/output error reading a shard on the shared disk")
        Path(out_file).write_text("{}")
        return {"ok": 1}

    def io_forever(out_file):
        attempts("io_forever")
        raise OSError(errno.EIO, "Input/output error\\nsecond line of detail")

    def broken(out_file):
        attempts("broken")
        raise ValueError("capfilt.threshold must be in [0, 1], got 7")

    def stage(name, fn):
        return dag.Stage(name=name, fn=fn, kwargs={"out_file": str(work / f"{name}.json")}, deps=(),
                         outs=(str(work / f"{name}.json"),))

    ALL = {s.name: s for s in (stage("flaky", flaky), stage("io_forever", io_forever), stage("broken", broken))}
    dag.stages = lambda params="params.yaml", root="data": [ALL[n] for n in sys.argv[2].split(",")]
    dag.code_of = lambda fn, tasks=(), evaluates=(): ()
    prefect_tasks.stage_task.retry_delay_seconds = 0

    @flow
    def one(name: str):
        return prefect_tasks.stage_task(name, "params.yaml", str(work), {})

    with prefect_test_harness(server_startup_timeout=120):
        out = {}
        state = one("flaky", return_state=True)
        out["flaky"] = [state.type.value, state.result(raise_on_failure=False)]
        for name in ("io_forever", "broken"):
            dag.stages = lambda params="params.yaml", root="data", name=name: [ALL[name]]
            state = bootstrap(params="params.yaml", root=str(work), track=False, return_state=True)
            out[name] = [state.type.value, state.message]
        for name in ALL:
            out[name].append(int((work / f"{name}.attempts").read_text()))
        print("RESULT " + json.dumps(out, default=str))
    """
)


def test_a_transient_failure_is_retried_and_a_permanent_one_fails_the_flow_in_one_line(tmp_path):
    script = tmp_path / "faults.py"
    script.write_text(SCRIPT)
    work = tmp_path / "work"
    work.mkdir()
    r = subprocess.run([sys.executable, str(script), str(work), "flaky"], env=prefect_subprocess_env(tmp_path),
                       capture_output=True, text=True, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(next(line for line in r.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert out["flaky"][0] == "COMPLETED" and out["flaky"][2] == 2  # failed once, retried, done
    state, message, attempts = out["io_forever"]
    assert state == "FAILED" and attempts == 3  # an I/O error is retried twice, then the flow fails
    assert "stage io_forever failed: OSError: [Errno 5] Input/output error" in message
    state, message, attempts = out["broken"]
    assert state == "FAILED" and attempts == 1  # a bad value is not retried
    assert "stage broken failed: ValueError: capfilt.threshold must be in [0, 1], got 7" in message
    assert "\n" not in message


# -- make run, killed ------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _procs_in(folder: Path) -> list[tuple[int, str]]:
    """Processes whose command line or working directory is inside `folder`."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(d / "cwd")
        except OSError:
            continue
        if str(folder) in cmd or cwd.startswith(str(folder)):
            found.append((int(d.name), cmd))
    return found


def _wait_for_checkpoint(proc: subprocess.Popen, ckpts: Path, log: Path) -> None:
    deadline = time.monotonic() + 900
    while not (ckpts.is_dir() and any(ckpts.glob("ckpt_*.pt"))):
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"no checkpoint in {ckpts}"
        time.sleep(0.2)


def _assert_nothing_left(clone: Path, port: int) -> None:
    deadline = time.monotonic() + 60
    while (_listening(port) or _procs_in(clone)) and time.monotonic() < deadline:
        time.sleep(1)
    assert not _listening(port), "a Prefect server outlived the killed run"
    assert _procs_in(clone) == [], _procs_in(clone)


@pytest.mark.slow
def test_make_run_killed_with_sigkill_leaves_nothing_running_and_the_next_run_resumes(tmp_path):
    """Run 1: the serve process is SIGKILLed during baseline pre-training: make run stops in one
    line. Run 2: make run itself is SIGKILLed during the bootstrapped pre-training: its server and
    serve processes follow it. Run 3: ends green, reusing what finished and resuming the training."""
    train = {"batch_size": 8, "max_steps": 40, "ckpt_every": 2, "warmup_steps": 1, "shuffle_buffer": 50, "log_every": 1}
    clone, env = repo_clone(tmp_path, {"pretrain": train})
    port = _free_port()
    env = prefect_subprocess_env(tmp_path) | {k: v for k, v in env.items() if k.startswith(("BLIP_", "MLFLOW_"))}
    env |= {"BLIP_PREFECT_PORT": str(port), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("PREFECT_API_URL", None)
    env["PYTHONPATH"] = str(clone)  # the clone's own code, as `make run` in a fresh clone
    make_run = [sys.executable, "-m", "flows.local"]
    runs = clone / "data/runs"

    log1 = tmp_path / "run1.log"
    with log1.open("w") as f:
        first = subprocess.Popen(make_run, cwd=clone, env=env, stdout=f, stderr=subprocess.STDOUT)
        _wait_for_checkpoint(first, runs / "baseline/pretrain/checkpoints", log1)
        serve = json.loads((clone / "data/logs/local.pids.json").read_text())["serve"]
        os.kill(serve, signal.SIGKILL)
        assert first.wait(timeout=120) == 1
    assert "The serve process exited (code -9) during the run" in log1.read_text()
    _assert_nothing_left(clone, port)  # the flow run of the dead serve process was stopped too

    log2 = tmp_path / "run2.log"
    with log2.open("w") as f:
        second = subprocess.Popen(make_run, cwd=clone, env=env, stdout=f, stderr=subprocess.STDOUT)
        _wait_for_checkpoint(second, runs / "bootstrapped/pretrain/checkpoints", log2)
        os.kill(second.pid, signal.SIGKILL)  # make run itself dies; its server and serve processes must follow
        second.wait()
    _assert_nothing_left(clone, port)
    baseline = json.loads((runs / "baseline/pretrain/train_summary.json").read_text())
    assert baseline["resumed_from_step"] >= 2  # run 2 went on from run 1's checkpoint

    third = subprocess.run(make_run, cwd=clone, env=env, capture_output=True, text=True, timeout=1500)
    assert third.returncode == 0, third.stdout[-4000:] + third.stderr[-2000:]
    boot = json.loads((runs / "bootstrapped/pretrain/train_summary.json").read_text())
    assert boot["resumed_from_step"] >= 2
    assert json.loads((runs / "baseline/pretrain/train_summary.json").read_text()) == baseline  # not re-run
    assert (clone / "data/metrics/report/comparison.md").is_file()
    _assert_nothing_left(clone, port)
    assert not (clone / "data/logs/local.pids.json").exists()
