"""The CapFilt subflow on a real Dask cluster (distributed.LocalCluster, 2 worker processes) through
prefect-dask gives the same captions and scores as the default thread runner.

The flows run in a subprocess: a Prefect run leaves threading exit hooks in its process that later
forked DataLoader workers of other tests would inherit (see test_prefect_loader_workers.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
from helpers import micro_capfilt_models, micro_params, prefect_subprocess_env

pytest.importorskip("prefect_dask")
pytest.importorskip("distributed")

SCRIPT = textwrap.dedent(
    """
    import json, os, sys

    import distributed
    import torch

    from flows.capfilt_flow import capfilt_flow, task_runner

    if __name__ == "__main__":  # Dask's nannies spawn: the script must be importable without side effects
        call, out = json.loads(sys.argv[1]), sys.argv[2]
        # Dask's workers run BLAS on one thread (distributed's pre-spawn OMP_NUM_THREADS=1): do the same
        # here so both runners execute the same kernels
        torch.set_num_threads(1)
        result = {"threads": capfilt_flow.with_options(task_runner=task_runner("threads", 1))(
            work_dir=f"{out}/threads", **call)}
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                           dashboard_address="127.0.0.1:0")
        with cluster, distributed.Client(cluster) as client:
            os.environ["BLIP_DASK_ADDRESS"] = cluster.scheduler_address
            runner = task_runner("dask", 2)
            result["dask"] = capfilt_flow.with_options(task_runner=runner)(work_dir=f"{out}/dask", **call)
            result["workers"] = len(client.scheduler_info()["workers"])
        print("RESULT", json.dumps(result))
    """
)


def _outputs(work) -> dict[str, pd.DataFrame]:
    out = {}
    for sub in ("captions", "scores"):
        files = sorted((work / sub).glob("*.parquet"))
        assert files, f"no {sub} written under {work}"
        df = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
        out[sub] = df.sort_values([c for c in ("key", "cand") if c in df.columns]).reset_index(drop=True)
    return out


@pytest.fixture(scope="module")
def micro_models(tiny_world, tmp_path_factory):
    return tuple(map(str, micro_capfilt_models(tiny_world, tmp_path_factory.mktemp("dask_models"))))


@pytest.mark.slow  # ~55 s on 2 CPUs: a local Dask cluster and two flow runs
def test_capfilt_subflow_on_a_local_dask_cluster_matches_the_thread_runner(tiny_world, micro_models, tmp_path):
    params = micro_params(tmp_path / "params.yaml", capfilt={"num_captions": 2, "policy": "both"})
    captioner, filter_model = micro_models
    call = {"web_dir": str(tiny_world / "web"), "captioner": captioner, "filter_model": filter_model,
            "params": str(params), "policy": "both", "calibration_dir": str(tiny_world / "val")}  # fmt: skip
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    env = prefect_subprocess_env(tmp_path)
    r = subprocess.run([sys.executable, str(script), json.dumps(call), str(tmp_path)], env=env, capture_output=True,
                       text=True, timeout=600, cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    result = json.loads(r.stdout.split("RESULT", 1)[1])

    assert result["workers"] == 2
    assert result["dask"] == result["threads"]
    assert result["dask"]["shards"] >= 2 and result["dask"]["scored_images"] == 240
    threads, dask = _outputs(tmp_path / "threads"), _outputs(tmp_path / "dask")
    pd.testing.assert_frame_equal(threads["captions"], dask["captions"])
    cols = ["key", "cand", "source", "caption"]
    pd.testing.assert_frame_equal(threads["scores"][cols], dask["scores"][cols])
    for col in ("itm_prob", "itc_cosine"):  # same kernels; a tolerance all the same, never bit-exactness
        assert threads["scores"][col].to_numpy() == pytest.approx(dask["scores"][col].to_numpy(), abs=1e-5)
    assert (tmp_path / "dask" / "scores.json").read_text() == (tmp_path / "threads" / "scores.json").read_text()
