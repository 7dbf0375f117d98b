"""Discrete NVIDIA GPUs on a generic Linux machine (a workstation or server with CUDA).

They have no devfreq node: the NVIDIA driver manages clocks (``nvidia-smi --lock-gpu-clocks``),
so dynofa offers the GPU as a processing element but reports GPU DVFS as missing.
"""

from __future__ import annotations

import os

from governors.platform.model import Gpu
from governors.sysfs import Sysfs

NVIDIA_PROC = "/proc/driver/nvidia/gpus"
NVIDIA_DRIVER = "/sys/bus/pci/drivers/nvidia"


def find_nvidia_gpu(sysfs: Sysfs) -> Gpu | None:
    """The first GPU bound to the NVIDIA driver, named from /proc/driver/nvidia (``Model:``)."""
    for entry in sysfs.glob(f"{NVIDIA_PROC}/*"):
        info = sysfs.try_read(f"{entry}/information") or ""
        model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("Model:")), "")
        bus_id = os.path.basename(entry)
        return Gpu(name=model or f"nvidia-{bus_id}", devfreq=None, device=f"/sys/bus/pci/devices/{bus_id}", cuda=True)
    for dev in sysfs.glob(f"{NVIDIA_DRIVER}/0000:*"):
        return Gpu(name=f"nvidia-{os.path.basename(dev)}", devfreq=None, device=dev, cuda=True)
    return None
