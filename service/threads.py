"""Which of the daemon's threads run inference and which do housekeeping (for task mapping).

Inference threads go on the processing element a decision names; housekeeping threads (server,
ZeroMQ I/O, control loop, monitors) must not compete with them there, so they go elsewhere.
"""

from __future__ import annotations

import os
import threading
from typing import Any

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


def pin_roles(actuator: Any, platform: Any, pe: str) -> None:
    """Inference threads onto ``pe``'s CPUs, housekeeping onto the others (through the actuator,
    which records every thread's previous affinity and restores it at exit)."""
    housekeeping = housekeeping_tids()
    actuator.pin_pe(pe, tids=[tid for tid in own_tids() if tid not in housekeeping])
    # a one-cluster board has no other CPUs: housekeeping shares the PE's. It then costs the forward
    # CPU time but no stalls (the traced forward runs without the GIL); elsewhere it leaves the PE.
    others = sorted(set(platform.online_cpus()) - set(platform.pe_cpus(pe)))
    actuator.pin_threads(others or platform.online_cpus(), tids=sorted(housekeeping))
