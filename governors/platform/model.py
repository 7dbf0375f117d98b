"""Records describing a detected platform: processing elements, rails, thermal zones, capabilities."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from dynofa.errors import PlatformError
from governors.sysfs import Sysfs

AVAILABLE = "available"
READ_ONLY = "read-only"
MISSING = "missing"
DEGRADED = "degraded"  # was available, then a write failed at run time

CPUFREQ_DIR = "/sys/devices/system/cpu/cpufreq"


@dataclass
class CpuCluster:
    """A set of CPUs clocked together (one cpufreq policy, or identical policies grouped)."""

    name: str
    cpus: list[int]
    policies: list[str] = field(default_factory=list)  # target paths of cpufreq policy dirs
    available_khz: list[int] = field(default_factory=list)
    governors: list[str] = field(default_factory=list)
    governor: str | None = None
    min_khz: int | None = None  # scaling limits at detection time
    max_khz: int | None = None
    cur_khz: int | None = None
    hw_min_khz: int | None = None
    hw_max_khz: int | None = None
    core: str | None = None
    driver: str | None = None
    online: list[int] = field(default_factory=list)  # CPUs online at detection (nvpmodel may turn some off)
    related_known: bool = field(default=True, repr=False)  # False when related_cpus was unreadable

    @property
    def policy(self) -> str | None:
        return self.policies[0] if self.policies else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        del d["related_known"]
        return d


@dataclass
class Gpu:
    """A GPU with its devfreq node; ``cuda`` says whether inference can run on it (Jetson)."""

    name: str
    devfreq: str | None  # target path of the devfreq dir
    available_hz: list[int] = field(default_factory=list)
    governors: list[str] = field(default_factory=list)
    governor: str | None = None
    min_hz: int | None = None
    max_hz: int | None = None
    cur_hz: int | None = None
    load_path: str | None = None  # 0..1000 (Jetson)
    load_scale: float = 0.1  # multiply the raw value to get percent
    device: str | None = None  # target path of the GPU device dir
    cuda: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PowerRail:
    """One power measurement channel; ``kind`` says how to read it.

    kinds: ``ina3221-hwmon`` (mV, mA), ``ina3221-iio`` (mW), ``ina231-hardkernel`` (``sensor_W``, W),
    ``ina231-hwmon`` (µW), ``rapl`` (energy counter, µJ).
    """

    name: str
    kind: str
    power_path: str | None = None
    voltage_path: str | None = None
    current_path: str | None = None
    energy_path: str | None = None
    max_energy_uj: int | None = None
    enable_path: str | None = None
    device: str | None = None
    is_total: bool = False  # this rail measures the whole board (VDD_IN, POM_5V_IN)
    in_sum: bool = True  # counted when summing rails into a total (False for RAPL sub-zones)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ThermalZone:
    name: str
    path: str  # target path of the zone's temp file (m°C)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Capability:
    status: str  # available | read-only | missing | degraded
    reason: str = ""
    method: str = ""

    @property
    def usable(self) -> bool:
        return self.status == AVAILABLE

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Platform:
    """What detection found, plus the sysfs layer it was found through."""

    board: str
    model: str
    sysfs: Sysfs
    clusters: list[CpuCluster] = field(default_factory=list)
    gpu: Gpu | None = None
    rails: list[PowerRail] = field(default_factory=list)
    thermal_zones: list[ThermalZone] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)  # board extras: nvpmodel, jetson_clocks, jtop, soc
    _caps: dict[str, Capability] = field(default_factory=dict, repr=False)

    @property
    def root(self) -> str:
        return self.sysfs.root

    def cluster(self, name: str) -> CpuCluster:
        for c in self.clusters:
            if c.name == name:
                return c
        known = ", ".join(c.name for c in self.clusters) or "none"
        raise PlatformError(f"unknown CPU cluster {name!r} on {self.board}; clusters: {known}")

    def pe_names(self) -> list[str]:
        """Processing elements inference can run on: CPU clusters with an online CPU, plus ``gpu``
        for a CUDA GPU."""
        names = [c.name for c in self.clusters if c.online]
        if self.gpu is not None and self.gpu.cuda:
            names.append("gpu")
        return names

    def pe_cpus(self, pe: str) -> list[int]:
        """CPUs that run a PE's threads; for ``gpu``, the feeding thread's cluster (the fastest)."""
        if pe == "gpu":
            if self.gpu is None or not self.gpu.cuda:
                raise PlatformError(f"{self.board} has no CUDA GPU; PEs: {', '.join(self.pe_names())}")
            usable = [c for c in self.clusters if c.online]
            fastest = max(usable, key=lambda c: (c.hw_max_khz or 0, len(c.online)), default=None)
            return list(fastest.online) if fastest else []
        cluster = self.cluster(pe)
        if not cluster.online:
            raise PlatformError(f"every CPU of {pe} ({cluster.cpus}) is offline; PEs now: {', '.join(self.pe_names())}")
        return list(cluster.online)

    def device_for(self, pe: str) -> str:
        """The torch device a PE's inference runs on: ``cuda`` for ``gpu``, ``cpu`` for a cluster."""
        if pe == "gpu":
            self.pe_cpus(pe)  # validates that there is a CUDA GPU
            return "cuda"
        self.cluster(pe)
        return "cpu"

    def all_cpus(self) -> list[int]:
        return sorted({cpu for c in self.clusters for cpu in c.cpus})

    def online_cpus(self) -> list[int]:
        return sorted({cpu for c in self.clusters for cpu in c.online})

    def capabilities(self) -> dict[str, Capability]:
        return dict(self._caps)

    def capability(self, name: str) -> Capability:
        return self._caps.get(name, Capability(MISSING, f"no capability named {name!r}"))

    def set_capability(self, name: str, cap: Capability) -> None:
        self._caps[name] = cap

    def degrade(self, name: str, reason: str) -> None:
        """Mark a capability unusable after a run-time failure (keeps the method for the report)."""
        old = self._caps.get(name, Capability(MISSING))
        self._caps[name] = Capability(DEGRADED, reason, old.method)

    def to_dict(self) -> dict[str, Any]:
        return {
            "board": self.board,
            "model": self.model,
            "root": self.root,
            "pes": self.pe_names(),
            "clusters": [c.to_dict() for c in self.clusters],
            "gpu": self.gpu.to_dict() if self.gpu else None,
            "rails": [r.to_dict() for r in self.rails],
            "thermal_zones": [z.to_dict() for z in self.thermal_zones],
            "capabilities": {k: v.to_dict() for k, v in sorted(self._caps.items())},
            "info": dict(self.info),
        }
