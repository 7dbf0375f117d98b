"""Monitors: one cheap snapshot of load, frequencies, memory, temperatures, power and energy.

CPU utilisation is reported per cluster *excluding the daemon's own inference threads*: the
policy must see contention from other processes, not the load it causes itself. Register those
threads (``register_threads``); their CPU time (``/proc/<pid>/task/<tid>/stat``) is subtracted
from the cluster of the CPU they last ran on.

Every file is read through :class:`governors.sysfs.CachedReader` (descriptors kept open), so a
snapshot costs tens of microseconds; ``benchmarks/monitors.py`` measures it per board.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from governors.dvfs import dvfs_nodes
from governors.platform.jtop_telemetry import JtopTelemetry
from governors.platform.model import Platform, PowerRail
from governors.sysfs import CachedReader, describe_oserror

PROC_STAT = "/proc/stat"
MEMINFO = "/proc/meminfo"


@dataclass
class Snapshot:
    """One sample. Utilisations are fractions 0..1; ``gpu_load`` is percent; power in W, energy in J."""

    t: float  # time.monotonic() of the sample
    interval_s: float  # time since the previous sample (0 for the first)
    cpu_util: dict[str, float | None] = field(default_factory=dict)  # others' load per cluster
    cpu_util_total: dict[str, float | None] = field(default_factory=dict)  # including our threads
    cpu_khz: dict[str, int | None] = field(default_factory=dict)
    cpu_max_khz: dict[str, int | None] = field(default_factory=dict)  # current ceiling (scaling_max_freq)
    gpu_load: float | None = None
    gpu_hz: int | None = None
    gpu_max_hz: int | None = None
    # PEs whose frequency ceiling is below the hardware maximum (thermal cap, nvpmodel), unless
    # floor == ceiling, which is a deliberate pin (dynofa's clamp, jetson_clocks), not a cap.
    throttled: list[str] = field(default_factory=list)
    mem_total_bytes: int | None = None
    mem_available_bytes: int | None = None
    temperatures_c: dict[str, float] = field(default_factory=dict)
    rails_w: dict[str, float] = field(default_factory=dict)
    power_w: float | None = None
    energy_j: float = 0.0  # integrated since the monitor started
    rails_energy_j: dict[str, float] = field(default_factory=dict)  # per rail, since the monitor started

    @property
    def max_temperature_c(self) -> float | None:
        return max(self.temperatures_c.values()) if self.temperatures_c else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["max_temperature_c"] = self.max_temperature_c
        return d


def parse_proc_stat(text: str) -> dict[int, tuple[int, int]]:
    """Per-CPU (busy, total) jiffies from /proc/stat; guest time is already inside user."""
    out: dict[int, tuple[int, int]] = {}
    for line in text.splitlines():
        if not line.startswith("cpu") or line.startswith("cpu "):
            continue
        parts = line.split()
        try:
            cpu = int(parts[0][3:])
            vals = [int(v) for v in parts[1:9]]
        except ValueError:
            continue
        total = sum(vals)
        idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
        out[cpu] = (total - idle, total)
    return out


def parse_task_stat(text: str) -> tuple[int, int]:
    """(utime + stime jiffies, last CPU) from /proc/<pid>/task/<tid>/stat."""
    fields = text.rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state): utime=14, stime=15, processor=39 in proc(5) numbering.
    return int(fields[11]) + int(fields[12]), int(fields[36])


def _meminfo(text: str) -> tuple[int | None, int | None]:
    total = avail = None
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            total = int(line.split()[1]) * 1024
        elif line.startswith("MemAvailable:"):
            avail = int(line.split()[1]) * 1024
            break
    return total, avail


class Monitor:
    """Samples a platform. Call ``sample`` from one thread; thread registration is safe from any."""

    def __init__(
        self,
        platform: Platform,
        exclude_tids: Iterable[int] = (),
        pid: int | None = None,
        telemetry: JtopTelemetry | None = None,
        writer: Any = None,
    ) -> None:
        """``telemetry``: a jtop client (see :func:`governors.platform.jtop_telemetry.open_telemetry`)
        to take rails, temperatures and GPU load from instead of sysfs; frequencies and CPU load
        always come from sysfs and /proc. ``writer``: the :class:`governors.actuators.Actuator`
        whose rollback record the sensor-enable writes go through (None: written directly)."""
        self.platform = platform
        self.writer = writer
        self.telemetry = telemetry
        self.pid = os.getpid() if pid is None else pid
        self._reader = CachedReader(platform.sysfs)
        self._nodes = dvfs_nodes(platform)  # the same DVFS nodes the actuator sets (read back here)
        self._lock = threading.Lock()
        self._tids: set[int] = set(exclude_tids)
        self._task_prev: dict[int, int] = {}
        self._cpu_prev: dict[int, tuple[int, int]] | None = None
        self._energy_prev: dict[str, int] = {}
        self._last_t: float | None = None
        self._last_power: float | None = None
        self.energy_j = 0.0
        self._rail_energy: dict[str, float] = {}
        self._rail_last_w: dict[str, float] = {}
        self._enabled_sensors: list[str] = []
        self._cpu_cluster = {cpu: c.name for c in platform.clusters for cpu in c.cpus}
        self._enable_ina231()
        self._rails = [r for r in platform.rails if platform.sysfs.access(_rail_path(r))]
        self._prime()

    # -- own threads -------------------------------------------------------------------------
    def register_threads(self, tids: Iterable[int]) -> None:
        """Exclude these threads' CPU time from utilisation (the daemon's inference threads).

        Their CPU time is counted from now: the baseline is read at registration. Safe to call
        from any thread (the inference workers register themselves): it reads with a one-shot
        open, never through the sampler's kept-open descriptors.
        """
        with self._lock:
            new = [t for t in tids if t not in self._tids]
        baselines: dict[int, int] = {}
        for tid in new:
            text = self.platform.sysfs.try_read(f"/proc/{self.pid}/task/{tid}/stat")
            if text:
                with contextlib.suppress(IndexError, ValueError):
                    baselines[tid] = parse_task_stat(text)[0]
        with self._lock:
            self._tids.update(new)
            for tid, jiffies in baselines.items():
                self._task_prev.setdefault(tid, jiffies)

    def register_current_thread(self) -> None:
        self.register_threads([threading.get_native_id()])

    def unregister_threads(self, tids: Iterable[int]) -> None:
        with self._lock:
            for tid in tids:
                self._tids.discard(tid)
                self._task_prev.pop(tid, None)

    @property
    def excluded_tids(self) -> set[int]:
        with self._lock:
            return set(self._tids)

    # -- sampling ----------------------------------------------------------------------------
    def _prime(self) -> None:
        self._cpu_prev = self._read_cpu()
        self._own_deltas()
        for rail in self._rails:
            if rail.kind == "rapl" and rail.energy_path:
                v = self._reader.try_int(rail.energy_path)
                if v is not None:
                    self._energy_prev[rail.name] = v
        self._last_t = time.monotonic()

    def _read_cpu(self) -> dict[int, tuple[int, int]] | None:
        text = self._reader.try_read(PROC_STAT)
        return parse_proc_stat(text) if text else None

    def _own_deltas(self) -> dict[str, int]:
        """CPU jiffies our registered threads used since the last call, per cluster."""
        per_cluster: dict[str, int] = {}
        with self._lock:
            tids = list(self._tids)
        gone = []
        now: dict[int, tuple[int, int]] = {}
        for tid in tids:
            path = f"/proc/{self.pid}/task/{tid}/stat"
            text = self._reader.try_read(path)
            if not text:
                gone.append(tid)
                continue
            with contextlib.suppress(IndexError, ValueError):
                now[tid] = parse_task_stat(text)
        with self._lock:
            for tid, (jiffies, cpu) in now.items():
                prev = self._task_prev.get(tid)
                self._task_prev[tid] = jiffies
                cluster = self._cpu_cluster.get(cpu)
                if prev is not None and cluster is not None:
                    per_cluster[cluster] = per_cluster.get(cluster, 0) + max(0, jiffies - prev)
        if gone:
            self.unregister_threads(gone)
            for tid in gone:
                self._reader.forget(f"/proc/{self.pid}/task/{tid}/stat")
        return per_cluster

    def sample(self) -> Snapshot:
        now = time.monotonic()
        interval = now - self._last_t if self._last_t is not None else 0.0
        self._last_t = now
        snap = Snapshot(t=now, interval_s=interval)
        self._sample_cpu(snap)
        self._sample_gpu(snap)
        self._sample_memory(snap)
        reading = self.telemetry.read() if self.telemetry is not None else None
        if reading is None:
            self._sample_thermal(snap)
            self._sample_power(snap, interval)
        else:
            snap.temperatures_c = dict(reading.temperatures_c)
            snap.rails_w = dict(reading.rails_w)
            if reading.gpu_load is not None:
                snap.gpu_load = reading.gpu_load
            total = reading.power_w if reading.power_w is not None else (sum(reading.rails_w.values()) or None)
            self._integrate(snap, total, interval, counters=False)
        return snap

    def _sample_cpu(self, snap: Snapshot) -> None:
        reader = self._reader
        for c in self.platform.clusters:
            nodes = self._nodes.get(c.name, ())
            if not nodes:
                snap.cpu_khz[c.name] = snap.cpu_max_khz[c.name] = None
                continue
            snap.cpu_khz[c.name] = nodes[0].read_cur(reader)
            floor, ceiling = nodes[0].read_limits(reader)
            snap.cpu_max_khz[c.name] = ceiling
            if _capped(ceiling, floor, c.hw_max_khz):
                snap.throttled.append(c.name)
        cur = self._read_cpu()
        own = self._own_deltas()
        prev, self._cpu_prev = self._cpu_prev, cur
        for c in self.platform.clusters:
            if cur is None or prev is None:
                snap.cpu_util[c.name] = snap.cpu_util_total[c.name] = None
                continue
            busy = total = 0
            for cpu in c.cpus:
                if cpu in cur and cpu in prev:
                    busy += cur[cpu][0] - prev[cpu][0]
                    total += cur[cpu][1] - prev[cpu][1]
            if total <= 0:
                snap.cpu_util[c.name] = snap.cpu_util_total[c.name] = None
                continue
            snap.cpu_util_total[c.name] = min(1.0, busy / total)
            snap.cpu_util[c.name] = min(1.0, max(0, busy - own.get(c.name, 0)) / total)

    def _sample_gpu(self, snap: Snapshot) -> None:
        gpu = self.platform.gpu
        if gpu is None:
            return
        for node in self._nodes.get("gpu", ()):
            snap.gpu_hz = node.read_cur(self._reader)
            floor, snap.gpu_max_hz = node.read_limits(self._reader)
            hw_max = gpu.available_hz[-1] if gpu.available_hz else None
            if _capped(snap.gpu_max_hz, floor, hw_max):
                snap.throttled.append("gpu" if gpu.cuda else gpu.name)
        if gpu.load_path:
            raw = self._reader.try_int(gpu.load_path)
            snap.gpu_load = None if raw is None else raw * gpu.load_scale

    def _sample_memory(self, snap: Snapshot) -> None:
        text = self._reader.try_read(MEMINFO)
        if text:
            snap.mem_total_bytes, snap.mem_available_bytes = _meminfo(text)

    def _sample_thermal(self, snap: Snapshot) -> None:
        for zone in self.platform.thermal_zones:
            v = self._reader.try_int(zone.path)
            if v is not None and v > -200000:  # -256 °C marks an offline sensor on Jetson
                snap.temperatures_c[zone.name] = v / 1000.0

    def _rail_power(self, rail: PowerRail, interval: float) -> float | None:
        r = self._reader
        if rail.kind == "ina3221-hwmon":
            mv = r.try_int(rail.voltage_path or "")
            ma = r.try_int(rail.current_path or "")
            return None if mv is None or ma is None else mv * ma / 1e6
        if rail.kind == "ina3221-iio":
            mw = r.try_int(rail.power_path or "")
            return None if mw is None else mw / 1e3
        if rail.kind == "ina231-hardkernel":
            return r.try_float(rail.power_path or "")
        if rail.kind == "ina231-hwmon":
            uw = r.try_int(rail.power_path or "")
            return None if uw is None else uw / 1e6
        if rail.kind == "rapl":
            return self._rapl_power(rail, interval)
        return None

    def _rapl_power(self, rail: PowerRail, interval: float) -> float | None:
        v = self._reader.try_int(rail.energy_path or "")
        if v is None:
            return None
        prev = self._energy_prev.get(rail.name)
        self._energy_prev[rail.name] = v
        if prev is None or interval <= 0:
            return None
        delta = v - prev
        if delta < 0:  # the counter wrapped at max_energy_range_uj
            delta += rail.max_energy_uj or 0
            if delta < 0:
                return None
        return delta / 1e6 / interval

    def _sample_power(self, snap: Snapshot, interval: float) -> None:
        total_rail = None
        summed = 0.0
        any_summed = False
        for rail in self._rails:
            w = self._rail_power(rail, interval)
            if w is None:
                continue
            snap.rails_w[rail.name] = w
            if interval > 0:
                prev_w = self._rail_last_w.get(rail.name, w)
                mean_w = w if rail.kind == "rapl" else (prev_w + w) / 2
                self._rail_energy[rail.name] = self._rail_energy.get(rail.name, 0.0) + mean_w * interval
            self._rail_last_w[rail.name] = w
            if rail.is_total:
                total_rail = w
            elif rail.in_sum:
                summed += w
                any_summed = True
        snap.rails_energy_j = dict(self._rail_energy)
        total = total_rail if total_rail is not None else (summed if any_summed else None)
        self._integrate(
            snap, total, interval, counters=bool(self._rails) and all(r.kind == "rapl" for r in self._rails)
        )

    def _integrate(self, snap: Snapshot, power_w: float | None, interval: float, counters: bool) -> None:
        """Energy: trapezoids between samples; with counters (RAPL) the interval's mean power is exact."""
        snap.power_w = power_w
        if power_w is not None and interval > 0:
            prev = self._last_power if self._last_power is not None else power_w
            self.energy_j += (power_w if counters else (prev + power_w) / 2) * interval
        self._last_power = power_w
        snap.energy_j = self.energy_j

    # -- INA231 enable (hardkernel driver reads 0 until enabled) ----------------------------------
    def _enable_ina231(self) -> None:
        sysfs = self.platform.sysfs
        for rail in self.platform.rails:
            if rail.enable_path and sysfs.try_read(rail.enable_path) == "0":
                try:
                    if self.writer is not None:
                        self.writer.write_value(rail.enable_path, "1")  # a crash leaves a way back
                    else:
                        sysfs.write(rail.enable_path, "1")
                    self._enabled_sensors.append(rail.enable_path)
                except OSError as exc:
                    self.platform.degrade("power", f"cannot enable INA231: {describe_oserror(exc, rail.enable_path)}")

    def close(self) -> None:
        """Disable the sensors this monitor enabled and close its descriptors."""
        for path in self._enabled_sensors:
            if self.writer is not None:
                self.writer.restore_path(path)
                continue
            with contextlib.suppress(OSError):
                self.platform.sysfs.write(path, "0")
        self._enabled_sensors.clear()
        self._reader.close()
        if self.telemetry is not None:
            self.telemetry.close()

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _capped(ceiling: int | None, floor: int | None, hw_max: int | None) -> bool:
    return ceiling is not None and hw_max is not None and ceiling < hw_max and floor != ceiling


def _rail_path(rail: PowerRail) -> str:
    return rail.power_path or rail.energy_path or rail.voltage_path or ""
