"""CPU clusters from Linux cpufreq policies (Documentation/admin-guide/pm/cpufreq.rst)."""

from __future__ import annotations

import re

from governors.platform.model import AVAILABLE, CPUFREQ_DIR, MISSING, READ_ONLY, Capability, CpuCluster
from governors.sysfs import Sysfs, parse_cpu_list

CPU_DIR = "/sys/devices/system/cpu"


def policy_dirs(sysfs: Sysfs) -> list[str]:
    """cpufreq policy directories, in CPU order (policy0, policy4, ...)."""
    found = sysfs.glob(f"{CPUFREQ_DIR}/policy*")

    def index(path: str) -> int:
        m = re.search(r"policy(\d+)$", path)
        return int(m.group(1)) if m else 1 << 30

    policies = sorted((p for p in found if sysfs.isdir(p)), key=index)
    if policies:
        return policies
    # Old kernels (3.10 on Odroid) have no policyN dirs, only cpuN/cpufreq (one per cluster leader).
    seen: set[str] = set()
    for cpu_dir in sorted(sysfs.glob(f"{CPU_DIR}/cpu[0-9]*"), key=_cpu_index):
        path = f"{cpu_dir}/cpufreq"
        if sysfs.isdir(path):
            real = sysfs.realpath(path)
            if real not in seen:
                seen.add(real)
                policies.append(path)
    return policies


def _cpu_index(path: str) -> int:
    m = re.search(r"cpu(\d+)$", path)
    return int(m.group(1)) if m else 1 << 30


def read_policy(sysfs: Sysfs, policy: str) -> CpuCluster:
    """One cluster from one policy dir (named later)."""
    cpus_text = sysfs.try_read(f"{policy}/related_cpus") or sysfs.try_read(f"{policy}/affected_cpus") or ""
    cpus = parse_cpu_list(cpus_text)
    related_known = bool(cpus)
    if not cpus:
        m = re.search(r"(?:policy|cpu)(\d+)", policy)
        cpus = [int(m.group(1))] if m else []
    return CpuCluster(
        name="",
        cpus=cpus,
        related_known=related_known,
        policies=[policy],
        available_khz=sorted(set(sysfs.try_ints(f"{policy}/scaling_available_frequencies"))),
        governors=sysfs.try_words(f"{policy}/scaling_available_governors"),
        governor=sysfs.try_read(f"{policy}/scaling_governor"),
        min_khz=sysfs.try_int(f"{policy}/scaling_min_freq"),
        max_khz=sysfs.try_int(f"{policy}/scaling_max_freq"),
        cur_khz=sysfs.try_int(f"{policy}/scaling_cur_freq"),
        hw_min_khz=sysfs.try_int(f"{policy}/cpuinfo_min_freq"),
        hw_max_khz=sysfs.try_int(f"{policy}/cpuinfo_max_freq"),
        driver=sysfs.try_read(f"{policy}/scaling_driver"),
    )


def present_cpus(sysfs: Sysfs) -> list[int]:
    text = sysfs.try_read(f"{CPU_DIR}/present") or sysfs.try_read(f"{CPU_DIR}/possible")
    if text:
        return parse_cpu_list(text)
    return sorted(int(p.rsplit("cpu", 1)[1]) for p in sysfs.glob(f"{CPU_DIR}/cpu[0-9]*"))


def name_clusters(clusters: list[CpuCluster]) -> None:
    """Name clusters by speed: ``cpu`` alone; ``cpu-little``/``cpu-big`` (``cpu-mid``) when the
    maximum frequencies differ; ``cpu-c0``, ``cpu-c1``... for identical clusters (Xavier, Orin)."""
    if len(clusters) == 1:
        clusters[0].name = "cpu"
        return
    speeds = sorted({c.hw_max_khz or 0 for c in clusters})
    if 0 not in speeds and len(speeds) == len(clusters) and len(speeds) in (2, 3):
        labels = ["cpu-little", "cpu-big"] if len(speeds) == 2 else ["cpu-little", "cpu-mid", "cpu-big"]
        for c in clusters:
            c.name = labels[speeds.index(c.hw_max_khz or 0)]
        return
    for i, c in enumerate(clusters):
        c.name = f"cpu-c{i}"


def merge_identical(clusters: list[CpuCluster]) -> list[CpuCluster]:
    """Group per-CPU policies with identical limits into one cluster (x86 has one policy per CPU)."""
    groups: dict[tuple[object, ...], CpuCluster] = {}
    for c in clusters:
        key = (c.hw_min_khz, c.hw_max_khz, tuple(c.available_khz), tuple(c.governors), c.driver)
        if key in groups:
            g = groups[key]
            g.cpus = sorted(set(g.cpus) | set(c.cpus))
            g.policies.extend(c.policies)
        else:
            groups[key] = c
    return list(groups.values())


def online_cpus(sysfs: Sysfs) -> list[int] | None:
    text = sysfs.try_read(f"{CPU_DIR}/online")
    return parse_cpu_list(text) if text else None


def _fill_unreadable_cpu_lists(clusters: list[CpuCluster], present: list[int]) -> None:
    """An inactive policy (all its CPUs offline) answers EBUSY even for related_cpus: assume it
    spans from its own index to the next policy's (policy2 -> CPUs 2-3 when policy4 follows)."""
    for i, c in enumerate(clusters):
        if len(c.cpus) != 1 or c.related_known:
            continue
        start = c.cpus[0]
        end = clusters[i + 1].cpus[0] if i + 1 < len(clusters) else (max(present) + 1 if present else start + 1)
        c.cpus = [cpu for cpu in range(start, end) if not present or cpu in present] or [start]


def discover_clusters(sysfs: Sysfs, merge: bool = False) -> list[CpuCluster]:
    clusters = [read_policy(sysfs, p) for p in policy_dirs(sysfs)]
    present = present_cpus(sysfs)
    _fill_unreadable_cpu_lists(clusters, present)
    if merge:
        clusters = merge_identical(clusters)
    if not clusters and present:
        # No cpufreq at all: still one cluster of all CPUs, so task mapping works.
        clusters = [CpuCluster(name="cpu", cpus=present)]
    online = online_cpus(sysfs)
    for c in clusters:
        c.online = [cpu for cpu in c.cpus if online is None or cpu in online]
    name_clusters(clusters)
    return clusters


def dvfs_capability(sysfs: Sysfs, cluster: CpuCluster) -> Capability:
    """Whether this cluster's frequency can be set, and how."""
    if not cluster.policies:
        return Capability(
            MISSING,
            f"no cpufreq policy under {CPUFREQ_DIR} (no cpufreq driver: a VM, a container, or a kernel without it)",
        )
    if not cluster.online:
        return Capability(
            MISSING,
            f"all CPUs of {cluster.name} ({', '.join(map(str, cluster.cpus))}) are offline (nvpmodel or CPU "
            "hotplug); its cpufreq policy is inactive",
        )
    policy = cluster.policies[0]
    if "userspace" in cluster.governors and sysfs.exists(f"{policy}/scaling_setspeed"):
        files = ["scaling_governor", "scaling_setspeed"]
        method = "userspace governor + scaling_setspeed"
    elif sysfs.exists(f"{policy}/scaling_min_freq") and sysfs.exists(f"{policy}/scaling_max_freq"):
        files = ["scaling_min_freq", "scaling_max_freq"]
        method = "scaling_min_freq/scaling_max_freq clamp (no userspace governor)"
    else:
        return Capability(MISSING, f"{policy} has neither scaling_setspeed nor scaling_min/max_freq")
    for p in cluster.policies:
        for f in files:
            if not sysfs.access(f"{p}/{f}", write=True):
                return Capability(READ_ONLY, f"{p}/{f} is not writable (run the daemon as root)", method)
    return Capability(AVAILABLE, "", method)
