"""`make install`: the unit it writes names the real dynofa and the installed docs, verifies, and scores <= 4.5."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MAX_EXPOSURE = 4.5


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    dest = tmp_path_factory.mktemp("destdir")
    entry = Path(sys.executable).with_name("dynofa")
    dynofa = entry if entry.exists() else Path(sys.executable)
    result = subprocess.run(
        ["make", "-s", "install", f"DESTDIR={dest}", "PREFIX=/usr", f"DYNOFA={dynofa}"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return dest


def _unit(dest: Path) -> Path:
    return dest / "usr/lib/systemd/system/dynofa.service"


def test_install_puts_every_file_where_systemd_looks(installed: Path) -> None:
    for path in ("usr/lib/systemd/system/dynofa.service", "usr/lib/sysusers.d/dynofa.conf",
                 "usr/lib/tmpfiles.d/dynofa.conf", "usr/share/doc/dynofa/metrics.md",
                 "usr/share/doc/dynofa/grafana-dashboard.json"):  # fmt: skip
        assert (installed / path).is_file(), path
    unit = _unit(installed).read_text()
    entry = Path(sys.executable).with_name("dynofa")
    for line in ("ExecStart=", "ExecStartPre="):
        (command,) = re.findall(rf"^{line}(\S+)", unit, flags=re.M)
        assert command in (str(entry), sys.executable) and Path(command).exists()
    documented = re.findall(r"^Documentation=file://(\S+)", unit, flags=re.M)
    assert documented and all((installed / d.lstrip("/")).is_file() for d in documented), documented
    assert "/usr/local" not in unit  # PREFIX reached every path
    for required in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "RuntimeDirectory=dynofa",
                     "RuntimeDirectoryMode=0750", "StateDirectory=dynofa", "Group=dynofa"):  # fmt: skip
        assert re.search(rf"^{required}", unit, flags=re.M), required
    sysusers = (installed / "usr/lib/sysusers.d/dynofa.conf").read_text()
    assert re.search(r"^g dynofa -$", sysusers, flags=re.M)


def test_install_refuses_a_missing_entry_point(tmp_path: Path) -> None:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    result = subprocess.run(["make", "-s", "install", f"PREFIX={tmp_path}", f"DYNOFA={tmp_path}/nope"],
                            cwd=REPO, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode != 0
    assert f"{tmp_path}/nope is not an executable" in result.stderr
    assert not (tmp_path / "lib").exists()  # nothing half installed


def _analyze() -> str:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    return analyze


def test_installed_unit_verifies(installed: Path) -> None:
    result = subprocess.run([_analyze(), "verify", str(_unit(installed))], capture_output=True, text=True,
                            timeout=60)  # fmt: skip
    # verify exits 0 on unknown keys and only warns on stderr: check both
    assert result.returncode == 0, result.stderr
    problems = [line for line in result.stderr.splitlines() if "dynofa.service" in line]
    assert not problems, problems


def test_installed_unit_exposure_is_at_most_4_5(installed: Path) -> None:
    result = subprocess.run([_analyze(), "security", "--offline=yes", str(_unit(installed))],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    match = re.search(r"Overall exposure level for dynofa\.service: (\d+\.\d+)", result.stdout + result.stderr)
    assert match, result.stdout[-2000:] + result.stderr[-2000:]
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout
    # what the daemon needs is still there: /sys writable, GPU nodes visible, affinity allowed
    unit = _unit(installed).read_text()
    for forbidden in ("ProtectKernelTunables=yes", "PrivateDevices=yes", "PrivateUsers=yes", "ProcSubset=pid"):
        assert not re.search(rf"^{forbidden}", unit, flags=re.M), forbidden
    assert re.search(r"^SystemCallFilter=@system-service$", unit, flags=re.M)
    assert not re.search(r"^SystemCallFilter=~.*@resources", unit, flags=re.M)
