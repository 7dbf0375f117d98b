"""Fake sysfs trees of real boards, file for file, built under a temporary directory.

Paths, formats and values follow public sources (kernel ABI docs, jetson-stats' own fake tree
and GPU/power discovery, hardkernel's INA231 driver, dumps quoted in docs/platforms.md). Each
builder returns a :class:`FakeBoard`: the root, the :class:`FakeKernel` hook that emulates write
semantics, and the facts a correct detection must report (``expect``).

    board = build_board("jetson-nano", tmp_path)
    platform = detect_platform(board.root, hook=board.kernel)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.kernel import FakeKernel

RO = 0o444
RW = 0o644
ROOT_ONLY = 0o400


class Tree:
    """Writes files, directories and relative symlinks under a root."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)

    def host(self, path: str) -> str:
        return os.path.join(self.root, path.lstrip("/"))

    def file(self, path: str, content: str | bytes, mode: int = RO) -> None:
        host = self.host(path)
        os.makedirs(os.path.dirname(host), exist_ok=True)
        data = content if isinstance(content, bytes) else (content + "\n").encode()
        with open(host, "wb") as fh:
            fh.write(data)
        os.chmod(host, mode)

    def dir(self, path: str) -> None:
        os.makedirs(self.host(path), exist_ok=True)

    def link(self, path: str, target: str) -> None:
        """``path`` -> ``target`` (both target paths), stored as a relative link like sysfs's."""
        host = self.host(path)
        os.makedirs(os.path.dirname(host), exist_ok=True)
        os.symlink(os.path.relpath(self.host(target), os.path.dirname(host)), host)


@dataclass
class FakeBoard:
    name: str
    root: str
    kernel: FakeKernel
    expect: dict[str, Any] = field(default_factory=dict)


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split()]


# -- building blocks -----------------------------------------------------------------------------
def _words(values: list[int]) -> str:
    return " ".join(str(v) for v in values)


def cpufreq_policy(
    t: Tree,
    k: FakeKernel,
    cpus: list[int],
    freqs: list[int],
    governors: str,
    governor: str,
    cur: int,
    driver: str,
    *,
    policy_dirs: bool = True,
    available: bool = True,
    cpuinfo_cur: bool = True,
) -> str:
    """One cpufreq policy; with ``policy_dirs=False`` the 3.10 layout (cpuN/cpufreq, symlinked)."""
    lead = cpus[0]
    d = f"/sys/devices/system/cpu/cpufreq/policy{lead}" if policy_dirs else f"/sys/devices/system/cpu/cpu{lead}/cpufreq"
    cpu_list = _words(cpus)
    t.file(f"{d}/affected_cpus", cpu_list)
    t.file(f"{d}/related_cpus", cpu_list)
    t.file(f"{d}/cpuinfo_min_freq", str(min(freqs)))
    t.file(f"{d}/cpuinfo_max_freq", str(max(freqs)))
    t.file(f"{d}/cpuinfo_transition_latency", "300000")
    if cpuinfo_cur:
        t.file(f"{d}/cpuinfo_cur_freq", str(cur), ROOT_ONLY)
    if available:
        t.file(f"{d}/scaling_available_frequencies", _words(freqs) + " ")  # the kernel leaves a trailing space
    t.file(f"{d}/scaling_available_governors", governors)
    t.file(f"{d}/scaling_driver", driver)
    t.file(f"{d}/scaling_governor", governor, RW)
    t.file(f"{d}/scaling_min_freq", str(min(freqs)), RW)
    t.file(f"{d}/scaling_max_freq", str(max(freqs)), RW)
    t.file(f"{d}/scaling_cur_freq", str(cur))
    t.file(f"{d}/scaling_setspeed", str(cur) if governor == "userspace" else "<unsupported>", RW)
    for cpu in cpus:
        t.dir(f"/sys/devices/system/cpu/cpu{cpu}")
        t.file(f"/sys/devices/system/cpu/cpu{cpu}/online", "1", RW)
        if policy_dirs or cpu != lead:
            t.link(f"/sys/devices/system/cpu/cpu{cpu}/cpufreq", d)
    k.natural[os.path.realpath(t.host(d))] = cur
    return d


def devfreq_device(
    t: Tree,
    k: FakeKernel,
    devfreq_dir: str,
    class_name: str,
    device_dir: str,
    freqs: list[int],
    governors: str,
    governor: str,
    cur: int,
    *,
    name: str | None = None,
    of_node: str | None = None,
) -> str:
    """A devfreq device at ``devfreq_dir`` linked from /sys/class/devfreq/<class_name>."""
    d = devfreq_dir
    t.file(f"{d}/available_frequencies", _words(freqs))
    t.file(f"{d}/available_governors", governors)
    t.file(f"{d}/governor", governor, RW)
    t.file(f"{d}/cur_freq", str(cur))
    t.file(f"{d}/target_freq", str(cur))
    t.file(f"{d}/min_freq", str(min(freqs)), RW)
    t.file(f"{d}/max_freq", str(max(freqs)), RW)
    t.file(f"{d}/polling_interval", "50", RW)
    t.file(f"{d}/trans_stat", "     From  :   To\n", RO)
    if name is not None:
        t.file(f"{d}/name", name)
    t.dir(device_dir)
    if os.path.realpath(t.host(device_dir)) != os.path.realpath(t.host(d)):
        t.link(f"{d}/device", device_dir)
    if of_node is not None:
        node_dir = f"/sys/firmware/devicetree/base/{of_node}"
        t.file(f"{node_dir}/name", of_node.split("@")[0].encode() + b"\x00")
        t.link(f"{device_dir}/of_node", node_dir)
    t.link(f"/sys/class/devfreq/{class_name}", d)
    if governor == "userspace":
        t.file(f"{d}/userspace/set_freq", str(cur), RW)
    k.natural[os.path.realpath(t.host(d))] = cur
    return d


def thermal_zone(t: Tree, index: int, kind: str, temp_mc: int) -> None:
    d = f"/sys/devices/virtual/thermal/thermal_zone{index}"
    t.file(f"{d}/type", kind)
    t.file(f"{d}/temp", str(temp_mc))
    t.file(f"{d}/mode", "enabled", RW)
    t.link(f"/sys/class/thermal/thermal_zone{index}", d)


def device_tree(t: Tree, model: str, compatible: list[str]) -> None:
    base = "/sys/firmware/devicetree/base"
    t.file(f"{base}/model", model.encode() + b"\x00")
    t.file(f"{base}/compatible", b"".join(c.encode() + b"\x00" for c in compatible))
    t.link("/proc/device-tree", base)


def proc_files(t: Tree, ncpu: int, mem_total_kb: int, mem_avail_kb: int) -> None:
    lines = [f"cpu  {1000 * ncpu} 0 {500 * ncpu} {8000 * ncpu} 100 0 10 0 0 0"]
    for cpu in range(ncpu):
        lines.append(f"cpu{cpu} 1000 0 500 8000 100 0 10 0 0 0")
    lines += ["intr 0", "ctxt 1000", "btime 1700000000", "processes 100", "procs_running 1", "procs_blocked 0"]
    t.file("/proc/stat", "\n".join(lines))
    t.file(
        "/proc/meminfo",
        f"MemTotal:       {mem_total_kb} kB\nMemFree:        {mem_avail_kb // 2} kB\nMemAvailable:   {mem_avail_kb} kB",
    )
    t.file("/sys/devices/system/cpu/present", f"0-{ncpu - 1}")
    t.file("/sys/devices/system/cpu/possible", f"0-{ncpu - 1}")
    t.file("/sys/devices/system/cpu/online", f"0-{ncpu - 1}")
    for cpu in range(ncpu):
        t.dir(f"/sys/devices/system/cpu/cpu{cpu}")


def ina3221_hwmon(t: Tree, bus_addr: str, hwmon: str, channels: dict[int, tuple[str, int, int]]) -> None:
    """JP5+ layout: channels {k: (label, mV, mA)}; channel 7 is the shunt sum."""
    dev = f"/sys/devices/platform/bus@0/3160000.i2c/i2c-{bus_addr.split('-')[0]}/{bus_addr}"
    t.file(f"{dev}/name", "ina3221")
    hw = f"{dev}/hwmon/{hwmon}"
    t.file(f"{hw}/name", "ina3221")
    for k, (label, mv, ma) in channels.items():
        t.file(f"{hw}/in{k}_label", label)
        t.file(f"{hw}/in{k}_input", str(mv))
        t.file(f"{hw}/curr{k}_input", str(ma))
        t.file(f"{hw}/curr{k}_max", "20000", RW)
        t.file(f"{hw}/curr{k}_crit", "32760", RW)
    t.file(f"{hw}/in7_label", "sum of shunt voltages")
    t.file(f"{hw}/in7_input", "12")
    t.link(f"/sys/bus/i2c/devices/{bus_addr}", dev)
    t.link(f"/sys/bus/i2c/drivers/ina3221/{bus_addr}", dev)


def ina3221_iio(t: Tree, bus_addr: str, rails: list[tuple[str, int, int]]) -> None:
    """JP4 layout: iio:device0/rail_name_K, in_voltageK_input (mV), in_currentK_input (mA), in_powerK_input (mW)."""
    dev = f"/sys/devices/7000c400.i2c/i2c-{bus_addr.split('-')[0]}/{bus_addr}"
    t.file(f"{dev}/name", "ina3221x")
    iio = f"{dev}/iio:device0"
    for k, (label, mv, ma) in enumerate(rails):
        t.file(f"{iio}/rail_name_{k}", label)
        t.file(f"{iio}/in_voltage{k}_input", str(mv))
        t.file(f"{iio}/in_current{k}_input", str(ma))
        t.file(f"{iio}/in_power{k}_input", str(mv * ma // 1000))
        t.file(f"{iio}/crit_current_limit_{k}", "4000", RW)
    t.link(f"/sys/bus/i2c/devices/{bus_addr}", dev)
    t.link(f"/sys/bus/i2c/drivers/ina3221x/{bus_addr}", dev)


def nvpmodel(t: Tree, mode: int, modes: dict[int, str]) -> None:
    t.file("/var/lib/nvpmodel/status", f"pmode:{mode:04d} fmode:quiet")
    conf = ["# nvpmodel configuration"]
    for i, n in modes.items():
        conf += [f"< POWER_MODEL ID={i} NAME={n} >", "CPU_ONLINE CORE_0 1"]
    conf.append(f"< PM_CONFIG DEFAULT={mode} >")
    t.file("/etc/nvpmodel.conf", "\n".join(conf))


# -- boards --------------------------------------------------------------------------------------
NANO_CPU = _ints(
    "102000 204000 307200 403200 518400 614400 710400 825600 921600 1036800 1132800 1224000 1326000 1428000 1479000 "
)
NANO_GPU = _ints(
    "76800000 153600000 230400000 307200000 384000000 460800000 537600000 614400000 691200000 "
    "768000000 844800000 921600000 "
)
CARMEL_CPU = _ints(
    "115200 192000 268800 345600 422400 499200 576000 652800 729600 806400 883200 960000 "
    "1036800 1113600 1190400 1267200 1344000 1420800 1497600 1574400 1651200 1728000 1804800 "
    "1881600 1907200 "
)
XAVIER_GPU = _ints(
    "114750000 204000000 306000000 408000000 510000000 599250000 701250000 752250000 803250000 "
    "854250000 905250000 956250000 1007250000 1058250000 1109250000 "
)
ORIN_CPU = _ints(
    "115200 192000 268800 345600 422400 499200 576000 652800 729600 806400 883200 960000 "
    "1036800 1113600 1190400 1267200 1344000 1420800 1497600 1574400 1651200 1728000 1804800 "
    "1881600 1958400 2035200 2112000 2188800 2201600 "
)
ORIN_GPU = _ints(
    "306000000 408000000 510000000 612000000 714000000 816000000 918000000 1020000000 1122000000 1224000000 1300500000 "
)
XU_LITTLE = _ints("200000 300000 400000 500000 600000 700000 800000 900000 1000000 1100000 1200000 1300000 1400000 ")
XU_BIG = _ints(
    "200000 300000 400000 500000 600000 700000 800000 900000 1000000 1100000 1200000 1300000 "
    "1400000 1500000 1600000 1700000 1800000 1900000 2000000 "
)
MALI_T628 = _ints("177000000 266000000 350000000 420000000 480000000 543000000 600000000 ")
L4T_GOVS = "interactive conservative ondemand userspace powersave performance schedutil"
TEGRA_GPU_GOVS = "wmark_active wmark_simple nvhost_podgov userspace performance simple_ondemand"


def jetson_nano(root: str) -> FakeBoard:
    """Jetson Nano, JetPack 4 (L4T 32.7, kernel 4.9): one A57 cluster, gp10b-class GPU at gpu.0, iio INA3221."""
    t, k = Tree(root), FakeKernel(os.path.abspath(root))
    device_tree(
        t,
        "NVIDIA Jetson Nano Developer Kit",
        ["nvidia,p3449-0000-b00+p3448-0000-b00", "nvidia,jetson-nano", "nvidia,tegra210"],
    )
    t.file(
        "/etc/nv_tegra_release",
        "# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t210ref, EABI: aarch64, "
        "DATE: Sat Feb 19 17:05:08 UTC 2022",
    )
    proc_files(t, 4, 4058432, 2800000)
    cpufreq_policy(t, k, [0, 1, 2, 3], NANO_CPU, L4T_GOVS, "schedutil", 921600, "tegra_cpufreq")
    devfreq_device(
        t,
        k,
        "/sys/devices/gpu.0/devfreq/57000000.gpu",
        "57000000.gpu",
        "/sys/devices/gpu.0",
        NANO_GPU,
        TEGRA_GPU_GOVS,
        "nvhost_podgov",
        76800000,
        of_node="gpu",
    )
    t.file("/sys/devices/gpu.0/load", "117")
    t.file("/sys/devices/gpu.0/railgate_enable", "1", RW)
    ina3221_iio(t, "6-0040", [("POM_5V_IN", 5072, 560), ("POM_5V_GPU", 5064, 40), ("POM_5V_CPU", 5064, 120)])
    for i, (kind, temp) in enumerate(
        [
            ("AO-therm", 40500),
            ("CPU-therm", 37000),
            ("GPU-therm", 36500),
            ("PLL-therm", 35750),
            ("PMIC-Die", 100000),
            ("thermal-fan-est", 37200),
        ]
    ):
        thermal_zone(t, i, kind, temp)
    nvpmodel(t, 0, {0: "MAXN", 1: "5W"})
    return FakeBoard(
        "jetson-nano",
        t.root,
        k,
        {
            "board": "jetson-nano",
            "clusters": {"cpu": [0, 1, 2, 3]},
            "gpu": "gpu",
            "gpu_hz": NANO_GPU,
            "rails": ["POM_5V_IN", "POM_5V_GPU", "POM_5V_CPU"],
            "total_rail": "POM_5V_IN",
            "power_w": 5072 * 560 // 1000 / 1e3,
            "zones": ["AO-therm", "CPU-therm", "GPU-therm", "PLL-therm", "thermal-fan-est"],
            "gpu_load": 11.7,
            "cpu_method": "userspace",
            "gpu_method": "userspace",
            "pes": ["cpu", "gpu"],
        },
    )


def jetson_xavier_nx(root: str) -> FakeBoard:
    """Xavier NX, JetPack 5 (L4T 35.4, kernel 5.10): three Carmel clusters of 2, gv11b, hwmon INA3221 on 7-0040."""
    t, k = Tree(root), FakeKernel(os.path.abspath(root))
    device_tree(
        t,
        "NVIDIA Jetson Xavier NX Developer Kit",
        ["nvidia,p3509-0000+p3668-0001", "nvidia,jetson-xavier-nx", "nvidia,tegra194"],
    )
    t.file(
        "/etc/nv_tegra_release",
        "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, "
        "DATE: Tue Aug  1 19:57:35 UTC 2023",
    )
    proc_files(t, 6, 7765436, 5000000)
    for lead in (0, 2, 4):
        cpufreq_policy(t, k, [lead, lead + 1], CARMEL_CPU, L4T_GOVS, "schedutil", 1420800, "tegra194")
    devfreq_device(
        t,
        k,
        "/sys/devices/17000000.gv11b/devfreq/17000000.gv11b",
        "17000000.gv11b",
        "/sys/devices/17000000.gv11b",
        XAVIER_GPU,
        "nvhost_podgov userspace performance simple_ondemand",
        "nvhost_podgov",
        114750000,
        of_node="gv11b@17000000",
    )
    t.file("/sys/devices/17000000.gv11b/load", "0")
    ina3221_hwmon(
        t, "7-0040", "hwmon6", {1: ("VDD_IN", 5008, 1232), 2: ("VDD_CPU_GPU_CV", 5008, 340), 3: ("VDD_SOC", 5008, 320)}
    )
    zones = [
        ("CPU-therm", 41500),
        ("GPU-therm", 40000),
        ("AUX-therm", 40500),
        ("AO-therm", 41000),
        ("PMIC-Die", 100000),
        ("thermal-fan-est", 41200),
    ]
    for i, (kind, temp) in enumerate(zones):
        thermal_zone(t, i, kind, temp)
    nvpmodel(t, 2, {0: "MODE_15W_2CORE", 1: "MODE_15W_4CORE", 2: "MODE_15W_6CORE", 3: "MODE_10W_2CORE"})
    return FakeBoard(
        "jetson-xavier-nx",
        t.root,
        k,
        {
            "board": "jetson-xavier-nx",
            "clusters": {"cpu-c0": [0, 1], "cpu-c1": [2, 3], "cpu-c2": [4, 5]},
            "gpu": "gv11b",
            "gpu_hz": XAVIER_GPU,
            "rails": ["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"],
            "total_rail": "VDD_IN",
            "power_w": 5008 * 1232 / 1e6,
            "zones": ["CPU-therm", "GPU-therm", "AUX-therm", "AO-therm", "thermal-fan-est"],
            "gpu_load": 0.0,
            "cpu_method": "userspace",
            "gpu_method": "userspace",
            "pes": ["cpu-c0", "cpu-c1", "cpu-c2", "gpu"],
            "nvpmodel": {"id": 2, "name": "MODE_15W_6CORE"},
        },
    )


def jetson_xavier_nx_2core(root: str) -> FakeBoard:
    """Xavier NX after ``nvpmodel -m 3`` (MODE_10W_2CORE): CPUs 2-5 offline, their policies inactive."""
    board = jetson_xavier_nx(root)
    t, k = Tree(root), board.kernel
    t.file("/sys/devices/system/cpu/online", "0-1")
    for cpu in range(2, 6):
        t.file(f"/sys/devices/system/cpu/cpu{cpu}/online", "0", RW)
        os.unlink(t.host(f"/sys/devices/system/cpu/cpu{cpu}/cpufreq"))  # the kernel drops offline CPUs' links
    for lead in (2, 4):
        k.inactive.add(os.path.realpath(t.host(f"/sys/devices/system/cpu/cpufreq/policy{lead}")))
    set_proc_stat(root, {0: (1000, 8000), 1: (1000, 8000)})  # offline CPUs are not in /proc/stat
    t.file("/var/lib/nvpmodel/status", "pmode:0003 fmode:quiet")
    board.name = "jetson-xavier-nx-2core"
    board.expect.update({"pes": ["cpu-c0", "gpu"], "nvpmodel": {"id": 3, "name": "MODE_10W_2CORE"}})
    return board


def jetson_agx_orin(root: str) -> FakeBoard:
    """AGX Orin, JetPack 5: three A78AE clusters of 4, ga10b at devfreq_dev, two hwmon INA3221 (with NC channels)."""
    t, k = Tree(root), FakeKernel(os.path.abspath(root))
    device_tree(
        t,
        "Jetson AGX Orin Developer Kit",
        ["nvidia,p3737-0000+p3701-0005", "nvidia,p3701-0005", "nvidia,tegra234", "nvidia,tegra23x"],
    )
    t.file(
        "/etc/nv_tegra_release",
        "# R35 (release), REVISION: 3.1, GCID: 32827747, BOARD: t186ref, EABI: aarch64, "
        "DATE: Sun Mar 19 15:19:21 UTC 2023",
    )
    proc_files(t, 12, 31979664, 28000000)
    for lead in (0, 4, 8):
        cpufreq_policy(
            t,
            k,
            [lead, lead + 1, lead + 2, lead + 3],
            ORIN_CPU,
            "userspace performance schedutil",
            "schedutil",
            729600,
            "tegra194",
        )
    devfreq_device(
        t,
        k,
        "/sys/devices/17000000.ga10b/devfreq_dev",
        "17000000.ga10b",
        "/sys/devices/17000000.ga10b",
        ORIN_GPU,
        "nvhost_podgov userspace performance simple_ondemand",
        "nvhost_podgov",
        306000000,
        of_node="ga10b@17000000",
    )
    t.file("/sys/devices/17000000.ga10b/load", "342")
    ina3221_hwmon(
        t,
        "1-0040",
        "hwmon3",
        {1: ("VDD_GPU_SOC", 19952, 220), 2: ("VDD_CPU_CV", 19952, 80), 3: ("VIN_SYS_5V0", 5000, 480)},
    )
    ina3221_hwmon(t, "1-0041", "hwmon4", {1: ("NC", 0, 0), 2: ("VDDQ_VDD2_1V8AO", 5000, 100), 3: ("NC", 0, 0)})
    zones = [
        ("cpu-thermal", 45000),
        ("gpu-thermal", 43500),
        ("cv0-thermal", 42000),
        ("soc0-thermal", 44000),
        ("tj-thermal", 45500),
        ("PMIC-Die", 100000),
    ]
    for i, (kind, temp) in enumerate(zones):
        thermal_zone(t, i, kind, temp)
    nvpmodel(t, 0, {0: "MAXN", 1: "MODE_15W", 2: "MODE_30W", 3: "MODE_50W"})
    total = (19952 * 220 + 19952 * 80 + 5000 * 480 + 5000 * 100) / 1e6
    return FakeBoard(
        "jetson-agx-orin",
        t.root,
        k,
        {
            "board": "jetson-agx-orin",
            "clusters": {"cpu-c0": [0, 1, 2, 3], "cpu-c1": [4, 5, 6, 7], "cpu-c2": [8, 9, 10, 11]},
            "gpu": "ga10b",
            "gpu_hz": ORIN_GPU,
            "rails": ["VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0", "VDDQ_VDD2_1V8AO"],
            "total_rail": None,
            "power_w": total,
            "zones": ["cpu-thermal", "gpu-thermal", "cv0-thermal", "soc0-thermal", "tj-thermal"],
            "gpu_load": 34.2,
            "cpu_method": "userspace",
            "gpu_method": "userspace",
            "pes": ["cpu-c0", "cpu-c1", "cpu-c2", "gpu"],
        },
    )


def _odroid_common(t: Tree, model: str, compatible: list[str]) -> None:
    device_tree(t, model, compatible)
    proc_files(t, 8, 2045036, 1500000)


def _odroid_zones(t: Tree) -> list[str]:
    names = ["cpu0-thermal", "cpu1-thermal", "cpu2-thermal", "cpu3-thermal", "gpu-thermal"]
    for i, name in enumerate(names):
        thermal_zone(t, i, name, 52000 + 1000 * i)
    return names


def odroid_xu3(root: str) -> FakeBoard:
    """Odroid XU3, hardkernel 3.10 kernel: cpuN/cpufreq (no policy dirs), Mali at devfreq0, INA231 sensor_W + enable."""
    t, k = Tree(root), FakeKernel(os.path.abspath(root))
    _odroid_common(t, "Hardkernel Odroid XU3", ["hardkernel,odroid-xu3", "samsung,exynos5422", "samsung,exynos5"])
    govs = "interactive conservative ondemand userspace powersave performance"
    cpufreq_policy(t, k, [0, 1, 2, 3], XU_LITTLE, govs, "interactive", 1400000, "exynos_cpufreq", policy_dirs=False)
    cpufreq_policy(t, k, [4, 5, 6, 7], XU_BIG, govs, "interactive", 2000000, "exynos_cpufreq", policy_dirs=False)
    devfreq_device(
        t,
        k,
        "/sys/devices/platform/11800000.mali/devfreq/devfreq0",
        "devfreq0",
        "/sys/devices/platform/11800000.mali",
        MALI_T628,
        "userspace powersave performance simple_ondemand",
        "simple_ondemand",
        177000000,
    )
    t.file("/sys/devices/platform/11800000.mali/utilization", "37")  # percent (Samsung Mali platform driver)
    watts = {"0040": "1.207450", "0041": "0.118920", "0044": "0.240110", "0045": "0.121580"}
    for addr, w in watts.items():
        dev = f"/sys/devices/platform/i2c-gpio.3/i2c-3/3-{addr}"
        t.file(f"{dev}/name", "INA231")
        values = {"sensor_W": w, "sensor_A": f"{float(w) / 5.0:.6f}", "sensor_V": "5.000000"}
        for fname in values:
            t.file(f"{dev}/{fname}", "0.000000")
        t.file(f"{dev}/enable", "0", RW)
        t.file(f"{dev}/update_period", "263808 usec", RW)
        k.sensor_values[os.path.realpath(t.host(dev))] = values
        t.link(f"/sys/bus/i2c/drivers/INA231/3-{addr}", dev)
    zones = _odroid_zones(t)
    return FakeBoard(
        "odroid-xu3",
        t.root,
        k,
        {
            "board": "odroid-xu3",
            "clusters": {"cpu-little": [0, 1, 2, 3], "cpu-big": [4, 5, 6, 7]},
            "gpu": "mali",
            "gpu_hz": MALI_T628,
            "rails": ["VDD_ARM", "VDD_G3D", "VDD_KFC", "VDD_MEM"],
            "total_rail": None,
            "power_w": sum(float(w) for w in watts.values()),
            "zones": zones,
            "gpu_load": 37.0,
            "cpu_method": "userspace",
            "gpu_method": "userspace",
            "pes": ["cpu-little", "cpu-big"],
        },
    )


def odroid_xu3_mainline(root: str) -> FakeBoard:
    """Odroid XU3 on a mainline 6.x kernel: policy0/policy4, Mali at 11800000.gpu, INA231 through hwmon."""
    t, k = Tree(root), FakeKernel(os.path.abspath(root))
    _odroid_common(t, "Hardkernel Odroid XU3", ["hardkernel,odroid-xu3", "samsung,exynos5800", "samsung,exynos5"])
    govs = "conservative ondemand userspace powersave performance schedutil"
    cpufreq_policy(t, k, [0, 1, 2, 3], XU_LITTLE, govs, "schedutil", 600000, "cpufreq-dt")
    cpufreq_policy(t, k, [4, 5, 6, 7], XU_BIG, govs, "schedutil", 800000, "cpufreq-dt")
    dev = "/sys/devices/platform/soc/11800000.gpu"
    devfreq_device(
        t,
        k,
        f"{dev}/devfreq/11800000.gpu",
        "11800000.gpu",
        dev,
        MALI_T628,
        "userspace powersave performance simple_ondemand",
        "simple_ondemand",
        266000000,
        name="11800000.gpu",
    )
    t.link("/sys/bus/platform/drivers/mali/11800000.gpu", dev)
    microwatts = {"0040": 1207000, "0041": 118000, "0044": 240000, "0045": 121000}
    for i, (addr, uw) in enumerate(microwatts.items()):
        d = f"/sys/devices/platform/soc/12c60000.i2c/i2c-0/0-{addr}"
        t.file(f"{d}/name", "ina231")
        # hwmon numbers deliberately out of address order: match on the device, never on hwmonN.
        hw = f"{d}/hwmon/hwmon{3 - i}"
        t.file(f"{hw}/name", "ina231")
        t.file(f"{hw}/power1_input", str(uw))
        t.file(f"{hw}/in1_input", "5000")
        t.file(f"{hw}/curr1_input", str(uw // 5000))
        t.link(f"/sys/bus/i2c/devices/0-{addr}", d)
    zones = _odroid_zones(t)
    return FakeBoard(
        "odroid-xu3-mainline",
        t.root,
        k,
        {
            "board": "odroid-xu3",
            "clusters": {"cpu-little": [0, 1, 2, 3], "cpu-big": [4, 5, 6, 7]},
            "gpu": "mali",
            "gpu_hz": MALI_T628,
            "rails": ["VDD_ARM", "VDD_G3D", "VDD_KFC", "VDD_MEM"],
            "total_rail": None,
            "power_w": sum(microwatts.values()) / 1e6,
            "zones": zones,
            "gpu_load": None,
            "cpu_method": "userspace",
            "gpu_method": "userspace",
            "pes": ["cpu-little", "cpu-big"],
        },
    )


def odroid_xu4(root: str) -> FakeBoard:
    """Odroid XU4, hardkernel 4.14: policy0/policy4, Mali at 11800000.mali, no power sensors."""
    t, k = Tree(root), FakeKernel(os.path.abspath(root))
    _odroid_common(t, "Hardkernel Odroid XU4", ["hardkernel,odroid-xu4", "samsung,exynos5800", "samsung,exynos5"])
    govs = "conservative ondemand userspace powersave performance schedutil"
    cpufreq_policy(t, k, [0, 1, 2, 3], XU_LITTLE, govs, "schedutil", 1000000, "cpufreq-dt")
    cpufreq_policy(t, k, [4, 5, 6, 7], XU_BIG[:-2], govs, "schedutil", 1400000, "cpufreq-dt")  # XU4Q: 1.8 GHz max
    dev = "/sys/devices/platform/11800000.mali"
    devfreq_device(
        t,
        k,
        f"{dev}/devfreq/11800000.mali",
        "11800000.mali",
        dev,
        MALI_T628,
        "userspace powersave performance simple_ondemand",
        "simple_ondemand",
        177000000,
        name="11800000.mali",
    )
    zones = _odroid_zones(t)
    return FakeBoard(
        "odroid-xu4",
        t.root,
        k,
        {
            "board": "odroid-xu4",
            "clusters": {"cpu-little": [0, 1, 2, 3], "cpu-big": [4, 5, 6, 7]},
            "gpu": "mali",
            "gpu_hz": MALI_T628,
            "rails": [],
            "total_rail": None,
            "power_w": None,
            "zones": zones,
            "gpu_load": None,
            "cpu_method": "userspace",
            "gpu_method": "userspace",
            "pes": ["cpu-little", "cpu-big"],
        },
    )


def x86_rapl(root: str) -> FakeBoard:
    """A laptop: intel_pstate (one policy per CPU, performance/powersave only, no frequency list), RAPL."""
    t, k = Tree(root), FakeKernel(os.path.abspath(root))
    proc_files(t, 4, 16297340, 9000000)
    t.file(
        "/proc/cpuinfo",
        "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Core(TM) i7-8650U CPU @ 1.90GHz",
    )
    for cpu in range(4):
        d = cpufreq_policy(
            t,
            k,
            [cpu],
            [400000, 4200000],
            "performance powersave",
            "powersave",
            1900000,
            "intel_pstate",
            available=False,
        )
        t.file(f"{d}/energy_performance_preference", "balance_performance", RW)
    zones = {
        "intel-rapl:0": ("package-0", 81234567),
        "intel-rapl:0:0": ("core", 41234567),
        "intel-rapl:0:1": ("uncore", 1234567),
        "intel-rapl:1": ("psys", 151234567),
    }
    for zone, (name, uj) in zones.items():
        d = (
            f"/sys/devices/virtual/powercap/intel-rapl/{zone}"
            if zone.count(":") == 1
            else f"/sys/devices/virtual/powercap/intel-rapl/{zone.rsplit(':', 1)[0]}/{zone}"
        )
        t.file(f"{d}/name", name)
        t.file(f"{d}/energy_uj", str(uj), ROOT_ONLY)  # root-only since Linux 5.10
        t.file(f"{d}/max_energy_range_uj", "262143328850")
        t.file(f"{d}/enabled", "1", RW)
        t.link(f"/sys/class/powercap/{zone}", d)
    thermal_zone(t, 0, "acpitz", 40000)
    thermal_zone(t, 1, "x86_pkg_temp", 48000)
    thermal_zone(t, 2, "acpitz", 41000)
    return FakeBoard(
        "x86-rapl",
        t.root,
        k,
        {
            "board": "generic-linux",
            "clusters": {"cpu": [0, 1, 2, 3]},
            "gpu": None,
            "gpu_hz": [],
            "rails": ["package-0", "core(0:0)", "uncore(0:1)", "psys"],
            "total_rail": "psys",
            "power_w": None,
            "zones": ["acpitz0", "x86_pkg_temp", "acpitz1"],
            "gpu_load": None,
            "cpu_method": "scaling_min_freq",
            "gpu_method": None,
            "pes": ["cpu"],
        },
    )


def x86_cuda(root: str) -> FakeBoard:
    """A workstation: acpi-cpufreq (userspace governor, descending frequency list), a discrete NVIDIA GPU."""
    t, k = Tree(root), FakeKernel(os.path.abspath(root))
    proc_files(t, 4, 65747000, 60000000)
    t.file(
        "/proc/cpuinfo", "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD Ryzen 9 5900X 12-Core Processor"
    )
    freqs = [2200000, 2800000, 3700000]
    govs = "conservative ondemand userspace powersave performance schedutil"
    for cpu in range(4):
        d = cpufreq_policy(t, k, [cpu], freqs, govs, "schedutil", 2200000, "acpi-cpufreq")
        t.file(f"{d}/scaling_available_frequencies", "3700000 2800000 2200000 ")  # acpi-cpufreq lists high to low
    bus = "0000:01:00.0"
    t.file(
        f"/proc/driver/nvidia/gpus/{bus}/information",
        "Model: \t\t NVIDIA GeForce RTX 3060\nIRQ:   \t\t 94\nGPU UUID: \t GPU-0\nBus Location: \t 0000:01:00.0",
    )
    t.file(f"/sys/devices/pci0000:00/0000:00:01.1/{bus}/vendor", "0x10de")
    t.link(f"/sys/bus/pci/devices/{bus}", f"/sys/devices/pci0000:00/0000:00:01.1/{bus}")
    t.link(f"/sys/bus/pci/drivers/nvidia/{bus}", f"/sys/devices/pci0000:00/0000:00:01.1/{bus}")
    thermal_zone(t, 0, "acpitz", 35000)
    return FakeBoard(
        "x86-cuda",
        t.root,
        k,
        {
            "board": "generic-linux",
            "clusters": {"cpu": [0, 1, 2, 3]},
            "gpu": "NVIDIA GeForce RTX 3060",
            "gpu_hz": [],
            "rails": [],
            "total_rail": None,
            "power_w": None,
            "zones": ["acpitz"],
            "gpu_load": None,
            "cpu_method": "userspace",
            "gpu_method": None,
            "pes": ["cpu", "gpu"],
        },
    )


def bare_machine(root: str) -> FakeBoard:
    """A VM or container like the CI machine: CPUs and /proc, nothing else."""
    t, k = Tree(root), FakeKernel(os.path.abspath(root))
    proc_files(t, 2, 24684000, 24000000)
    t.file("/proc/cpuinfo", "processor\t: 0\nmodel name\t: AMD EPYC\n\nprocessor\t: 1\nmodel name\t: AMD EPYC")
    return FakeBoard(
        "bare",
        t.root,
        k,
        {
            "board": "generic-linux",
            "clusters": {"cpu": [0, 1]},
            "gpu": None,
            "gpu_hz": [],
            "rails": [],
            "total_rail": None,
            "power_w": None,
            "zones": [],
            "gpu_load": None,
            "cpu_method": None,
            "gpu_method": None,
            "pes": ["cpu"],
        },
    )


BOARDS: dict[str, Callable[[str], FakeBoard]] = {
    "jetson-nano": jetson_nano,
    "jetson-xavier-nx": jetson_xavier_nx,
    "jetson-agx-orin": jetson_agx_orin,
    "odroid-xu3": odroid_xu3,
    "odroid-xu3-mainline": odroid_xu3_mainline,
    "odroid-xu4": odroid_xu4,
    "x86-rapl": x86_rapl,
    "x86-cuda": x86_cuda,
    "bare": bare_machine,
}


def build_board(name: str, root: str) -> FakeBoard:
    os.makedirs(root, exist_ok=True)
    return BOARDS[name](str(root))


def add_task(root: str, pid: int, tid: int, jiffies: int, cpu: int) -> None:
    """A fake /proc/<pid>/task/<tid>/stat with utime=jiffies, stime=0, last CPU=cpu."""
    fields = ["S", "1", "1", "1", "0", "-1", "4194560", "0", "0", "0", "0", str(jiffies), "0"]
    fields += ["0"] * (36 - len(fields)) + [str(cpu), "0", "0", "0", "0", "0"]
    Tree(root).file(f"/proc/{pid}/task/{tid}/stat", f"{tid} (python3 worker) " + " ".join(fields), RO)


def set_proc_stat(root: str, per_cpu: dict[int, tuple[int, int]]) -> None:
    """Rewrite /proc/stat in place with per-CPU (busy user jiffies, idle jiffies)."""
    lines = ["cpu  0 0 0 0 0 0 0 0 0 0"]
    for cpu in sorted(per_cpu):
        busy, idle = per_cpu[cpu]
        lines.append(f"cpu{cpu} {busy} 0 0 {idle} 0 0 0 0 0 0")
    path = Tree(root).host("/proc/stat")
    os.chmod(path, RW)
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    os.chmod(path, RO)


def tree_snapshot(root: str) -> dict[str, Any]:
    """Every path under root with its bytes (files), link target (links) or None (dirs), and its mode."""
    out: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            if os.path.islink(p):
                out[rel] = ("link", os.readlink(p))
            elif os.path.isdir(p):
                out[rel] = ("dir", os.stat(p).st_mode)
            else:
                with open(p, "rb") as fh:
                    out[rel] = ("file", fh.read(), os.stat(p).st_mode)
    return out
