"""Inference endpoints (extension ``direct``) through a real daemon: the thread that runs the forward
reads and answers the request itself, on a Unix socket. Same outputs as the control endpoint, bit for
bit, with frames and shared memory; every error answered there too, bad framing included, and a
stalled or misbehaving client never holds up the others; budgets and observations as before."""

from __future__ import annotations

import json
import os
import socket
import stat
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dynofa import direct, protocol
from dynofa.client import Client, new_token
from dynofa.protocol import RemoteError
from dynofa.shm import SHM_DIR
from tests.service.harness import Daemon
from tests.service.test_outputs import ATOL, assert_is_output_of, image, local  # noqa: F401  (the in-process reference)


def _endpoint(daemon: Daemon) -> str:
    return f"unix://{daemon.runtime / 'infer-cpu.sock'}"


def test_hello_offers_the_extension_and_the_endpoint_is_the_control_sockets_sibling(daemon: Daemon) -> None:
    c = daemon.client()
    assert c.hello()["extensions"]["direct"] == 2
    path = daemon.runtime / "infer-cpu.sock"
    mode = os.stat(path).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) & 0o007 == 0  # like control.sock: no access for others


def test_replies_name_the_endpoint_and_later_inferences_go_there(daemon: Daemon, local: Any) -> None:  # noqa: F811
    c = daemon.client()
    c.shm = False
    c.register("direct-out")
    try:
        first = c.infer("direct-out", image(32, seed=1), subnet=local.catalog.ids[0])
        assert first.via is None  # the first inference learns the endpoint from its reply
        for k, sid in enumerate(local.catalog.ids):
            x = image(local.catalog.get(sid).resolution, seed=30 + k)
            reply = c.infer("direct-out", x, subnet=sid)
            assert reply.via == _endpoint(daemon)
            assert_is_output_of(reply, sid, x, local)
    finally:
        c.unregister("direct-out")


@pytest.mark.skipif(not SHM_DIR.is_dir(), reason="no /dev/shm on this system")
def test_direct_equals_the_control_endpoint_bit_for_bit_with_frames_and_shm(daemon: Daemon, local: Any) -> None:  # noqa: F811
    clients = {}
    for shm in (False, True):
        for on in (False, True):
            c = daemon.client()
            c.shm, c.direct = shm, on
            clients[(shm, on)] = c
    clients[(False, False)].register("direct-same")
    try:
        for k, sid in enumerate(local.catalog.ids):
            x = image(40, seed=40 + k)  # resized on the way
            replies = {}
            for key, c in clients.items():
                c.infer("direct-same", x, subnet=sid)  # the first one learns the endpoint
                replies[key] = c.infer("direct-same", x, subnet=sid)
            for (shm, on), reply in replies.items():
                assert reply.transport == ("shm" if shm else "frames"), clients[(shm, on)].shm_problem
                assert (reply.via is not None) == on
                assert reply.subnet == sid
                assert reply.output.tobytes() == replies[(False, False)].output.tobytes()
            np.testing.assert_allclose(replies[(True, True)].output, local(x, sid), rtol=0, atol=ATOL)
    finally:
        clients[(False, False)].unregister("direct-same")


def _raw(daemon: Daemon) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(20)
    sock.connect(str(daemon.runtime / "infer-cpu.sock"))
    return sock


def _write(sock: socket.socket, *frames: bytes) -> None:
    for buffer in direct.pack(frames):
        sock.sendall(buffer)


def _read(sock: socket.socket) -> list[bytearray]:
    reader = direct.Reader(1 << 30)
    while True:
        frames = reader.feed(sock)
        if frames is not None:
            return frames


def _ask(sock: socket.socket, *frames: bytes) -> tuple[dict[str, Any], list[bytearray]]:
    _write(sock, *frames)
    head, *rest = _read(sock)
    return json.loads(head), rest


def _header(**fields: Any) -> bytes:
    return json.dumps({"v": 1, **fields}).encode()


def test_every_error_is_answered_on_the_endpoint_and_it_keeps_serving(daemon: Daemon) -> None:
    owner = daemon.client()
    owner.register("direct-err")
    token = new_token()
    owner.register("direct-locked", token=token)
    x = image(32, seed=3)
    infer = {"op": "infer", "app": "direct-err", "dtype": "float32", "shape": list(x.shape)}
    sock = _raw(daemon)
    try:
        cases: list[tuple[str, tuple[bytes, ...], Any]] = [
            (protocol.BAD_JSON, (b"{not json",), None),
            (protocol.UNSUPPORTED_VERSION, (json.dumps({"v": 2, "op": "ping", "id": 1}).encode(),), 1),
            (protocol.BAD_REQUEST, (_header(id=2, op="infer", app="direct-err"), x.tobytes()), 2),
            (protocol.BAD_TENSOR, (_header(id=3, **{**infer, "shape": [1, 3, 32]}), x.tobytes()), 3),
            (protocol.UNKNOWN_SUBNET, (_header(id=4, **infer, subnet="no-such-subnet"), x.tobytes()), 4),
            (protocol.UNKNOWN_APP, (_header(id=5, **{**infer, "app": "never-registered"}), x.tobytes()), 5),
            (protocol.FORBIDDEN, (_header(id=6, **{**infer, "app": "direct-locked"}), x.tobytes()), 6),
            (protocol.UNKNOWN_OP, (_header(id=7, op="set_budget", app="direct-err", budget={"latency_ms": 5}),), 7),
            (protocol.UNKNOWN_REGION, (_header(id=8, op="infer_shm", app="direct-err", region="r999999",
                                               input={"offset": 0, "dtype": "float32", "shape": list(x.shape)},
                                               output={"offset": 12288, "bytes": 4096}),), 8),  # fmt: skip
        ]
        for code, frames, request_id in cases:
            reply, rest = _ask(sock, *frames)
            assert reply["ok"] is False and reply["error"]["code"] == code, (code, reply)
            assert reply.get("id") == request_id and rest == []
            if code == protocol.UNKNOWN_OP:
                assert "control endpoint" in reply["error"]["message"]
            good, out = _ask(sock, _header(id=100, **infer), x.tobytes())
            assert good["ok"] is True and good["id"] == 100 and len(out) == 1, good
        assert owner.budgets()["direct-err"]["budget"] is None  # the refused set_budget did nothing
        pong, _ = _ask(sock, _header(id=101, op="ping"))
        assert pong == {"v": 1, "ok": True, "id": 101}
    finally:
        sock.close()
        owner.unregister("direct-err")
        owner.tokens["direct-locked"] = token
        owner.unregister("direct-locked")


@pytest.fixture
def learnt(daemon: Daemon, request: pytest.FixtureRequest) -> Iterator[tuple[Client, str]]:
    """A frames client and its app (named after the test), whose first inference learnt the endpoint."""
    app = "d-" + request.node.name[5:40].replace("_", "-").strip("-")
    c = daemon.client()
    c.shm = False
    c.register(app)
    try:
        c.infer(app, image(32, seed=4))
        yield c, app
    finally:
        c.unregister(app)


def test_first_direct_inference_after_set_budget_runs_at_the_new_point_and_is_observed(
    daemon: Daemon, learnt: tuple[Client, str]
) -> None:
    c, app = learnt
    before = c.state()["apps"][app]
    for latency_ms in (0.01, 3_600_000.0):  # the fastest subnet, then the most accurate
        c.set_budget(app, latency_ms=latency_ms)
        decided = c.state()["apps"][app]["operating_point"]["subnet"]
        reply = c.infer(app, image(32, seed=5))
        assert reply.via == _endpoint(daemon) and reply.subnet == decided
    after = c.state()["apps"][app]
    assert after["inferences"] == before["inferences"] + 2  # direct inferences feed the app's window


def test_a_vanished_endpoint_falls_back_to_the_control_endpoint(
    daemon: Daemon, learnt: tuple[Client, str], tmp_path: Path
) -> None:
    c, app = learnt
    c._direct[app] = f"unix://{tmp_path / 'gone.sock'}"  # a daemon restarted without the extension
    reply = c.infer(app, image(32, seed=6))
    assert reply.via is None and reply.output.shape == (1, 10)
    assert c.infer(app, image(32, seed=6)).via == _endpoint(daemon)  # learnt again
    off = Client(daemon.endpoint, direct=False)
    try:
        off.shm = False
        off.infer(app, image(32, seed=6))
        assert off.infer(app, image(32, seed=6)).via is None
    finally:
        off.close()


def test_the_clients_control_ops_sent_to_the_endpoint_are_refused_with_unknown_op(
    daemon: Daemon, learnt: tuple[Client, str]
) -> None:
    c, app = learnt
    with pytest.raises(RemoteError) as err:
        c.request("shm_unregister", via=_endpoint(daemon), app=app, region="r1")
    assert err.value.code == protocol.UNKNOWN_OP


def _alive(daemon: Daemon) -> None:
    sock = _raw(daemon)
    try:
        assert _ask(sock, _header(id=9, op="ping")) == ({"v": 1, "ok": True, "id": 9}, [])
    finally:
        sock.close()


@pytest.mark.parametrize("case", ["no frames", "too many frames", "too large"])
def test_bad_framing_is_answered_then_the_connection_closed(daemon: Daemon, case: str) -> None:
    sock = _raw(daemon)
    try:
        if case == "no frames":
            sock.sendall(struct.pack("<I", 0))
        elif case == "too many frames":
            sock.sendall(struct.pack("<I", 17))
        else:  # more than limits.max_message_bytes (1 MiB here): refused before anything is allocated
            sock.sendall(struct.pack("<IQQ", 2, 100, 1 << 40))
        reply = json.loads(_read(sock)[0])
        code = protocol.TOO_LARGE if case == "too large" else protocol.BAD_REQUEST
        assert reply["ok"] is False and reply["error"]["code"] == code, reply
        assert sock.recv(1) == b""  # closed: the stream cannot be read further
    finally:
        sock.close()
    _alive(daemon)


def test_a_stalled_or_vanished_client_does_not_hold_up_the_others(daemon: Daemon) -> None:
    owner = daemon.client()
    owner.register("direct-stall")
    x = image(32, seed=8)
    header = _header(id=1, op="infer", app="direct-stall", dtype="float32", shape=list(x.shape))
    stalled, vanished, unread = _raw(daemon), _raw(daemon), _raw(daemon)
    try:
        buffers = b"".join(bytes(b) for b in direct.pack([header, x.tobytes()]))
        stalled.sendall(buffers[: len(buffers) // 2])  # half a message, then nothing
        vanished.sendall(buffers[:20])
        vanished.close()  # gone mid-message
        for _ in range(3):  # requests whose replies nobody reads
            unread.sendall(buffers)
        _alive(daemon)
        owner.infer("direct-stall", x)  # learns the endpoint
        reply = owner.infer("direct-stall", x)
        assert reply.via == _endpoint(daemon)
        stalled.sendall(buffers[len(buffers) // 2 :])  # the rest: the stalled request is answered after all
        head, *out = _read(stalled)
        assert json.loads(head)["ok"] is True and json.loads(head)["id"] == 1 and len(out) == 1
    finally:
        stalled.close()
        unread.close()
        owner.unregister("direct-stall")


def test_requests_written_at_once_are_each_answered_in_order(daemon: Daemon, local: Any) -> None:  # noqa: F811
    """A client may pipeline: requests that arrive in one read are served one after the other, each
    reply its own subnet's output for its own input (the socket does not poll readable for the later ones)."""
    owner = daemon.client()
    owner.register("direct-pipe")
    sock = _raw(daemon)
    try:
        asked = []
        wire = b""
        for k in range(6):
            sid = local.catalog.ids[k % len(local.catalog.ids)]
            x = image(32, seed=70 + k)
            fields = {"op": "infer", "app": "direct-pipe", "dtype": "float32", "shape": list(x.shape), "subnet": sid}
            header = _header(id=100 + k, **fields)
            wire += b"".join(bytes(b) for b in direct.pack([header, x.tobytes()]))
            asked.append((100 + k, sid, x))
        sock.sendall(wire)
        reader = direct.Reader(1 << 30)  # one reader: replies may arrive together too
        for request_id, sid, x in asked:
            frames = None
            while frames is None:
                frames = reader.feed(sock)
            head = json.loads(frames[0])
            assert head["ok"] and head["id"] == request_id and head["subnet"] == sid
            output = np.frombuffer(bytes(frames[1]), dtype=np.float32).reshape(head["output"]["shape"])
            np.testing.assert_allclose(output, local(x, sid), rtol=0, atol=ATOL)
        assert owner.ping()["ok"]
    finally:
        sock.close()
        owner.unregister("direct-pipe")


def test_requests_waiting_behind_a_forward_are_served_higher_priority_first(daemon: Daemon) -> None:
    """Two apps' requests that arrive while the worker runs a forward: the app whose budget has the
    higher priority is served first (what the planner assumes of apps sharing a worker), even on the
    connection the daemon accepted later."""
    import select

    owner = daemon.client()
    apps = {"prio-low": 0, "prio-high": 5, "prio-slow": 0}
    for app, priority in apps.items():
        owner.set_budget(app, latency_ms=60_000.0, priority=priority)
    low, high, slow = _raw(daemon), _raw(daemon), _raw(daemon)  # accepted in this order: low polls first
    try:
        def infer(sock: socket.socket, app: str, x: np.ndarray, request_id: int) -> None:
            fields = {"op": "infer", "app": app, "dtype": "float32", "shape": list(x.shape)}
            _write(sock, _header(id=request_id, **fields), x.tobytes())

        for k, (sock, app) in enumerate(((low, "prio-low"), (high, "prio-high"), (slow, "prio-slow"))):
            infer(sock, app, image(32, seed=90 + k), k)  # each connection learns whose app it serves
            assert json.loads(_read(sock)[0])["ok"]
        batch = np.concatenate([image(48, seed=95 + k) for k in range(32)])
        for _ in range(3):  # the two must arrive while the batch runs: tried again if it ended first
            started = time.monotonic()
            infer(slow, "prio-slow", batch, 10)
            time.sleep(0.003)  # the worker reads the batch and starts its forward
            infer(low, "prio-low", image(32, seed=97), 11)
            infer(high, "prio-high", image(32, seed=98), 12)
            sent_ms = (time.monotonic() - started) * 1e3
            ready, _, _ = select.select([low, high], [], [], 30)  # returns at the first reply
            slow_reply = json.loads(_read(slow)[0])
            heads = {s: json.loads(_read(s)[0]) for s in (low, high)}
            assert all(h["ok"] for h in heads.values()) and slow_reply["ok"]
            # the batch's forward began after it was sent and lasted latency_ms: both were sent before it
            # ended, so neither could be served before the other was there
            if sent_ms < slow_reply["latency_ms"] and len(ready) == 1:
                assert ready[0] is high, f"the lower priority app was served first: {heads}"
                break
        else:
            pytest.skip("the batch never ran long enough to queue the two requests behind it")
    finally:
        for sock in (low, high, slow):
            sock.close()
        for app in apps:
            owner.unregister(app)
