"""Run identity: the code hash that links a cached re-run to the run that holds its results."""

from __future__ import annotations

import os
import subprocess
import sys

from flows.versioning import code_hash


def test_code_hash_follows_the_code_not_the_lock_file(tmp_path):
    """A run's own `dvc commit` edits dvc.lock (the commit turns `-dirty`); the code hash must not move
    with it, and must move with any edit of the library or the flows."""
    (tmp_path / "blip_core").mkdir()
    (tmp_path / "flows").mkdir()
    (tmp_path / "blip_core" / "a.py").write_text("x = 1\n")
    (tmp_path / "flows" / "b.py").write_text("y = 2\n")
    (tmp_path / "pyproject.toml").write_text("[project]\n")
    first = code_hash(tmp_path)
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\n")
    (tmp_path / "README.md").write_text("docs\n")
    assert code_hash(tmp_path) == first
    (tmp_path / "flows" / "b.py").write_text("y = 3\n")
    assert code_hash(tmp_path) != first
    (tmp_path / "flows" / "b.py").write_text("y = 2\n")
    (tmp_path / "blip_core" / "c.py").write_text("")
    assert code_hash(tmp_path) != first  # a new module is new code


def test_flows_gives_prefects_temporary_server_time_to_start_and_keeps_a_users_value():
    """Prefect reads its settings once, at import: importing `flows` (before prefect) must leave it a
    start-up allowance for a fresh 2-core machine's database migration, and a user's value must win."""
    read = (
        "import flows\nfrom prefect.settings import get_current_settings as g\n"
        "print(g().server.ephemeral.startup_timeout_seconds, g().server.analytics_enabled)"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_SERVER_")}
    out = subprocess.run([sys.executable, "-c", read], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["180", "False"]
    env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "45"
    out = subprocess.run([sys.executable, "-c", read], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["45", "False"]
