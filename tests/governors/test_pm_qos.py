"""The CPU wake-up latency bound (PM QoS, /dev/cpu_dma_latency) on a fake tree: the value the kernel
reads is written, the file stays open exactly while apps are served (the kernel drops the request
with the last reference), and a device that cannot be used is reported, never raised."""

from __future__ import annotations

import os
import struct
from pathlib import Path

from governors.platform.pm_qos import DEVICE, WakeupLatency


def _device(root: Path) -> Path:
    path = root / DEVICE.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def _open_here(path: Path) -> int:
    """How many of this process's file descriptors refer to ``path``."""
    fds = Path("/proc/self/fd")
    return sum(1 for fd in fds.iterdir() if os.path.realpath(fd) == str(path.resolve()))


def test_the_bound_is_written_and_held_only_while_apps_are_served(tmp_path: Path) -> None:
    path = _device(tmp_path)
    bound = WakeupLatency(str(tmp_path), 15)
    bound.want(False)
    assert not bound.held and _open_here(path) == 0  # no apps: the idle states stay the kernel's
    bound.want(True)
    assert bound.held and _open_here(path) == 1
    assert path.read_bytes() == struct.pack("=i", 15)  # the s32 the kernel reads, in microseconds
    bound.want(True)
    assert _open_here(path) == 1  # one request, not one per control step
    assert bound.to_dict()["held"] and bound.to_dict()["limit_us"] == 15
    bound.want(False)
    assert not bound.held and _open_here(path) == 0


def test_not_configured_touches_nothing(tmp_path: Path) -> None:
    path = _device(tmp_path)
    bound = WakeupLatency(str(tmp_path), None)
    bound.want(True)
    assert not bound.held and _open_here(path) == 0 and path.read_bytes() == b""
    assert bound.to_dict()["status"] == "missing" and "cpu_wakeup_latency_us" in bound.to_dict()["reason"]


def test_a_missing_or_unusable_device_is_reported_once_and_not_retried(tmp_path: Path) -> None:
    bound = WakeupLatency(str(tmp_path), 0)
    bound.want(True)
    assert not bound.held
    report = bound.to_dict()
    assert report["status"] == "missing" and str(tmp_path) in report["reason"]
    _device(tmp_path)  # appears later: the report stands until the daemon restarts
    bound.want(True)
    assert not bound.held
    (tmp_path / "other").mkdir()
    broken = WakeupLatency(str(tmp_path / "other" / ".."), 0)
    (tmp_path / DEVICE.lstrip("/")).unlink()
    (tmp_path / DEVICE.lstrip("/")).mkdir()  # not a device a value can be written to
    broken.want(True)
    assert not broken.held and broken.to_dict()["status"] == "degraded"
