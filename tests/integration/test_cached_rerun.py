"""A cached re-run does no work it can skip: `dvc commit` runs only when dvc.lock or an output
changed since the last successful commit."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from flows import bootstrap, dag

REPO = Path(__file__).resolve().parents[2]


def test_dvc_commit_is_skipped_when_nothing_changed(tmp_path, monkeypatch):
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / ".dvc").mkdir()
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\n")
    monkeypatch.chdir(tmp_path)
    outs = [Path(o) for s in dag.stages("params.yaml", "data") for o in s.outputs]
    report = next(o for o in outs if o.suffix == ".json")
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text("{}")
    calls, rc = [], {"code": 0}

    def fake_run(cmd, **kw):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, rc["code"], "", "disk on fire")

    monkeypatch.setattr(subprocess, "run", fake_run)
    assert bootstrap.record_in_dvc("params.yaml", "data") == "recorded in dvc.lock"
    assert bootstrap.record_in_dvc("params.yaml", "data").startswith("recorded in dvc.lock (unchanged")
    assert len(calls) == 1 and calls[0][1:4] == ["-m", "dvc", "commit"]
    report.write_text('{"changed": 1}')  # an output changed: commit again
    assert bootstrap.record_in_dvc("params.yaml", "data") == "recorded in dvc.lock"
    Path("dvc.lock").write_text("schema: '2.0'\nstages: {}\n")  # dvc.lock edited (e.g. `dvc repro`)
    rc["code"] = 1  # ... and this commit fails: nothing is marked, so the next run tries again
    assert bootstrap.record_in_dvc("params.yaml", "data") == "dvc commit failed"
    rc["code"] = 0
    assert bootstrap.record_in_dvc("params.yaml", "data") == "recorded in dvc.lock"
    assert len(calls) == 4
    # another layout than dvc.yaml's is never committed
    assert bootstrap.record_in_dvc("other.yaml", "data").startswith("not recorded")
