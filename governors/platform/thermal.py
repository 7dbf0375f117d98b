"""Thermal zones (``/sys/class/thermal/thermal_zone*``: ``type`` and ``temp`` in m°C)."""

from __future__ import annotations

import re

from governors.platform.model import AVAILABLE, MISSING, Capability, ThermalZone
from governors.sysfs import Sysfs

THERMAL_DIRS = ("/sys/class/thermal", "/sys/devices/virtual/thermal")
# PMIC-Die on Jetson always reads 100 °C (a fixed trip value, not a sensor).
SKIPPED_ZONES = ("PMIC-Die",)


def _zone_index(path: str) -> int:
    m = re.search(r"thermal_zone(\d+)$", path)
    return int(m.group(1)) if m else 0


def thermal_zones(sysfs: Sysfs) -> list[ThermalZone]:
    seen: set[str] = set()
    zones: list[ThermalZone] = []
    for base in THERMAL_DIRS:
        for zone in sorted(sysfs.glob(f"{base}/thermal_zone*"), key=_zone_index):
            real = sysfs.realpath(zone)
            if real in seen:
                continue
            seen.add(real)
            name = sysfs.try_read(f"{zone}/type") or zone.rsplit("/", 1)[-1]
            if name in SKIPPED_ZONES:
                continue
            if sysfs.try_int(f"{zone}/temp") is None:
                continue  # offline sensor (reads an error), or not readable
            zones.append(ThermalZone(name=name, path=f"{zone}/temp"))
    # Two zones of the same type (e.g. several "acpitz") keep distinct names.
    counts: dict[str, int] = {}
    for z in zones:
        counts[z.name] = counts.get(z.name, 0) + 1
    for name, n in counts.items():
        if n > 1:
            for i, z in enumerate(zz for zz in zones if zz.name == name):
                z.name = f"{name}{i}"
    return zones


def thermal_capability(zones: list[ThermalZone]) -> Capability:
    if not zones:
        return Capability(MISSING, "no readable thermal zone under /sys/class/thermal")
    return Capability(AVAILABLE, "", f"{len(zones)} thermal zones")
