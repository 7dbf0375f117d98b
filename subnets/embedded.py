"""The embedded runtime: the app hosts its weight-shared pool, the daemon chooses its operating point.

For apps whose frames and weights must stay in their own process (GPU pipelines, latency-critical
loops) — the Android "performance hint session" model::

    from subnets.embedded import EmbeddedRuntime

    with EmbeddedRuntime.from_catalog("camera", "catalog.json", budget={"latency_ms": 30}) as rt:
        while True:
            result = rt.infer(frame)          # a torch tensor or numpy array, NCHW
            result.output, result.subnet

``infer`` runs in the calling thread on the app's own :class:`~subnets.pool.SubnetPool` through a
:class:`~subnets.pool.SubnetHandle`, the same reference swap the daemon uses for its served apps.
The daemon pushes each decided point on the telemetry topic ``decision/<app>/``; a background
*agent* thread receives it and hands it over by one reference assignment, and the next ``infer``
swaps the handle before it runs: no round trip per inference, at most the inference in flight runs
on the old point. The agent also reports the observed latencies in batches (which renews the
app's lease), re-registers by itself when the daemon restarted (the app keeps its last point in
the meantime), and refuses a point for a subnet this pool lacks (``last_error``, and the daemon
is told). The protocol is in ``docs/protocol.md`` ("Embedded apps").

This module lives in ``subnets/`` because it runs a pool (torch); it speaks to the daemon through
the torch-free :mod:`dynofa.client`, which may not import it (``dynofa`` imports nothing above it).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dynofa import protocol
from dynofa.client import Client, Telemetry, default_endpoint, telemetry_endpoint_for
from dynofa.errors import DynofaError
from dynofa.operating_point import OperatingPoint
from dynofa.protocol import RemoteError
from subnets.pool import SubnetPool

log = logging.getLogger(__name__)

__all__ = ["Decision", "EmbeddedResult", "EmbeddedRuntime"]


@dataclass(frozen=True)
class Decision:
    """An operating point the daemon decided for this app, as the agent hands it to ``infer``."""

    epoch: float  # the daemon instance that decided it (a restarted daemon numbers from 0 again)
    seq: int
    point: OperatingPoint
    cpus: tuple[int, ...] = ()  # the PE's CPUs (empty: leave the affinity alone)


@dataclass(frozen=True)
class EmbeddedResult:
    output: Tensor
    subnet: str  # the subnet that computed ``output``
    pe: str
    latency_ms: float  # the forward pass
    seq: int  # the decision it ran at (-1: the app's own start point, before any decision)


class EmbeddedRuntime:
    """An app's own pool, steered by the daemon (see the module docstring)."""

    def __init__(
        self,
        app: str,
        pool: SubnetPool,
        *,
        model: str | None = None,
        budget: Mapping[str, Any] | None = None,
        pes: Sequence[str] | None = None,
        endpoint: str | None = None,
        telemetry: str | None = None,
        lease_s: float = protocol.DEFAULT_LEASE_S,
        report_period_s: float = 0.2,
        timeout_s: float = 2.0,
        token: str | None = None,
        pin_threads: bool = True,
    ) -> None:
        self.app = protocol.app_name(app)
        self.pool = pool
        self.model = model
        self.budget = dict(budget) if budget is not None else None
        self.pes = list(pes) if pes else None
        self.lease_s = protocol.lease(lease_s, "lease_s")
        self.report_period_s = min(report_period_s, self.lease_s / 3)  # renewals well within the lease
        self.pin_threads = pin_threads
        self.last_error: str | None = None  # the last refused decision or lost contact, for the app to show
        self.registered = False
        self._handle = pool.handle()
        start_pe = (self.pes or ["gpu" if pool.device.type == "cuda" else "cpu"])[0]
        self._current = Decision(epoch=0.0, seq=-1, point=OperatingPoint(subnet=self._handle.active, pe=start_pe))
        self._wanted = self._current  # set by the agent; ``infer`` applies it when it is not ``_current``
        self._samples: collections.deque[tuple[str, str, float]] = collections.deque(maxlen=protocol.MAX_SAMPLES)
        self._refused: dict[str, Any] | None = None  # a refusal the next report tells the daemon about
        self._lock = threading.Lock()  # the agent's decision state (the inference thread never takes it)
        # what the app's process had before the first decision changed it, put back on close:
        # torch's intra-op threads, and (thread id, CPUs) of the inference thread we pinned
        self._saved_threads: int | None = None
        self._saved_affinity: tuple[int, set[int]] | None = None
        endpoint = endpoint or default_endpoint()
        self._client = Client(endpoint, timeout_s=timeout_s, retries=0)
        if token is not None:
            self._client.tokens[self.app] = token
        self._telemetry = Telemetry(telemetry or telemetry_endpoint_for(endpoint),
                                    topics=(protocol.decision_topic(self.app),))  # fmt: skip
        self._stop = threading.Event()
        self._register()  # at once when the daemon runs; else the agent keeps trying
        self._agent = threading.Thread(target=self._run, name=f"dynofa-embedded-{self.app}", daemon=True)
        self._agent.start()

    @classmethod
    def from_catalog(
        cls,
        app: str,
        catalog: Any,
        device: str = "cpu",
        weights: str | os.PathLike[str] | None = None,
        ids: Iterable[str] | None = None,
        **options: Any,
    ) -> EmbeddedRuntime:
        """A runtime over a pool of ``catalog``'s subnets (a :class:`~dynofa.catalog.Catalog` or its path);
        the daemon must serve the same catalog (``model`` names it when it is not the default model)."""
        from dynofa.catalog import load_catalog

        if isinstance(catalog, (str, Path)):
            catalog = load_catalog(Path(catalog))
        pool = SubnetPool.from_catalog(catalog, weights=weights, device=device, ids=ids)
        try:
            return cls(app, pool, **options)
        except BaseException:
            pool.close()
            raise

    # the app's side -------------------------------------------------------------------------
    @property
    def point(self) -> OperatingPoint:
        """The operating point the next inference runs at (once it applied a pending decision)."""
        return self._wanted.point

    @property
    def subnets(self) -> list[str]:
        return self.pool.ids

    def infer(self, x: Tensor | np.ndarray) -> EmbeddedResult:
        """One inference at the daemon's latest decision (resized to the subnet's resolution)."""
        wanted = self._wanted  # one read: the agent may replace it at any time
        if wanted is not self._current:
            self._apply(wanted)
        tensor = torch.from_numpy(x) if isinstance(x, np.ndarray) else x
        result = self._handle.infer(tensor, resize=True)
        pe = self._current.point.pe
        self._samples.append((result.subnet, pe, result.latency_ms))  # the agent reports them in batches
        return EmbeddedResult(result.output, result.subnet, pe, result.latency_ms, self._current.seq)

    def _apply(self, decision: Decision) -> None:
        """Between two inferences, on the inference thread: the reference swap, threads, affinity."""
        self._handle.switch(decision.point.subnet)  # the agent checked that the pool has it
        threads = max(1, decision.point.threads)
        if threads != torch.get_num_threads():
            if self._saved_threads is None:
                self._saved_threads = torch.get_num_threads()
            torch.set_num_threads(threads)
        if self.pin_threads and decision.cpus and decision.cpus != self._current.cpus:
            try:
                if self._saved_affinity is None:
                    self._saved_affinity = (threading.get_native_id(), set(os.sched_getaffinity(0)))
                os.sched_setaffinity(0, decision.cpus)  # this (inference) thread onto the PE's CPUs
            except (AttributeError, OSError) as exc:
                log.warning("embedded app %s: cannot run on CPUs %s: %s", self.app, list(decision.cpus), exc)
        self._current = decision

    def close(self) -> None:
        """Stop the agent, send the last samples and unregister (best effort: the lease ends it anyway)."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._agent.join(timeout=5.0)
        if self.registered:
            try:
                self._report()
                self._client.unregister(self.app)
            except DynofaError as exc:
                log.debug("embedded app %s: unregister failed: %s", self.app, exc)
        self._client.close()
        self._telemetry.close()
        self.pool.close()
        self._restore_process()

    def _restore_process(self) -> None:
        """Leave the app's process as it was: torch's thread count and the pinned thread's CPUs."""
        if self._saved_threads is not None:
            torch.set_num_threads(self._saved_threads)
        if self._saved_affinity is not None:
            tid, cpus = self._saved_affinity
            with contextlib.suppress(OSError):  # the thread may have ended since
                os.sched_setaffinity(tid, cpus)

    def __enter__(self) -> EmbeddedRuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # the agent ------------------------------------------------------------------------------
    def _run(self) -> None:
        next_report = time.monotonic() + self.report_period_s
        while not self._stop.is_set():
            item = self._telemetry.receive(max(0.0, next_report - time.monotonic()))
            while item is not None:
                self._on_push(item[1])
                item = self._telemetry.receive(0.0)
            if time.monotonic() >= next_report:
                next_report = time.monotonic() + self.report_period_s
                self._report()

    def _on_push(self, message: dict[str, Any]) -> None:
        if message.get("app") != self.app:
            return
        if "refused" in message:  # the daemon would not give us a point our pool cannot run
            self.last_error = f"the daemon refused a decision: {message['refused']}"
            log.error("embedded app %s: %s", self.app, self.last_error)
            return
        self._offer(message)

    def _offer(self, message: Mapping[str, Any] | None) -> None:
        """Take a decision (pushed, or in a reply) when it is newer than ours: a later number from the
        same daemon, or any from another daemon instance (a restarted daemon numbers from 0 again)."""
        if not message:
            return
        try:
            decision = Decision(float(message["epoch"]), int(message["seq"]),
                                OperatingPoint.from_dict(dict(message["point"])),
                                tuple(int(c) for c in message.get("cpus") or ()))  # fmt: skip
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("embedded app %s: malformed decision %r: %s", self.app, message, exc)
            return
        with self._lock:
            have = self._wanted
            if decision.epoch == have.epoch and decision.seq <= have.seq:
                return
            if decision.point.subnet not in self.pool.ids:
                self.last_error = (
                    f"refused decision {decision.seq}: subnet {decision.point.subnet!r} is not in this app's pool "
                    f"({', '.join(self.pool.ids)}); staying at {have.point.subnet}"
                )
                log.error("embedded app %s: %s", self.app, self.last_error)
                self._refused = {"seq": decision.seq, "subnet": decision.point.subnet, "reason": self.last_error}
                return
            self._wanted = decision  # the hand-over: ``infer`` swaps the handle before its next forward

    def _register(self) -> None:
        try:
            reply = self._client.call(
                "register_embedded", app=self.app, subnets=self.pool.ids, model=self.model, budget=self.budget,
                pes=self.pes, lease_s=self.lease_s, point=self._wanted.point.to_dict(),
            )  # fmt: skip
        except DynofaError as exc:
            self._lost(exc)
            return
        self.registered = True
        if self.last_error is not None and self.last_error.startswith("lost the daemon"):
            self.last_error = None
        self._offer(reply.get("decision"))

    def _report(self) -> None:
        if not self.registered:
            self._register()
            if not self.registered:
                return
        batch: list[tuple[str, str, float]] = []
        while self._samples and len(batch) < protocol.MAX_SAMPLES:
            batch.append(self._samples.popleft())
        refused, self._refused = self._refused, None
        try:
            reply = self._client.call("report", app=self.app, samples=[list(b) for b in batch],
                                      seq=max(0, self._current.seq), refused=refused)  # fmt: skip
        except RemoteError as exc:
            if exc.code == protocol.UNKNOWN_APP:  # the daemon restarted, or our lease ran out: register again
                log.info("embedded app %s: the daemon forgot this app; registering again at %s", self.app,
                         self._current.point.subnet)  # fmt: skip
                self.registered = False
                self._register()
            elif exc.code == protocol.SHUTTING_DOWN:  # it will be back (or not): as if it were gone already
                self._samples.extendleft(reversed(batch))
                self._lost(exc)
            else:
                self.last_error = f"report refused: {exc}"
                log.warning("embedded app %s: %s", self.app, self.last_error)
            return
        except DynofaError as exc:
            self._samples.extendleft(reversed(batch))  # kept (bounded) for the next report
            self._lost(exc)
            return
        self._offer(reply.get("decision"))

    def _lost(self, exc: Exception) -> None:
        message = f"lost the daemon ({exc}); running on at {self._current.point.subnet}"
        if self.last_error != message:
            log.info("embedded app %s: %s", self.app, message)
        self.last_error = message
        self.registered = False
        self._client.close()  # a REQ socket that timed out is stuck: the next call opens a new one
