"""The import rules of docs/ARCHITECTURE.md, enforced.

`core` holds every wire contract and rule; `db` is the one storage layer; the three
processes (`worker`, `operator`, `api`) are siblings on `core` and `db` and never import one
another (they talk over Redis and the Kubernetes API, through the contracts in `core`).
Product code never imports the dev-only `devstack`, nor `tests` or `benchmarks`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "salon_sessions"

MAY_IMPORT: dict[str, frozenset[str]] = {
    "core": frozenset({"core"}),
    "db": frozenset({"core", "db"}),
    "worker": frozenset({"core", "db", "worker"}),
    "operator": frozenset({"core", "db", "operator"}),
    "api": frozenset({"core", "db", "api"}),
}
NEVER: frozenset[str] = frozenset({"devstack", "tests", "benchmarks"})


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every module a file imports (at any depth: function-level imports count too)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            found.extend((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            found.append((node.lineno, "<relative>"))
    return found


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "salon_sessions" or len(parts) < 2:
        return None
    return parts[1] if parts[1] in MAY_IMPORT else None


def violations(path: Path, package: Path = PACKAGE) -> list[str]:
    """What `path` (a file of `package`) imports against the rules, one line per import
    statement."""
    rel = path.relative_to(package)
    own = rel.parts[0] if len(rel.parts) > 1 else None
    allowed = MAY_IMPORT.get(own or "")
    out: dict[int, str] = {}
    for line, module in imported_modules(path):
        where = f"salon_sessions/{rel}:{line}"
        if line in out:
            continue
        if module == "<relative>":
            out[line] = f"{where}: relative import (spell the layer out)"
        elif module.split(".")[0] in NEVER:
            out[line] = f"{where}: imports {module} (dev-only or test code)"
        elif allowed is not None and (layer := layer_of(module)) is not None \
                and layer not in allowed:
            out[line] = f"{where}: {own} may not import {module}"
    return list(out.values())


def test_every_layer_imports_only_what_it_may() -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 50  # the package was found
    found = [v for f in files for v in violations(f)]
    assert found == []


@pytest.mark.parametrize(("source", "expected"), [
    ("from salon_sessions.worker import control\n", ["api may not import salon_sessions.worker"]),
    ("import salon_sessions.operator.kube\n", ["api may not import salon_sessions.operator.kube"]),
    ("def f():\n    from devstack import stack\n", ["imports devstack"]),
    ("from . import models\n", ["relative import"]),
    ("from salon_sessions.core import control\nfrom salon_sessions.db import locks\n", []),
])
def test_the_rule_catches_what_it_should(tmp_path: Path, source: str,
                                         expected: list[str]) -> None:
    probe = tmp_path / "salon_sessions" / "api" / "probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text(source)
    found = violations(probe, tmp_path / "salon_sessions")
    assert len(found) == len(expected)
    for line, part in zip(found, expected, strict=True):
        assert part in line
