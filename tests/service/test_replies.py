"""``busy``, ``timeout`` and ``inference_failed`` replies, through the server's real ROUTER socket.

The daemon's Server, Engine, InferenceWorker and BudgetStore run in this process on a real ipc
socket; only the model is a stand-in whose forward pass the test holds (so a queue fills, a
request waits past the timeout) or makes raise (as torch does on a bad input). Real models never
fail on purpose, and the timing of a real forward cannot be held: this is what makes each reply
deterministic.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

from dynofa import protocol
from dynofa.config import config_from_dict
from service.engine import Engine
from service.server import InferenceWorker, Outbox, Server
from service.store import BudgetStore
from tests.service.standins import FAIL, SHAPE, HeldModel


@dataclass
class Rig:
    endpoint: str
    model: HeldModel
    ctx: zmq.Context[zmq.Socket[bytes]]

    def dealer(self) -> zmq.Socket[bytes]:
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, 20_000)
        sock.connect(self.endpoint)
        return sock


def _start(tmp_path: Path, queue: int, timeout_s: float) -> Iterator[Rig]:
    model = HeldModel()
    config = config_from_dict({
        "paths": {"runtime_dir": str(tmp_path / "run"), "state_dir": str(tmp_path / "state")},
        "endpoints": {"socket_group": None},
        "limits": {"infer_queue": queue, "request_timeout_s": timeout_s},
    })  # fmt: skip
    (tmp_path / "run").mkdir()
    (tmp_path / "state").mkdir()
    outbox = Outbox()
    engine = Engine({"held": model}, "held", BudgetStore(tmp_path / "state"), 8, lambda *_: None)  # type: ignore[dict-item]
    worker = InferenceWorker("cpu", engine, outbox, queue, timeout_s)
    server = Server(config, engine, outbox, {"cpu": worker})
    server.bind()
    worker.start()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    try:
        reg = ctx.socket(zmq.REQ)
        reg.connect(config.control_endpoint())
        reg.send(json.dumps({"v": 1, "op": "register", "app": "held-app"}).encode())
        assert json.loads(reg.recv())["ok"] is True
        reg.close(linger=0)
        yield Rig(config.control_endpoint(), model, ctx)
    finally:
        model.gate.set()
        server.request_stop()
        thread.join(10)
        server.finish(drain_timeout_s=5)
        engine.close()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    yield from _start(tmp_path, queue=1, timeout_s=60)


@pytest.fixture
def impatient(tmp_path: Path) -> Iterator[Rig]:
    yield from _start(tmp_path, queue=8, timeout_s=0.05)


def _infer(sock: zmq.Socket[bytes], request_id: int, first: float = 0.0) -> None:
    x = np.zeros(SHAPE, np.float32)
    x.flat[0] = first
    header = {"v": 1, "op": "infer", "id": request_id, "app": "held-app", "dtype": "float32", "shape": SHAPE}
    sock.send_multipart([b"", json.dumps(header).encode(), x.tobytes()])


def _replies(sock: zmq.Socket[bytes], n: int) -> dict[int, dict[str, Any]]:
    out = {}
    for _ in range(n):
        _, head, *_ = sock.recv_multipart()
        reply = json.loads(head)
        out[reply["id"]] = reply
    return out


def _code(reply: dict[str, Any]) -> str:
    return "ok" if reply["ok"] else str(reply["error"]["code"])


def test_a_full_queue_answers_busy(rig: Rig) -> None:
    sock = rig.dealer()
    _infer(sock, 1)
    assert rig.model.started.acquire(timeout=10)  # request 1 is in the forward pass, the queue is empty
    _infer(sock, 2)  # queued (limits.infer_queue = 1)
    _infer(sock, 3)  # no room
    busy = _replies(sock, 1)
    assert _code(busy[3]) == protocol.BUSY and "limits.infer_queue" in busy[3]["error"]["message"]
    rig.model.gate.set()
    assert {i: _code(r) for i, r in _replies(sock, 2).items()} == {1: "ok", 2: "ok"}
    sock.close()


def test_a_request_queued_past_the_timeout_answers_timeout(impatient: Rig) -> None:
    sock = impatient.dealer()
    _infer(sock, 1)
    assert impatient.model.started.acquire(timeout=10)
    _infer(sock, 2)
    threading.Event().wait(0.3)  # request 2 waits in the queue longer than request_timeout_s (0.05 s)
    impatient.model.gate.set()
    codes = {i: _code(r) for i, r in _replies(sock, 2).items()}
    assert codes == {1: "ok", 2: protocol.TIMEOUT}
    sock.close()


def test_a_model_error_answers_inference_failed_and_the_worker_lives_on(rig: Rig) -> None:
    rig.model.gate.set()
    sock = rig.dealer()
    _infer(sock, 1, first=FAIL)
    failed = _replies(sock, 1)[1]
    assert _code(failed) == protocol.INFERENCE_FAILED and "stand-in failure" in failed["error"]["message"]
    _infer(sock, 2)
    assert _code(_replies(sock, 1)[2]) == "ok"
    sock.close()


@pytest.mark.parametrize(
    "header",
    [
        b'{"v": 1, "op": "launch", "id": 41}',  # unknown op
        b'{"v": 1, "op": "ping", "id": 41, "colour": "red"}',  # unknown field
        b'{"v": 2, "op": "ping", "id": 41}',  # wrong version
        b'{"v": 1, "op": "infer", "id": 41, "app": "held-app", "dtype": "int8", "shape": [1]}',  # bad dtype
        b'{"v": 1, "op": "set_budget", "id": 41, "app": "x", "budget": {"latency_ms": 1e999}}',  # overflow
        b'{"v": 1, "op": "feedback", "id": 41, "app": "nobody", "qoe": 0.5}',  # unknown app (engine error)
    ],
)
def test_error_replies_echo_the_id(rig: Rig, header: bytes) -> None:
    sock = rig.dealer()
    sock.send_multipart([b"", header])
    _, head, *_ = sock.recv_multipart()
    reply = json.loads(head)
    assert reply["ok"] is False and reply["id"] == 41, reply
    sock.close()
