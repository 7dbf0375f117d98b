"""One DVFS node abstraction: a cpufreq policy and a devfreq device differ only in file names.

Both have a governor, min and max limits, a set speed under ``userspace`` and a current
frequency; the rules for setting, remembering, restoring and reading them back are the
same. :func:`dvfs_nodes` builds the nodes of a detected platform once, per processing
element; the actuator (set / remember / restore / read back) and the monitor (read back)
both go through them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from governors.platform.model import Platform
from governors.state import SavedSetting


class Reader(Protocol):
    def try_read(self, path: str) -> str | None: ...

    def try_int(self, path: str) -> int | None: ...


class Writer(Reader, Protocol):
    def write(self, path: str, value: str | int) -> None: ...


@dataclass(frozen=True)
class DvfsFiles:
    """File names of one kind of node, relative to its directory."""

    governor: str
    min: str
    max: str
    speed: str  # the set speed under the userspace governor
    cur: str


FILES = {
    "cpufreq": DvfsFiles("scaling_governor", "scaling_min_freq", "scaling_max_freq", "scaling_setspeed",
                         "scaling_cur_freq"),
    "devfreq": DvfsFiles("governor", "min_freq", "max_freq", "userspace/set_freq", "cur_freq"),
}


def ordered_limit_writes(target_min: int, target_max: int, cur_min: int | None, cur_max: int | None) -> list[str]:
    """Which of ``min``/``max`` to write first so that min <= max holds after every single write."""
    order = ["min", "max"] if cur_max is None or target_min <= cur_max else ["max", "min"]
    skip = {"min": target_min == cur_min, "max": target_max == cur_max}
    return [which for which in order if not skip[which]]


@dataclass(frozen=True)
class DvfsNode:
    """A cpufreq policy directory (``kind="cpufreq"``, kHz) or a devfreq device (``"devfreq"``, Hz)."""

    kind: str
    path: str

    def __post_init__(self) -> None:
        if self.kind not in FILES:
            raise ValueError(f"unknown DVFS node kind {self.kind!r}; one of {', '.join(FILES)}")

    @property
    def files(self) -> DvfsFiles:
        return FILES[self.kind]

    def _file(self, name: str) -> str:
        return f"{self.path}/{name}"

    # -- read back ------------------------------------------------------------------------
    def read_cur(self, sysfs: Reader) -> int | None:
        return sysfs.try_int(self._file(self.files.cur))

    def read_limits(self, sysfs: Reader) -> tuple[int | None, int | None]:
        return sysfs.try_int(self._file(self.files.min)), sysfs.try_int(self._file(self.files.max))

    # -- remember / set / restore ---------------------------------------------------------
    def remember(self, sysfs: Reader) -> SavedSetting:
        """The node's original settings, to restore later."""
        governor = sysfs.try_read(self._file(self.files.governor))
        low, high = self.read_limits(sysfs)
        speed = sysfs.try_int(self._file(self.files.speed)) if governor == "userspace" else None
        return SavedSetting(kind=self.kind, path=self.path, governor=governor, min=low, max=high, speed=speed)

    def pin(self, sysfs: Writer, value: int, userspace: bool) -> None:
        """Run at ``value``: the userspace governor's set speed, else min = max clamped in a safe order."""
        if userspace:
            if sysfs.try_read(self._file(self.files.governor)) != "userspace":
                sysfs.write(self._file(self.files.governor), "userspace")
            sysfs.write(self._file(self.files.speed), value)
        else:
            self._limits(sysfs, value, value)

    def restore(self, sysfs: Writer, s: SavedSetting) -> None:
        """Put back what :meth:`remember` saved (limits, then governor, then the userspace speed)."""
        if s.min is not None and s.max is not None:
            self._limits(sysfs, s.min, s.max)
        if s.governor is not None and sysfs.try_read(self._file(self.files.governor)) != s.governor:
            sysfs.write(self._file(self.files.governor), s.governor)
        if s.governor == "userspace" and s.speed is not None:
            sysfs.write(self._file(self.files.speed), s.speed)

    def _limits(self, sysfs: Writer, low: int, high: int) -> None:
        cur_min, cur_max = self.read_limits(sysfs)
        for which in ordered_limit_writes(low, high, cur_min, cur_max):
            sysfs.write(self._file(self.files.min if which == "min" else self.files.max),
                        low if which == "min" else high)


def dvfs_nodes(platform: Platform) -> dict[str, tuple[DvfsNode, ...]]:
    """The DVFS nodes of a detected platform per PE: each CPU cluster's policies, ``gpu``'s devfreq device."""
    nodes = {c.name: tuple(DvfsNode("cpufreq", p) for p in c.policies) for c in platform.clusters}
    gpu = platform.gpu
    if gpu is not None and gpu.devfreq:
        nodes["gpu"] = (DvfsNode("devfreq", gpu.devfreq),)
    return nodes
