"""Actuators: DVFS through sysfs and task mapping through CPU affinity, with rollback.

Rules this module keeps:
- Before the first change to a cpufreq policy or devfreq device, its original governor, min,
  max (and set speed under ``userspace``) go to the state file (atomic write), so a crash
  leaves a way back; a new ``Actuator`` on the same state dir restores from a leftover file.
- A frequency is pinned with the ``userspace`` governor when the driver offers it, otherwise by
  clamping min = max in an order the kernel accepts (raise max before min when going up).
  cpufreq policies and devfreq devices go through one path: :class:`governors.dvfs.DvfsNode`
  (built per PE at start from the detected platform) sets, remembers, restores and reads back.
- What the kernel actually runs at is always read back (nvpmodel, jetson_clocks and thermal
  caps change clocks behind our back), and returned.
- A failed write (EACCES, EBUSY, EINVAL, ENOENT, EROFS) degrades that capability with a reason,
  puts the touched device back, and never raises: the caller gets the read-back value.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Concatenate, ParamSpec, TypeVar

from dynofa.errors import PlatformError
from governors.dvfs import DvfsNode, dvfs_nodes
from governors.platform.model import CpuCluster, Platform
from governors.state import SavedSetting, SavedState, StateStore, current_boot_id, default_state_dir
from governors.sysfs import Sysfs, describe_oserror

AffinitySetter = Callable[[int, Iterable[int]], None]
AffinityGetter = Callable[[int], set[int]]


@dataclass
class RestoreReport:
    """What a restore did: settings put back, and failures (path: reason)."""

    restored: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    discarded: str | None = None  # why a leftover state file was dropped instead of replayed

    @property
    def ok(self) -> bool:
        return not self.failed


def snap_to(available: Sequence[int], value: int, lo: int | None = None, hi: int | None = None) -> int:
    """The highest available frequency not above ``value`` (the lowest if ``value`` is below all).

    Without a list (e.g. intel_pstate) the value is clamped to [lo, hi].
    """
    if available:
        i = bisect.bisect_right(list(available), value)
        return available[max(0, i - 1)]
    if lo is not None:
        value = max(lo, value)
    if hi is not None:
        value = min(hi, value)
    return value


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _locked(method: Callable[Concatenate[Actuator, _P], _R]) -> Callable[Concatenate[Actuator, _P], _R]:
    """Serialise a public method: the control loop and inference workers call in from different threads."""

    @functools.wraps(method)
    def wrapper(self: Actuator, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with self._lock:
            return method(self, *args, **kwargs)

    return wrapper


class Actuator:
    """Applies DVFS and task mapping on one platform, and rolls everything back.

    ``state_dir`` holds the rollback file (default :func:`governors.state.default_state_dir`).
    ``recover=True`` restores what a previous, crashed process left there.
    """

    def __init__(
        self,
        platform: Platform,
        state_dir: str | None = None,
        *,
        recover: bool = True,
        set_affinity: AffinitySetter | None = None,
        get_affinity: AffinityGetter | None = None,
    ) -> None:
        self.platform = platform
        self.sysfs: Sysfs = platform.sysfs
        self.store = StateStore(state_dir or default_state_dir())
        self._set_affinity = set_affinity or os.sched_setaffinity
        self._get_affinity = get_affinity or os.sched_getaffinity
        self._lock = threading.RLock()
        self._state: SavedState | None = None
        self._affinity_saved: dict[int, set[int]] = {}
        self.nodes = dvfs_nodes(platform)  # per PE, built once from what detection found
        self.recovered: RestoreReport | None = None
        # A new run probes afresh: what a previous run found refused may have been fixed since.
        self.store.clear_degraded()
        if recover:
            self.recovered = self.recover()

    # -- state ---------------------------------------------------------------------------------
    @_locked
    def recover(self) -> RestoreReport | None:
        """Restore from a state file left by a process that did not restore (a crash)."""
        leftover = self.store.load()
        if leftover is None:
            return None
        if leftover.pid != os.getpid() and _pid_alive(leftover.pid) and leftover.root == self.sysfs.root:
            raise PlatformError(
                f"process {leftover.pid} holds the DVFS rollback file {self.store.path}: another dynofa daemon "
                "is running on this board; stop it first (or delete the file if that pid is not dynofa)"
            )
        if leftover.root != self.sysfs.root:
            raise PlatformError(
                f"the rollback file {self.store.path} belongs to sysfs root {leftover.root}, not "
                f"{self.sysfs.root}; use the matching --sysfs-root or another --state-dir"
            )
        boot = current_boot_id()
        if self.sysfs.is_live and leftover.boot_id and boot and leftover.boot_id != boot:
            self.store.clear()
            return RestoreReport(discarded="state file is from an earlier boot; the kernel already reset the clocks")
        self._state = leftover
        return self.restore()

    def _remember(self, node: DvfsNode | str) -> None:
        """Save a node's original settings, or a plain file's contents, (once) before its first change."""
        if self._state is None:
            self._state = SavedState(
                root=self.sysfs.root, board=self.platform.board, pid=os.getpid(), boot_id=current_boot_id()
            )
        path = node if isinstance(node, str) else node.path
        if self._state.find(path) is not None:
            return
        if isinstance(node, str):
            setting = SavedSetting(kind="value", path=node, governor=None, min=None, max=None,
                                   value=self.sysfs.try_read(node))
        else:
            setting = node.remember(self.sysfs)
        self._state.settings.append(setting)
        try:
            self.store.save(self._state)
        except PlatformError:
            # No change without a way back: forget the setting so the next call tries to save again.
            self._state.settings.remove(setting)
            if not self._state.settings:
                self._state = None
            raise

    @property
    def touched(self) -> list[str]:
        """Paths of the policies/devices changed since the last restore."""
        return [s.path for s in self._state.settings] if self._state else []

    # -- CPU DVFS ------------------------------------------------------------------------------
    def read_cluster_khz(self, cluster: str | CpuCluster) -> int | None:
        c = cluster if isinstance(cluster, CpuCluster) else self.platform.cluster(cluster)
        nodes = self.nodes.get(c.name, ())
        return nodes[0].read_cur(self.sysfs) if nodes else None

    @_locked
    def set_cluster_khz(self, cluster: str | CpuCluster, khz: int) -> int | None:
        """Pin a CPU cluster's frequency (snapped to an available one); returns the read-back kHz.

        Returns None where the frequency cannot even be read (no cpufreq). A refused write
        degrades ``dvfs:<cluster>`` and leaves the cluster as it was.
        """
        c = cluster if isinstance(cluster, CpuCluster) else self.platform.cluster(cluster)
        if int(khz) <= 0:
            raise PlatformError(f"frequency for {c.name} must be a positive number of kHz, got {khz!r}")
        cap_name = f"dvfs:{c.name}"
        cap = self.platform.capability(cap_name)
        if not cap.usable:
            return self.read_cluster_khz(c)
        target = snap_to(c.available_khz, int(khz), c.hw_min_khz, c.hw_max_khz)
        self._pin(cap_name, self.nodes.get(c.name, ()), target, cap.method.startswith("userspace"))
        return self.read_cluster_khz(c)

    def _pin(self, capability: str, nodes: Iterable[DvfsNode], target: int, userspace: bool) -> None:
        """Remember, then pin, each node; the first refused write degrades ``capability`` and stops."""
        for node in nodes:
            self._remember(node)
            try:
                node.pin(self.sysfs, target, userspace)
            except OSError as exc:
                self._fail(capability, exc, node.path)
                break

    # -- GPU DVFS ------------------------------------------------------------------------------
    def read_gpu_hz(self) -> int | None:
        nodes = self.nodes.get("gpu", ())
        return nodes[0].read_cur(self.sysfs) if nodes else None

    @_locked
    def set_gpu_hz(self, hz: int) -> int | None:
        """Pin the GPU devfreq frequency (snapped to an available one); returns the read-back Hz."""
        gpu = self.platform.gpu
        if int(hz) <= 0:
            raise PlatformError(f"GPU frequency must be a positive number of Hz, got {hz!r}")
        cap = self.platform.capability("dvfs:gpu")
        if gpu is None or gpu.devfreq is None or not cap.usable:
            return self.read_gpu_hz()
        target = snap_to(gpu.available_hz, int(hz))
        self._pin("dvfs:gpu", self.nodes.get("gpu", ()), target, cap.method.startswith("userspace"))
        return self.read_gpu_hz()

    def _fail(self, capability: str, exc: OSError, node: str) -> None:
        """Degrade a capability after a refused write and put the touched device back."""
        path = exc.filename if isinstance(exc.filename, str) else node
        reason = describe_oserror(exc, self.sysfs.target(path) if path.startswith(self.sysfs.root) else path)
        self.platform.degrade(capability, f"write refused: {reason}")
        self._persist_degraded()
        if self._state is not None:
            setting = self._state.find(node)
            if setting is not None:
                try:
                    self._restore_one(setting)
                    self._state.settings.remove(setting)
                    self._save_or_clear()
                except OSError:
                    pass  # left in the state file; restore() retries and reports it

    def _persist_degraded(self) -> None:
        degraded = {k: v.reason for k, v in self.platform.capabilities().items() if v.status == "degraded"}
        self.store.save_degraded(self.sysfs.root, degraded)

    # -- task mapping --------------------------------------------------------------------------
    @_locked
    def pin_threads(self, cpus: Iterable[int], tids: Iterable[int] | None = None) -> list[int]:
        """Set the CPU affinity of ``tids`` (default: every thread of this process).

        Returns the affinity read back from the first thread. Threads created later inherit
        the affinity of their creator, so pin before starting a thread pool, or pass its tids.
        """
        wanted = sorted(set(int(c) for c in cpus))
        known = set(self.platform.online_cpus())
        if not wanted or not set(wanted) <= known:
            raise PlatformError(
                f"CPUs {wanted} are not a non-empty subset of this platform's online CPUs {sorted(known)}"
            )
        threads = list(tids) if tids is not None else _own_tids()
        cap = self.platform.capability("task-mapping")
        if not cap.usable or not threads:
            return sorted(self._get_affinity(0))
        for tid in threads:
            try:
                if tid not in self._affinity_saved:
                    self._affinity_saved[tid] = set(self._get_affinity(tid))
                self._set_affinity(tid, wanted)
            except ProcessLookupError:
                self._affinity_saved.pop(tid, None)  # the thread ended
            except OSError as exc:
                self.platform.degrade("task-mapping", f"sched_setaffinity({tid}, {wanted}) refused: {exc}")
                self._persist_degraded()
                break
        try:
            return sorted(self._get_affinity(threads[0]))
        except OSError:
            return []

    def pin_pe(self, pe: str, tids: Iterable[int] | None = None) -> list[int]:
        """Pin threads to the CPUs of a processing element (for ``gpu``: its feeding cluster)."""
        return self.pin_threads(self.platform.pe_cpus(pe), tids)

    def threads_for(self, pe: str) -> int:
        """How many inference threads suit a PE: its CPUs that this process may use (1 for the GPU)."""
        if pe == "gpu":
            self.platform.pe_cpus(pe)  # validates the PE
            return 1
        cpus = set(self.platform.pe_cpus(pe))
        if self.sysfs.is_live:
            with contextlib.suppress(OSError):
                cpus &= set(self._get_affinity(0)) | set(self._affinity_saved.get(0, set()))
        return max(1, len(cpus))

    # -- rollback ------------------------------------------------------------------------------
    def _restore_one(self, s: SavedSetting) -> None:
        if s.kind == "value":
            if s.value is not None and self.sysfs.try_read(s.path) != s.value:
                self.sysfs.write(s.path, s.value)
            return
        DvfsNode(s.kind, s.path).restore(self.sysfs, s)

    # -- plain sysfs files (sensor enables) -------------------------------------------------------
    @_locked
    def write_value(self, path: str, value: str) -> None:
        """Write a sysfs file through the rollback record (its original contents are saved first).

        Raises OSError when the kernel refuses; the record is then put back at once.
        """
        self._remember(path)
        try:
            self.sysfs.write(path, value)
        except OSError:
            self.restore_path(path)
            raise

    @_locked
    def restore_path(self, path: str) -> None:
        """Put one remembered file or node back now and drop it from the record (errors are ignored:
        the record then keeps it and :meth:`restore` retries)."""
        setting = self._state.find(path) if self._state is not None else None
        if setting is None:
            return
        with contextlib.suppress(OSError):
            self._restore_one(setting)
            assert self._state is not None
            self._state.settings.remove(setting)
            self._save_or_clear()

    def _save_or_clear(self) -> None:
        if self._state is not None and self._state.settings:
            self.store.save(self._state)
        else:
            self.store.clear()
            self._state = None

    @_locked
    def restore(self) -> RestoreReport:
        """Put every touched device back as it was (most recent first) and undo pinning.

        Settings that cannot be restored stay in the state file, so a later call can retry.
        """
        report = RestoreReport()
        if self._state is not None:
            for s in reversed(list(self._state.settings)):
                try:
                    self._restore_one(s)
                    self._state.settings.remove(s)
                    report.restored.append(s.path)
                except OSError as exc:
                    report.failed[s.path] = describe_oserror(exc, s.path)
            self._save_or_clear()
        for tid, cpus in list(self._affinity_saved.items()):
            with contextlib.suppress(OSError):  # a thread that ended has no affinity to restore
                self._set_affinity(tid, cpus)
            del self._affinity_saved[tid]
        return report

    def close(self) -> RestoreReport:
        return self.restore()

    def __enter__(self) -> Actuator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()


def _own_tids() -> list[int]:
    try:
        return sorted(int(t) for t in os.listdir("/proc/self/task"))
    except OSError:
        return [0]


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs and looks like a dynofa daemon (a Python process), not a reused pid."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmdline = fh.read().lower()
    except OSError:
        return True  # cannot tell: assume it is the owner, the message explains what to check
    if not cmdline:
        return True  # starting up or a zombie: cannot tell, assume the owner
    return b"dynofa" in cmdline or b"python" in cmdline
