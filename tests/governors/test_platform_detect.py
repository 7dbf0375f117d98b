"""Board detection and every read of the platform description, on fake trees of real boards."""

from __future__ import annotations

import os

import pytest

from dynofa.errors import PlatformError
from governors.platform import AVAILABLE, MISSING, READ_ONLY, detect_platform
from governors.sysfs import Sysfs, parse_cpu_list
from tests.fakes.boards import BOARDS, Tree, build_board, device_tree, proc_files
from tests.fakes.fixtures import fast_tmp_path  # noqa: F401  (tmp_path on tmpfs)

ALL = sorted(BOARDS)


@pytest.fixture(params=ALL)
def board(request, tmp_path):
    return build_board(request.param, str(tmp_path / "root"))


def test_detects_board_clusters_and_pes(board):
    p = detect_platform(board.root, hook=board.kernel)
    e = board.expect
    assert p.board == e["board"]
    assert {c.name: c.cpus for c in p.clusters} == e["clusters"]
    assert p.pe_names() == e["pes"]
    assert p.root == board.root


def test_cluster_frequencies_and_governors_are_read(board):
    p = detect_platform(board.root, hook=board.kernel)
    for c in p.clusters:
        if not c.policies:
            assert c.available_khz == [] and c.governor is None
            continue
        pol = c.policies[0]
        host = os.path.join(board.root, pol.lstrip("/"))
        with open(f"{host}/scaling_governor") as fh:
            assert c.governor == fh.read().strip()
        with open(f"{host}/scaling_cur_freq") as fh:
            assert c.cur_khz == int(fh.read())
        assert c.hw_min_khz is not None and c.hw_max_khz is not None and c.hw_min_khz < c.hw_max_khz
        assert c.min_khz == c.hw_min_khz and c.max_khz == c.hw_max_khz
        if c.available_khz:
            assert c.available_khz == sorted(c.available_khz)
            assert c.available_khz[0] == c.hw_min_khz and c.available_khz[-1] == c.hw_max_khz
        assert c.governors and c.governor in c.governors


def test_gpu_devfreq_discovery(board):
    p = detect_platform(board.root, hook=board.kernel)
    e = board.expect
    if e["gpu"] is None:
        assert p.gpu is None
        assert p.capability("dvfs:gpu").status == MISSING
        return
    assert p.gpu is not None
    assert p.gpu.name == e["gpu"]
    assert p.gpu.available_hz == e["gpu_hz"]
    if not e["gpu_hz"]:  # a discrete NVIDIA GPU: a PE, but its clocks are the driver's
        assert p.gpu.cuda and p.gpu.devfreq is None and "gpu" in p.pe_names()
        assert "nvidia-smi" in p.capability("dvfs:gpu").reason
        return
    assert p.gpu.devfreq is not None and p.gpu.devfreq.startswith("/sys/class/devfreq/")
    assert p.gpu.cuda == e["board"].startswith("jetson")
    assert p.gpu.cur_hz == p.gpu.available_hz[0] or p.gpu.cur_hz in p.gpu.available_hz


def test_power_rails_and_total(board):
    p = detect_platform(board.root, hook=board.kernel)
    e = board.expect
    assert [r.name for r in p.rails] == e["rails"]
    totals = [r.name for r in p.rails if r.is_total]
    assert totals == ([e["total_rail"]] if e["total_rail"] else [])
    # NC channels and the channel-7 shunt sum are never rails
    assert not any(r.name == "NC" or "sum" in r.name for r in p.rails)
    expected = AVAILABLE if e["rails"] else MISSING
    assert p.capability("power").status == expected


def test_thermal_zones_skip_pmic_die(board):
    p = detect_platform(board.root, hook=board.kernel)
    assert [z.name for z in p.thermal_zones] == board.expect["zones"]
    assert "PMIC-Die" not in [z.name for z in p.thermal_zones]
    assert p.capability("thermal").status == (AVAILABLE if board.expect["zones"] else MISSING)


def test_dvfs_capability_methods(board):
    p = detect_platform(board.root, hook=board.kernel)
    e = board.expect
    for c in p.clusters:
        cap = p.capability(f"dvfs:{c.name}")
        if e["cpu_method"] is None:
            assert cap.status == MISSING and "cpufreq" in cap.reason
        else:
            assert cap.status == AVAILABLE and cap.method.startswith(e["cpu_method"])
    gcap = p.capability("dvfs:gpu")
    if e["gpu_method"] is None:
        assert gcap.status == MISSING
    else:
        assert gcap.status == AVAILABLE and gcap.method.startswith(e["gpu_method"])
    assert p.capability("task-mapping").status == AVAILABLE


def test_unprivileged_user_sees_dvfs_read_only(board):
    board.kernel.unprivileged = True
    p = detect_platform(board.root, hook=board.kernel)
    for name, cap in p.capabilities().items():
        if name.startswith("dvfs:") and board.expect["cpu_method"] and name != "dvfs:gpu":
            assert cap.status == READ_ONLY, name
            assert "not writable" in cap.reason


def test_rapl_energy_is_root_only(tmp_path):
    board = build_board("x86-rapl", str(tmp_path / "x86"))
    board.kernel.unprivileged = True
    p = detect_platform(board.root, hook=board.kernel)
    cap = p.capability("power")
    assert cap.status == MISSING
    assert "root-only" in cap.reason and "energy_uj" in cap.reason


def test_acpi_cpufreq_descending_list_and_userspace(tmp_path):
    board = build_board("x86-cuda", str(tmp_path / "ws"))
    p = detect_platform(board.root, hook=board.kernel)
    (cluster,) = p.clusters
    assert cluster.available_khz == [2200000, 2800000, 3700000]
    assert p.capability("dvfs:cpu").method.startswith("userspace")
    assert p.pe_cpus("gpu") == [0, 1, 2, 3]


def test_x86_policies_grouped_into_one_cluster(tmp_path):
    board = build_board("x86-rapl", str(tmp_path / "x86"))
    p = detect_platform(board.root, hook=board.kernel)
    (cluster,) = p.clusters
    assert len(cluster.policies) == 4
    assert cluster.available_khz == [] and cluster.driver == "intel_pstate"
    assert p.model.startswith("Intel(R) Core(TM) i7-8650U")
    rails = {r.name: r for r in p.rails}
    assert rails["core(0:0)"].in_sum is False and rails["package-0"].in_sum is True
    assert rails["package-0"].max_energy_uj == 262143328850


def test_jetson_info_nvpmodel_l4t_jtop(tmp_path):
    board = build_board("jetson-xavier-nx", str(tmp_path / "nx"))
    p = detect_platform(board.root, hook=board.kernel)
    assert p.info["nvpmodel"] == {"id": 2, "name": "MODE_15W_6CORE"}
    assert p.info["l4t"] == "35.4.1"
    assert p.info["jetson_clocks"] is False
    assert p.capability("jtop").status == MISSING and "jtop.service" in p.capability("jtop").reason
    assert p.gpu is not None and p.gpu.load_path == "/sys/devices/17000000.gv11b/load"
    assert all(c.core == "Carmel" for c in p.clusters)


def test_jetson_clocks_engaged_is_noticed(tmp_path):
    board = build_board("jetson-nano", str(tmp_path / "nano"))
    t = Tree(board.root)
    pol = "/sys/devices/system/cpu/cpufreq/policy0"
    t.file(f"{pol}/scaling_min_freq", "1479000", 0o644)
    gpu = "/sys/devices/gpu.0/devfreq/57000000.gpu"
    t.file(f"{gpu}/min_freq", "921600000", 0o644)
    p = detect_platform(board.root, hook=board.kernel)
    assert p.info["jetson_clocks"] is True
    assert p.capability("dvfs:cpu").usable and "jetson_clocks" in p.capability("dvfs:cpu").reason
    from governors.actuators import Actuator

    act = Actuator(p, str(tmp_path / "state"))
    assert act.set_cluster_khz("cpu", 518400) == 1479000  # the kernel clamps to min = max: read back tells
    act.restore()


def test_xu3_3_10_layout_without_policy_dirs(tmp_path):
    board = build_board("odroid-xu3", str(tmp_path / "xu3"))
    assert not os.path.exists(os.path.join(board.root, "sys/devices/system/cpu/cpufreq"))
    p = detect_platform(board.root, hook=board.kernel)
    assert [c.policies for c in p.clusters] == [
        ["/sys/devices/system/cpu/cpu0/cpufreq"],
        ["/sys/devices/system/cpu/cpu4/cpufreq"],
    ]
    assert [c.core for c in p.clusters] == ["Cortex-A7", "Cortex-A15"]
    assert {r.kind for r in p.rails} == {"ina231-hardkernel"}
    assert all(r.enable_path for r in p.rails)


def test_xu3_mainline_matches_ina231_by_device_not_hwmon_number(tmp_path):
    board = build_board("odroid-xu3-mainline", str(tmp_path / "xu3m"))
    p = detect_platform(board.root, hook=board.kernel)
    by_name = {r.name: r for r in p.rails}
    assert by_name["VDD_ARM"].device == "/sys/bus/i2c/devices/0-0040"
    assert by_name["VDD_KFC"].device == "/sys/bus/i2c/devices/0-0045"
    assert {r.kind for r in p.rails} == {"ina231-hwmon"}


def test_xu3_without_sensor_driver_reports_why(tmp_path):
    root = str(tmp_path / "xu3bare")
    t = Tree(root)
    device_tree(t, "Hardkernel Odroid XU3", ["hardkernel,odroid-xu3", "samsung,exynos5422"])
    proc_files(t, 8, 2000000, 1000000)
    p = detect_platform(root)
    assert p.board == "odroid-xu3"
    assert p.capability("power").status == MISSING and "INA231" in p.capability("power").reason


@pytest.mark.parametrize(
    ("model", "compatible", "expected"),
    [
        ("NVIDIA Jetson AGX Xavier Developer Kit", ["nvidia,p2972-0000", "nvidia,tegra194"], "jetson-agx-xavier"),
        ("NVIDIA Jetson Orin Nano Developer Kit", ["nvidia,p3768-0000+p3767-0005"], "jetson-orin-nano"),
        ("NVIDIA Jetson Orin NX Engineering Reference Developer Kit", ["nvidia,tegra234"], "jetson-orin-nx"),
        ("NVIDIA Jetson TX1 Developer Kit", ["nvidia,p2371-2180", "nvidia,tegra210"], "jetson-tx1"),
        ("Hardkernel ODROID-XU4", ["hardkernel,odroid-xu4", "samsung,exynos5800"], "odroid-xu4"),
        ("Hardkernel Odroid XU3 Lite", ["hardkernel,odroid-xu3-lite", "samsung,exynos5800"], "odroid-xu3"),
        ("Raspberry Pi 4 Model B Rev 1.4", ["raspberrypi,4-model-b", "brcm,bcm2711"], "generic-linux"),
    ],
)  # fmt: skip
def test_board_identification_table(tmp_path, model, compatible, expected):
    root = str(tmp_path / "dt")
    device_tree(Tree(root), model, compatible)
    assert detect_platform(root).board == expected


def test_nv_tegra_release_alone_means_jetson(tmp_path):
    root = str(tmp_path / "l4t")
    Tree(root).file("/etc/nv_tegra_release", "# R32 (release), REVISION: 4.4, GCID: 1, BOARD: t186ref, EABI: aarch64")
    p = detect_platform(root)
    assert p.board == "jetson-unknown"
    assert p.info["l4t"] == "32.4.4"


def test_empty_tree_never_raises(tmp_path):
    (tmp_path / "nothing").mkdir()
    p = detect_platform(str(tmp_path / "nothing"))
    assert p.board == "generic-linux"
    assert p.clusters == [] and p.gpu is None
    assert p.capability("task-mapping").status == MISSING
    assert p.capability("cpu-utilisation").status == MISSING
    p.to_dict()


def test_a_root_that_is_not_a_directory_is_an_error_not_a_bare_board(tmp_path):
    with pytest.raises(PlatformError, match="is not a directory"):
        detect_platform(str(tmp_path / "nonexistent"))


def test_garbage_values_do_not_crash(tmp_path):
    board = build_board("jetson-nano", str(tmp_path / "nano"))
    t = Tree(board.root)
    pol = "/sys/devices/system/cpu/cpufreq/policy0"
    t.file(f"{pol}/scaling_available_frequencies", "lots of garbage")
    t.file(f"{pol}/scaling_cur_freq", "")
    t.file("/sys/devices/virtual/thermal/thermal_zone1/temp", "oops")
    p = detect_platform(board.root, hook=board.kernel)
    assert p.clusters[0].available_khz == [] and p.clusters[0].cur_khz is None
    assert "CPU-therm" not in [z.name for z in p.thermal_zones]


def test_unknown_cluster_and_pe_names_are_clear_errors(tmp_path):
    from dynofa.errors import PlatformError

    board = build_board("odroid-xu4", str(tmp_path / "xu4"))
    p = detect_platform(board.root, hook=board.kernel)
    with pytest.raises(PlatformError, match="cpu-little, cpu-big"):
        p.cluster("cpu-medium")
    with pytest.raises(PlatformError, match="no CUDA GPU"):
        p.pe_cpus("gpu")
    assert p.pe_cpus("cpu-big") == [4, 5, 6, 7]
    assert p.device_for("cpu-big") == "cpu"
    with pytest.raises(PlatformError):
        p.device_for("gpu")
    nano = build_board("jetson-nano", str(tmp_path / "nano"))
    assert detect_platform(nano.root, hook=nano.kernel).device_for("gpu") == "cuda"


def test_to_dict_is_json_ready(board):
    import json

    d = detect_platform(board.root, hook=board.kernel).to_dict()
    assert json.loads(json.dumps(d))["board"] == board.expect["board"]
    assert set(d) >= {"board", "model", "pes", "clusters", "gpu", "rails", "thermal_zones", "capabilities"}


def test_sysfs_layer_paths_and_cpu_lists(tmp_path):
    s = Sysfs(str(tmp_path))
    Tree(str(tmp_path)).file("/a/b", "1 2 3")
    assert s.real("/a/b") == os.path.join(str(tmp_path), "a/b")
    assert s.target(s.real("/a/b")) == "/a/b"
    assert s.try_ints("/a/b") == [1, 2, 3] and s.try_ints("/missing") == []
    assert s.try_int("/missing") is None
    assert parse_cpu_list("0-3,6 8") == [0, 1, 2, 3, 6, 8]
    assert parse_cpu_list("0 1 2 3\n") == [0, 1, 2, 3]
    with pytest.raises(FileNotFoundError):
        s.write("/a/new-file", 1)  # a missing attribute is ENOENT, never created
    assert not os.path.exists(s.real("/a/new-file"))


def test_offline_clusters_after_nvpmodel(tmp_path):
    from tests.fakes.boards import jetson_xavier_nx_2core

    board = jetson_xavier_nx_2core(str(tmp_path / "nx2"))
    p = detect_platform(board.root, hook=board.kernel)
    assert {c.name: c.cpus for c in p.clusters} == {"cpu-c0": [0, 1], "cpu-c1": [2, 3], "cpu-c2": [4, 5]}
    assert {c.name: c.online for c in p.clusters} == {"cpu-c0": [0, 1], "cpu-c1": [], "cpu-c2": []}
    assert p.pe_names() == ["cpu-c0", "gpu"]
    assert p.info["nvpmodel"] == {"id": 3, "name": "MODE_10W_2CORE"}
    cap = p.capability("dvfs:cpu-c1")
    assert cap.status == MISSING and "offline" in cap.reason
    assert p.capability("dvfs:cpu-c0").status == AVAILABLE
    assert p.pe_cpus("gpu") == [0, 1]
    with pytest.raises(Exception, match="offline"):
        p.pe_cpus("cpu-c2")
    assert p.capability("task-mapping").method.endswith("CPUs 0-1")


def test_odroid_big_cluster_offline_keeps_its_name(tmp_path):
    board = build_board("odroid-xu4", str(tmp_path / "xu4"))
    t = Tree(board.root)
    t.file("/sys/devices/system/cpu/online", "0-3")
    board.kernel.inactive.add(os.path.realpath(t.host("/sys/devices/system/cpu/cpufreq/policy4")))
    p = detect_platform(board.root, hook=board.kernel)
    assert [(c.name, c.cpus, c.online) for c in p.clusters] == [
        ("cpu-little", [0, 1, 2, 3], [0, 1, 2, 3]),
        ("cpu-big", [4, 5, 6, 7], []),
    ]
    assert p.pe_names() == ["cpu-little"]
