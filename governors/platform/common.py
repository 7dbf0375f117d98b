"""Capabilities every backend reports the same way (utilisation, memory, task mapping, thermal)."""

from __future__ import annotations

import os

from governors.platform import cpufreq, devfreq
from governors.platform.model import AVAILABLE, MISSING, Capability, Platform
from governors.platform.thermal import thermal_capability


def add_dvfs_capabilities(platform: Platform) -> None:
    for cluster in platform.clusters:
        platform.set_capability(f"dvfs:{cluster.name}", cpufreq.dvfs_capability(platform.sysfs, cluster))
    platform.set_capability("dvfs:gpu", devfreq.dvfs_capability(platform.sysfs, platform.gpu))


def add_common_capabilities(platform: Platform) -> None:
    sysfs = platform.sysfs
    add_dvfs_capabilities(platform)
    if sysfs.access("/proc/stat"):
        platform.set_capability("cpu-utilisation", Capability(AVAILABLE, "", "/proc/stat per CPU"))
    else:
        platform.set_capability("cpu-utilisation", Capability(MISSING, "/proc/stat is not readable"))
    if sysfs.access("/proc/meminfo"):
        platform.set_capability("memory", Capability(AVAILABLE, "", "/proc/meminfo"))
    else:
        platform.set_capability("memory", Capability(MISSING, "/proc/meminfo is not readable"))
    platform.set_capability("thermal", thermal_capability(platform.thermal_zones))
    gpu = platform.gpu
    if gpu is not None and gpu.load_path and sysfs.access(gpu.load_path):
        platform.set_capability("gpu-load", Capability(AVAILABLE, "", gpu.load_path))
    elif gpu is not None and gpu.cuda and gpu.devfreq is None:
        platform.set_capability(
            "gpu-load", Capability(MISSING, f"{gpu.name}: load comes from NVML/nvidia-smi, which dynofa does not poll")
        )
    elif gpu is not None:
        platform.set_capability("gpu-load", Capability(MISSING, f"GPU {gpu.name} exposes no load file"))
    else:
        platform.set_capability("gpu-load", Capability(MISSING, "no GPU"))
    if hasattr(os, "sched_setaffinity") and platform.online_cpus():
        span = _cpu_span(platform.online_cpus())
        platform.set_capability("task-mapping", Capability(AVAILABLE, "", f"sched_setaffinity over CPUs {span}"))
    else:
        platform.set_capability("task-mapping", Capability(MISSING, "no sched_setaffinity or no CPU list"))


def _cpu_span(cpus: list[int]) -> str:
    if cpus and cpus == list(range(cpus[0], cpus[-1] + 1)):
        return f"{cpus[0]}-{cpus[-1]}"
    return ",".join(map(str, cpus))
