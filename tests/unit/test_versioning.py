"""Run identity: the code hash that links a cached re-run to the run that holds its results."""

from __future__ import annotations

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
