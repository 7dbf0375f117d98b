"""Any other Linux machine: cpufreq/devfreq when present, RAPL energy counters, /proc for load."""

from __future__ import annotations

from governors.platform import cpufreq, devfreq, power
from governors.platform.boards import BoardId
from governors.platform.common import add_common_capabilities
from governors.platform.discrete_gpu import find_nvidia_gpu
from governors.platform.model import Platform
from governors.platform.thermal import thermal_zones
from governors.sysfs import Sysfs


def build(sysfs: Sysfs, ident: BoardId) -> Platform:
    # x86 has one policy per CPU: group identical ones so a "cluster" is a set of like cores.
    clusters = cpufreq.discover_clusters(sysfs, merge=True)
    rails = power.rapl_rails(sysfs)
    platform = Platform(
        board=ident.board,
        model=ident.model,
        sysfs=sysfs,
        clusters=clusters,
        gpu=find_nvidia_gpu(sysfs) or devfreq.find_mali_gpu(sysfs),
        rails=rails,
        thermal_zones=thermal_zones(sysfs),
    )
    add_common_capabilities(platform)
    platform.set_capability(
        "power", power.power_capability(sysfs, rails, "no power sensor (no RAPL under /sys/class/powercap)")
    )
    return platform
