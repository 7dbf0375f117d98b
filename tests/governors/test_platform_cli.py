"""``dynofa platform`` and ``dynofa platform restore`` on fake trees and on this machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from cli import main as cli
from governors.actuators import Actuator
from governors.platform import detect_platform
from governors.state import STATE_FILE
from tests.fakes.boards import BOARDS, build_board, tree_snapshot
from tests.fakes.fixtures import fast_tmp_path  # noqa: F401  (tmp_path on tmpfs)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run_json(capsys, *args: str) -> dict:
    assert cli.main(["platform", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_json_describes_each_fake_board(name, tmp_path, capsys):
    board = build_board(name, str(tmp_path / name))
    d = _run_json(capsys, "--sysfs-root", board.root, "--state-dir", str(tmp_path / "state"))
    e = board.expect
    assert d["board"] == e["board"]
    assert d["pes"] == e["pes"]
    assert {c["name"]: c["cpus"] for c in d["clusters"]} == e["clusters"]
    assert [r["name"] for r in d["rails"]] == e["rails"]
    assert [z["name"] for z in d["thermal_zones"]] == e["zones"]
    assert (d["gpu"] or {}).get("available_hz", []) == e["gpu_hz"]
    for cap in d["capabilities"].values():
        assert cap["status"] in ("available", "read-only", "missing", "degraded")
        assert cap["status"] == "available" or cap["reason"]  # every "no" says why
    assert d["pending_restore"] is None


def test_human_table(tmp_path, capsys):
    board = build_board("odroid-xu3", str(tmp_path / "xu3"))
    assert cli.main(["platform", "--sysfs-root", board.root, "--state-dir", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert "odroid-xu3" in out and "Hardkernel Odroid XU3" in out
    assert "cpu-little" in out and "cpu-big" in out and "Cortex-A15" in out
    assert "VDD_KFC" in out and "ina231-hardkernel" in out
    assert "dvfs:gpu" in out and "userspace governor + userspace/set_freq" in out


def test_sample_option(tmp_path, capsys):
    board = build_board("jetson-nano", str(tmp_path / "nano"))
    d = _run_json(capsys, "--sysfs-root", board.root, "--state-dir", str(tmp_path / "s"), "--sample")
    snap = d["snapshot"]
    assert snap["power_w"] == pytest.approx(board.expect["power_w"])
    assert snap["gpu_load"] == pytest.approx(11.7) and snap["cpu_khz"] == {"cpu": 921600}


def test_this_machine_reports_honestly(capsys, tmp_path):
    d = _run_json(capsys, "--state-dir", str(tmp_path))
    has_cpufreq = os.path.isdir("/sys/devices/system/cpu/cpufreq") and any(
        n.startswith("policy") for n in os.listdir("/sys/devices/system/cpu/cpufreq")
    )
    for c in d["clusters"]:
        status = d["capabilities"][f"dvfs:{c['name']}"]["status"]
        if not has_cpufreq:
            assert status == "missing"
            assert "cpufreq" in d["capabilities"][f"dvfs:{c['name']}"]["reason"]
    assert d["capabilities"]["task-mapping"]["status"] == "available"
    has_devfreq = os.path.isdir("/sys/class/devfreq") and bool(os.listdir("/sys/class/devfreq"))
    if not has_devfreq:
        assert d["capabilities"]["dvfs:gpu"]["status"] == "missing"


def test_degraded_capability_shows_up(tmp_path, capsys):
    import errno

    board = build_board("jetson-nano", str(tmp_path / "nano"))
    board.kernel.fail_writes["/sys/devices/system/cpu/cpufreq/policy0/scaling_setspeed"] = errno.EBUSY
    act = Actuator(detect_platform(board.root, hook=board.kernel), str(tmp_path / "state"))
    act.set_cluster_khz("cpu", 518400)
    d = _run_json(capsys, "--sysfs-root", board.root, "--state-dir", str(tmp_path / "state"))
    cap = d["capabilities"]["dvfs:cpu"]
    assert cap["status"] == "degraded" and "EBUSY" in cap["reason"]


def test_restore_after_crash(tmp_path, capsys, monkeypatch):
    import governors.platform

    board = build_board("odroid-xu4", str(tmp_path / "xu4"))
    # The command detects the platform itself; give it the fake kernel so derived files settle.
    real_detect = governors.platform.detect_platform
    monkeypatch.setattr(governors.platform, "detect_platform", lambda root="/": real_detect(root, hook=board.kernel))
    before = tree_snapshot(board.root)
    state = tmp_path / "state"
    act = Actuator(detect_platform(board.root, hook=board.kernel), str(state))
    act.set_cluster_khz("cpu-big", 600000)
    act.set_gpu_hz(600000000)
    del act
    saved = json.loads((state / STATE_FILE).read_text())
    saved["pid"] = 2**22 + 1
    (state / STATE_FILE).write_text(json.dumps(saved))
    d = _run_json(capsys, "--sysfs-root", board.root, "--state-dir", str(state))
    assert "dynofa platform restore" in d["pending_restore"]
    assert cli.main(["platform", "restore", "--state-dir", str(state), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert sorted(out["restored"]) == sorted(s["path"] for s in saved["settings"]) and out["failed"] == {}
    assert tree_snapshot(board.root) == before
    assert cli.main(["platform", "restore", "--state-dir", str(state)]) == 0
    assert "nothing to restore" in capsys.readouterr().out


def test_restore_refuses_a_different_root(tmp_path, capsys):
    board = build_board("jetson-nano", str(tmp_path / "nano"))
    act = Actuator(detect_platform(board.root, hook=board.kernel), str(tmp_path / "state"))
    act.set_cluster_khz("cpu", 518400)
    rc = cli.main(["platform", "restore", "--state-dir", str(tmp_path / "state"), "--sysfs-root", str(tmp_path)])
    assert rc == 1
    assert "was written for sysfs root" in capsys.readouterr().err
    act.restore()


def test_entry_point_subprocess(tmp_path):
    board = build_board("jetson-agx-orin", str(tmp_path / "orin"))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli",
            "platform",
            "--sysfs-root",
            board.root,
            "--json",
            "--state-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    assert d["board"] == "jetson-agx-orin" and d["info"]["nvpmodel"] == {"id": 0, "name": "MAXN"}
