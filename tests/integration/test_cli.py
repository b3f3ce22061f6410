"""The `blip` console script: subcommands and one clear message on bad arguments."""

from __future__ import annotations

import filecmp
import json
import subprocess
import sys
from pathlib import Path

import pytest

from flows.cli import main

# the default world's sizes (params.yaml holds the smaller `make run` world)
DEFAULT_WORLD = str(Path(__file__).resolve().parents[2] / "configs" / "default-world.yaml")


def _run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_help_lists_subcommands():
    r = _run("--help")
    assert r.returncode == 0
    for cmd in ("world", "import", "tokenizer", "inspect"):
        assert cmd in r.stdout


def test_make_run_entry_point_answers_help_without_running(monkeypatch, capsys):
    """`python -m flows.local --help` (make run's entry point) prints its usage and starts nothing."""
    from flows import local

    monkeypatch.setattr(local, "_stop_leftovers", lambda: pytest.fail("--help started the run"))
    with pytest.raises(SystemExit) as e:
        local.main(["--help"])
    assert e.value.code == 0 and "make run" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        local.main(["--seeds", "1"])
    assert e.value.code == 2


def test_make_run_says_in_one_line_when_the_serve_process_never_comes_up(tmp_path, monkeypatch, capsys):
    """A serve process that never registers the deployment: `make run` stops after its timeout with one
    line naming the log, stops what it started, and no thread is running when it spawns children (a
    fork while another thread imports torch can deadlock the child before it execs)."""
    import threading

    from flows import local, results

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(local.signal, "signal", lambda *a: None)  # main's SIGTERM handler stays out of pytest
    events, spawned = [], []

    class Thread(threading.Thread):
        def start(self):
            if self._target is results.import_summary_deps:  # the one thread main starts
                events.append("thread")
            super().start()

    monkeypatch.setattr(local.threading, "Thread", Thread)

    def spawn(cmd, env, log, **kw):
        events.append("spawn")
        spawned.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True))
        return spawned[-1]

    monkeypatch.setattr(local, "_spawn", spawn)
    monkeypatch.setattr(local, "healthy", lambda *a, **k: True)  # a server already answers
    monkeypatch.setattr(local, "_api", lambda *a, **k: 404)  # ... but the deployment never appears
    monkeypatch.setattr(local, "READY_TIMEOUT_S", 1.0)
    assert local.main([]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["make run: deployment bootstrap/full not ready after 1 s; see data/logs/serve.log"]
    assert events == ["spawn", "thread"] and spawned[0].poll() is not None  # spawned first, stopped after


def test_each_capfilt_step_has_its_own_help():
    r = _run("capfilt", "select", "--help")
    assert r.returncode == 0
    assert "usage: blip capfilt select" in r.stdout or "capfilt select" in r.stdout
    assert "--threshold" in r.stdout and "--captioner" not in r.stdout and "--filter" not in r.stdout
    r = _run("capfilt", "caption", "--help")
    assert "--captioner" in r.stdout and "--threshold" not in r.stdout
    r = _run("capfilt", "--help")
    assert all(step in r.stdout for step in ("caption", "filter", "select", "reshard", "run"))


def test_world_cli_is_deterministic(tmp_path):
    for name in ("a", "b"):
        assert (
            main(["world", "--out", str(tmp_path / name), "--seed", "7", "--scale", "0.01", "--params", DEFAULT_WORLD])
            == 0
        )
    for split in ("coco_train", "web", "val", "test", "novel"):
        assert filecmp.cmp(tmp_path / "a" / split / "00000.tar", tmp_path / "b" / split / "00000.tar", shallow=False)
    summary = json.loads((tmp_path / "a" / "world.json").read_text())
    assert summary["splits"]["web"]["num_samples"] == 100


def test_tokenizer_and_inspect_cli(tmp_path, capsys):
    assert main(["world", "--out", str(tmp_path / "w"), "--scale", "0.01", "--params", DEFAULT_WORLD]) == 0
    assert (
        main(
            [
                "tokenizer",
                "--data",
                str(tmp_path / "w" / "coco_train"),
                str(tmp_path / "w" / "web"),
                "--out",
                str(tmp_path / "tok"),
            ]
        )
        == 0
    )
    assert (tmp_path / "tok" / "tokenizer.json").is_file()
    capsys.readouterr()
    assert main(["inspect", str(tmp_path / "w" / "val")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["val"]["num_ok"] == 2 and out["val"]["num_skipped"] == 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["world"], "the following arguments are required: --out"),
        (["world", "--out", "x", "--scale", "abc"], "invalid float value"),
        (["nosuch"], "invalid choice"),
        (["import", "parquet", "x"], "invalid choice"),
        (["import", "coco", "x.json"], "needs --out"),
    ],
)
def test_bad_arguments_give_one_clear_message(args, message):
    r = _run(*args)
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr


def test_user_errors_have_no_traceback(tmp_path):
    r = _run("world", "--out", str(tmp_path / "w"), "--scale", "-2")
    assert r.returncode == 2 and "--scale must be > 0" in r.stderr and "Traceback" not in r.stderr
    r = _run("inspect", str(tmp_path / "missing"))
    assert r.returncode == 2 and "shard folder not found" in r.stderr
    (tmp_path / "p.yaml").write_text("world:\n  num_wbe: 3\n")
    r = _run("world", "--out", str(tmp_path / "w"), "--params", str(tmp_path / "p.yaml"))
    assert r.returncode == 2 and "Unknown config key: world.num_wbe" in r.stderr


def test_convert_cli_between_formats(tmp_path):
    import torch
    from helpers import micro_config

    from blip_core.models.blip.model import BlipPretrain
    from blip_core.models.pretrained import load_pretrained, save_pretrained

    save_pretrained(BlipPretrain(micro_config()), tmp_path / "pre")
    assert (
        main(
            ["convert", str(tmp_path / "pre"), "--from", "ours", "--kind", "captioner", "--out", str(tmp_path / "cap")]
        )
        == 0
    )
    assert main(["convert", str(tmp_path / "cap"), "--from", "ours", "--to", "hf", "--out", str(tmp_path / "hf")]) == 0
    assert (tmp_path / "hf" / "config.json").is_file()
    assert main(["convert", str(tmp_path / "hf"), "--from", "hf", "--out", str(tmp_path / "back")]) == 0
    a, b = load_pretrained(tmp_path / "cap"), load_pretrained(tmp_path / "back")
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    r = _run("convert", str(tmp_path / "x.pth"), "--from", "blip", "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "needs --kind" in r.stderr


def test_capfilt_with_a_missing_web_folder_fails_before_writing_anything(tmp_path, capsys):
    """`blip capfilt caption|filter|run --web MISSING`: one message naming the folder, and no empty output folders."""
    for name in ("cap", "filt"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}\n")
    common = ["--web", str(tmp_path / "missing"), "--work", str(tmp_path / "work"),
              "--captioner", str(tmp_path / "cap"), "--filter", str(tmp_path / "filt")]  # fmt: skip
    for step in ("caption", "filter", "run"):
        assert main(["capfilt", step, *common]) != 0
        assert f"web folder not found: {tmp_path / 'missing'}" in capsys.readouterr().err
        assert not (tmp_path / "work").exists()
