"""CPU wake-up latency through the kernel's PM QoS interface (``/dev/cpu_dma_latency``).

While a process holds that device open with a 32-bit value written to it (microseconds), cpuidle
keeps every CPU out of the idle states whose exit latency is larger; closing the file withdraws
the request, and so does the process's death: a crashed daemon leaves no constraint behind, so
this needs no rollback record. It is what tuned's ``latency-performance`` profile sets
(``force_latency``).

Why the daemon offers it: a served inference wakes two sleeping threads (the daemon's, then the
app's), and a forward that starts on a CPU just out of a deep idle state runs slower. Measured on
the 2-core x86 VM (haltpoll cpuidle), 224-px subnet in process: 7.1 ms back to back without a
bound against 6.0 ms with 0 us; the round trip through the daemon minus its forward, 0.77 ms
against 0.50 ms. The price is idle power (CPUs poll or stay in shallow states), which is why it
is off unless configured (``cpu_wakeup_latency_us``) and held only while apps are registered.
"""

from __future__ import annotations

import logging
import os
import struct
from typing import Any

from governors.platform.model import AVAILABLE, DEGRADED, MISSING, READ_ONLY, Capability

log = logging.getLogger(__name__)

DEVICE = "/dev/cpu_dma_latency"


class WakeupLatency:
    """The daemon's PM QoS request: held while :meth:`want` says apps are served, else released."""

    def __init__(self, root: str, limit_us: int | None) -> None:
        self.path = os.path.join(root, DEVICE.lstrip("/"))
        self.limit_us = limit_us
        self._fd: int | None = None
        self.capability = (
            Capability(MISSING, "not configured (cpu_wakeup_latency_us)", DEVICE)
            if limit_us is None
            else Capability(AVAILABLE, "", DEVICE)
        )

    @property
    def held(self) -> bool:
        return self._fd is not None

    def want(self, active: bool) -> None:
        """Hold the bound while ``active`` (apps are registered), release it otherwise. A device
        that cannot be opened or written is reported once and not tried again."""
        if active and self._fd is None and self.capability.usable:
            self._hold()
        elif not active and self._fd is not None:
            self.release()

    def _hold(self) -> None:
        assert self.limit_us is not None
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            self._give_up(MISSING, f"no {self.path} (a kernel without PM QoS?)")
            return
        except PermissionError:
            self._give_up(READ_ONLY, f"cannot open {self.path} for writing (the daemon needs root or CAP_SYS_ADMIN)")
            return
        except OSError as exc:
            self._give_up(DEGRADED, f"cannot open {self.path}: {exc.strerror}")
            return
        try:
            os.write(fd, struct.pack("=i", self.limit_us))
        except OSError as exc:
            os.close(fd)
            self._give_up(DEGRADED, f"cannot write {self.path}: {exc.strerror}")
            return
        self._fd = fd
        log.info("holding CPU wake-up latency at %d us (%s) while apps are served", self.limit_us, self.path)

    def _give_up(self, status: str, reason: str) -> None:
        self.capability = Capability(status, reason, DEVICE)
        log.warning("CPU wake-up latency bound not applied: %s", reason)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # the kernel withdraws the request with the last reference
            self._fd = None
            log.info("released the CPU wake-up latency bound")

    def to_dict(self) -> dict[str, Any]:
        return {"limit_us": self.limit_us, "held": self.held, "path": self.path, **self.capability.to_dict()}
