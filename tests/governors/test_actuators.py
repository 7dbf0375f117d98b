"""DVFS and task mapping with rollback, against fake trees with emulated kernel semantics."""

from __future__ import annotations

import errno
import json
import os
import time

import pytest

from dynofa.errors import PlatformError
from governors.actuators import Actuator, snap_to
from governors.platform import AVAILABLE, DEGRADED, detect_platform
from governors.state import STATE_FILE, StateStore
from tests.fakes.boards import BOARDS, Tree, build_board, tree_snapshot
from tests.fakes.fixtures import fast_tmp_path  # noqa: F401  (tmp_path on tmpfs)

DVFS_BOARDS = sorted(n for n in BOARDS if n != "bare")


def _make(name: str, tmp_path):
    board = build_board(name, str(tmp_path / name))
    return board, detect_platform(board.root, hook=board.kernel)


def _read(board, path: str) -> str:
    with open(os.path.join(board.root, path.lstrip("/"))) as fh:
        return fh.read()


class FakeAffinity:
    """sched_{set,get}affinity for a fake board's CPUs (this machine has fewer)."""

    def __init__(self, cpus: list[int]) -> None:
        self.cpus = set(cpus)
        self.by_tid: dict[int, set[int]] = {}
        self.fail: int | None = None

    def set(self, tid: int, cpus) -> None:
        if self.fail is not None:
            raise OSError(self.fail, os.strerror(self.fail))
        cpus = set(cpus)
        if not cpus <= self.cpus:
            raise OSError(errno.EINVAL, "Invalid argument")
        self.by_tid[tid] = cpus

    def get(self, tid: int) -> set[int]:
        return set(self.by_tid.get(tid, self.cpus))


def _middle(values: list[int]) -> int:
    return values[len(values) // 2]


@pytest.mark.parametrize("name", DVFS_BOARDS)
def test_set_every_cluster_and_gpu_then_restore_byte_for_byte(name, tmp_path):
    board, p = _make(name, tmp_path)
    before = tree_snapshot(board.root)
    act = Actuator(p, str(tmp_path / "state"))
    for c in p.clusters:
        want = _middle(c.available_khz) if c.available_khz else 2000000
        got = act.set_cluster_khz(c.name, want)
        assert got == want, c.name
        assert act.read_cluster_khz(c.name) == want
    if p.gpu is not None and p.gpu.available_hz:
        want = _middle(p.gpu.available_hz)
        assert act.set_gpu_hz(want) == want
    assert tree_snapshot(board.root) != before
    assert os.path.exists(tmp_path / "state" / STATE_FILE)
    report = act.restore()
    assert report.ok and report.restored
    assert tree_snapshot(board.root) == before
    assert not os.path.exists(tmp_path / "state" / STATE_FILE)
    assert all(cap.status != DEGRADED for cap in p.capabilities().values())


@pytest.mark.parametrize("name", DVFS_BOARDS)
def test_crash_leaves_state_file_and_next_start_restores(name, tmp_path):
    board, p = _make(name, tmp_path)
    before = tree_snapshot(board.root)
    state_dir = str(tmp_path / "state")
    act = Actuator(p, state_dir)
    for c in p.clusters:
        act.set_cluster_khz(c.name, c.available_khz[0] if c.available_khz else 800000)
    if p.gpu is not None and p.gpu.available_hz:
        act.set_gpu_hz(p.gpu.available_hz[-1])
    del act  # the daemon dies here: no restore
    saved = json.loads((tmp_path / "state" / STATE_FILE).read_text())
    saved["pid"] = 2**22 + 1  # a pid that is not running
    (tmp_path / "state" / STATE_FILE).write_text(json.dumps(saved))
    p2 = detect_platform(board.root, hook=board.kernel)
    act2 = Actuator(p2, state_dir)
    assert act2.recovered is not None and act2.recovered.ok
    assert len(act2.recovered.restored) == len(saved["settings"])
    assert tree_snapshot(board.root) == before
    assert not os.path.exists(tmp_path / "state" / STATE_FILE)


def test_userspace_write_sequence_and_snapping(tmp_path):
    board, p = _make("jetson-nano", tmp_path)
    act = Actuator(p, str(tmp_path / "state"))
    pol = "/sys/devices/system/cpu/cpufreq/policy0"
    assert act.set_cluster_khz("cpu", 1000000) == 921600  # snapped down to an available step
    assert board.kernel.writes == [(f"{pol}/scaling_governor", "userspace"), (f"{pol}/scaling_setspeed", "921600")]
    assert act.set_cluster_khz("cpu", 1) == 102000  # below every step: the lowest
    assert board.kernel.writes[-1] == (f"{pol}/scaling_setspeed", "102000")
    assert len(board.kernel.writes) == 3  # governor written once
    gpu = "/sys/class/devfreq/57000000.gpu"
    assert act.set_gpu_hz(500000000) == 460800000
    assert board.kernel.writes[-2:] == [(f"{gpu}/governor", "userspace"), (f"{gpu}/userspace/set_freq", "460800000")]
    state = StateStore(str(tmp_path / "state")).load()
    assert state is not None
    assert [(s.kind, s.governor, s.min, s.max) for s in state.settings] == [
        ("cpufreq", "schedutil", 102000, 1479000),
        ("devfreq", "nvhost_podgov", 76800000, 921600000),
    ]
    act.restore()


def test_clamp_write_order_up_and_down(tmp_path):
    """intel_pstate has no userspace governor: pin by min = max, in an order min <= max always holds."""
    board, p = _make("x86-rapl", tmp_path)
    act = Actuator(p, str(tmp_path / "state"))
    before = tree_snapshot(board.root)
    p0 = "/sys/devices/system/cpu/cpufreq/policy0"
    assert act.set_cluster_khz("cpu", 3000000) == 3000000
    # going up from [400000, 4200000]: min first is fine (3000000 <= max), then max
    assert board.kernel.writes[:2] == [(f"{p0}/scaling_min_freq", "3000000"), (f"{p0}/scaling_max_freq", "3000000")]
    assert len(board.kernel.writes) == 8  # every policy of the cluster
    board.kernel.writes.clear()
    assert act.set_cluster_khz("cpu", 1000000) == 1000000  # down: min before max
    assert board.kernel.writes[:2] == [(f"{p0}/scaling_min_freq", "1000000"), (f"{p0}/scaling_max_freq", "1000000")]
    board.kernel.writes.clear()
    assert act.set_cluster_khz("cpu", 3500000) == 3500000  # up: max before min
    assert board.kernel.writes[:2] == [(f"{p0}/scaling_max_freq", "3500000"), (f"{p0}/scaling_min_freq", "3500000")]
    assert act.set_cluster_khz("cpu", 9000000) == 4200000  # clamped to cpuinfo_max_freq
    assert act.restore().ok
    assert tree_snapshot(board.root) == before


def test_clamp_fallback_for_gpu_without_userspace(tmp_path):
    board, p = _make("jetson-agx-orin", tmp_path)
    Tree(board.root).file(
        "/sys/devices/17000000.ga10b/devfreq_dev/available_governors", "nvhost_podgov performance simple_ondemand"
    )
    p = detect_platform(board.root, hook=board.kernel)
    assert p.capability("dvfs:gpu").method.startswith("min_freq/max_freq")
    before = tree_snapshot(board.root)
    act = Actuator(p, str(tmp_path / "state"))
    assert act.set_gpu_hz(816000000) == 816000000
    node = "/sys/class/devfreq/17000000.ga10b"
    assert board.kernel.writes == [(f"{node}/min_freq", "816000000"), (f"{node}/max_freq", "816000000")]
    act.restore()
    assert tree_snapshot(board.root) == before


def test_effective_frequency_is_read_back_under_an_external_cap(tmp_path):
    """nvpmodel lowers scaling_max_freq behind our back: the kernel clamps, we report what runs."""
    board, p = _make("jetson-xavier-nx", tmp_path)
    act = Actuator(p, str(tmp_path / "state"))
    pol = "/sys/devices/system/cpu/cpufreq/policy0"
    assert act.set_cluster_khz("cpu-c0", 1497600) == 1497600
    from governors.sysfs import Sysfs

    Sysfs(board.root, hook=board.kernel).write(f"{pol}/scaling_max_freq", 1190400)  # "nvpmodel -m 3"
    assert act.read_cluster_khz("cpu-c0") == 1190400
    assert act.set_cluster_khz("cpu-c0", 1881600) == 1190400


def test_original_userspace_setting_is_restored(tmp_path):
    board, p = _make("odroid-xu4", tmp_path)
    pol = "/sys/devices/system/cpu/cpufreq/policy4"
    from governors.sysfs import Sysfs

    s = Sysfs(board.root, hook=board.kernel)
    s.write(f"{pol}/scaling_governor", "userspace")
    s.write(f"{pol}/scaling_setspeed", 1200000)
    p = detect_platform(board.root, hook=board.kernel)
    before = tree_snapshot(board.root)
    act = Actuator(p, str(tmp_path / "state"))
    assert act.set_cluster_khz("cpu-big", 600000) == 600000
    assert act.restore().ok
    assert _read(board, f"{pol}/scaling_setspeed") == "1200000\n"
    assert tree_snapshot(board.root) == before


@pytest.mark.parametrize(
    ("code", "label"),
    [(errno.EBUSY, "EBUSY"), (errno.EINVAL, "EINVAL"), (errno.EACCES, "EACCES"), (errno.EPERM, "EPERM")],
)
def test_refused_setspeed_degrades_and_rolls_back(code, label, tmp_path):
    board, p = _make("odroid-xu3", tmp_path)
    before = tree_snapshot(board.root)
    pol = "/sys/devices/system/cpu/cpu4/cpufreq"
    board.kernel.fail_writes[f"{pol}/scaling_setspeed"] = code
    act = Actuator(p, str(tmp_path / "state"))
    got = act.set_cluster_khz("cpu-big", 1000000)
    assert got == 2000000  # unchanged, read back
    cap = p.capability("dvfs:cpu-big")
    assert cap.status == DEGRADED and label in cap.reason and "scaling_setspeed" in cap.reason
    assert p.capability("dvfs:cpu-little").status == AVAILABLE
    # the governor switch that had succeeded was undone at once
    assert tree_snapshot(board.root) == before
    assert act.set_cluster_khz("cpu-big", 1000000) == 2000000  # degraded: no further attempts
    assert act.set_cluster_khz("cpu-little", 1000000) == 1000000
    act.restore()
    assert tree_snapshot(board.root) == before
    # the degradation is visible to another process (dynofa platform) through the state dir
    assert StateStore(str(tmp_path / "state")).load_degraded(board.root)["dvfs:cpu-big"] == cap.reason
    # the next daemon start probes afresh (the cause may be gone)
    board.kernel.fail_writes.clear()
    p2 = detect_platform(board.root, hook=board.kernel)
    act2 = Actuator(p2, str(tmp_path / "state"))
    assert StateStore(str(tmp_path / "state")).load_degraded(board.root) == {}
    assert act2.set_cluster_khz("cpu-big", 1000000) == 1000000
    act2.restore()


def test_missing_setspeed_file_is_enoent_degradation(tmp_path):
    board, p = _make("jetson-nano", tmp_path)
    os.unlink(os.path.join(board.root, "sys/devices/system/cpu/cpufreq/policy0/scaling_setspeed"))
    act = Actuator(p, str(tmp_path / "state"))
    assert act.set_cluster_khz("cpu", 518400) == 921600
    assert "ENOENT" in p.capability("dvfs:cpu").reason


def test_read_only_tree(tmp_path):
    board, p = _make("jetson-xavier-nx", tmp_path)
    before = tree_snapshot(board.root)
    board.kernel.read_only_fs = True  # e.g. ProtectKernelTunables=yes
    act = Actuator(p, str(tmp_path / "state"))
    assert act.set_gpu_hz(510000000) == 114750000
    assert "EROFS" in p.capability("dvfs:gpu").reason
    assert act.restore().ok  # nothing to restore: the failed device was dropped from the state
    assert tree_snapshot(board.root) == before


def test_unprivileged_never_writes(tmp_path):
    board, _ = _make("odroid-xu4", tmp_path)
    board.kernel.unprivileged = True
    p = detect_platform(board.root, hook=board.kernel)
    act = Actuator(p, str(tmp_path / "state"))
    assert act.set_cluster_khz("cpu-little", 500000) == 1000000
    assert act.set_gpu_hz(600000000) == 177000000
    assert board.kernel.writes == []
    assert not os.path.exists(tmp_path / "state" / STATE_FILE)


def test_discrete_gpu_is_left_alone(tmp_path):
    board, p = _make("x86-cuda", tmp_path)
    act = Actuator(p, str(tmp_path / "state"))
    assert act.set_gpu_hz(1_000_000_000) is None
    assert act.set_cluster_khz("cpu", 3000000) == 2800000
    assert len(board.kernel.writes) == 8  # governor + setspeed on each of the 4 per-CPU policies
    act.restore()


def test_no_cpufreq_reports_none(tmp_path):
    board, p = _make("bare", tmp_path)
    act = Actuator(p, str(tmp_path / "state"))
    assert act.set_cluster_khz("cpu", 1000000) is None
    assert act.set_gpu_hz(1000000) is None
    assert act.restore().ok


def test_bad_requests_are_clear_errors(tmp_path):
    board, p = _make("odroid-xu4", tmp_path)
    act = Actuator(p, str(tmp_path / "state"))
    with pytest.raises(PlatformError, match="unknown CPU cluster"):
        act.set_cluster_khz("cpu-huge", 1000000)
    with pytest.raises(PlatformError, match="positive"):
        act.set_cluster_khz("cpu-big", 0)
    with pytest.raises(PlatformError, match="positive"):
        act.set_gpu_hz(-5)


def test_state_dir_not_writable_refuses_to_change(tmp_path):
    board, p = _make("jetson-nano", tmp_path)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the state dir should be")
    before = tree_snapshot(board.root)
    act = Actuator(p, str(blocker / "state"))
    with pytest.raises(PlatformError, match="rollback state file"):
        act.set_cluster_khz("cpu", 518400)
    with pytest.raises(PlatformError, match="rollback state file"):  # still refused, never half-saved
        act.set_cluster_khz("cpu", 518400)
    assert act.touched == []
    assert tree_snapshot(board.root) == before


def test_corrupt_state_file_is_a_clear_error(tmp_path):
    board, p = _make("jetson-nano", tmp_path)
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / STATE_FILE).write_text("{not json")
    with pytest.raises(PlatformError, match="corrupt"):
        Actuator(p, str(tmp_path / "state"))
    (tmp_path / "state" / STATE_FILE).write_text(json.dumps({"schema": 99}))
    with pytest.raises(PlatformError, match="malformed"):
        Actuator(p, str(tmp_path / "state"))


def test_live_owner_of_state_file_blocks_a_second_daemon(tmp_path):
    board, p = _make("jetson-nano", tmp_path)
    act = Actuator(p, str(tmp_path / "state"))
    act.set_cluster_khz("cpu", 518400)
    saved = json.loads((tmp_path / "state" / STATE_FILE).read_text())
    import subprocess
    import sys

    other = subprocess.Popen(
        [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"], stdout=subprocess.PIPE
    )
    try:
        assert other.stdout is not None and other.stdout.readline() == b"up\n"  # it runs Python now
        saved["pid"] = other.pid  # alive, a Python process, and not us
        (tmp_path / "state" / STATE_FILE).write_text(json.dumps(saved))
        with pytest.raises(PlatformError, match="another dynofa daemon"):
            Actuator(detect_platform(board.root, hook=board.kernel), str(tmp_path / "state"))
    finally:
        other.kill()
        other.wait()
        if other.stdout is not None:
            other.stdout.close()
    # once it is gone, the next start restores
    act2 = Actuator(detect_platform(board.root, hook=board.kernel), str(tmp_path / "state"))
    assert act2.recovered is not None and act2.recovered.ok


def test_reused_pid_of_an_unrelated_process_does_not_block(tmp_path):
    board, p = _make("jetson-nano", tmp_path)
    before = tree_snapshot(board.root)
    act = Actuator(p, str(tmp_path / "state"))
    act.set_cluster_khz("cpu", 518400)
    saved = json.loads((tmp_path / "state" / STATE_FILE).read_text())
    import subprocess

    sleeper = subprocess.Popen(["sleep", "60"])  # alive, but not a dynofa daemon
    try:
        for _ in range(1000):  # until exec has replaced the forked Python image
            with open(f"/proc/{sleeper.pid}/cmdline", "rb") as fh:
                if fh.read().startswith(b"sleep"):
                    break
            time.sleep(0.005)
        saved["pid"] = sleeper.pid
        (tmp_path / "state" / STATE_FILE).write_text(json.dumps(saved))
        act2 = Actuator(detect_platform(board.root, hook=board.kernel), str(tmp_path / "state"))
    finally:
        sleeper.kill()
        sleeper.wait()
    assert act2.recovered is not None and act2.recovered.ok
    assert tree_snapshot(board.root) == before


def test_state_file_for_another_root_is_refused(tmp_path):
    board, p = _make("jetson-nano", tmp_path)
    other, p2 = _make("odroid-xu4", tmp_path)
    act = Actuator(p, str(tmp_path / "state"))
    act.set_cluster_khz("cpu", 518400)
    saved = json.loads((tmp_path / "state" / STATE_FILE).read_text())
    saved["pid"] = 2**22 + 1
    (tmp_path / "state" / STATE_FILE).write_text(json.dumps(saved))
    with pytest.raises(PlatformError, match="belongs to sysfs root"):
        Actuator(p2, str(tmp_path / "state"))


def test_failed_restore_keeps_the_state_file_for_a_retry(tmp_path):
    board, p = _make("odroid-xu4", tmp_path)
    before = tree_snapshot(board.root)
    act = Actuator(p, str(tmp_path / "state"))
    act.set_cluster_khz("cpu-little", 500000)
    act.set_cluster_khz("cpu-big", 500000)
    gov = "/sys/devices/system/cpu/cpufreq/policy0/scaling_governor"
    board.kernel.fail_writes[gov] = errno.EBUSY
    report = act.restore()
    assert not report.ok and "EBUSY" in report.failed["/sys/devices/system/cpu/cpufreq/policy0"]
    assert report.restored == ["/sys/devices/system/cpu/cpufreq/policy4"]
    assert os.path.exists(tmp_path / "state" / STATE_FILE)
    del board.kernel.fail_writes[gov]
    assert act.restore().ok
    assert tree_snapshot(board.root) == before


def test_pin_threads_and_restore_affinity(tmp_path):
    board, p = _make("odroid-xu4", tmp_path)
    aff = FakeAffinity(p.all_cpus())
    act = Actuator(p, str(tmp_path / "state"), set_affinity=aff.set, get_affinity=aff.get)
    assert act.pin_pe("cpu-big", tids=[11, 12]) == [4, 5, 6, 7]
    assert aff.by_tid == {11: {4, 5, 6, 7}, 12: {4, 5, 6, 7}}
    assert act.pin_threads([0, 1], tids=[11]) == [0, 1]
    assert act.threads_for("cpu-big") == 4 and act.threads_for("cpu-little") == 4
    with pytest.raises(PlatformError, match="subset"):
        act.pin_threads([9], tids=[11])
    with pytest.raises(PlatformError, match="no CUDA GPU"):
        act.threads_for("gpu")
    act.restore()
    assert aff.by_tid == {11: set(range(8)), 12: set(range(8))}


def test_pin_threads_failure_degrades_task_mapping(tmp_path):
    board, p = _make("jetson-agx-orin", tmp_path)
    aff = FakeAffinity(p.all_cpus())
    aff.fail = errno.EPERM
    act = Actuator(p, str(tmp_path / "state"), set_affinity=aff.set, get_affinity=aff.get)
    assert act.pin_pe("gpu", tids=[5]) == list(range(12))  # unchanged, read back
    assert p.capability("task-mapping").status == DEGRADED
    assert p.pe_cpus("gpu") == [0, 1, 2, 3]  # identical clusters: the feeding thread takes the first


def test_pin_threads_on_this_machine():
    p = detect_platform("/")
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        act = Actuator(p, d)
        original = sorted(os.sched_getaffinity(0))
        import threading

        tid = threading.get_native_id()
        assert act.pin_threads([original[0]], tids=[tid]) == [original[0]]
        act.restore()
        assert sorted(os.sched_getaffinity(0)) == original


def test_snap_to():
    assert snap_to([100, 200, 300], 250) == 200
    assert snap_to([100, 200, 300], 300) == 300
    assert snap_to([100, 200, 300], 50) == 100
    assert snap_to([100, 200, 300], 10**9) == 300
    assert snap_to([], 50, 100, 400) == 100
    assert snap_to([], 500, 100, 400) == 400


def test_inactive_policy_is_never_written_and_others_work(tmp_path):
    from tests.fakes.boards import jetson_xavier_nx_2core

    board = jetson_xavier_nx_2core(str(tmp_path / "nx2"))
    p = detect_platform(board.root, hook=board.kernel)
    before = tree_snapshot(board.root)
    aff = FakeAffinity(p.online_cpus())
    act = Actuator(p, str(tmp_path / "state"), set_affinity=aff.set, get_affinity=aff.get)
    assert act.set_cluster_khz("cpu-c1", 1190400) is None  # offline: not written, nothing to read
    assert act.set_cluster_khz("cpu-c0", 1190400) == 1190400
    with pytest.raises(PlatformError, match="online CPUs"):
        act.pin_threads([2, 3], tids=[9])
    assert act.pin_pe("cpu-c0", tids=[9]) == [0, 1]
    act.restore()
    assert tree_snapshot(board.root) == before


def test_cluster_going_offline_after_detection_degrades_with_ebusy(tmp_path):
    board, p = _make("jetson-agx-orin", tmp_path)
    act = Actuator(p, str(tmp_path / "state"))
    board.kernel.inactive.add(os.path.realpath(os.path.join(board.root, "sys/devices/system/cpu/cpufreq/policy8")))
    assert act.set_cluster_khz("cpu-c2", 1190400) is None
    assert "EBUSY" in p.capability("dvfs:cpu-c2").reason
    assert act.set_cluster_khz("cpu-c0", 1190400) == 1190400
    board.kernel.inactive.clear()  # back online: restore puts the untouched policy back too
    assert act.restore().ok
