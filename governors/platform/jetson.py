"""NVIDIA Jetson (Nano, Xavier NX, AGX Xavier, Orin): cpufreq clusters, GPU devfreq found the jtop way,
INA3221 rails (JP4 iio and JP5+ hwmon), thermal zones, nvpmodel/jetson_clocks awareness, jtop."""

from __future__ import annotations

import importlib.util
import re

from governors.platform import cpufreq, devfreq, power
from governors.platform.boards import BoardId, l4t_release
from governors.platform.common import add_common_capabilities
from governors.platform.model import AVAILABLE, MISSING, Capability, Platform
from governors.platform.thermal import thermal_zones
from governors.sysfs import Sysfs

CORES = {
    "jetson-nano": "Cortex-A57",
    "jetson-tx1": "Cortex-A57",
    "jetson-xavier-nx": "Carmel",
    "jetson-agx-xavier": "Carmel",
    "jetson-agx-orin": "Cortex-A78AE",
    "jetson-orin-nx": "Cortex-A78AE",
    "jetson-orin-nano": "Cortex-A78AE",
}
NVPMODEL_STATUS = "/var/lib/nvpmodel/status"
NVPMODEL_CONF = "/etc/nvpmodel.conf"
JTOP_SOCKET = "/run/jtop.sock"


def nvpmodel_mode(sysfs: Sysfs) -> dict[str, object] | None:
    """The current nvpmodel power mode (id and name), read from its status and config files."""
    status = sysfs.try_read(NVPMODEL_STATUS)
    if not status:
        return None
    m = re.search(r"pmode:(\d+)", status)
    if not m:
        return None
    mode_id = int(m.group(1))
    name = None
    for line in (sysfs.try_read(NVPMODEL_CONF) or "").splitlines():
        mm = re.match(r"\s*<\s*POWER_MODEL\s+ID=(\d+)\s+NAME=(\S+)\s*>", line)
        if mm and int(mm.group(1)) == mode_id:
            name = mm.group(2)
    return {"id": mode_id, "name": name}


def jetson_clocks_engaged(platform: Platform) -> bool | None:
    """jetson_clocks pins every cluster (and the GPU) min = max = hardware max; None when unknowable."""
    clusters = [c for c in platform.clusters if c.policies]
    if not clusters:
        return None
    pinned = all(c.min_khz is not None and c.min_khz == c.max_khz == c.hw_max_khz for c in clusters)
    if platform.gpu is not None and platform.gpu.min_hz is not None:
        pinned = pinned and platform.gpu.min_hz == platform.gpu.max_hz
    return pinned


def jtop_capability(sysfs: Sysfs) -> Capability:
    if not sysfs.exists(JTOP_SOCKET):
        return Capability(MISSING, f"jtop.service is not running (no {JTOP_SOCKET}); telemetry comes from sysfs")
    if importlib.util.find_spec("jtop") is None:
        return Capability(MISSING, "jtop.service is running but the jetson-stats package is not installed here")
    return Capability(AVAILABLE, "", "jtop.service telemetry (read-only; DVFS still goes through sysfs)")


def build(sysfs: Sysfs, ident: BoardId) -> Platform:
    clusters = cpufreq.discover_clusters(sysfs, merge=False)
    for c in clusters:
        c.core = CORES.get(ident.board)
    platform = Platform(
        board=ident.board,
        model=ident.model,
        sysfs=sysfs,
        clusters=clusters,
        gpu=devfreq.find_jetson_gpu(sysfs),
        rails=power.ina3221_rails(sysfs),
        thermal_zones=thermal_zones(sysfs),
    )
    platform.info["soc"] = "tegra"
    platform.info["l4t"] = l4t_release(ident.tegra_release)
    platform.info["nvpmodel"] = nvpmodel_mode(sysfs)
    platform.info["jetson_clocks"] = jetson_clocks_engaged(platform)
    add_common_capabilities(platform)
    platform.set_capability(
        "power", power.power_capability(sysfs, platform.rails, "no INA3221 found under /sys/bus/i2c/devices")
    )
    platform.set_capability("jtop", jtop_capability(sysfs))
    if platform.info["jetson_clocks"]:
        # Still usable, but every request reads back at the maximum until `jetson_clocks --restore`.
        for name, cap in platform.capabilities().items():
            if name.startswith("dvfs:") and cap.usable:
                cap.reason = "jetson_clocks is engaged (min = max = hardware max): requests read back at max"
    if platform.info["nvpmodel"] is not None:
        platform.set_capability(
            "nvpmodel",
            Capability(AVAILABLE, "nvpmodel/jetson_clocks may change clocks: every set is read back", "read-only"),
        )
    else:
        platform.set_capability("nvpmodel", Capability(MISSING, f"no {NVPMODEL_STATUS}"))
    return platform
