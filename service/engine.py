"""The daemon's state and operations, independent of ZeroMQ.

The server calls the engine for every request; inference workers call :meth:`Engine.run_inference`.
The engine tells the control loop what happens through a :class:`~service.inbox.ControlInput`
(observations, feedback, budget changes) and never holds the controller; the control loop reads
:meth:`Engine.snapshot_apps` and hands its decisions back to :meth:`Engine.apply_points` (the
:class:`~service.inbox.AppTable` side). App state is guarded by one lock that is never held
during a forward pass, so a control request is never stuck behind an inference.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from dynofa import __version__, protocol
from dynofa.budget import Budget
from dynofa.errors import BudgetError, DynofaError
from dynofa.operating_point import OperatingPoint
from dynofa.protocol import RequestError
from service import embedded
from service.apps import AppRecord, LatencyHistogram
from service.inbox import Change, ControlInput, NoControl, Publish
from service.models import ModelRuntime
from service.store import BackgroundSync, BudgetStore, SavedApp
from service.tenancy import NOBODY, Caller, Owner, check_access, token_hash

log = logging.getLogger(__name__)

__all__ = ["Change", "Engine", "InferenceDone", "InferenceJob", "Publish"]


@dataclass
class InferenceJob:
    app: str
    model: str
    pe: str
    subnet: str | None  # forced by the request; None: the app's decided subnet (its handle)
    x: np.ndarray
    threads: int
    received: float  # time.monotonic() when the request arrived
    priority: int = 0  # the app's budget priority when the request was read: who a worker serves first


@dataclass
class InferenceDone:
    output: np.ndarray
    subnet: str
    pe: str
    latency_ms: float
    queue_ms: float
    job: InferenceJob | None = None  # set until Engine.book recorded it


class Engine:
    """Apps, budgets and operating points over the served models."""

    def __init__(
        self,
        models: Mapping[str, ModelRuntime],
        default_model: str,
        store: BudgetStore,
        max_apps: int,
        publish: Publish,
        control: ControlInput | None = None,
        platform_info: Callable[[], dict[str, Any]] | None = None,
        max_apps_per_client: int | None = None,
        pe_cpus: Mapping[str, Sequence[int]] | None = None,
    ) -> None:
        self.models = dict(models)
        self.default_model = default_model
        self.store = store
        self.max_apps = max_apps
        self.max_apps_per_client = max_apps if max_apps_per_client is None else max_apps_per_client
        self.daemon_uid = os.geteuid()
        self.publish = publish
        self.control: ControlInput = control if control is not None else NoControl()
        self._platform_info = platform_info or (lambda: {})
        self._pe_cpus = dict(pe_cpus or {})  # PE -> its CPUs, sent to embedded apps with their points
        self._apps: dict[str, AppRecord] = {}
        self._lock = threading.RLock()
        # held from the end of a forward until it is recorded (Engine.book, after the reply left):
        # a state read after an inference's reply waits for that inference's figures
        self._unrecorded = 0
        self._recorded = threading.Condition(threading.Lock())
        self.started = time.time()
        self.metrics_url: str | None = None  # set by the daemon when it serves /metrics
        self._restore_saved()
        self._sync = BackgroundSync(store.path)

    # persistence ---------------------------------------------------------------------------
    def _restore_saved(self) -> None:
        for name, saved in self.store.load().items():
            if saved.model not in self.models:
                log.warning("saved app %r used model %r, which is no longer served; dropped", name, saved.model)
                continue
            if len(self._apps) >= self.max_apps:
                log.warning("more saved apps than limits.max_apps (%d); %r and later dropped", self.max_apps, name)
                break
            self._apps[name] = self._new_app(name, saved.model, saved.budget, Owner(saved.owner, saved.token_sha256))
        if self._apps:
            log.info("restored %d app(s) and their budgets from %s", len(self._apps), self.store.path)

    def _save(self) -> None:
        # atomic rename now (a crash right after the reply keeps it), fsync on a thread (power loss)
        try:
            self.store.save(
                {
                    n: SavedApp(a.model, a.budget, a.owner.identity, a.owner.token_sha256)
                    for n, a in self._apps.items()
                    if a.embedded is None  # embedded apps hold a lease and register again themselves
                },
                durable=False,
            )
        except OSError as exc:
            log.error("cannot save budgets to %s: %s", self.store.path, exc)
            return
        self._sync.request()

    def _new_app(self, name: str, model: str, budget: Budget | None, owner: Owner) -> AppRecord:
        runtime = self.models[model]
        record = AppRecord(
            name=name, model=model, budget=budget, owner=owner, entries=tuple(runtime.catalog.entries),
            pes=tuple(runtime.pes),
        )  # fmt: skip
        record.point = OperatingPoint(subnet=runtime.most_accurate(), pe=runtime.pes[0])
        runtime.select(name, record.point)
        return record

    # requests ------------------------------------------------------------------------------
    def hello(self, app: str | None = None) -> dict[str, Any]:
        return {
            "protocol": protocol.PROTOCOL_VERSION,
            "daemon": __version__,
            "ops": list(protocol.OPS),
            "models": {name: {"pes": m.pes, "subnets": len(m.ids)} for name, m in self.models.items()},
            "default_model": self.default_model,
            "registered": app is not None and app in self._apps,
        }

    def authorize(self, app: str, caller: Caller, token: str | None = None, override: bool = False) -> None:
        """Raise ``forbidden`` unless ``caller`` may act on ``app`` (an unknown app: anyone may create it)."""
        with self._lock:
            record = self._apps.get(app)
            owner = None if record is None else record.owner
        if owner is not None or override:
            check_access(app, owner or Owner(None), caller, token, override, self.daemon_uid)

    def _model_and_budget(self, model: str | None, budget: dict[str, Any] | None) -> tuple[str, Budget | None]:
        """A registration's model (the default when it names none) and parsed budget, or the error for either."""
        model = model or self.default_model
        if model not in self.models:
            raise RequestError(protocol.UNKNOWN_MODEL, f"unknown model {model!r}; served: {', '.join(self.models)}")
        return model, _budget(budget) if budget is not None else None

    def register(
        self,
        app: str,
        model: str | None = None,
        budget: dict[str, Any] | None = None,
        caller: Caller = NOBODY,
        token: str | None = None,
    ) -> dict[str, Any]:
        """Register ``app`` for ``caller`` (the server has checked that ``caller`` may act on it)."""
        model, parsed = self._model_and_budget(model, budget)
        with self._lock:
            record = self._apps.get(app)
            if record is None:
                self._check_quota(caller)
                owner = Owner(caller.identity, None if token is None else token_hash(token))
                record = self._apps[app] = self._new_app(app, model, parsed, owner)
            else:
                owner = record.owner
                if owner.identity is None:  # restored from an older file: the first client to register claims it
                    owner = Owner(caller.identity, owner.token_sha256)
                if token is not None:
                    owner = Owner(owner.identity, token_hash(token))
                if record.model != model:
                    # re-registering under another model starts over on that model
                    kept = parsed if budget is not None else record.budget
                    record = self._apps[app] = self._new_app(app, model, kept, owner)
                elif budget is not None:
                    record.budget = parsed
                record.owner = owner
            record.last_seen = time.monotonic()
            self._save()
        if budget is not None:
            self._budget_changed(app)  # the reply carries the point decided for the new budget
        with self._lock:
            current = self._apps.get(app, record)
            return current.to_dict(self._accuracy(current))

    def register_embedded(
        self,
        app: str,
        subnets: Sequence[str],
        model: str | None = None,
        budget: dict[str, Any] | None = None,
        pes: Sequence[str] | None = None,
        lease_s: float | None = None,
        point: dict[str, Any] | None = None,
        caller: Caller = NOBODY,
        token: str | None = None,
    ) -> dict[str, Any]:
        """Register (or re-register) an embedded app that hosts a pool of ``subnets`` itself."""
        model, parsed = self._model_and_budget(model, budget)
        with self._lock:
            old = self._apps.get(app)
            if old is None:
                self._check_quota(caller)
            owner = Owner(caller.identity, None if token is None else token_hash(token)) if old is None else old.owner
            kept = parsed if budget is not None or old is None else old.budget
            record = embedded.new_record(app, self.models[model], subnets, pes, lease_s or protocol.DEFAULT_LEASE_S,
                                         kept, owner, point)  # fmt: skip
            if old is not None:
                self.models[old.model].release(app)
                record.latency, record.switches, record.qoe = old.latency, old.switches, old.qoe
                if old.embedded is not None and record.embedded is not None:
                    record.embedded.seq = old.embedded.seq  # numbers keep rising: the app ignores older ones
            self._apps[app] = record
            self._save()
        if record.budget is not None:
            self._budget_changed(app)  # decided and pushed before the reply
        with self._lock:
            current = self._apps.get(app, record)
            reply = current.to_dict(self._accuracy(current))
            reply["decision"] = embedded.decision(current, self._pe_cpus, self.started) if current.embedded else None
        reply["topic"] = protocol.decision_topic(app)
        return reply

    def report(
        self, app: str, samples: Sequence[tuple[str, str, float]], seq: int | None = None,
        refused: dict[str, Any] | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """An embedded app's latencies since its last report (renews its lease); returns its current decision."""
        with self._lock:
            record = self._app(app)
            seen = embedded.observations(record, samples)
            assert record.embedded is not None
            record.last_seen = time.monotonic()
            record.embedded.reports += 1
            for _, latency_ms in seen:
                record.latency.add(latency_ms, record.budget)
            if refused is not None:
                record.embedded.error = f"the app refused decision {refused.get('seq')}: {refused.get('reason')}"
                log.warning("embedded app %s: %s", app, record.embedded.error)
            reply = {"app": app, "decision": embedded.decision(record, self._pe_cpus, self.started),
                     "lease_s": record.embedded.lease_s}  # fmt: skip
        for point, latency_ms in seen:
            self.control.observe(app, point, latency_ms)
        return reply

    def _check_quota(self, caller: Caller) -> None:
        if len(self._apps) >= self.max_apps:
            raise RequestError(
                protocol.TOO_MANY_APPS,
                f"the daemon serves at most {self.max_apps} apps (limits.max_apps); unregister one first",
            )
        mine = sum(1 for a in self._apps.values() if a.owner.identity == caller.identity)
        if mine >= self.max_apps_per_client:
            raise RequestError(
                protocol.TOO_MANY_APPS,
                f"client {caller.identity} already has {mine} apps, the most one client may register "
                "(limits.max_apps_per_client); unregister one first",
            )

    def unregister(self, app: str) -> dict[str, Any]:
        with self._lock:
            record = self._app(app)
            del self._apps[app]
            self.models[record.model].release(app)
            self._save()
        self.control.forget(app)
        self.publish(protocol.TOPIC_BUDGET, {"app": app, "budget": None, "unregistered": True})
        return {"app": app}

    def set_budget(
        self, app: str, budget: dict[str, Any], caller: Caller = NOBODY, token: str | None = None
    ) -> dict[str, Any]:
        parsed = _budget(budget)
        with self._lock:
            if app not in self._apps:  # setting a budget registers the app on the default model
                self.register(app, caller=caller, token=token)
            record = self._apps[app]
            unchanged = record.budget == parsed
            if not unchanged:
                record.budget = parsed
                self._save()
        # an app that repeats its budget (say, once per frame) changes nothing: its point is already
        # decided for it, so no write to the state dir, no telemetry and no control step hold the reply
        if not unchanged:
            self._budget_changed(app)
        return {"app": app, "budget": parsed.to_dict()}

    def clear_budget(self, app: str) -> dict[str, Any]:
        with self._lock:
            record = self._app(app)
            record.budget = None
            self._save()
        self._budget_changed(app)
        return {"app": app, "budget": None}

    def budgets(self) -> dict[str, Any]:
        with self._lock:
            return {
                "budgets": {
                    name: {
                        "model": a.model,
                        "budget": None if a.budget is None else a.budget.to_dict(),
                        "owner": a.owner.identity,
                    }
                    for name, a in sorted(self._apps.items())
                }
            }

    def subnets(self, model: str | None = None) -> dict[str, Any]:
        if model is not None and model not in self.models:
            raise RequestError(protocol.UNKNOWN_MODEL, f"unknown model {model!r}; served: {', '.join(self.models)}")
        names = [model] if model else list(self.models)
        return {"models": {n: self.models[n].describe() for n in names}}

    def feedback(self, app: str, qoe: float, detail: Any = None) -> dict[str, Any]:
        with self._lock:
            record = self._app(app)
            record.qoe = qoe
            record.last_seen = time.monotonic()
        self.control.feedback(app, qoe, detail)
        return {"app": app, "qoe": qoe}

    def state(self) -> dict[str, Any]:
        """The apps and the daemon; the server adds the control loop's view (pes, monitor, policy)."""
        self.recorded()
        with self._lock:
            apps = {name: a.to_dict(self._accuracy(a)) for name, a in sorted(self._apps.items())}
        return {
            "daemon": {
                "version": __version__,
                "pid": os.getpid(),
                "uptime_s": round(time.time() - self.started, 3),
                "metrics": self.metrics_url,
            },
            "apps": apps,
            "platform": self._platform_info(),
            "models": {
                name: {"pes": m.pes, "subnets": len(m.ids), "catalog": None if m.catalog.path is None else str(
                    m.catalog.path)} for name, m in self.models.items()
            },  # fmt: skip
        }

    # inference -----------------------------------------------------------------------------
    def prepare_inference(self, app: str, x: np.ndarray, subnet: str | None, received: float) -> InferenceJob:
        """Check an inference request against the app's model and pick its operating point (fast, no forward)."""
        with self._lock:
            record = self._app(app)
            record.last_seen = time.monotonic()
            runtime = self.models[record.model]
            point = record.point or OperatingPoint(subnet=runtime.most_accurate(), pe=runtime.pes[0])
            priority = record.budget.priority if record.budget is not None else 0
        problem = runtime.check_input(x.shape)
        if problem is not None:
            raise RequestError(protocol.BAD_TENSOR, problem)
        if subnet is not None and not runtime.has(subnet):
            raise RequestError(
                protocol.UNKNOWN_SUBNET, f"model {runtime.name!r} has no subnet {subnet!r}; see the subnets op"
            )
        return InferenceJob(
            app=app,
            model=record.model,
            pe=point.pe if point.pe in runtime.pes else runtime.pes[0],
            subnet=subnet,
            x=x,
            threads=point.threads,
            received=received,
            priority=priority,
        )

    def run_inference(self, job: InferenceJob) -> InferenceDone:
        """Run on the calling (worker) thread. The caller sends the reply, then calls :meth:`book`
        with the result: recording the latency for the app and the policy (~40 us after a forward
        has evicted the caches) is not on the app's path, and ``state`` waits for it meanwhile."""
        started = time.monotonic()
        try:
            outcome = self.models[job.model].infer(job.app, job.pe, job.x, job.subnet)
        except DynofaError as exc:
            raise RequestError(protocol.INFERENCE_FAILED, str(exc)) from None
        except (RuntimeError, ValueError) as exc:  # torch reports shape/device problems this way
            log.warning("inference for %s on %s failed: %s", job.app, job.subnet, exc)
            raise RequestError(protocol.INFERENCE_FAILED, f"inference failed: {exc}") from None
        with self._recorded:  # until book(), which the worker calls whatever happens next
            self._unrecorded += 1
        return InferenceDone(
            output=outcome.output,
            subnet=outcome.subnet,
            pe=job.pe,
            latency_ms=outcome.latency_ms,
            queue_ms=(started - job.received) * 1000.0,
            job=job,
        )

    def book(self, done: InferenceDone) -> None:
        """Record a finished inference for its app and the policy (once; after its reply was sent)."""
        job, done.job = done.job, None
        if job is None:
            return
        try:
            self._record(job, done)
        finally:
            with self._recorded:
                self._unrecorded -= 1
                if not self._unrecorded:
                    self._recorded.notify_all()

    def _record(self, job: InferenceJob, done: InferenceDone) -> None:
        point: OperatingPoint | None = None
        batch = int(job.x.shape[0]) if job.x.ndim else 1
        new_batch = False
        with self._lock:
            record = self._apps.get(job.app)
            if record is not None:
                new_batch, record.batch = record.batch != batch, batch
                record.latency.add(done.latency_ms, record.budget)
                record.forward_s.observe(done.latency_ms / 1000.0)
                record.end_to_end_s.observe(time.monotonic() - job.received)
                # the point this inference really ran at (a forced subnet is not the decided one)
                base = record.point or OperatingPoint(subnet=done.subnet, pe=job.pe)
                point = replace(base, subnet=done.subnet, pe=job.pe, threads=job.threads)
        if point is not None:
            if new_batch:  # predict for what the app now sends before judging this latency against it
                self.control.changed(job.app)
            self.control.observe(job.app, point, done.latency_ms)

    def recorded(self) -> None:
        """Wait (at most 1 s) until every inference whose reply has left is recorded."""
        with self._recorded:
            done = self._recorded.wait_for(lambda: not self._unrecorded, timeout=1.0)
        if not done:
            log.warning("an inference was not recorded within 1 s of its forward; state may lag it")

    def latency_histograms(self) -> dict[str, tuple[str, LatencyHistogram, LatencyHistogram]]:
        """Per app: (model, forward, end to end) histogram copies, for the metrics exporter."""
        self.recorded()
        with self._lock:
            return {n: (a.model, a.forward_s.copy(), a.end_to_end_s.copy()) for n, a in sorted(self._apps.items())}

    # control loop side -----------------------------------------------------------------------
    def snapshot_apps(self) -> list[AppRecord]:
        """Copies of the apps' records for the controller (never the live ones)."""
        with self._lock:
            return [
                AppRecord(
                    name=a.name, model=a.model, budget=a.budget, point=a.point, latency=a.latency,
                    switches=a.switches, qoe=a.qoe, owner=a.owner, batch=a.batch, entries=a.entries, pes=a.pes,
                    embedded=a.embedded,
                )  # fmt: skip
                for a in self._apps.values()
            ]

    def apply_points(self, points: Mapping[str, OperatingPoint]) -> list[Change]:
        """Apply decided operating points: a served app's handle is swapped (its next inference runs
        the new point), an embedded app's point is pushed to it. Returns (app, old, new) per change."""
        changes: list[Change] = []
        pushes: list[dict[str, Any]] = []
        with self._lock:
            for app, point in points.items():
                record = self._apps.get(app)
                if record is None or point == record.point:
                    continue
                if not record.can_run(point):
                    self._refuse(record, point)
                    continue
                old = record.point
                if old is None or old.subnet != point.subnet:
                    record.switches += 1
                record.point = point
                if record.embedded is None:
                    self.models[record.model].select(app, point)  # the reference swap, in the daemon
                else:
                    record.embedded.seq += 1
                    pushes.append(embedded.decision(record, self._pe_cpus, self.started))  # the same swap, in the app
                changes.append((app, old, point))
        for message in pushes:
            self.publish(protocol.decision_topic(message["app"]), message)
        return changes

    def _refuse(self, record: AppRecord, point: OperatingPoint) -> None:
        reason = embedded.refusal(record, point)
        if record.embedded is not None:
            if record.embedded.refusal == reason:
                return  # once per distinct refusal, not every control period
            record.embedded.refusal = record.embedded.error = reason
            self.publish(protocol.decision_topic(record.name), {"app": record.name, "refused": reason})
        log.warning("%s", reason)
        self.publish(protocol.TOPIC_EVENT, {"event": "refused", "app": record.name, "reason": reason})

    def expire(self) -> list[str]:
        """Forget embedded apps that have not reported within their lease (served apps hold none)."""
        now = time.monotonic()
        with self._lock:
            gone = [n for n, a in self._apps.items()
                    if a.embedded is not None and now - a.last_seen > a.embedded.lease_s]  # fmt: skip
            for name in gone:
                del self._apps[name]
        for name in gone:
            self.control.forget(name)
            log.info("embedded app %s stopped reporting for longer than its lease: forgotten", name)
            self.publish(protocol.TOPIC_BUDGET, {"app": name, "budget": None, "unregistered": True,
                                                 "reason": "lease expired"})  # fmt: skip
        return gone

    def _budget_changed(self, app: str) -> None:
        with self._lock:
            record = self._apps.get(app)
            budget = None if record is None or record.budget is None else record.budget.to_dict()
        self.publish(protocol.TOPIC_BUDGET, {"app": app, "budget": budget})
        # returns once the control loop has decided and applied the new point: the reply to
        # register/set_budget comes after it, and the app's next inference already runs at it
        self.control.changed(app)

    def _app(self, app: str) -> AppRecord:
        record = self._apps.get(app)
        if record is None:
            raise RequestError(protocol.UNKNOWN_APP, f"app {app!r} is not registered (send the register op first)")
        return record

    def _accuracy(self, record: AppRecord) -> float | None:
        if record.point is None:
            return None
        return self.models[record.model].accuracy(record.point.subnet)

    def app_names(self) -> list[str]:
        with self._lock:
            return sorted(self._apps)

    def close(self) -> None:
        self._sync.close()  # every acknowledged budget is on the disk before the daemon exits
        for runtime in self.models.values():
            runtime.close()


def _budget(data: Any) -> Budget:
    try:
        return Budget.from_dict(data)
    except BudgetError as exc:
        raise RequestError(protocol.BAD_BUDGET, str(exc)) from None
    except TypeError as exc:
        raise RequestError(protocol.BAD_BUDGET, f"malformed budget: {exc}") from None
