"""Which of the daemon's threads run inference and which do housekeeping, and inference first.

Inference threads go on the processing element a decision names; housekeeping threads (server,
ZeroMQ I/O, control loop, monitors) must not compete with them there, so they go elsewhere.

Placement alone does not shield a forward: the daemon's threads share one interpreter lock. A
traced forward releases it for the graph, but takes it back when the graph returns (twice per
call, measured), and each take waits up to the switch interval while another thread runs
Python. Measured on a 2-core x86 with a JSON-encoding thread on the other core: a 5.4 ms forward
took 16.7 ms at the default 5 ms switch interval and 7.7 ms at the daemon's 0.5 ms, whatever the
CPUs. :class:`InferenceFirst` removes the cause: housekeeping starts no Python work while a
forward runs (it waits, holding no lock, for at most :data:`MAX_YIELD_S`).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

#: name prefix of the daemon's inference worker threads (service.server.InferenceWorker)
INFERENCE_THREAD_PREFIX = "dynofa-infer-"


def own_tids() -> list[int]:
    """Every thread of this process."""
    try:
        return sorted(int(t) for t in os.listdir("/proc/self/task"))
    except OSError:
        return [threading.get_native_id()]


def housekeeping_tids() -> set[int]:
    """The daemon's threads that do not run inference: Python threads other than the inference
    workers (server, control loop, monitors, sync, authenticator) and libzmq's I/O threads.
    Everything else, torch's intra-op pool included, is inference."""
    tids = {
        t.native_id
        for t in threading.enumerate()
        if t.native_id is not None and not t.name.startswith(INFERENCE_THREAD_PREFIX)
    }
    for tid in own_tids():
        try:
            with open(f"/proc/self/task/{tid}/comm", encoding="utf-8") as fh:
                if fh.read().startswith("ZMQbg"):
                    tids.add(tid)
        except OSError:
            continue  # the thread ended
    return tids


def name_os_thread(name: str) -> None:
    """Give the calling thread ``name`` in the kernel too (``top -H``, ``/proc/<pid>/task/*/comm``;
    at most 15 bytes kept), so that each role can be told apart from outside the daemon."""
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/comm", "w", encoding="utf-8") as fh:
            fh.write(name.encode()[:15].decode(errors="ignore"))
    except OSError:
        pass  # no procfs: only the name shown by tools is lost


def role_cpus(platform: Any, pe: str, threads: int) -> tuple[list[int], list[int]]:
    """(CPUs for inference, CPUs for housekeeping) when inference runs on ``pe`` with ``threads``
    intra-op threads.

    Where the board has CPUs outside ``pe`` (big.LITTLE), housekeeping goes there and inference
    keeps all of ``pe``. On a one-cluster board (one ``cpu`` PE, a Jetson's CPU cluster) an
    operating point with fewer threads than ``pe`` has CPUs reserves the last ``threads`` of them
    for inference and keeps housekeeping on the others; only when inference uses every CPU do the
    two share them.
    """
    pe_cpus = sorted(platform.pe_cpus(pe))
    others = sorted(set(platform.online_cpus()) - set(pe_cpus))
    if others:
        return pe_cpus, others
    if 0 < threads < len(pe_cpus):
        return pe_cpus[-threads:], pe_cpus[:-threads]
    return pe_cpus, pe_cpus


def pin_roles(actuator: Any, platform: Any, pe: str, threads: int = 0) -> tuple[list[int], list[int]]:
    """Inference threads onto their CPUs of ``pe``, housekeeping onto the others (:func:`role_cpus`;
    ``threads`` 0: inference may use all of ``pe``), through the actuator, which records every
    thread's previous affinity and restores it at exit. Returns (inference, housekeeping) CPUs."""
    inference_cpus, housekeeping_cpus = role_cpus(platform, pe, threads)
    housekeeping = housekeeping_tids()
    actuator.pin_threads(inference_cpus, tids=[tid for tid in own_tids() if tid not in housekeeping])
    actuator.pin_threads(housekeeping_cpus, tids=sorted(housekeeping))
    return inference_cpus, housekeeping_cpus


#: the longest housekeeping waits for running forwards before it goes ahead anyway: forwards up to
#: this long are fully shielded, a longer one then shares the interpreter for its remainder (a
#: wait costs it at most a switch interval or two, small against such a forward)
MAX_YIELD_S = 0.05


#: who waits for forwards: the server's request loop and the control loop (each is counted apart, so
#: ``state`` shows which of them a forward held back, and a test can tell if either stops waiting)
Role = Literal["server", "control"]
ROLES: tuple[Role, ...] = get_args(Role)


@dataclass
class Waits:
    """How often one role waited for running forwards, and for how long in all."""

    yields: int = 0
    waited_s: float = 0.0


@dataclass
class InferenceFirst:
    """Inference before housekeeping: while a forward runs, the server and the control loop do not
    start new Python work (a request, a control step), so the forward never waits for the
    interpreter lock. Forwards may overlap (one worker per device); housekeeping waits for all.

    Control requests that arrive during a forward are answered when it ends (after at most
    ``max_wait_s``); replies to requests already handled still leave at once.
    """

    max_wait_s: float = MAX_YIELD_S
    waits: dict[Role, Waits] = field(default_factory=lambda: {role: Waits() for role in ROLES})
    _running: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _idle: threading.Event = field(default_factory=threading.Event, repr=False)

    def __post_init__(self) -> None:
        self._idle.set()

    @contextlib.contextmanager
    def forward(self) -> Iterator[None]:
        """Around one inference (its input conversion, forward and output)."""
        with self._lock:
            self._running += 1
            self._idle.clear()
        try:
            yield
        finally:
            with self._lock:
                self._running -= 1
                if not self._running:
                    self._idle.set()

    def running(self) -> bool:
        return not self._idle.is_set()

    def yield_to_inference(self, role: Role) -> None:
        """Called by housekeeping (``role``) before each piece of work: returns once no forward runs
        (or after ``max_wait_s``). Waiting holds no lock, so the forward can take the interpreter
        back at once."""
        waits = self.waits[role]  # before the idle check: an unknown role fails on every call, not only in a wait
        if self._idle.is_set():
            return
        started = time.perf_counter()
        self._idle.wait(self.max_wait_s)
        with self._lock:
            waits.yields += 1
            waits.waited_s += time.perf_counter() - started

    def to_dict(self) -> dict[str, Any]:
        """``state.daemon.inference_first``: the wait bound, and per role the waits and their total (ms)."""
        with self._lock:
            out: dict[str, Any] = {"max_wait_ms": round(self.max_wait_s * 1e3, 3)}
            for role, waits in self.waits.items():
                out[role] = {"yields": waits.yields, "waited_ms": round(waits.waited_s * 1e3, 3)}
            return out
