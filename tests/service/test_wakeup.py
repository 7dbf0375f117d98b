"""``cpu_wakeup_latency_us`` through a real daemon on a fake board: the daemon holds the PM QoS
device open with the configured bound while apps are registered, reports it in ``state``, and
closes it when the last app goes and when it stops."""

from __future__ import annotations

import os
import struct
import time
from pathlib import Path
from typing import Any

from governors.platform.pm_qos import DEVICE
from tests.fakes.boards import build_board
from tests.service.harness import Daemon, start_daemon, write_config


def _holders(daemon: Daemon, device: Path) -> int:
    fds = Path(f"/proc/{daemon.proc.pid}/fd")
    return sum(1 for fd in fds.iterdir() if os.path.realpath(fd) == str(device.resolve()))


def _wait_for(daemon: Daemon, held: bool) -> dict[str, Any]:
    c = daemon.client()
    deadline = time.monotonic() + 30
    while True:
        report = c.state()["daemon"]["wakeup_latency"]
        if report["held"] == held:
            return dict(report)
        assert time.monotonic() < deadline, f"wakeup_latency never became held={held}: {report}"
        time.sleep(0.05)


def test_the_bound_is_held_while_apps_are_registered(tmp_path: Path, tiny_catalog: Path) -> None:
    root = tmp_path / "sysfs"
    build_board("odroid-xu4", str(root))
    device = root / DEVICE.lstrip("/")
    device.parent.mkdir(parents=True, exist_ok=True)
    device.write_bytes(b"")  # a regular file stands in for the character device
    config = write_config(tmp_path, tiny_catalog, paths={"sysfs_root": str(root)}, cpu_wakeup_latency_us=20)
    daemon = start_daemon(config)
    try:
        c = daemon.client()
        assert _wait_for(daemon, held=False)["limit_us"] == 20  # no apps yet: idle states left alone
        assert _holders(daemon, device) == 0
        c.register("qos-app")
        report = _wait_for(daemon, held=True)
        assert report["status"] == "available" and report["path"] == str(device)
        assert device.read_bytes() == struct.pack("=i", 20)
        assert _holders(daemon, device) == 1
        c.unregister("qos-app")
        _wait_for(daemon, held=False)
        assert _holders(daemon, device) == 0  # the last app gone: the request withdrawn
        c.register("qos-app")
        _wait_for(daemon, held=True)
    finally:
        daemon.stop()
    assert daemon.proc.returncode == 0
