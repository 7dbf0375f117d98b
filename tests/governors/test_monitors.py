"""Monitor snapshots: load (excluding our own threads), GPU, memory, temperatures, power, energy."""

from __future__ import annotations

import errno
import importlib.util
import os

import pytest

from governors.monitors import Monitor, parse_proc_stat, parse_task_stat
from governors.platform import detect_platform
from tests.fakes.boards import BOARDS, Tree, add_task, build_board, set_proc_stat, tree_snapshot
from tests.fakes.fixtures import fast_tmp_path  # noqa: F401  (tmp_path on tmpfs)

PID = 4242


def _read(board, path: str) -> str:
    with open(Tree(board.root).host(path)) as fh:
        return fh.read()


def _make(name: str, tmp_path):
    board = build_board(name, str(tmp_path / name))
    return board, detect_platform(board.root, hook=board.kernel)


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_snapshot_reads_every_sensor(name, tmp_path):
    board, p = _make(name, tmp_path)
    e = board.expect
    with Monitor(p, pid=PID) as m:
        s = m.sample()
    if e["power_w"] is None:
        assert s.power_w is None or e["rails"]  # RAPL needs two samples
    else:
        assert s.power_w == pytest.approx(e["power_w"])
        assert set(s.rails_w) == set(e["rails"])
    assert sorted(s.temperatures_c) == sorted(e["zones"])
    assert all(0 < t < 100 for t in s.temperatures_c.values())
    assert s.gpu_load == (pytest.approx(e["gpu_load"]) if e["gpu_load"] is not None else None)
    assert s.mem_total_bytes and s.mem_available_bytes and s.mem_available_bytes < s.mem_total_bytes
    for c in p.clusters:
        assert s.cpu_khz[c.name] == c.cur_khz
    if p.gpu is not None:
        assert s.gpu_hz == p.gpu.cur_hz
    d = s.to_dict()
    assert d["max_temperature_c"] == (max(s.temperatures_c.values()) if s.temperatures_c else None)


def test_cpu_utilisation_per_cluster(tmp_path):
    board, p = _make("odroid-xu4", tmp_path)
    set_proc_stat(board.root, {cpu: (0, 0) for cpu in range(8)})
    m = Monitor(p, pid=PID)
    # LITTLE cluster: 50 % busy; big: 25 % busy on cpu4 only, the rest idle
    set_proc_stat(board.root, {0: (50, 50), 1: (50, 50), 2: (50, 50), 3: (50, 50),
                               4: (100, 0), 5: (0, 100), 6: (0, 100), 7: (0, 100)})  # fmt: skip
    s = m.sample()
    assert s.cpu_util_total == {"cpu-little": pytest.approx(0.5), "cpu-big": pytest.approx(0.25)}
    assert s.cpu_util == s.cpu_util_total  # no registered threads
    m.close()


def test_own_threads_are_not_counted_as_contention(tmp_path):
    board, p = _make("odroid-xu4", tmp_path)
    set_proc_stat(board.root, {cpu: (0, 0) for cpu in range(8)})
    add_task(board.root, PID, 101, jiffies=1000, cpu=5)
    add_task(board.root, PID, 102, jiffies=10, cpu=1)
    m = Monitor(p, pid=PID, exclude_tids=[101])
    m.register_threads([102])
    # thread 101 ran 300 jiffies on the big cluster, 102 ran 40 on LITTLE
    add_task(board.root, PID, 101, jiffies=1300, cpu=6)
    add_task(board.root, PID, 102, jiffies=50, cpu=2)
    set_proc_stat(board.root, {0: (10, 90), 1: (10, 90), 2: (50, 50), 3: (10, 90),
                               4: (100, 0), 5: (100, 0), 6: (100, 0), 7: (100, 0)})  # fmt: skip
    s = m.sample()
    assert s.cpu_util_total["cpu-big"] == pytest.approx(1.0)
    assert s.cpu_util["cpu-big"] == pytest.approx((400 - 300) / 400)
    assert s.cpu_util_total["cpu-little"] == pytest.approx(80 / 400)
    assert s.cpu_util["cpu-little"] == pytest.approx(40 / 400)
    assert m.excluded_tids == {101, 102}


def test_ended_threads_are_dropped(tmp_path):
    board, p = _make("jetson-nano", tmp_path)
    add_task(board.root, PID, 7, jiffies=5, cpu=0)
    m = Monitor(p, pid=PID, exclude_tids=[7])
    board.kernel.fail_reads[f"/proc/{PID}/task/7/stat"] = errno.ESRCH  # what a reaped thread's stat gives
    m.sample()
    assert m.excluded_tids == set()


def test_real_thread_registration_on_this_machine():
    # The live path: our own thread's stat file parses (this machine has /proc).
    import threading

    with open(f"/proc/self/task/{threading.get_native_id()}/stat") as fh:
        jiffies, cpu = parse_task_stat(fh.read())
    assert jiffies >= 0 and cpu >= 0


def test_parsers():
    stats = parse_proc_stat("cpu  1 2 3 4\ncpu0 10 0 5 80 5 0 0 0 0 0\ncpu1 x\nintr 1\n")
    assert stats == {0: (15, 100)}
    line = "123 (a b) c) S 1 1 1 0 -1 0 0 0 0 0 7 3" + " 0" * 23 + " 3 0 0"
    assert parse_task_stat(line) == (10, 3)


def test_rapl_power_energy_and_wraparound(tmp_path, monkeypatch):
    board, p = _make("x86-rapl", tmp_path)
    t = Tree(board.root)
    pkg = "/sys/devices/virtual/powercap/intel-rapl/intel-rapl:0/energy_uj"
    psys = "/sys/devices/virtual/powercap/intel-rapl/intel-rapl:1/energy_uj"
    clock = iter([100.0, 101.0, 103.0])
    monkeypatch.setattr("governors.monitors.time.monotonic", lambda: next(clock))
    t.file(pkg, "1000000", 0o400)
    t.file(psys, "262143000000", 0o400)  # near max_energy_range_uj = 262143328850
    m = Monitor(p, pid=PID)
    t.file(pkg, "6000000", 0o400)  # 5 J in 1 s
    t.file(psys, str(262143000000 + 8000000 - 262143328850), 0o400)  # wrapped: 8 J in 1 s
    s1 = m.sample()
    assert s1.rails_w["package-0"] == pytest.approx(5.0)
    assert s1.rails_w["psys"] == pytest.approx(8.0)
    assert s1.power_w == pytest.approx(8.0)  # psys is the platform total
    assert s1.energy_j == pytest.approx(8.0)
    t.file(psys, str(8000000 - 328850 + 20000000), 0o400)  # 20 J in 2 s
    s2 = m.sample()
    assert s2.power_w == pytest.approx(10.0)
    assert s2.energy_j == pytest.approx(28.0)
    assert s2.rails_energy_j["psys"] == pytest.approx(28.0)
    assert s2.rails_energy_j["package-0"] == pytest.approx(5.0)  # unchanged counter in the second interval


def test_rapl_unreadable_as_unprivileged_gives_no_power(tmp_path):
    board, p = _make("x86-rapl", tmp_path)
    board.kernel.unprivileged = True
    m = Monitor(p, pid=PID)
    s = m.sample()
    assert s.power_w is None and s.rails_w == {}


def test_energy_is_integrated_with_trapezoids(tmp_path, monkeypatch):
    board, p = _make("jetson-xavier-nx", tmp_path)
    t = Tree(board.root)
    vin = "/sys/bus/i2c/devices/7-0040/hwmon/hwmon6"
    clock = iter([0.0, 1.0, 3.0])
    monkeypatch.setattr("governors.monitors.time.monotonic", lambda: next(clock))
    t.file(f"{vin}/in1_input", "5000")
    t.file(f"{vin}/curr1_input", "1000")  # 5 W
    m = Monitor(p, pid=PID)
    s1 = m.sample()
    assert s1.power_w == pytest.approx(5.0) and s1.energy_j == pytest.approx(5.0)
    t.file(f"{vin}/curr1_input", "3000")  # 15 W
    s2 = m.sample()
    assert s2.energy_j == pytest.approx(5.0 + (5.0 + 15.0) / 2 * 2.0)
    assert s2.rails_energy_j["VDD_IN"] == pytest.approx(s2.energy_j)
    assert s2.rails_energy_j["VDD_SOC"] == pytest.approx(5008 * 320 / 1e6 * 3.0)


def test_sensor_changes_are_seen_through_kept_open_files(tmp_path):
    board, p = _make("jetson-nano", tmp_path)
    m = Monitor(p, pid=PID)
    m.sample()
    t = Tree(board.root)
    host = os.path.join(board.root, "sys/devices/gpu.0/load")
    with open(host, "w") as fh:  # in place, as the kernel regenerates the text
        fh.write("999\n")
    t.file("/sys/devices/virtual/thermal/thermal_zone1/temp", "71500")
    s = m.sample()
    assert s.gpu_load == pytest.approx(99.9)
    assert s.temperatures_c["CPU-therm"] == pytest.approx(71.5)


def test_hardkernel_ina231_enabled_then_disabled(tmp_path):
    board, p = _make("odroid-xu3", tmp_path)
    before = tree_snapshot(board.root)
    enable = "/sys/bus/i2c/drivers/INA231/3-0040/enable"
    m = Monitor(p, pid=PID)
    assert _read(board, enable) == "1\n"
    s = m.sample()
    assert s.rails_w["VDD_ARM"] == pytest.approx(1.20745)
    m.close()
    assert tree_snapshot(board.root) == before


def test_ina231_enable_refused_degrades_power(tmp_path):
    board, p = _make("odroid-xu3", tmp_path)
    board.kernel.fail_writes["/sys/bus/i2c/drivers/INA231/3-0044/enable"] = errno.EACCES
    m = Monitor(p, pid=PID)
    assert p.capability("power").status == "degraded"
    assert "EACCES" in p.capability("power").reason
    s = m.sample()
    assert s.rails_w["VDD_G3D"] == 0.0 and s.rails_w["VDD_ARM"] > 0
    m.close()


def test_read_faults_leave_fields_empty(tmp_path):
    board, p = _make("jetson-nano", tmp_path)
    m = Monitor(p, pid=PID)
    board.kernel.fail_reads["/sys/devices/gpu.0/load"] = errno.EIO
    board.kernel.fail_reads["/proc/stat"] = errno.EIO
    s = m.sample()
    assert s.gpu_load is None
    assert s.cpu_util == {"cpu": None}
    assert s.power_w is not None


def test_live_machine_sample():
    p = detect_platform("/")
    with Monitor(p) as m:
        m.register_current_thread()
        s = m.sample()
    assert set(s.cpu_util) == {c.name for c in p.clusters}
    assert s.mem_total_bytes is None or s.mem_total_bytes > 0


def test_throttled_pes_are_reported(tmp_path):
    board, p = _make("jetson-nano", tmp_path)
    m = Monitor(p, pid=PID)
    assert m.sample().throttled == []
    t = Tree(board.root)
    t.file("/sys/devices/system/cpu/cpufreq/policy0/scaling_max_freq", "1224000", 0o644)  # thermal cap
    t.file("/sys/devices/gpu.0/devfreq/57000000.gpu/max_freq", "614400000", 0o644)
    s = m.sample()
    assert s.throttled == ["cpu", "gpu"]
    assert s.cpu_max_khz == {"cpu": 1224000} and s.gpu_max_hz == 614400000
    t.file("/sys/devices/system/cpu/cpufreq/policy0/scaling_min_freq", "1224000", 0o644)  # a deliberate pin
    assert m.sample().throttled == ["gpu"]


class FakeJtop:
    """The attributes jtop's client exposes (jetson-stats 4.2+ shapes), for a Xavier NX."""

    def __init__(self) -> None:
        self.closed = False
        self.power = {
            "rail": {
                "VDD_IN": {"volt": 5008, "curr": 1400, "power": 7011, "avg": 6500, "online": True},
                "VDD_CPU_GPU_CV": {"volt": 5008, "curr": 400, "power": 2003, "avg": 1900, "online": True},
                "VDD_SOC": {"volt": 5008, "curr": 300, "power": 1502, "avg": 1500, "online": False},
            },
            "tot": {"volt": 5008, "curr": 1400, "power": 7011, "avg": 6500, "name": "VDD_IN"},
        }
        self.temperature = {
            "CPU": {"temp": 43.5, "online": True},
            "GPU": {"temp": 41.0, "online": True},
            "AUX": {"temp": -256, "online": False},
        }
        self.gpu = {"gv11b": {"status": {"railgate": False, "3d_scaling": True, "load": 61.2}, "freq": {}}}

    def close(self) -> None:
        self.closed = True


def test_jtop_conversion():
    from governors.platform.jtop_telemetry import convert

    j = FakeJtop()
    r = convert(j.power, j.temperature, j.gpu)
    assert r.rails_w == {"VDD_IN": pytest.approx(7.011), "VDD_CPU_GPU_CV": pytest.approx(2.003)}
    assert r.power_w == pytest.approx(7.011)
    assert r.temperatures_c == {"CPU": 43.5, "GPU": 41.0}
    assert r.gpu_load == pytest.approx(61.2)
    assert convert(None, None, None).power_w is None  # malformed input never raises


def test_monitor_uses_jtop_telemetry_when_given(tmp_path, monkeypatch):
    from governors.platform.jtop_telemetry import JtopTelemetry

    board, p = _make("jetson-xavier-nx", tmp_path)
    client = FakeJtop()
    clock = iter([0.0, 2.0])
    monkeypatch.setattr("governors.monitors.time.monotonic", lambda: next(clock))
    m = Monitor(p, pid=PID, telemetry=JtopTelemetry(client=client))
    s = m.sample()
    assert s.power_w == pytest.approx(7.011) and s.energy_j == pytest.approx(7.011 * 2)
    assert s.gpu_load == pytest.approx(61.2) and "CPU" in s.temperatures_c
    assert s.cpu_khz == {"cpu-c0": 1420800, "cpu-c1": 1420800, "cpu-c2": 1420800}  # sysfs still
    m.close()
    assert client.closed


def test_jtop_not_used_without_its_service(tmp_path, monkeypatch):
    from governors.platform.jtop_telemetry import open_telemetry

    board, p = _make("jetson-nano", tmp_path)
    assert open_telemetry(p) is None
    Tree(board.root).file("/run/jtop.sock", "")
    # jetson-stats is an optional extra: check both sides whatever this venv has
    real_find_spec = importlib.util.find_spec
    for installed in (True, False):
        monkeypatch.setattr(
            importlib.util,
            "find_spec",
            lambda name, *a, _i=installed: (object() if _i else None) if name == "jtop" else real_find_spec(name, *a),
        )
        p2 = detect_platform(board.root, hook=board.kernel)
        cap = p2.capability("jtop")
        if installed:
            assert cap.status == "available"
        else:
            assert cap.status == "missing" and "jetson-stats package is not installed" in cap.reason
        assert open_telemetry(p2) is None  # a fake tree is never the live system


def test_registration_from_other_threads_while_sampling(tmp_path):
    import threading

    board, p = _make("odroid-xu4", tmp_path)
    for tid in range(1000, 1040):
        add_task(board.root, PID, tid, jiffies=tid, cpu=tid % 8)
    m = Monitor(p, pid=PID)
    errors: list[BaseException] = []

    def register(base: int) -> None:
        try:
            for tid in range(base, base + 10):
                m.register_threads([tid])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    workers = [threading.Thread(target=register, args=(1000 + 10 * i,)) for i in range(4)]
    for w in workers:
        w.start()
    for _ in range(50):
        m.sample()
    for w in workers:
        w.join()
    m.sample()
    assert not errors
    assert m.excluded_tids == set(range(1000, 1040))
    task_fds = [path for path in m._reader._fds if "/task/" in path]
    assert sorted(task_fds) == sorted(f"/proc/{PID}/task/{t}/stat" for t in range(1000, 1040))
    m.close()


def test_ina231_enable_goes_through_the_rollback_record(tmp_path):
    """A daemon killed after enabling the sensors leaves a record; the next start puts them back."""
    from governors.actuators import Actuator

    board, p = _make("odroid-xu3", tmp_path)
    before = tree_snapshot(board.root)
    state = str(tmp_path / "state")
    enable = "/sys/bus/i2c/drivers/INA231/3-0040/enable"
    act = Actuator(p, state_dir=state)
    m = Monitor(p, pid=PID, writer=act)
    assert _read(board, enable) == "1\n"
    assert any(path.endswith("3-0040/enable") for path in act.touched)
    # crash: neither the monitor nor the actuator closes; a new actuator recovers from the file
    recovered = Actuator(detect_platform(board.root, hook=board.kernel), state_dir=state)
    assert recovered.recovered is not None and recovered.recovered.ok
    assert tree_snapshot(board.root) == before
    # a clean close through the writer also restores and drops the record
    m2 = Monitor(p, pid=PID, writer=recovered)
    assert _read(board, enable) == "1\n"
    m2.close()
    assert tree_snapshot(board.root) == before and recovered.touched == []
    m._reader.close()
