"""Platform description: board detection and the processing elements, rails and zones it has.

``detect_platform(root="/")`` returns a :class:`Platform`; every file access goes through
:class:`governors.sysfs.Sysfs`, so the same code runs against fake trees in the tests.
"""

from governors.platform.detect import detect_platform
from governors.platform.model import (
    AVAILABLE,
    DEGRADED,
    MISSING,
    READ_ONLY,
    Capability,
    CpuCluster,
    Gpu,
    Platform,
    PowerRail,
    ThermalZone,
)

__all__ = [
    "AVAILABLE",
    "DEGRADED",
    "MISSING",
    "READ_ONLY",
    "Capability",
    "CpuCluster",
    "Gpu",
    "Platform",
    "PowerRail",
    "ThermalZone",
    "detect_platform",
]
