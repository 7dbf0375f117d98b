"""The package layers: ``dynofa`` (bottom) never imports the layers built on it, and nothing imports ``cli``."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ABOVE_DYNOFA = {"subnets", "governors", "service", "cli", "torch"}


def _imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_dynofa_imports_nothing_above_it_even_lazily() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(_imported_roots(path) & ABOVE_DYNOFA)
        for path in (ROOT / "dynofa").rglob("*.py")
        if _imported_roots(path) & ABOVE_DYNOFA
    }
    assert offenders == {}


def test_only_cli_and_tests_import_cli() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for package in ("dynofa", "subnets", "governors", "service")
        for path in (ROOT / package).rglob("*.py")
        if "cli" in _imported_roots(path)
    ]
    assert offenders == []
