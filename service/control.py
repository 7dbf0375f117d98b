"""The control loop: monitors -> policy -> operating points -> actuators, plus telemetry and watchdog.

It runs on its own thread every ``control_interval_s`` (sooner when a budget changes),
pings the systemd watchdog only while it keeps iterating (a stalled loop gets the daemon
restarted), and never lets a failing policy or monitor stop it.

It knows the apps only through an :class:`~service.inbox.AppTable` (read a snapshot, hand
decisions back) and hears about them only through the :class:`~service.inbox.ControlInbox`
(observations, feedback, budget changes from the served and the embedded paths alike).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dynofa import protocol
from dynofa.budget import DEFAULT_OBJECTIVE
from dynofa.errors import DynofaError
from dynofa.operating_point import OperatingPoint
from dynofa.paths import append_private
from governors.platform.pm_qos import WakeupLatency
from service.apps import AppRecord
from service.inbox import AppTable, Change, ControlInbox, Publish
from service.sdnotify import Notifier
from service.threads import InferenceFirst, name_os_thread, pin_roles

if TYPE_CHECKING:
    from governors.actuators import Actuator
    from governors.monitors import Monitor, Snapshot
    from governors.platform import Platform

log = logging.getLogger(__name__)


@dataclass
class TraceWriter:
    """JSON lines for `dynofa plot`, rotated once past ``max_bytes``."""

    path: Path | None
    max_bytes: int
    _fh: Any = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)  # the loop and request threads

    def write(self, record: dict[str, Any]) -> None:
        with self._lock:
            self._write(record)

    def _write(self, record: dict[str, Any]) -> None:
        if self.path is None:
            return
        try:
            if self._fh is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fh = append_private(self.path, mode=0o640)  # never through a symlink; kept open
            self._fh.write(protocol.encode(record).decode() + "\n")
            self._fh.flush()
            if self._fh.tell() > self.max_bytes:
                self._fh.close()
                self._fh = None
                os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        except (OSError, ValueError, TypeError, DynofaError) as exc:
            log.warning("trace file %s disabled: %s", self.path, exc)
            self.path = None

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class Controller:
    """Owns the platform side: monitor, policy, actuator; decides and applies operating points."""

    def __init__(
        self,
        apps: AppTable,
        inbox: ControlInbox,
        served_pes: Collection[str],
        platform: Platform,
        monitor: Monitor,
        actuator: Actuator,
        interval_s: float,
        telemetry_period_s: float,
        publish: Publish,
        notifier: Notifier,
        trace: TraceWriter,
        default_objective: str = DEFAULT_OBJECTIVE,
        priority: InferenceFirst | None = None,
        wakeup: WakeupLatency | None = None,
    ) -> None:
        from governors.policies.base import pes_from_platform

        self.apps = apps
        self.inbox = inbox
        self.platform = platform
        self.monitor = monitor
        self.actuator = actuator
        self.interval_s = interval_s
        self.telemetry_period_s = telemetry_period_s
        self.publish = publish
        self.notifier = notifier
        self.trace = trace
        self.default_objective = default_objective  # for budgets that name no objective
        self.priority = priority or InferenceFirst()  # steps wait for running forwards
        self.wakeup = wakeup or WakeupLatency(platform.root, None)  # the PM QoS bound, held while apps are served
        self.pes = tuple(pe for pe in pes_from_platform(platform) if pe.name in served_pes)
        self._lock = threading.Lock()  # last-sample state (the inbox guards the policy)
        self._step_lock = threading.Lock()  # one control step at a time (the loop, the start-up step)
        self._snapshot: Snapshot | None = None
        self._decision: Any = None
        self._applied_khz: dict[str, int | None] = {}
        self._applied_gpu_hz: int | None = None
        self._mapping: tuple[str, int] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_state_pub = 0.0
        self.steps = 0
        self.last_step_ms: float | None = None
        self.last_step_error: str | None = None

    # called from other threads -------------------------------------------------------------
    def map_task(self, pe: str, threads: int) -> None:
        """Put inference (the calling worker and torch's intra-op threads) on ``pe`` with ``threads``
        intra-op threads, and the daemon's housekeeping off it: onto the other clusters where there
        are any, else off the CPUs that ``threads`` reserve for inference (``service.threads.role_cpus``).

        Runs per request but acts once per decision: only a changed (pe, threads) pair pins.
        """
        if self._mapping == (pe, threads):
            return
        import torch

        if threads != torch.get_num_threads():
            torch.set_num_threads(max(1, threads))
        if pe != "gpu" and self.platform.capability("task-mapping").usable:
            try:
                pin_roles(self.actuator, self.platform, pe, threads)
            except DynofaError as exc:
                log.warning("cannot map inference onto %s: %s", pe, exc)
        self._mapping = (pe, threads)

    @property
    def policy_name(self) -> str:
        return self.inbox.policy_name

    def describe(self) -> dict[str, Any]:
        with self._lock:
            snap = self._snapshot
            decision = self._decision
        policy_state = _safe(self.inbox.policy_state)
        predictions = self.inbox.predictions()
        snap_dict = snap.to_dict() if snap is not None else None
        pes: dict[str, Any] = {}
        for pe in self.pes:
            entry: dict[str, Any] = {"kind": pe.kind, "cpus": pe.cpus}
            if pe.kind == "cpu":
                entry["freq_khz"] = (snap.cpu_khz.get(pe.name) if snap is not None else None) or self._applied_khz.get(
                    pe.name
                )
                entry["load_others"] = snap.cpu_util.get(pe.name) if snap is not None else None
                entry["load_total"] = snap.cpu_util_total.get(pe.name) if snap is not None else None
            else:
                entry["freq_hz"] = (snap.gpu_hz if snap is not None else None) or self._applied_gpu_hz
                entry["load"] = snap.gpu_load if snap is not None else None
            entry["available"] = list(pe.freqs)
            pes[pe.name] = entry
        return {
            "pes": pes,
            "trace": None if self.trace.path is None else str(self.trace.path),
            "monitor": snap_dict,
            "policy": {
                "name": self.policy_name,
                "state": policy_state,
                "decision": None if decision is None else _safe(decision.to_dict),
                "steps": self.steps,
                "last_step_ms": None if self.last_step_ms is None else round(self.last_step_ms, 3),
                "last_error": self.last_step_error,
            },
            "capabilities": {k: v.to_dict() for k, v in sorted(self.platform.capabilities().items())},
            "wakeup_latency": self.wakeup.to_dict(),
            "predictions": predictions,
        }

    # the loop -----------------------------------------------------------------------------
    def start(self) -> None:
        self.inbox.looping(True)
        self._thread = threading.Thread(target=self._run, name="dynofa-control", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.inbox.looping(False)
        self.inbox.wake.set()
        if self._thread is not None:
            self._thread.join(timeout=max(5.0, 4 * self.interval_s))

    def _run(self) -> None:
        name_os_thread(self._thread.name if self._thread is not None else "dynofa-control")
        watchdog = self.notifier.watchdog_interval_s
        next_ping = 0.0
        while not self._stop.is_set():
            self.priority.yield_to_inference("control")  # a step is milliseconds of Python: not during a forward
            started = time.monotonic()
            self.step()
            now = time.monotonic()
            if watchdog is not None and now >= next_ping:
                self.notifier.watchdog()  # only from here: a stuck loop stops the pings
                next_ping = now + watchdog
            wait = self.interval_s - (time.monotonic() - started)
            if watchdog is not None:
                wait = min(wait, max(0.0, next_ping - time.monotonic()))
            self.inbox.wake.wait(max(0.0, wait))
            self.inbox.wake.clear()

    def step(self) -> None:
        """One control period. Never raises. Steps never overlap (the loop, the start-up step)."""
        with self._step_lock:
            ticket = self.inbox.step_begins()  # the changes this step sees
            started = time.perf_counter()
            try:
                self._step()
                self.last_step_error = None
            except Exception as exc:  # noqa: BLE001 - the loop must survive anything a part throws
                if self.last_step_error != str(exc):
                    log.exception("control step failed: %s", exc)
                self.last_step_error = str(exc)
            self.last_step_ms = (time.perf_counter() - started) * 1e3
            self.steps += 1
            self.inbox.step_done(ticket)  # the requests waiting on those changes may reply now

    def _step(self) -> None:
        self._exclude_own_threads()
        snap = self.monitor.sample()
        self.apps.expire()
        apps = self.apps.snapshot_apps()
        self.wakeup.want(bool(apps))
        decision = self._decide(apps, snap)
        points = dict(decision.points) if decision is not None else {}
        for app in apps:
            if app.budget is None:  # no budget: best accuracy where it already runs
                points[app.name] = self._unbudgeted_point(app)
        changes = self.apps.apply_points(points)
        self._apply_frequencies(points)
        with self._lock:
            self._snapshot = snap
            self._decision = decision
        self.inbox.decided(decision)  # observations are judged against what was predicted
        now = time.monotonic()
        for change in changes:
            self._publish_change(change, decision)
        periodic = now - self._last_state_pub >= self.telemetry_period_s
        if periodic or changes:
            self._last_state_pub = now
            record = self._telemetry_record(snap)
            self.trace.write(record)
            if periodic:
                self.publish(protocol.TOPIC_STATE, record)
            self.notifier.status(self.status_line())

    def _decide(self, apps: list[AppRecord], snap: Snapshot) -> Any:
        from governors.contention import load_from_snapshot
        from governors.policies.base import AppRequest, DecisionInput

        requests = []
        for app in apps:
            if app.budget is None:
                continue
            budget = app.budget if app.budget.objective else replace(app.budget, objective=self.default_objective)
            requests.append(AppRequest(app.name, budget, app.entries, batch=app.batch))
        if not requests or not self.pes:
            return None
        load = load_from_snapshot(snap)  # the Snapshot itself: its units (gpu_load in %) are unambiguous
        inp = DecisionInput(apps=tuple(requests), pes=self.pes, board=str(self.platform.board), load=load)
        return self.inbox.decide(inp)

    def _unbudgeted_point(self, app: AppRecord) -> OperatingPoint:
        pe = app.point.pe if app.point is not None else app.pes[0]
        threads = app.point.threads if app.point is not None else 1
        return OperatingPoint(subnet=app.most_accurate(), pe=pe, threads=threads)

    def _apply_frequencies(self, points: dict[str, OperatingPoint]) -> None:
        wanted: dict[str, int] = {}
        gpu_hz: int | None = None
        for point in points.values():
            for cluster, khz in point.cpu_freq_khz.items():
                # DVFS is per cluster: the most demanding app wins
                wanted[cluster] = max(wanted.get(cluster, 0), int(khz))
            if point.gpu_freq_hz is not None:
                gpu_hz = max(gpu_hz or 0, int(point.gpu_freq_hz))
        for cluster, khz in wanted.items():
            if self._applied_khz.get(cluster) == khz or not self.platform.capability(f"dvfs:{cluster}").usable:
                continue
            try:
                effective = self.actuator.set_cluster_khz(cluster, khz)
            except DynofaError as exc:
                log.warning("cannot set %s to %d kHz: %s", cluster, khz, exc)
                continue
            self._applied_khz[cluster] = khz
            self.publish(protocol.TOPIC_EVENT, {"event": "dvfs", "pe": cluster, "khz": khz, "effective_khz": effective})
        if gpu_hz is not None and gpu_hz != self._applied_gpu_hz and self.platform.capability("dvfs:gpu").usable:
            try:
                effective = self.actuator.set_gpu_hz(gpu_hz)
                self._applied_gpu_hz = gpu_hz
                event = {"event": "dvfs", "pe": "gpu", "hz": gpu_hz, "effective_hz": effective}
                self.publish(protocol.TOPIC_EVENT, event)
            except DynofaError as exc:
                log.warning("cannot set the GPU to %d Hz: %s", gpu_hz, exc)

    def _publish_change(self, change: Change, decision: Any) -> None:
        app, old, new = change
        outcome = None
        if decision is not None and app in decision.outcomes:
            outcome = decision.outcomes[app].to_dict()
        self.publish(
            protocol.TOPIC_OPERATING_POINT,
            {
                "t": time.time(),
                "app": app,
                "old": None if old is None else old.to_dict(),
                "new": new.to_dict(),
                "predicted": outcome,
            },
        )

    def _telemetry_record(self, snap: Snapshot) -> dict[str, Any]:
        apps = {}
        for app in self.apps.snapshot_apps():
            apps[app.name] = {
                "budget_ms": None if app.budget is None else app.budget.latency_ms,
                "min_accuracy": None if app.budget is None else app.budget.min_accuracy,
                "latency_ms": app.latency.median(),
                "last_ms": app.latency.recent[-1] if app.latency.recent else None,
                "subnet": None if app.point is None else app.point.subnet,
                "pe": None if app.point is None else app.point.pe,
                "threads": None if app.point is None else app.point.threads,
                "accuracy": None if app.point is None else app.accuracy_of(app.point.subnet),
                "inferences": app.latency.count,
                "hit_rate": app.latency.hit_rate(),
                "switches": app.switches,
            }
        return {
            "t": time.time(),
            "apps": apps,
            "cpu_util_others": snap.cpu_util,
            "cpu_khz": snap.cpu_khz,
            "gpu_load": snap.gpu_load,
            "gpu_hz": snap.gpu_hz,
            "power_w": snap.power_w,
            "energy_j": snap.energy_j,
            "max_temperature_c": snap.max_temperature_c,
        }

    def status_line(self) -> str:
        parts = []
        for app in self.apps.snapshot_apps():
            if app.point is None:
                continue
            median = app.latency.median()
            got = "-" if median is None else f"{median:.1f}"
            want = "" if app.budget is None else f"/{app.budget.latency_ms:g}"
            parts.append(f"{app.name}: {app.point.subnet}@{app.point.pe} {got}{want} ms")
        return "; ".join(parts) or "idle: no apps registered"

    def _exclude_own_threads(self) -> None:
        # the daemon's own threads (workers, torch's pool) are not "contention by others"
        try:
            tids = [int(t) for t in os.listdir("/proc/self/task")]
        except OSError:
            return
        self.monitor.register_threads(tids)

    def close(self) -> None:
        self.wakeup.release()
        self.trace.close()


def _safe(fn: Any) -> Any:
    try:
        value = fn()
        json.dumps(value, default=str)
        return value
    except Exception as exc:  # noqa: BLE001 - a status display must not fail on a policy's state
        return {"error": str(exc)}
