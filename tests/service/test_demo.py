"""`dynofa demo` end to end, shortened: a private daemon, the app, contention, a tighter budget, a plot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.service.harness import REPO


def test_demo_runs_end_to_end_and_cleans_up(tmp_path: Path) -> None:
    png = tmp_path / "demo.png"
    # a private TMPDIR: other demos running on the same machine must not count as leftovers of this one
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "cli", "demo", "--phase-seconds", "1.5", "--fps", "30", "--json",
         "--output", str(png)],
        capture_output=True, text=True, cwd=REPO, timeout=180, env={**os.environ, "TMPDIR": str(tmp)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    phases = {p["phase"]: p for p in summary["phases"]}
    assert list(phases) == ["idle", "contention", "tight"]
    for phase in phases.values():
        assert phase["inferences"] > 0 and 0.0 <= phase["hit_rate"] <= 1.0
        assert 0.0 <= phase["accuracy_measured"] <= 1.0
    assert phases["tight"]["budget_ms"] < phases["idle"]["budget_ms"]
    assert summary["overall"]["inferences"] == sum(p["inferences"] for p in phases.values())
    # a trained model on held-out digits: far above the 10 % of guessing
    assert summary["overall"]["accuracy_measured"] > 0.5
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "adding CPU contention" in result.stderr and "budget tightened" in result.stderr
    assert "daemon ready" in result.stderr
    assert list(tmp.iterdir()) == [], "the demo leaves no temp dir"
