"""Task mapping by role: inference threads on the decided PE, housekeeping off it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from governors.actuators import Actuator
from governors.platform import detect_platform
from service.threads import INFERENCE_THREAD_PREFIX, housekeeping_tids, own_tids, pin_roles
from tests.fakes.boards import build_board
from tests.governors.test_actuators import FakeAffinity


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


@pytest.mark.parametrize(("board_name", "pe", "inference_cpus", "housekeeping_cpus"), [
    ("odroid-xu4", "cpu-big", {4, 5, 6, 7}, {0, 1, 2, 3}),  # big.LITTLE: housekeeping on the other cluster
    ("odroid-xu4", "cpu-little", {0, 1, 2, 3}, {4, 5, 6, 7}),
    ("x86-rapl", "cpu", {0, 1, 2, 3}, {0, 1, 2, 3}),  # one cluster: nowhere else to go
])  # fmt: skip
def test_pin_roles_puts_inference_on_the_pe_and_housekeeping_elsewhere(
    named_threads: dict[str, int], tmp_path: Path, board_name: str, pe: str, inference_cpus: set[int],
    housekeeping_cpus: set[int],
) -> None:  # fmt: skip
    board = build_board(board_name, str(tmp_path / board_name))
    platform = detect_platform(board.root, hook=board.kernel)
    affinity = FakeAffinity(platform.all_cpus())
    actuator = Actuator(platform, str(tmp_path / "state"), set_affinity=affinity.set, get_affinity=affinity.get)
    pin_roles(actuator, platform, pe)
    worker = named_threads[f"{INFERENCE_THREAD_PREFIX}cpu"]
    assert affinity.by_tid[worker] == inference_cpus
    assert affinity.by_tid[named_threads["dynofa-control"]] == housekeeping_cpus
    assert affinity.by_tid[threading.get_native_id()] == housekeeping_cpus
    actuator.restore()
    assert all(cpus == set(platform.all_cpus()) for cpus in affinity.by_tid.values())
