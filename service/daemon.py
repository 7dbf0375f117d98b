"""``dynofa serve``: compose the daemon from its parts and run it until SIGTERM/SIGINT.

Start-up order matters: the actuator is built first because its construction restores
whatever a crashed predecessor left changed (frequencies, governors), then saved budgets
are reloaded, then the sockets are bound and systemd is told READY=1. Stop is the reverse:
STOPPING=1, the control loop stops, in-flight inferences finish and are answered, the
platform is restored, and the sockets and lock are removed.
"""

from __future__ import annotations

import contextlib
import faulthandler
import fcntl
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from dynofa.config import Config
from dynofa.errors import DynofaError
from dynofa.paths import ensure_private_dir, open_private
from service.malloc import retain_freed_memory
from service.sdnotify import Notifier

log = logging.getLogger("dynofa")
SWITCH_INTERVAL_S = 0.0005


class DaemonLockedError(DynofaError):
    """Another daemon already uses this runtime directory."""


class RuntimeLock:
    """An exclusive flock on ``<runtime_dir>/dynofa.lock`` (released by the kernel even after SIGKILL)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = open_private(self.path, os.O_RDWR | os.O_CREAT, 0o640, what="lock file")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DaemonLockedError(
                f"another dynofa daemon (pid {holder}) is running with runtime directory {self.path.parent}; "
                "stop it first (`systemctl stop dynofa` or kill that pid), or use another paths.runtime_dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()
            os.close(self._fd)
            self._fd = None


def setup_logging(level: str) -> None:
    # under systemd stderr goes to the journal, which adds its own timestamps
    fmt = "%(levelname)s %(name)s: %(message)s" if os.environ.get("INVOCATION_ID") else (
        "%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.basicConfig(level=getattr(logging, level.upper()), format=fmt, stream=sys.stderr, force=True)


def run(config: Config) -> int:
    """Run the daemon in the foreground; returns the exit status."""
    setup_logging(config.logging.level)
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1 PID` dumps every thread's stack
    # the request loop must get the GIL back quickly from the control loop and the workers:
    # the default 5 ms switch interval would show up in every control request's tail latency
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    retain_freed_memory()  # before the first forward: see service.malloc
    notifier = Notifier()
    runtime_dir = ensure_private_dir(config.runtime_dir(), "paths.runtime_dir")
    state_dir = ensure_private_dir(config.state_dir(), "paths.state_dir")
    lock = RuntimeLock(runtime_dir / "dynofa.lock")
    lock.acquire()
    actuator: Any = None
    try:
        actuator = _actuator(config, state_dir)
        return _serve(config, notifier, actuator, state_dir)
    finally:
        if actuator is not None:
            report = actuator.restore()
            if report.failed:
                log.error("could not restore: %s", "; ".join(f"{p}: {why}" for p, why in report.failed.items()))
            elif report.restored:
                log.info("platform restored (%d setting(s))", len(report.restored))
        lock.release()
        notifier.close()


def _actuator(config: Config, state_dir: Path) -> Any:
    from governors.actuators import Actuator
    from governors.platform import detect_platform

    platform = detect_platform(config.paths.sysfs_root)
    actuator = Actuator(platform, str(state_dir))  # restores what a crashed daemon left behind
    recovered = actuator.recovered
    if recovered is not None:
        if getattr(recovered, "discarded", None):
            log.info("crash recovery: %s", recovered.discarded)
        else:
            log.warning("crash recovery: restored %d setting(s) a previous daemon left changed: %s",
                        len(recovered.restored), ", ".join(recovered.restored) or "-")  # fmt: skip
    return actuator


def _log_capabilities(platform: Any) -> None:
    missing = {k: v for k, v in platform.capabilities().items() if not v.usable}
    usable = sorted(k for k, v in platform.capabilities().items() if v.usable)
    who = "root" if os.geteuid() == 0 else f"user {os.geteuid()}"
    log.info("platform %s (%s) as %s; usable: %s", platform.board, platform.model, who, ", ".join(usable) or "none")
    for name, cap in sorted(missing.items()):
        log.info("without %s (%s): %s", name, cap.status, cap.reason or "not available")


def _start_metrics(config: Config, engine: Any, state: Callable[[], dict[str, Any]]) -> Any:
    """The /metrics endpoint when ``metrics.listen`` is set (prometheus_client loads only then).

    ``state`` is what the ``state`` op answers (apps, and the control loop's pes and policy)."""
    address = config.metrics.address()
    if address is None:
        return None
    from service.metrics import DaemonCollector, MetricsServer

    metrics = MetricsServer(address, DaemonCollector(state, engine.latency_histograms))
    metrics.start()
    host = address[0] if ":" not in address[0] else f"[{address[0]}]"
    engine.metrics_url = f"http://{host}:{metrics.port}/metrics"
    return metrics


def _serve(config: Config, notifier: Notifier, actuator: Any, state_dir: Path) -> int:
    import subnets.ofa_compat
    from governors.monitors import Monitor
    from governors.platform.pm_qos import WakeupLatency
    from service.check import build_policy
    from service.control import Controller, TraceWriter
    from service.engine import Engine
    from service.inbox import ControlInbox
    from service.models import ModelRuntime
    from service.server import InferenceWorker, Outbox, Server
    from service.store import BudgetStore
    from service.threads import InferenceFirst

    subnets.ofa_compat.install()  # before anything imports ofa
    platform = actuator.platform
    _log_capabilities(platform)
    policy = build_policy(config)
    if config.threads is not None:
        import torch

        torch.set_num_threads(config.threads)
    # re-profiling runs where inference will (the GPU worker is not pinned)
    pe_cpus = {pe: platform.pe_cpus(pe) for pe in platform.pe_names() if pe != "gpu"}
    models = {name: ModelRuntime.load(name, mc, platform.pe_names(), pe_cpus) for name, mc in config.models.items()}
    outbox = Outbox()

    def publish(topic: str, message: dict[str, Any]) -> None:
        outbox.put("pub", topic, message)

    trace = TraceWriter(config.trace_path(), config.telemetry.trace_max_bytes)
    inbox = ControlInbox(policy, trace.write)  # the one way into the control loop, for served and embedded apps
    engine = Engine(
        models,
        config.app_model(),
        BudgetStore(state_dir),
        config.limits.max_apps,
        publish,
        inbox,
        platform_info=lambda: {
            "board": platform.board,
            "model": platform.model,
            "root": platform.root,
            "pes": platform.pe_names(),
        },
        max_apps_per_client=config.limits.max_apps_per_client,
        pe_cpus={c.name: list(c.cpus) for c in platform.clusters},
    )
    monitor = Monitor(platform, writer=actuator)  # sensor enables go through the rollback record
    priority = InferenceFirst()  # forwards first: the server and the control loop wait for them
    controller = Controller(
        engine, inbox, {pe for m in models.values() for pe in m.pes}, platform, monitor, actuator,
        interval_s=config.control_interval_s,
        telemetry_period_s=config.telemetry.period_s,
        publish=publish,
        notifier=notifier,
        trace=trace,
        default_objective=config.policy.objective,
        priority=priority,
        wakeup=WakeupLatency(platform.root, config.cpu_wakeup_latency_us),
    )  # fmt: skip
    devices = sorted({m.device(pe) for m in models.values() for pe in m.pes})
    workers = {
        d: InferenceWorker(
            d, engine, outbox, config.limits.infer_queue, config.limits.request_timeout_s,
            on_start=monitor.register_current_thread, map_task=controller.map_task, priority=priority,
        )  # fmt: skip
        for d in devices
    }
    server = Server(config, engine, outbox, workers, describe_control=controller.describe, priority=priority)
    try:
        server.bind()
        metrics = _start_metrics(config, engine, server.state)
    except Exception:
        server.close(linger_ms=0)  # removes the sockets it bound and closes the outbox
        raise
    stop_signal: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop_signal.append(signum)
        server.request_stop()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    for worker in workers.values():
        worker.start()
    controller.step()  # state and STATUS are meaningful from the first request on
    controller.start()
    notifier.ready(controller.status_line())
    log.info("ready (pid %d, policy %s, %d app(s) restored)", os.getpid(), controller.policy_name,
             len(engine.app_names()))  # fmt: skip
    try:
        server.serve_forever()
    finally:
        why = signal.Signals(stop_signal[0]).name if stop_signal else "error"
        log.info("stopping (%s): finishing in-flight inferences, restoring the platform", why)
        notifier.stopping()
        controller.stop()
        server.finish(drain_timeout_s=config.limits.request_timeout_s)
        if metrics is not None:
            metrics.close()
        controller.close()
        monitor.close()
        engine.close()
        for sig, handler in previous.items():
            if threading.current_thread() is threading.main_thread():
                signal.signal(sig, handler)
    return 0
