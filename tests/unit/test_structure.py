"""Structural rules of the code base (the layout issue): no import cycle among the project's modules,
no private name imported across modules, and no file over the size that reads well unless its
docstring says why."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("blip_core", "flows")
MAX_LINES = 450
LONG_REASON = "Long because:"
"""A module over MAX_LINES says why in its docstring after these words."""


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for f in sorted((REPO / pkg).rglob("*.py")):
            parts = f.relative_to(REPO).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


MODULES = _modules()


def _resolve(node: ast.ImportFrom, module: str, is_pkg: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _edges(module: str, path: Path) -> list[tuple[str, str, str | None]]:
    """(imported module, name or None, how) for every project import in the file, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, None, "import") for a in node.names if a.name in MODULES]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node, module, path.name == "__init__.py")
            for a in node.names:
                if f"{base}.{a.name}" in MODULES:  # `from pkg import module`
                    found.append((f"{base}.{a.name}", None, "from"))
                elif base in MODULES:
                    found.append((base, a.name, "from"))
    return found


def import_graph() -> nx.DiGraph:
    g = nx.DiGraph()
    for module, path in MODULES.items():
        g.add_node(module)
        for target, _, _ in _edges(module, path):
            # a package's own __init__ re-exporting its modules is no cycle: Python loads it first
            if target != module and not module.startswith(target + "."):
                g.add_edge(module, target)
    return g


def test_no_import_cycle():
    cycles = list(nx.simple_cycles(import_graph()))
    assert not cycles, "import cycles: " + "; ".join(" -> ".join([*c, c[0]]) for c in cycles[:10])


def test_the_cycle_check_finds_a_cycle():
    g = import_graph()
    g.add_edge("blip_core.config.data", "blip_core.data.world.render")  # world imports config.data: a made-up loop
    assert list(nx.simple_cycles(g))


def _private_uses() -> list[str]:
    bad = []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text())
        aliases = {}  # local name -> project module it names
        for target, name, _ in _edges(module, path):
            if name is not None and name.startswith("_") and not name.startswith("__") and target != module:
                bad.append(f"{module} imports {target}.{name}")
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                base = _resolve(node, module, path.name == "__init__.py")
                for a in node.names:
                    if f"{base}.{a.name}" in MODULES:
                        aliases[a.asname or a.name] = f"{base}.{a.name}"
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name in MODULES and a.asname:
                        aliases[a.asname] = a.name
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and aliases[node.value.id] != module
            ):
                bad.append(f"{module} uses {aliases[node.value.id]}.{node.attr}")
    return sorted(set(bad))


def test_no_private_name_imported_across_modules():
    bad = _private_uses()
    assert not bad, "private names used across modules (make them public where they belong):\n" + "\n".join(bad)


def test_long_modules_say_why():
    long = []
    for path in MODULES.values():
        n = len(path.read_text().splitlines())
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        if n > MAX_LINES and LONG_REASON not in doc:
            long.append(f"{path.relative_to(REPO)}: {n} lines")
    assert not long, f"modules over {MAX_LINES} lines without '{LONG_REASON}' in their docstring:\n" + "\n".join(long)
