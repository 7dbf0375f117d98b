"""GPUs through Linux devfreq (Documentation/ABI/testing/sysfs-class-devfreq). Units are Hz."""

from __future__ import annotations

import os

from governors.platform.model import AVAILABLE, MISSING, READ_ONLY, Capability, Gpu
from governors.sysfs import Sysfs

DEVFREQ_CLASS = "/sys/class/devfreq"
# Device-tree node names of Jetson GPUs, as jtop matches them (jtop/core/gpu.py).
JETSON_GPU_NODES = ("gv11b", "gp10b", "ga10b", "gb10b", "gpu")


def devfreq_devices(sysfs: Sysfs) -> list[str]:
    return sysfs.glob(f"{DEVFREQ_CLASS}/*")


def read_devfreq(sysfs: Sysfs, node: str, name: str) -> Gpu:
    return Gpu(
        name=name,
        devfreq=node,
        available_hz=sorted(set(sysfs.try_ints(f"{node}/available_frequencies"))),
        governors=sysfs.try_words(f"{node}/available_governors"),
        governor=sysfs.try_read(f"{node}/governor"),
        min_hz=sysfs.try_int(f"{node}/min_freq"),
        max_hz=sysfs.try_int(f"{node}/max_freq"),
        cur_hz=sysfs.try_int(f"{node}/cur_freq"),
        device=sysfs.realpath(f"{node}/device") if sysfs.exists(f"{node}/device") else None,
    )


def find_jetson_gpu(sysfs: Sysfs) -> Gpu | None:
    """The jtop way: a devfreq device whose ``device/of_node/name`` is a known GPU node name."""
    for node in devfreq_devices(sysfs):
        of_name = sysfs.try_read(f"{node}/device/of_node/name")
        if of_name is None:
            continue
        of_name = of_name.rstrip("\x00")
        if of_name in JETSON_GPU_NODES or "gpu" in of_name:
            gpu = read_devfreq(sysfs, node, of_name)
            gpu.cuda = True
            if gpu.device and sysfs.exists(f"{gpu.device}/load"):
                gpu.load_path = f"{gpu.device}/load"
            return gpu
    return None


def find_mali_gpu(sysfs: Sysfs) -> Gpu | None:
    """A Mali (or other non-CUDA) GPU: a devfreq device named ``*.mali``/``*.gpu`` or whose device is one.

    The path differs across kernels (``devfreq0``, ``11800000.mali``, ``11800000.gpu``), so scan.
    """
    for node in devfreq_devices(sysfs):
        name = sysfs.try_read(f"{node}/name") or os.path.basename(node)
        device = os.path.basename(sysfs.realpath(f"{node}/device")) if sysfs.exists(f"{node}/device") else ""
        tags = f"{name} {os.path.basename(node)} {device}".lower()
        if "mali" in tags or ".gpu" in tags or tags.startswith("gpu"):
            gpu = read_devfreq(sysfs, node, "mali" if "mali" in tags else name)
            gpu.cuda = False
            # Samsung/hardkernel Mali drivers (Exynos) expose the load in percent next to the device;
            # mainline panfrost exposes none.
            for fname in ("utilization", "utilisation"):
                if gpu.device and sysfs.exists(f"{gpu.device}/{fname}"):
                    gpu.load_path, gpu.load_scale = f"{gpu.device}/{fname}", 1.0
                    break
            return gpu
    return None


def dvfs_capability(sysfs: Sysfs, gpu: Gpu | None) -> Capability:
    if gpu is None:
        return Capability(MISSING, f"no GPU devfreq device under {DEVFREQ_CLASS}")
    if gpu.devfreq is None:
        if gpu.cuda:
            return Capability(
                MISSING,
                f"{gpu.name} is a discrete NVIDIA GPU: its clocks belong to the NVIDIA driver "
                "(nvidia-smi --lock-gpu-clocks), not devfreq; dynofa leaves them alone",
            )
        return Capability(MISSING, f"GPU {gpu.name} has no devfreq node")
    node = gpu.devfreq
    if "userspace" in gpu.governors:
        files = ["governor"]
        method = "userspace governor + userspace/set_freq"
    else:
        files = ["min_freq", "max_freq"]
        method = "min_freq/max_freq clamp (no userspace governor)"
    for f in files:
        if not sysfs.exists(f"{node}/{f}"):
            return Capability(MISSING, f"{node}/{f} does not exist")
        if not sysfs.access(f"{node}/{f}", write=True):
            return Capability(READ_ONLY, f"{node}/{f} is not writable (run the daemon as root)", method)
    if not gpu.available_hz:
        return Capability(READ_ONLY, f"{node}/available_frequencies is missing or empty", method)
    return Capability(AVAILABLE, "", method)
