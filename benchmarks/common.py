"""What every benchmark writes with `--json`: the machine and a list of figures, each with the
reference it is a ratio against and the goal it is measured against (`benchmarks/report.py` turns
them into reports/benchmarks.md)."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any


def figure(name: str, value: float, unit: str = "", *, ratio: float | None = None, reference: str = "",
           goal: str = "", met: bool | None = None, note: str = "") -> dict[str, Any]:  # fmt: skip
    """One measured figure; `ratio` is value / reference measured in the same run."""
    return {"name": name, "value": value, "unit": unit, "ratio": ratio, "reference": reference, "goal": goal,
            "met": met, "note": note}  # fmt: skip


def save(path: Path | None, figures: list[dict[str, Any]], **extra: Any) -> None:
    if path is None:
        return
    from blip_core.machine import describe

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"machine": describe(), "figures": figures, **extra}, indent=2, default=str) + "\n")


@contextlib.contextmanager
def prefect_server(home: Path):
    """A Prefect server for this benchmark (own database under `home`; yields its process), its URL
    in PREFECT_API_URL for this process and every process started later (Dask workers). Without one, Prefect starts a
    temporary server in each process that needs the API: measured, each fresh Dask worker spent ~3.5 s
    of its first task starting its own, and its task runs went there, not to the flow's server."""
    import socket
    import subprocess

    from flows.local import healthy, server_command, wait_for

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = os.environ | {"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    log = open(home / "prefect-server.log", "w")  # noqa: SIM115 (closed below, after the server)
    server = subprocess.Popen(server_command(port), env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/api"
    try:
        wait_for(lambda: healthy(api=url), f"prefect server (log: {log.name})", 120, server)
        before = {k: os.environ.get(k) for k in ("PREFECT_API_URL", "PREFECT_HOME")}
        os.environ |= {"PREFECT_API_URL": url, "PREFECT_HOME": str(home)}
        try:
            yield server
        finally:
            for k, v in before.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    finally:
        server.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(timeout=20)
        server.kill()
        log.close()
