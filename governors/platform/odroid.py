"""Hardkernel Odroid XU3 / XU4 (Exynos 5422): A7 + A15 clusters, Mali-T628 devfreq, INA231 on the XU3."""

from __future__ import annotations

from governors.platform import cpufreq, devfreq, power
from governors.platform.boards import BoardId
from governors.platform.common import add_common_capabilities
from governors.platform.model import MISSING, Capability, Platform
from governors.platform.thermal import thermal_zones
from governors.sysfs import Sysfs

CORES = {"cpu-little": "Cortex-A7", "cpu-big": "Cortex-A15"}


def build(sysfs: Sysfs, ident: BoardId) -> Platform:
    clusters = cpufreq.discover_clusters(sysfs, merge=False)
    if len(clusters) == 2:
        # Exynos 5422: the A7 cluster starts at cpu0, the A15 at cpu4 (named by position, so an
        # offline cluster whose limits read EBUSY is still named right).
        for c in clusters:
            c.name = "cpu-little" if 0 in c.cpus else "cpu-big"
    for c in clusters:
        c.core = CORES.get(c.name)
    gpu = devfreq.find_mali_gpu(sysfs)
    if gpu is not None:
        gpu.name = "mali"  # Mali-T628 MP6 on every Exynos 5422, whatever its devfreq node is called
    rails = power.ina231_rails(sysfs) if ident.board == "odroid-xu3" else []
    platform = Platform(
        board=ident.board,
        model=ident.model,
        sysfs=sysfs,
        clusters=clusters,
        gpu=gpu,
        rails=rails,
        thermal_zones=thermal_zones(sysfs),
    )
    platform.info["soc"] = "exynos5422"
    add_common_capabilities(platform)
    if ident.board == "odroid-xu4":
        platform.set_capability(
            "power", Capability(MISSING, "the Odroid XU4 has no power sensors (only the XU3 has INA231)")
        )
    else:
        platform.set_capability(
            "power",
            power.power_capability(
                sysfs, rails, "no INA231 found (neither the hardkernel driver nor mainline hwmon is loaded)"
            ),
        )
    return platform
