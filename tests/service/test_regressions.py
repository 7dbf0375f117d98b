"""Regressions the rest of the suite would not notice, each through the daemon's real interfaces.

* budgets are replaced by rename (never written in place) and fsync'd, file and directory: a
  real ``dynofa serve`` whose ``os.fsync`` is audited by a ``sitecustomize`` module;
* the urgent re-decision after a missed deadline fires (a control interval of 60 s would hide it);
* the watchdog stops pinging while the control loop is stalled (the real Controller loop and
  systemd notify socket, with a monitor the test holds).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from service.sdnotify import Notifier
from tests.service.harness import REPO, Daemon, NotifyListener, start_daemon, write_config

AUDIT = '''
import os
_real_fsync = os.fsync
def _audited_fsync(fd):
    try:
        path = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        path = "?"
    with open(os.environ["DYNOFA_FSYNC_AUDIT"], "a") as fh:
        fh.write(path + "\\n")
    return _real_fsync(fd)
os.fsync = _audited_fsync
'''


@pytest.fixture(scope="module")
def slow_loop(tmp_path_factory: pytest.TempPathFactory, tiny_catalog: Path) -> Iterator[Daemon]:
    """A daemon whose control loop ticks once a minute (no watchdog): only a wake-up decides sooner."""
    directory = tmp_path_factory.mktemp("slow-loop")
    site = directory / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(AUDIT)
    config = write_config(
        directory, tiny_catalog, control_interval_s=60, telemetry={"period_s": 60},
        models={"tiny": {"catalog": str(tiny_catalog), "reprofile": False}},
    )  # fmt: skip
    env = {"PYTHONPATH": f"{site}{os.pathsep}{REPO}", "DYNOFA_FSYNC_AUDIT": str(directory / "fsync.log")}
    env.pop("NOTIFY_SOCKET", None)
    daemon = start_daemon(config, env=env)
    try:
        yield daemon
    finally:
        daemon.stop()


def _fsynced(daemon: Daemon) -> list[str]:
    log = daemon.state_dir.parent / "fsync.log"
    return log.read_text().splitlines() if log.exists() else []


def test_budgets_are_renamed_into_place_and_fsynced(slow_loop: Daemon) -> None:
    c = slow_loop.client()
    c.set_budget("durable-app", latency_ms=30)
    path = slow_loop.state_dir / "budgets.json"
    before = path.stat().st_ino
    audited = len(_fsynced(slow_loop))
    c.set_budget("durable-app", latency_ms=31)
    assert path.stat().st_ino != before, "budgets.json must be replaced by a rename, never rewritten in place"
    wanted = {str(path), str(slow_loop.state_dir)}
    deadline = time.monotonic() + 20
    while not wanted <= set(_fsynced(slow_loop)[audited:]):
        assert time.monotonic() < deadline, f"no fsync of {wanted}; audited: {_fsynced(slow_loop)[audited:]}"
        time.sleep(0.05)
    c.unregister("durable-app")


def test_a_missed_deadline_triggers_a_decision_before_the_next_tick(slow_loop: Daemon) -> None:
    c = slow_loop.client()
    c.register("urgent-app", budget={"latency_ms": 0.01})  # no subnet meets it: every inference misses
    steps = c.state()["policy"]["steps"]
    c.infer("urgent-app", np.zeros((1, 3, 32, 32), np.float32))
    deadline = time.monotonic() + 20  # a third of the 60 s tick
    while c.state()["policy"]["steps"] == steps:
        assert time.monotonic() < deadline, "the policy asked for a decision after a miss; none came"
        time.sleep(0.05)
    c.unregister("urgent-app")


# --- the watchdog -----------------------------------------------------------------------------


def test_watchdog_pings_stop_while_the_control_loop_is_stalled(tmp_path: Path) -> None:
    from governors.monitors import Monitor
    from governors.platform import detect_platform
    from governors.policies import make_policy
    from service.control import Controller, TraceWriter
    from service.engine import Engine
    from service.inbox import ControlInbox
    from service.store import BudgetStore
    from tests.service.standins import HeldModel

    class HeldMonitor(Monitor):
        """The real monitor, behind a gate the test closes to stall the loop inside a step."""

        def __init__(self, *args: object) -> None:
            super().__init__(*args)  # type: ignore[arg-type]
            self.gate = threading.Event()
            self.gate.set()

        def sample(self):  # type: ignore[no-untyped-def]
            self.gate.wait(30)
            return super().sample()

    platform = detect_platform("/")
    inbox = ControlInbox(make_policy("model-based"))
    engine = Engine({"held": HeldModel()}, "held", BudgetStore(tmp_path), 4, lambda *_: None,  # type: ignore[dict-item]
                    inbox)  # fmt: skip
    monitor = HeldMonitor(platform)
    listener = NotifyListener(tmp_path)
    notifier = Notifier({"NOTIFY_SOCKET": listener.path, "WATCHDOG_USEC": "100000"})  # a ping every 50 ms
    controller = Controller(
        engine, inbox, {"cpu"}, platform, monitor, None, interval_s=0.05, telemetry_period_s=60,  # type: ignore[arg-type]
        publish=lambda *_: None, notifier=notifier, trace=TraceWriter(None, 4096),
    )  # fmt: skip

    def pings() -> int:
        return sum(1 for m in listener.snapshot() if m.get("WATCHDOG") == "1")

    controller.start()
    try:
        deadline = time.monotonic() + 20
        while pings() < 3:
            assert time.monotonic() < deadline, "the control loop never pinged the watchdog"
            time.sleep(0.02)
        monitor.gate.clear()
        time.sleep(0.3)  # the loop is now stuck in monitor.sample()
        stalled = pings()
        time.sleep(1.0)  # 20 ping intervals
        assert pings() - stalled <= 1, "the watchdog must not be pinged while the control loop is stuck"
        monitor.gate.set()
        deadline = time.monotonic() + 20
        while pings() < stalled + 3:
            assert time.monotonic() < deadline, "pings must resume with the loop"
            time.sleep(0.02)
    finally:
        monitor.gate.set()
        controller.stop()
        monitor.close()
        engine.close()
        notifier.close()
        listener.close()
