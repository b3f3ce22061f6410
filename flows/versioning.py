"""What a pipeline run is made of: git commit, params hash, data hashes, code hash.

Prefect puts them in task run names and tags, MLflow in run tags, and the cache keys of the Prefect
tasks are built from them (a re-run with nothing changed is served from the cache).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import yaml

from blip_core.config.loader import read_params
from blip_core.fileio import digest

REPO = Path(__file__).resolve().parent.parent


def git_commit(root: str | Path = REPO) -> str:
    """Short commit of the checkout, `-dirty` when tracked files changed; `nogit` outside git."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short=10", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--"], cwd=root, capture_output=True).returncode
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "nogit"


def code_hash(root: str | Path = REPO) -> str:
    """Hash of the code that decides a run's results (blip_core/, flows/, pyproject.toml, by content):
    unlike `git_commit`, not moved by the `-dirty` flag that a run's own `dvc commit` (dvc.lock) sets."""
    from flows.codedeps import code_hash as files_hash

    return files_hash(("blip_core", "flows", "pyproject.toml"), root=root)


def params_hash(params: str | Path, sections: list[str] | None = None) -> str:
    """Hash of the whole params file, or of the named sections."""
    p = Path(params)
    doc = read_params(p) if p.is_file() else {}
    return digest({k: doc.get(k) for k in sections} if sections else doc)


SMALL_FILE = 64 * 2**20


def fingerprint(paths: list[str | Path]) -> str:
    """Cheap identity of files/folders: names, sizes and mtimes (content hashing is DVC's job), except
    a dep that is itself a small file, hashed by content: `dvc commit` (end of every Prefect run)
    relinks single-file outputs such as scores.json, which changes their mtime but not their bytes,
    and an mtime key made every later stage miss the cache (measured: a "cached" make run re-ran
    from capfilt_select on, 2 min 30 s)."""
    items = []
    for path in map(Path, paths):
        if path.is_dir():
            items += [(str(f.relative_to(path.parent)), f.stat().st_size, f.stat().st_mtime_ns)
                      for f in sorted(path.rglob("*")) if f.is_file()]  # fmt: skip
        elif path.is_file() and path.stat().st_size <= SMALL_FILE:
            items.append((path.name, hashlib.sha256(path.read_bytes()).hexdigest()))
        elif path.is_file():
            items.append((path.name, path.stat().st_size, path.stat().st_mtime_ns))
        else:
            items.append((str(path), "missing"))
    return digest(items)


def data_hash(path: str | Path, lock: str | Path = "dvc.lock") -> str:
    """DVC's md5 of an output folder when dvc.lock records it, else our fingerprint (`fp-...`)."""
    lock = Path(lock)
    if lock.is_file():
        doc = yaml.safe_load(lock.read_text()) or {}
        target = str(Path(path))
        for stage in (doc.get("stages") or {}).values():
            for out in stage.get("outs", []):
                if out.get("path") == target and "md5" in out:
                    return out["md5"].removesuffix(".dir")[:12]
    return "fp-" + fingerprint([path])


def tool(name: str) -> list[str]:
    """A command-line tool of this environment (prefect, dvc, mlflow) as `python -m`: it works
    without an activated virtual environment, where the bare name may be missing or another one."""
    return [sys.executable, "-m", name]
