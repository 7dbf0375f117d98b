"""Optional Jetson telemetry from the jtop service (jetson-stats), when it runs.

jtop cannot set CPU or GPU frequencies, so DVFS always goes through sysfs; this only reads
rails, temperatures and GPU load from jtop's own sampling (useful when the jtop service is
already polling the INA3221, so that two samplers do not both hit the I2C bus). Without the
service (no ``/run/jtop.sock``) nothing here is used and the sysfs monitor works alone.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

from dynofa.errors import PlatformError


@dataclass
class JtopReading:
    rails_w: dict[str, float] = field(default_factory=dict)
    power_w: float | None = None
    temperatures_c: dict[str, float] = field(default_factory=dict)
    gpu_load: float | None = None  # percent


def convert(power: Any, temperature: Any, gpu: Any) -> JtopReading:
    """Turn jtop's ``power``/``temperature``/``gpu`` dicts (jetson-stats 4.2+) into a reading."""
    out = JtopReading()
    rails = power.get("rail", {}) if isinstance(power, dict) else {}
    for name, rail in rails.items():
        if isinstance(rail, dict) and rail.get("online", True) and isinstance(rail.get("power"), (int, float)):
            out.rails_w[str(name)] = rail["power"] / 1000.0  # mW
    total = power.get("tot", {}) if isinstance(power, dict) else {}
    if isinstance(total, dict) and isinstance(total.get("power"), (int, float)):
        out.power_w = total["power"] / 1000.0
    if isinstance(temperature, dict):
        for name, t in temperature.items():
            if not isinstance(t, dict) or not t.get("online", True):
                continue
            value = t.get("temp")
            if isinstance(value, (int, float)) and value > -256 and name != "PMIC":
                out.temperatures_c[str(name)] = float(value)
    if isinstance(gpu, dict):
        for info in gpu.values():
            load = info.get("status", {}).get("load") if isinstance(info, dict) else None
            if isinstance(load, (int, float)):
                out.gpu_load = float(load)
                break
    return out


class JtopTelemetry:
    """A connected jtop client; raises PlatformError when the service cannot be reached."""

    def __init__(self, interval_s: float = 0.5, client: Any = None) -> None:
        if client is None:
            try:
                from jtop import jtop  # jetson-stats, optional
            except ImportError as exc:
                raise PlatformError("jetson-stats is not installed: pip install 'dynofa[jetson]'") from exc
            client = jtop(interval=interval_s)
            try:
                client.start()
            except Exception as exc:  # jtop raises JtopException / PermissionError / ConnectionRefusedError
                raise PlatformError(f"cannot connect to jtop.service: {exc}") from exc
        self._client = client

    def read(self) -> JtopReading | None:
        c = self._client
        try:
            return convert(c.power, c.temperature, c.gpu)
        except Exception:  # the service went away: fall back to sysfs
            return None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._client.close()


def open_telemetry(platform: Any) -> JtopTelemetry | None:
    """jtop telemetry when the platform reports the service available, else None (never raises)."""
    if not platform.capability("jtop").usable or not platform.sysfs.is_live:
        return None
    try:
        return JtopTelemetry()
    except PlatformError as exc:
        platform.degrade("jtop", str(exc))
        return None
