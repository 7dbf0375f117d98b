"""The one way into the control loop, and the one way back out of it.

Requests and inferences flow one way into the control loop through :class:`ControlInput`:
the served path (``service.engine``: the daemon's own inferences, feedback, budget changes)
and the embedded path (latencies an embedded app reports in batches) both call it, and
neither knows the :class:`~service.control.Controller`. Decisions flow back through one
place, :meth:`AppTable.apply_points`, which the engine implements: it swaps a served app's
subnet handle and pushes an embedded app's decision to it.

::

    served inference ─┐                          ┌─> AppTable.apply_points ─┬─> served: handle.switch
    embedded report ──┼─> ControlInput ─> loop ──┤                          └─> embedded: push to the app
    budget change ────┘   (ControlInbox)         └─> actuators (DVFS, mapping)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, Protocol

from dynofa.operating_point import OperatingPoint
from governors.contention import prior_slowdown
from governors.latency_model import AppCorrection, scaled
from service.apps import AppRecord, RatioWindow

log = logging.getLogger(__name__)

#: the longest a request waits for the control loop to apply a budget change before it replies anyway
CHANGE_WAIT_S = 5.0

Change = tuple[str, OperatingPoint | None, OperatingPoint]
Publish = Callable[[str, dict[str, Any]], None]  # (telemetry topic, message), thread-safe


class ControlInput(Protocol):
    """What the served and embedded paths tell the control loop (never the other way)."""

    def observe(self, app: str, point: OperatingPoint, latency_ms: float) -> None:
        """One inference of ``app`` ran at ``point`` and took ``latency_ms``."""

    def feedback(self, app: str, qoe: float, detail: Any = None) -> None:
        """The app's quality-of-experience score for its recent results (``detail``: the app's own words)."""

    def changed(self, app: str) -> None:
        """``app`` registered, left, or changed its budget: returns once the control loop has decided
        and applied the points for it (so that a reply comes after the new point is in place)."""

    def forget(self, app: str) -> None:
        """``app`` is gone (unregistered, or its lease ran out): drop what was learnt about it."""


class NoControl:
    """A :class:`ControlInput` for an engine without a control loop (tests, tools): hears nothing."""

    def observe(self, app: str, point: OperatingPoint, latency_ms: float) -> None:
        return None

    def feedback(self, app: str, qoe: float, detail: Any = None) -> None:
        return None

    def changed(self, app: str) -> None:
        return None

    def forget(self, app: str) -> None:
        return None


class AppTable(Protocol):
    """The apps the control loop decides for, and where its decisions go back."""

    def snapshot_apps(self) -> list[AppRecord]:
        """Copies of the apps' records (budgets, points, latencies, the subnets each may run)."""

    def apply_points(self, points: Mapping[str, OperatingPoint]) -> list[Change]:
        """Record (served) or push (embedded) decided points; (app, old, new) for each change."""

    def expire(self) -> list[str]:
        """Forget apps whose lease ran out (embedded apps that stopped reporting); their names."""


class PolicyLike(Protocol):
    """The part of ``governors.policies.base.Policy`` the inbox drives."""

    def decide(self, inp: Any) -> Any: ...

    def observe(self, app: str, latency_ms: float, point: OperatingPoint | None = None) -> None: ...

    def feedback(self, app: str, qoe: float) -> None: ...

    def needs_decision(self) -> bool: ...

    def forget(self, app: str) -> None: ...


class ControlInbox:
    """The :class:`ControlInput` of the daemon: feeds the policy under one lock and wakes the loop.

    Called from inference workers and the request thread; the control loop calls :meth:`decide`
    and waits on :attr:`wake`. A failing policy never fails the caller (an inference reply).
    A change is a ticket: :meth:`changed` waits until a step that began after it has finished
    (:meth:`step_begins` / :meth:`step_done`), while the loop runs.
    """

    def __init__(self, policy: PolicyLike, record: Callable[[dict[str, Any]], None] | None = None,
                 correction: AppCorrection | None = None) -> None:
        self.policy = policy
        self._record = record  # where feedback is kept with its detail (the daemon's trace)
        self.wake = threading.Event()
        self._lock = threading.Lock()  # policy state: observe/feedback/decide/state never overlap
        self._steps = threading.Condition()
        self._asked = 0  # changes announced
        self._covered = 0  # changes a finished step has seen
        self._looping = False
        self._decision: Any = None  # the last decision, to judge observations against its predictions
        # per app: measured / predicted, and measured / the contention-free (catalog) prediction
        self._predictions: dict[str, tuple[RatioWindow, RatioWindow]] = {}
        # what each app's forwards take against the catalog on a quiet PE (applied to its entries)
        self.correction = correction or AppCorrection()
        self._applied: dict[str, tuple[int, dict[str, float]]] = {}  # app -> (batch, {pe: factor}) decided with
        self._quiet: dict[str, bool] = {}  # PE -> the last decision's monitors saw no load that slows it

    @property
    def policy_name(self) -> str:
        return str(getattr(self.policy, "name", type(self.policy).__name__))

    def observe(self, app: str, point: OperatingPoint, latency_ms: float) -> None:
        with self._lock:
            self._record_prediction(app, point, latency_ms)
            try:
                self.policy.observe(app, latency_ms, point)
                urgent = self.policy.needs_decision()
            except Exception as exc:  # noqa: BLE001 - a policy bug must not fail the inference reply
                log.warning("policy %s failed to observe %s: %s", self.policy_name, app, exc)
                return
        if urgent:  # a deadline miss: decide before the app's next inference, not at the next tick
            self.wake.set()

    def feedback(self, app: str, qoe: float, detail: Any = None) -> None:
        if self._record is not None:  # no "t": `dynofa plot` reads samples, not these
            self._record({"feedback": {"app": app, "qoe": qoe, "detail": detail}, "unix_time": round(time.time(), 3)})
        with self._lock:
            try:
                self.policy.feedback(app, qoe)
            except Exception as exc:  # noqa: BLE001
                log.warning("policy %s failed on feedback for %s: %s", self.policy_name, app, exc)

    def changed(self, app: str) -> None:
        with self._steps:
            self._asked += 1
            ticket = self._asked
        self.wake.set()
        with self._steps:
            if not self._steps.wait_for(lambda: self._covered >= ticket or not self._looping, CHANGE_WAIT_S):
                log.warning("the control loop did not apply %s's change within %g s", app, CHANGE_WAIT_S)

    def looping(self, running: bool) -> None:
        """The control loop started (changes wait for it) or stopped (they no longer do)."""
        with self._steps:
            self._looping = running
            self._steps.notify_all()

    def step_begins(self) -> int:
        """The loop starts a step: every change announced so far is covered by it."""
        with self._steps:
            return self._asked

    def step_done(self, ticket: int) -> None:
        with self._steps:
            self._covered = max(self._covered, ticket)
            self._steps.notify_all()

    def _record_prediction(self, app: str, point: OperatingPoint, latency_ms: float) -> None:
        """Measured / predicted for an inference that ran at the decided point (caller holds the lock).

        The policy predicted with the app's correction applied (:meth:`decide`): measured / the
        decision's ``predicted_ms`` is the daemon's error, measured / the catalog figure (its
        ``nominal_ms`` without the correction) the start-up figure's, which the correction learns from.
        """
        decision = self._decision
        outcome = decision.outcomes.get(app) if decision is not None else None
        decided = decision.points.get(app) if decision is not None else None
        if outcome is None or decided is None or (decided.subnet, decided.pe) != (point.subnet, point.pe):
            return
        windows = self._predictions.setdefault(app, (RatioWindow(), RatioWindow()))
        if outcome.predicted_ms > 0:
            windows[0].add(latency_ms / outcome.predicted_ms)
        if outcome.nominal_ms:
            batch, factors = self._applied.get(app, (1, {}))
            catalog_ms = outcome.nominal_ms / factors.get(point.pe, 1.0)
            windows[1].add(latency_ms / catalog_ms)
            self.correction.observe(app, point.pe, batch, latency_ms, catalog_ms, self._quiet.get(point.pe, False))

    def forget(self, app: str) -> None:
        """``app`` is gone: the policy drops its state, and the loop re-decides for the apps left."""
        with self._lock:
            self._predictions.pop(app, None)
            self._applied.pop(app, None)
            self.correction.forget(app)
            try:
                self.policy.forget(app)
            except Exception as exc:  # noqa: BLE001 - a policy bug must not fail the unregister reply
                log.warning("policy %s failed to forget %s: %s", self.policy_name, app, exc)
        self.wake.set()

    def decided(self, decision: Any) -> None:
        with self._lock:
            self._decision = decision

    def predictions(self) -> dict[str, Any]:
        with self._lock:
            return {app: {"measured_over_predicted": w[0].to_dict(), "measured_over_catalog": w[1].to_dict(),
                          "correction": self.correction.to_dict(app)}
                    for app, w in self._predictions.items()}  # fmt: skip

    def decide(self, inp: Any) -> Any:
        with self._lock:
            return self.policy.decide(self._corrected(inp))

    def _corrected(self, inp: Any) -> Any:
        """``inp`` (a ``DecisionInput``) with each app's entries scaled by its correction at its batch size;
        notes which PEs the monitors show quiet (caller holds the lock)."""
        apps = []
        for app in inp.apps:
            factors = {pe.name: self.correction.factor(app.name, pe.name, app.batch) for pe in inp.pes}
            self._applied[app.name] = (app.batch, factors)
            entries = app.entries
            for pe, factor in factors.items():
                if factor != 1.0:
                    entries = tuple(scaled(e, pe, factor) for e in entries)
            apps.append(replace(app, entries=entries) if entries is not app.entries else app)
        for pe in inp.pes:
            # the contention model's own test: other load that leaves our threads a core each is no slowdown
            threads = max((e.latency[pe.name].threads for a in inp.apps for e in a.entries if pe.name in e.latency),
                          default=1)
            self._quiet[pe.name] = prior_slowdown(pe.name, pe.kind, pe.cpus, threads, inp.load) <= 1.0
        return replace(inp, apps=tuple(apps))

    def policy_state(self) -> Any:
        with self._lock:
            state = getattr(self.policy, "state", None)
            return state() if callable(state) else {}
