"""Power sensors: INA3221 (Jetson, JP4 iio and JP5+ hwmon), INA231 (Odroid XU3), Intel RAPL."""

from __future__ import annotations

import os
import re

from governors.platform.model import AVAILABLE, MISSING, READ_ONLY, Capability, PowerRail
from governors.sysfs import Sysfs

I2C_DEVICES = "/sys/bus/i2c/devices"
POWERCAP = "/sys/class/powercap"
TOTAL_RAILS = ("VDD_IN", "POM_5V_IN")
# INA231 on the Odroid XU3, by I2C address (hardkernel board schematic / driver).
INA231_RAILS = {"0040": "VDD_ARM", "0041": "VDD_MEM", "0044": "VDD_G3D", "0045": "VDD_KFC"}
HARDKERNEL_INA231_DIR = "/sys/bus/i2c/drivers/INA231"


def _i2c_devices_named(sysfs: Sysfs, prefix: str) -> list[str]:
    out = []
    for dev in sysfs.glob(f"{I2C_DEVICES}/*"):
        name = (sysfs.try_read(f"{dev}/name") or "").lower()
        if name.startswith(prefix):
            out.append(dev)
    return out


def _channel(path: str, pattern: str) -> int:
    m = re.search(pattern, os.path.basename(path))
    return int(m.group(1)) if m else -1


def ina3221_rails(sysfs: Sysfs) -> list[PowerRail]:
    rails: list[PowerRail] = []
    for dev in _i2c_devices_named(sysfs, "ina3221"):
        # JP5+: hwmon, inK_label + inK_input (mV) + currK_input (mA).
        for label_path in sorted(sysfs.glob(f"{dev}/hwmon/hwmon*/in*_label"), key=lambda p: _channel(p, r"in(\d+)")):
            k = _channel(label_path, r"in(\d+)_label")
            label = sysfs.try_read(label_path) or ""
            # Channel 7 is "sum of shunt voltages"; "NC" channels are not connected.
            if k == 7 or not label or "NC" in label.split("_") or label == "NC" or "sum" in label.lower():
                continue
            hw = os.path.dirname(label_path)
            rails.append(
                PowerRail(
                    name=label,
                    kind="ina3221-hwmon",
                    voltage_path=f"{hw}/in{k}_input",
                    current_path=f"{hw}/curr{k}_input",
                    device=dev,
                    is_total=label in TOTAL_RAILS,
                )
            )
        # JP4: iio, rail_name_K + in_powerK_input (mW).
        for name_path in sorted(sysfs.glob(f"{dev}/iio:device*/rail_name_*"), key=lambda p: _channel(p, r"(\d+)$")):
            k = _channel(name_path, r"rail_name_(\d+)$")
            label = sysfs.try_read(name_path) or ""
            if not label or label == "NC":
                continue
            iio = os.path.dirname(name_path)
            rails.append(
                PowerRail(
                    name=label,
                    kind="ina3221-iio",
                    power_path=f"{iio}/in_power{k}_input",
                    voltage_path=f"{iio}/in_voltage{k}_input",
                    current_path=f"{iio}/in_current{k}_input",
                    device=dev,
                    is_total=label in TOTAL_RAILS,
                )
            )
    return rails


def ina231_rails(sysfs: Sysfs) -> list[PowerRail]:
    """Odroid XU3: hardkernel 3.10 driver (``sensor_W`` + ``enable``) or mainline hwmon (``power1_input``)."""
    rails: list[PowerRail] = []
    for dev in sysfs.glob(f"{HARDKERNEL_INA231_DIR}/*-00*"):
        addr = os.path.basename(dev).rsplit("-", 1)[-1]
        if sysfs.exists(f"{dev}/sensor_W"):
            rails.append(
                PowerRail(
                    name=INA231_RAILS.get(addr, f"INA231-{addr}"),
                    kind="ina231-hardkernel",
                    power_path=f"{dev}/sensor_W",
                    voltage_path=f"{dev}/sensor_V",
                    current_path=f"{dev}/sensor_A",
                    enable_path=f"{dev}/enable",
                    device=dev,
                )
            )
    if rails:
        return sorted(rails, key=lambda r: r.name)
    for dev in _i2c_devices_named(sysfs, "ina231"):
        addr = os.path.basename(dev).rsplit("-", 1)[-1]
        # Match on the I2C device, never on hwmon numbering (it changes from boot to boot).
        for hw in sysfs.glob(f"{dev}/hwmon/hwmon*"):
            if sysfs.exists(f"{hw}/power1_input"):
                rails.append(
                    PowerRail(
                        name=INA231_RAILS.get(addr, f"INA231-{addr}"),
                        kind="ina231-hwmon",
                        power_path=f"{hw}/power1_input",
                        voltage_path=f"{hw}/in1_input",
                        current_path=f"{hw}/curr1_input",
                        device=dev,
                    )
                )
    return sorted(rails, key=lambda r: r.name)


def rapl_rails(sysfs: Sysfs) -> list[PowerRail]:
    rails: list[PowerRail] = []
    for zone in sysfs.glob(f"{POWERCAP}/intel-rapl:*"):
        base = os.path.basename(zone)
        if not sysfs.exists(f"{zone}/energy_uj"):
            continue
        name = sysfs.try_read(f"{zone}/name") or base
        top_level = base.count(":") == 1  # intel-rapl:0 (package) vs intel-rapl:0:0 (core, inside it)
        rails.append(
            PowerRail(
                name=f"{name}" if top_level else f"{name}({base.split(':', 1)[1]})",
                kind="rapl",
                energy_path=f"{zone}/energy_uj",
                max_energy_uj=sysfs.try_int(f"{zone}/max_energy_range_uj"),
                device=zone,
                # psys (platform) already includes the packages: it is the total when present.
                is_total=name == "psys",
                in_sum=top_level,
            )
        )
    return rails


def rail_readable_path(rail: PowerRail) -> str | None:
    return rail.power_path or rail.energy_path or rail.current_path


def power_capability(sysfs: Sysfs, rails: list[PowerRail], missing_reason: str) -> Capability:
    if not rails:
        return Capability(MISSING, missing_reason)
    unreadable = [r for r in rails if not sysfs.access(rail_readable_path(r) or "", write=False)]
    if len(unreadable) == len(rails):
        first = rail_readable_path(unreadable[0])
        why = f"{first} is not readable"
        if unreadable[0].kind == "rapl":
            why += " (RAPL energy_uj is root-only since Linux 5.10; run as root or grant read access)"
        return Capability(MISSING, why)
    method = ", ".join(sorted({r.kind for r in rails}))
    if unreadable:
        return Capability(AVAILABLE, f"unreadable rails skipped: {', '.join(r.name for r in unreadable)}", method)
    hk = [r for r in rails if r.enable_path]
    if hk and not all(sysfs.access(r.enable_path or "", write=True) for r in hk):
        return Capability(READ_ONLY, "INA231 'enable' is not writable: sensors may read 0 until enabled", method)
    return Capability(AVAILABLE, "", method)
