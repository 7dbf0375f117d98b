"""SIGKILL during operation, then restart: the platform is restored first and the budgets come back.

The daemon runs against a fake Odroid XU4 sysfs tree (``paths.sysfs_root``), so DVFS writes are real
file writes that the test can compare with the tree as it was built.
"""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path

from tests.fakes.boards import build_board, tree_snapshot
from tests.service.harness import start_daemon, write_config

# Without the fake kernel hook (the daemon is another process) scaling_setspeed is a plain file that
# keeps the last value written; a real kernel reads "<unsupported>" from it outside the userspace governor.
HOOK_ONLY = ("scaling_setspeed", "userspace/set_freq")


def _dvfs_files(root: Path) -> dict[str, object]:
    return {
        k: v for k, v in tree_snapshot(str(root)).items()
        if ("cpufreq" in k or "devfreq" in k) and not k.endswith(HOOK_ONLY)
    }  # fmt: skip


def test_sigkill_then_restart_restores_platform_and_budgets(tmp_path: Path, tiny_catalog: Path) -> None:
    root = tmp_path / "sysfs"
    build_board("odroid-xu4", str(root))
    original = _dvfs_files(root)
    config = write_config(tmp_path, tiny_catalog, paths={"sysfs_root": str(root)})

    first = start_daemon(config, log_name="first.log")
    c = first.client()
    c.set_budget("cam", latency_ms=40.0, min_accuracy=0.5, priority=3)
    c.register("viewer")  # registered without a budget: comes back too
    rollback = first.state_dir / "dvfs-state.json"
    deadline = time.monotonic() + 30
    while _dvfs_files(root) == original or not rollback.exists():
        assert time.monotonic() < deadline, f"the policy never changed a frequency; log:\n{first.log()[-2000:]}"
        time.sleep(0.1)
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL
    assert _dvfs_files(root) != original, "a killed daemon cannot have restored anything"
    assert rollback.exists()

    second = start_daemon(config, log_name="second.log")
    assert "crash recovery: restored" in second.log()
    budgets = second.client().budgets()
    assert budgets["cam"]["budget"] == {"latency_ms": 40.0, "min_accuracy": 0.5, "power_cap_w": None, "priority": 3,
                                     "objective": None}
    assert budgets["viewer"]["budget"] is None
    assert second.stop(signal.SIGTERM) == 0
    assert _dvfs_files(root) == original, "a graceful stop must leave the platform as it was found"
    assert not rollback.exists()


def test_second_daemon_on_same_runtime_dir_is_refused(tmp_path: Path, tiny_catalog: Path) -> None:
    import subprocess
    import sys

    import yaml

    from tests.service.harness import REPO

    config = write_config(tmp_path, tiny_catalog)
    runtime = Path(yaml.safe_load(config.read_text())["paths"]["runtime_dir"])
    runtime.mkdir(parents=True, exist_ok=True)
    lock = runtime / "dynofa.lock"
    import fcntl

    with open(lock, "w") as fh:
        fh.write("4242\n")
        fh.flush()
        fcntl.flock(fh, fcntl.LOCK_EX)
        result = subprocess.run(
            [sys.executable, "-m", "cli", "serve", "--config", str(config)],
            capture_output=True, text=True, cwd=REPO, timeout=60,
        )  # fmt: skip
    shutil.rmtree(runtime, ignore_errors=True)
    assert result.returncode == 1
    assert "another dynofa daemon (pid 4242)" in result.stderr
