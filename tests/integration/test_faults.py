"""Real faults: processes killed with SIGKILL mid-write, and a full disk (the kernel's file-size limit,
RLIMIT_FSIZE, makes writes fail with EFBIG exactly as a full disk fails them with ENOSPC).

After every kill: no partial checkpoint, shard or parquet is visible under a final name, and the
re-run finishes with exactly the output of an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from helpers import jpeg_bytes, micro_capfilt_models, micro_params, prefect_subprocess_env

from blip_core.data.reader import ReadStats, iter_samples, tar_was_cut
from blip_core.data.shards import ShardWriter
from blip_core.fileio import DiskFullError
from blip_core.train.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint

BLIP = [sys.executable, "-m", "flows.cli"]


def _env(tmp_path: Path) -> dict[str, str]:
    return prefect_subprocess_env(tmp_path, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def _run(args: list[str], env: dict, cwd: Path | None = None) -> subprocess.CompletedProcess:
    r = subprocess.run([*BLIP, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def kill_when(args: list[str], ready: Callable[[], bool], env: dict, *, timeout: float = 300) -> None:
    """Start `blip ARGS` in its own process group and SIGKILL the group once `ready()` holds."""
    proc = subprocess.Popen([*BLIP, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            if proc.poll() is not None:
                pytest.fail(f"blip {args[0]} ended (code {proc.returncode}) before the kill point: "
                            f"{proc.stderr.read()[-2000:]}")  # fmt: skip
            if time.monotonic() > deadline:
                pytest.fail(f"kill point of blip {args[0]} not reached in {timeout} s")
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


def _digest(folder: Path, pattern: str) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob(pattern))}


def _assert_visible_shards_are_whole(folder: Path) -> None:
    """What a reader sees in a folder after a kill: complete tars, readable parquet, nothing else."""
    for tar in sorted(folder.glob("*.tar")):
        assert not tar_was_cut(tar), tar
        stats = ReadStats()
        n = sum(1 for _ in iter_samples([tar], stats=stats))
        assert stats.num_skipped == 0 and n > 0, (tar, stats.to_dict())
    for p in folder.glob("*.parquet"):
        pq.read_table(p)


# -- kill -9 ------------------------------------------------------------------------------------------
def test_kill_9_during_shard_writing_then_rerun_is_byte_identical(tmp_path):
    env = _env(tmp_path)
    params = micro_params(tmp_path / "params.yaml", world={"num_web": 1500, "shard_size": 50, "num_workers": 2})
    args = ["world", "--params", str(params)]
    _run([*args, "--out", str(tmp_path / "full")], env)
    killed = tmp_path / "killed"
    kill_when([*args, "--out", str(killed)], lambda: len(list((killed / "web").glob("*.tar"))) >= 4, env)
    assert not (killed / "world.json").exists()  # the summary is written last: the world is visibly unfinished
    _assert_visible_shards_are_whole(killed / "web")
    _run([*args, "--out", str(killed)], env)
    for split in ("web", "coco_train", "novel"):
        full = _digest(tmp_path / "full" / split, "*.tar") | _digest(tmp_path / "full" / split, "*.parquet")
        again = _digest(killed / split, "*.tar") | _digest(killed / split, "*.parquet")
        assert again == full and len(full) > 0
        assert not list((killed / split).glob(".*"))  # no temporary file left behind


def test_kill_9_during_pretraining_then_resume_gives_the_same_losses(tmp_path):
    env = _env(tmp_path)
    sections = {"pretrain": {"batch_size": 8, "max_steps": 14, "ckpt_every": 2, "warmup_steps": 1,
                             "shuffle_buffer": 50, "log_every": 1, "num_workers": 0}}  # fmt: skip
    params = micro_params(tmp_path / "params.yaml", **sections)
    full, killed = tmp_path / "full", tmp_path / "killed"
    for stage in ("world", "tokenizer", "pretrain_vision"):  # pretraining starts its vision tower there
        _run(["stage", stage, "--params", str(params), "--root", str(full)], env)
    for sub in ("world", "tokenizer", "runs/vision"):
        shutil.copytree(full / sub, killed / sub)
    stage = ["stage", "pretrain_baseline", "--params", str(params)]
    _run([*stage, "--root", str(full)], env)
    ckpts = killed / "runs" / "baseline" / "pretrain" / "checkpoints"
    kill_when([*stage, "--root", str(killed)], lambda: (ckpts / "ckpt_00000006.pt").exists(), env)
    for c in list_checkpoints(ckpts):  # every checkpoint visible after the kill is whole
        assert load_checkpoint(c)["step"] == int(c.stem.split("_")[1])
    _run([*stage, "--root", str(killed)], env)

    def losses(root: Path) -> list[dict]:
        import json

        return [json.loads(x) for x in (root / "runs/baseline/pretrain/losses.jsonl").read_text().splitlines()]

    a, b = losses(full), losses(killed)
    assert [r["step"] for r in b] == list(range(1, 15))  # no step lost or logged twice
    for x, y in zip(a, b, strict=True):
        for k in ("itc_loss", "itm_loss", "lm_loss"):
            assert abs(x[k] - y[k]) < 1e-5, (x["step"], k, x[k], y[k])
    import json

    summary = json.loads((killed / "runs/baseline/pretrain/model/../train_summary.json").read_text())
    assert summary["resumed_from_step"] >= 6
    assert not list(ckpts.glob(".*"))


@pytest.mark.slow  # ~50 s on 2 CPUs; the kill -9 of pre-training and shard writing stay in the fast suite
def test_kill_9_during_capfilt_caption_and_filter_then_rerun_matches(tiny_world, tmp_path):
    env = _env(tmp_path)
    cap, filt = micro_capfilt_models(tiny_world, tmp_path / "models")
    params = tmp_path / "params.yaml"
    params.write_text("capfilt:\n  num_captions: 2\n  caption_batch_size: 8\n  filter_batch_size: 8\n")
    web = tiny_world / "web"

    def step(name: str, work: Path) -> list[str]:
        extra = ["--captioner", str(cap)] if name in ("caption", "filter") else []
        return ["capfilt", name, "--web", str(web), "--work", str(work), "--filter", str(filt), "--params",
                str(params), *extra]  # fmt: skip

    full, killed = tmp_path / "full", tmp_path / "killed"
    for name in ("caption", "filter"):
        _run(step(name, full), env)
    for name, sub in (("caption", "captions"), ("filter", "scores")):
        kill_when(step(name, killed), lambda sub=sub: len(list((killed / sub).glob("*.parquet"))) >= 1, env)
        _assert_visible_shards_are_whole(killed / sub)
        _run(step(name, killed), env)

    def table(work: Path, sub: str, key: list[str]) -> pd.DataFrame:
        df = pd.concat([pq.read_table(p).to_pandas() for p in sorted((work / sub).glob("*.parquet"))])
        return df.sort_values(key).reset_index(drop=True)

    for sub, key in (("captions", ["key", "sample"]), ("scores", ["key", "cand"])):
        a, b = table(full, sub, key), table(killed, sub, key)
        assert not b.duplicated(key).any() and b["key"].nunique() == 240  # none missing, none twice
        pd.testing.assert_frame_equal(a, b)
        assert not list((killed / sub).glob(".*"))


# -- a full disk ----------------------------------------------------------------------------------------
@contextlib.contextmanager
def file_size_limit(n_bytes: int):
    """Writes past `n_bytes` fail with EFBIG (Python ignores SIGXFSZ), as a full disk fails them."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (n_bytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def test_disk_full_while_writing_a_shard_leaves_nothing_behind(tmp_path):
    out = tmp_path / "shards"
    full = pytest.raises(DiskFullError, match=r"no space to write .*00000\.tar")
    with full as err, file_size_limit(200_000), ShardWriter(out, 0, split="web") as w:  # noqa: PT012
        for i in range(400):
            w.write(f"s{i:04d}", jpeg_bytes((64, 64), (i % 255, 20, 20)), [f"caption {i}"], source="web")
    assert "\n" not in str(err.value)
    assert sorted(p.name for p in out.iterdir()) == []  # no tar, no manifest, no temporary file


def test_disk_full_while_saving_a_checkpoint_keeps_the_last_good_one(tmp_path):
    import torch

    folder = tmp_path / "checkpoints"
    save_checkpoint(folder, {"w": torch.zeros(10), "step": 1}, step=1)
    with file_size_limit(100_000), pytest.raises(DiskFullError, match="ckpt_00000002.pt"):
        save_checkpoint(folder, {"w": torch.zeros(100_000), "step": 2}, step=2)
    assert [p.name for p in folder.iterdir()] == ["ckpt_00000001.pt"]
    assert load_checkpoint(folder / "ckpt_00000001.pt")["step"] == 1


def test_disk_full_in_a_cli_stage_is_one_line(tmp_path):
    """`blip world` under a file-size limit: exit 2, one line naming the file, nothing partial."""
    params = micro_params(tmp_path / "params.yaml")
    code = (
        "import resource, sys; from flows import cli; "
        "resource.setrlimit(resource.RLIMIT_FSIZE, (150_000, resource.getrlimit(resource.RLIMIT_FSIZE)[1])); "
        f"sys.exit(cli.main(['world', '--out', {str(tmp_path / 'w')!r}, '--params', {str(params)!r}]))"
    )
    r = subprocess.run([sys.executable, "-c", code], env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("blip world: error: no space to write ") and "Traceback" not in r.stderr
    leftovers = [
        p for p in (tmp_path / "w").rglob("*") if p.is_file() and (p.name.startswith(".") or p.suffix == ".tmp")
    ]
    assert leftovers == []
