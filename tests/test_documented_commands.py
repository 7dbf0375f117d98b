"""Every training / catalog recipe in the docs runs as written (on small settings).

Each command is looked up verbatim in its document, so a recipe edited in the docs but not here
(or the other way round) fails; then it runs through the CLI with a few options appended that
only shrink the work (later options win in argparse) and redirect outputs to a temporary folder.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from cli.main import main as cli_main

ROOT = Path(__file__).resolve().parents[1]


def _documented(doc: str, command: str) -> list[str]:
    """The command's argv (without ``dynofa``), after checking the document shows it as written."""
    text = (ROOT / doc).read_text(encoding="utf-8")
    lines = [re.sub(r"\s+#.*$", "", line).strip() for line in text.replace("\\\n", " ").splitlines()]
    assert command in [re.sub(r"\s+", " ", line) for line in lines], f"{doc} no longer shows: {command}"
    argv = shlex.split(command)
    assert argv[0] == "dynofa"
    return argv[1:]


def test_demo_model_recipes_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = "docs/demo-model.md"
    demo = _documented(doc, "dynofa train demo --seed 0 --out subnets/data/demo/ofa-mbv3-digits.pt")
    assert cli_main([*demo, "--max-steps", "2", "--out", str(tmp_path / "demo.pt")]) == 0
    assert (tmp_path / "demo.pt").is_file()
    grouped = _documented(doc, "dynofa train grouped --seed 0 --out subnets/data/demo/grouped-small-g4-digits.pt")
    assert cli_main([*grouped, "--epochs-per-level", "1", "--out", str(tmp_path / "g.pt")]) == 0
    catalogs = _documented(doc, "dynofa train catalogs --out-dir subnets/data/demo")
    small = ["--candidates", "4", "--measure", "2", "--keep", "2", "--repeats", "1"]
    assert cli_main([*catalogs, *small, "--out-dir", str(tmp_path)]) == 0
    assert (tmp_path / "catalog-ofa.json").is_file() and (tmp_path / "catalog-grouped.json").is_file()
    capsys.readouterr()


def test_grouped_catalog_recipe_runs(tmp_path: Path) -> None:
    doc = "docs/grouped.md"
    train = _documented(doc, "dynofa train grouped --out grouped.pt")
    assert cli_main([*train, "--epochs-per-level", "1", "--out", str(tmp_path / "grouped.pt")]) == 0
    text = (ROOT / doc).read_text(encoding="utf-8")
    export = next(line for line in text.splitlines() if line.startswith("python -c "))
    done = subprocess.run([sys.executable, "-c", shlex.split(export)[2]], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    build = _documented(
        doc,
        "dynofa catalog build --family grouped --weights grouped.pt --val digits-test.npz --normalize digits "
        "--fill-dominated --out grouped-catalog.json",
    )
    argv = [str(tmp_path / a) if a.endswith((".pt", ".npz", ".json")) else a for a in build]
    assert cli_main([*argv, "--repeats", "1", "--warmup", "0"]) == 0
    from dynofa.catalog import load_catalog

    catalog = load_catalog(tmp_path / "grouped-catalog.json")
    assert len(catalog) == 4 and all(e.accuracy is not None and e.accuracy.source == "measured" for e in catalog)
