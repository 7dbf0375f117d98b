"""Task mapping by role: inference threads on the decided PE, housekeeping off it (unit and through a
real daemon, read from /proc), and inference first: housekeeping waits while a forward runs."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zmq

from dynofa import protocol
from dynofa.client import Client
from governors.actuators import Actuator
from governors.platform import detect_platform
from governors.sysfs import parse_cpu_list
from service.threads import INFERENCE_THREAD_PREFIX, InferenceFirst, housekeeping_tids, own_tids, pin_roles
from tests.fakes.boards import build_board
from tests.governors.test_actuators import FakeAffinity
from tests.service.harness import Daemon


def _comm(tid: int) -> str:
    try:
        return Path(f"/proc/self/task/{tid}/comm").read_text()
    except OSError:
        return ""


@pytest.fixture
def named_threads() -> Iterator[dict[str, int]]:
    """An inference worker, a housekeeping thread and a libzmq I/O thread, alive during the test."""
    release = threading.Event()
    started: dict[str, int] = {}
    ready = threading.Barrier(3)

    def body() -> None:
        started[threading.current_thread().name] = threading.get_native_id()
        ready.wait()
        release.wait()

    threads = [threading.Thread(target=body, name=f"{INFERENCE_THREAD_PREFIX}cpu"),
               threading.Thread(target=body, name="dynofa-control")]  # fmt: skip
    for t in threads:
        t.start()
    context = zmq.Context()
    socket = context.socket(zmq.PUB)
    socket.bind("inproc://roles")
    ready.wait()
    for _ in range(200):  # libzmq names its threads once they run
        if any(_comm(t).startswith("ZMQbg/IO") for t in own_tids()):
            break
        time.sleep(0.01)
    try:
        yield started
    finally:
        release.set()
        for t in threads:
            t.join(5)
        socket.close(0)
        context.term()


def test_housekeeping_is_every_python_thread_but_the_workers_plus_zmq_io(named_threads: dict[str, int]) -> None:
    def zmq_threads() -> set[int]:
        return {t for t in own_tids() if _comm(t).startswith("ZMQbg")}

    # libzmq threads of other tests' contexts may start or end meanwhile: judge those alive throughout
    before = zmq_threads()
    roles = housekeeping_tids()
    zmq_io = before & zmq_threads()
    assert named_threads["dynofa-control"] in roles
    assert threading.get_native_id() in roles  # the main thread serves requests in the daemon
    assert named_threads[f"{INFERENCE_THREAD_PREFIX}cpu"] not in roles
    assert zmq_io and zmq_io <= roles


@pytest.mark.parametrize(("board_name", "pe", "threads", "inference_cpus", "housekeeping_cpus"), [
    ("odroid-xu4", "cpu-big", 1, {4, 5, 6, 7}, {0, 1, 2, 3}),  # big.LITTLE: housekeeping on the other cluster
    ("odroid-xu4", "cpu-little", 4, {0, 1, 2, 3}, {4, 5, 6, 7}),
    ("x86-rapl", "cpu", 1, {3}, {0, 1, 2}),  # one cluster, one thread: a CPU of its own, housekeeping on the rest
    ("x86-rapl", "cpu", 3, {1, 2, 3}, {0}),
    ("x86-rapl", "cpu", 4, {0, 1, 2, 3}, {0, 1, 2, 3}),  # inference uses every CPU: nowhere else to go
    ("x86-rapl", "cpu", 0, {0, 1, 2, 3}, {0, 1, 2, 3}),  # threads unknown: the whole PE
])  # fmt: skip
def test_pin_roles_puts_inference_on_the_pe_and_housekeeping_elsewhere(
    named_threads: dict[str, int], tmp_path: Path, board_name: str, pe: str, threads: int, inference_cpus: set[int],
    housekeeping_cpus: set[int],
) -> None:  # fmt: skip
    board = build_board(board_name, str(tmp_path / board_name))
    platform = detect_platform(board.root, hook=board.kernel)
    affinity = FakeAffinity(platform.all_cpus())
    actuator = Actuator(platform, str(tmp_path / "state"), set_affinity=affinity.set, get_affinity=affinity.get)
    assert pin_roles(actuator, platform, pe, threads) == (sorted(inference_cpus), sorted(housekeeping_cpus))
    worker = named_threads[f"{INFERENCE_THREAD_PREFIX}cpu"]
    assert affinity.by_tid[worker] == inference_cpus
    assert affinity.by_tid[named_threads["dynofa-control"]] == housekeeping_cpus
    assert affinity.by_tid[threading.get_native_id()] == housekeeping_cpus
    actuator.restore()
    assert all(cpus == set(platform.all_cpus()) for cpus in affinity.by_tid.values())


def test_inference_first_holds_housekeeping_back_until_the_forward_ends() -> None:
    gate = InferenceFirst(max_wait_s=30.0)
    went = threading.Event()

    def housekeeping() -> None:
        gate.yield_to_inference("server")
        went.set()

    with gate.forward():
        t = threading.Thread(target=housekeeping)
        t.start()
        assert not went.wait(0.2)  # a broken gate lets it through at once
        assert gate.running()
    t.join(10)
    assert went.is_set() and not gate.running()
    assert gate.to_dict()["server"]["yields"] == 1
    gate.yield_to_inference("server")  # no forward: no wait counted
    assert gate.waits["server"].yields == 1


def test_inference_first_counts_each_roles_waits_apart() -> None:
    gate = InferenceFirst(max_wait_s=0.01)
    with gate.forward():
        gate.yield_to_inference("control")  # in this thread: it waits max_wait_s, the forward stays open
        gate.yield_to_inference("control")
        gate.yield_to_inference("server")
    report = gate.to_dict()
    assert report["max_wait_ms"] == 10.0
    assert report["control"]["yields"] == 2 and report["server"]["yields"] == 1
    # each wait ran out its bound (no forward ended meanwhile), so each role's total is its waits' bounds or
    # more (the slack only absorbs the rounding to microseconds)
    assert report["control"]["waited_ms"] >= 2 * 9.9 and report["server"]["waited_ms"] >= 9.9
    assert set(report) == {"max_wait_ms", "server", "control"}
    with pytest.raises(KeyError):
        gate.yield_to_inference("monitor")  # type: ignore[arg-type]  # no forward runs: it fails all the same


def test_every_inference_first_field_is_documented_with_the_state_reply() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()
    state_reply = doc[doc.index("### `state`") : doc.index("### `subnets`")]
    report = InferenceFirst().to_dict()
    per_role = (key for value in report.values() if isinstance(value, dict) for key in value)
    fields = {"inference_first", *report, *per_role}
    for name in fields:
        assert f"`{name}`" in state_reply, name


def test_inference_first_waits_for_every_overlapping_forward_and_at_most_max_wait() -> None:
    gate = InferenceFirst(max_wait_s=30.0)
    with gate.forward():
        with gate.forward():
            pass
        assert gate.running()  # one worker's forward ended, another's still runs
    assert not gate.running()
    short = InferenceFirst(max_wait_s=0.01)
    with short.forward():
        t = threading.Thread(target=short.yield_to_inference, args=("control",))
        t.start()
        t.join(10)  # a forward longer than max_wait_s does not hold housekeeping up for good
        assert not t.is_alive()


def _online_cpus() -> set[int]:
    return set(parse_cpu_list(Path("/sys/devices/system/cpu/online").read_text()))


def _daemon_threads(pid: int) -> dict[int, tuple[str, set[int]]]:
    """Every thread of ``pid``: its kernel name and the CPUs it may run on, as /proc says."""
    out = {}
    for tid in (int(t) for t in os.listdir(f"/proc/{pid}/task")):
        try:
            comm = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
            out[tid] = (comm, set(os.sched_getaffinity(tid)))
        except OSError:
            continue  # the thread ended
    return out


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2 or set(os.sched_getaffinity(0)) != _online_cpus(),
                    reason="needs a machine with two or more CPUs, all of them usable here")  # fmt: skip
def test_a_real_daemon_gives_inference_its_own_cpu_and_keeps_housekeeping_off_it(daemon: Daemon) -> None:
    c = daemon.client()
    c.shm = False
    c.register("placed")
    try:
        state = c.state()
        if state["platform"]["pes"] != ["cpu"]:
            pytest.skip(f"a one-cluster board's placement; this one has {state['platform']['pes']}")
        c.infer("placed", np.zeros((1, 3, 32, 32), dtype=np.float32))
        threads = c.state()["apps"]["placed"]["operating_point"]["threads"]
        online = sorted(_online_cpus())
        assert threads < len(online)  # the tiny catalog's points use one thread
        roles = _daemon_threads(daemon.proc.pid)
        inference = {frozenset(cpus) for comm, cpus in roles.values() if comm.startswith("dynofa-infer")}
        housekeeping = {tid: cpus for tid, (comm, cpus) in roles.items()
                        if tid == daemon.proc.pid or comm == "dynofa-control" or comm.startswith("ZMQbg")}  # fmt: skip
        assert inference == {frozenset(online[-threads:])}  # the last CPU(s), all to itself
        assert len(housekeeping) >= 3  # server (main thread), control loop, libzmq I/O
        for tid, cpus in housekeeping.items():
            assert cpus == set(online[:-threads]), (roles[tid][0], cpus)
    finally:
        c.unregister("placed")


def _waits(c: Client, role: str) -> int:
    """How often the daemon's ``role`` (server, control) has waited for a running forward."""
    return int(c.state()["daemon"]["inference_first"][role]["yields"])


def test_a_flooded_daemon_holds_requests_back_while_a_forward_runs(daemon: Daemon) -> None:
    """Another client floods the control endpoint with state requests while this one infers: the
    server waits for running forwards before it reads the next request (the state op counts it, for
    the server alone: the control loop's waits, which happen as well, do not make this pass)."""
    c = daemon.client()
    c.shm = False
    c.register("shielded")
    stop = threading.Event()
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()

    def flood() -> None:
        dealer = context.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(daemon.endpoint)
        request = protocol.encode(protocol.request("state"))
        for _ in range(8):
            dealer.send_multipart([b"", request])
        while not stop.is_set():
            if dealer.poll(100):
                dealer.recv_multipart()
                dealer.send_multipart([b"", request])
        dealer.close()

    flooder = threading.Thread(target=flood)
    flooder.start()
    try:
        before = _waits(c, "server")
        x = np.random.default_rng(0).random((1, 3, 48, 48), dtype=np.float32)
        for _ in range(300):
            c.infer("shielded", x)
            if _waits(c, "server") > before:
                break
        assert _waits(c, "server") > before
    finally:
        stop.set()
        flooder.join(10)
        context.term()
        c.unregister("shielded")


def test_the_control_loop_holds_its_step_back_while_a_forward_runs(daemon: Daemon) -> None:
    """While another client's forwards run back to back, the control loop waits for a running
    forward before a step (the state op counts it, for the control loop alone). Bounded in control
    steps, not in time: a loop that waits before its steps cannot miss forwards this dense for long."""
    stop = threading.Event()
    started = threading.Event()
    failed: list[BaseException] = []

    def infer_back_to_back() -> None:
        c = daemon.client()
        c.shm = False
        c.register("busy")
        x = np.random.default_rng(1).random((8, 3, 48, 48), dtype=np.float32)  # a batch: forwards fill the time
        try:
            while not stop.is_set():
                c.infer("busy", x)
                started.set()
        except BaseException as exc:  # noqa: BLE001 - reported by the test's thread below
            failed.append(exc)
        finally:
            started.set()
            c.unregister("busy")

    c = daemon.client()
    worker = threading.Thread(target=infer_back_to_back)
    worker.start()
    try:
        assert started.wait(60) and not failed, failed
        before = _waits(c, "control")
        first_step = c.state()["policy"]["steps"]
        while _waits(c, "control") == before and c.state()["policy"]["steps"] < first_step + 100 and not failed:
            time.sleep(0.05)  # a state request at most per half control period, not a flood of them
        assert not failed, failed
        assert _waits(c, "control") > before
    finally:
        stop.set()
        worker.join(30)
