"""The operating point: what the runtime manager controls."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class OperatingPoint:
    """(subnet, processing element, CPU cluster frequencies, GPU frequency, threads).

    ``cpu_freq_khz`` maps a CPU cluster name (e.g. ``cpu-big``) to its frequency in kHz;
    ``gpu_freq_hz`` is the GPU devfreq frequency in Hz. None/empty means "left as found".
    """

    subnet: str
    pe: str
    cpu_freq_khz: dict[str, int] = field(default_factory=dict)
    gpu_freq_hz: int | None = None
    threads: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OperatingPoint:
        return cls(
            subnet=str(data["subnet"]),
            pe=str(data["pe"]),
            cpu_freq_khz={str(k): int(v) for k, v in dict(data.get("cpu_freq_khz") or {}).items()},
            gpu_freq_hz=None if data.get("gpu_freq_hz") is None else int(data["gpu_freq_hz"]),
            threads=int(data.get("threads", 1)),
        )
