"""Forked DataLoader workers after a Prefect flow run in the same process. Prefect's services leave
threading exit hooks that a forked worker inherits; run at the worker's exit they fail it (exit
code 1, "Details are lost"), so a finite stream read with worker processes failed
(`test_reader.py::test_split_by_worker_reads_each_sample_once` after the Dask test's flow, in one
pytest process). `forked_worker_init`, the training loader's worker_init_fn, drops them. Runs in a
subprocess: a Prefect run in the test process would leave the hooks behind for later tests."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from helpers import prefect_subprocess_env

SCRIPT = textwrap.dedent(
    """
    import sys

    import torch
    from prefect import flow

    from blip_core.data.loader import forked_worker_init
    from blip_core.data.reader import build_pipeline

    @flow(name="before")
    def before() -> int:
        return 1

    before()
    pipe = build_pipeline(sys.argv[1], split_by_node=True, split_by_worker=True, transform=lambda s: s["key"])
    keys = list(torch.utils.data.DataLoader(pipe, batch_size=None, num_workers=2, worker_init_fn=forked_worker_init))
    print("KEYS", len(keys), len(set(keys)))
    """
)


def test_loader_workers_after_a_prefect_flow_run_end_cleanly(tiny_world, tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    env = prefect_subprocess_env(tmp_path)
    r = subprocess.run([sys.executable, str(script), str(tiny_world / "web")], env=env, capture_output=True,
                       text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert "KEYS 240 240" in r.stdout
