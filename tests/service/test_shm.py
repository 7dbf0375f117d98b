"""Shared-memory inference through a real daemon: same bytes as frames, every bad region refused, no leaks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

from dynofa import protocol
from dynofa.client import Client
from dynofa.protocol import RemoteError
from dynofa.shm import SHM_DIR, ClientRegion
from service.shm import RegionTable
from tests.service.harness import REPO, Daemon, start_daemon, write_config
from tests.service.test_outputs import ATOL, image, local  # noqa: F401  (the in-process reference fixture)

pytestmark = pytest.mark.skipif(not SHM_DIR.is_dir(), reason="no /dev/shm on this system")


def test_shm_replies_equal_frame_replies_bit_for_bit(daemon: Daemon, local: Any) -> None:  # noqa: F811
    shm, frames = daemon.client(), daemon.client()
    frames.shm = False
    shm.register("shm-same")
    try:
        for k, sid in enumerate(local.catalog.ids):
            for resolution in (local.catalog.get(sid).resolution, 40):  # as served, and resized
                x = image(resolution, seed=20 + k)
                via_shm = shm.infer("shm-same", x, subnet=sid)
                via_frames = frames.infer("shm-same", x, subnet=sid)
                assert via_shm.transport == "shm" and shm.transport == "shm", shm.shm_problem
                assert via_frames.transport == "frames"
                assert via_shm.subnet == via_frames.subnet == sid
                assert via_shm.output.dtype == via_frames.output.dtype
                assert via_shm.output.tobytes() == via_frames.output.tobytes()
                np.testing.assert_allclose(via_shm.output, local(x, sid), rtol=0, atol=ATOL)
        # the client unlinked the name right after registering: nothing of it is left in /dev/shm
        assert not [n for n in os.listdir(SHM_DIR) if n.startswith(f"dynofa-{os.getpid()}-")]
    finally:
        shm.unregister("shm-same")


@pytest.fixture
def raw(daemon: Daemon) -> Iterator[tuple[Client, str]]:
    """A registered app and a client to send hand-made shm requests with."""
    c = daemon.client()
    c.shm = False
    c.register("shm-raw")
    try:
        yield c, "shm-raw"
    finally:
        c.unregister("shm-raw")


def _segment(size: int, mode: int = 0o600) -> Path:
    path = SHM_DIR / f"dynofa-test-{os.getpid()}-{time.monotonic_ns()}"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, mode)
    os.fchmod(fd, mode)  # the umask does not apply
    os.ftruncate(fd, size)
    os.close(fd)
    return path


def _code(call: Any) -> str:
    with pytest.raises(RemoteError) as err:
        call()
    return err.value.code


IN = {"offset": 0, "dtype": "float32", "shape": [1, 3, 32, 32]}  # 12288 bytes
OUT = {"offset": 12288, "bytes": 4096}


def _still_serving(daemon: Daemon) -> None:
    c = daemon.client()
    c.register("shm-alive")
    try:
        reply = c.infer("shm-alive", image(32, seed=1))
        assert reply.transport == "shm" and reply.output.shape == (1, 10), c.shm_problem
    finally:
        c.close()


@pytest.mark.parametrize("case", ["missing", "symlink", "directory", "world-readable", "empty"])
def test_unusable_segments_are_refused_at_registration(daemon: Daemon, raw: tuple[Client, str], case: str) -> None:
    c, app = raw
    made: list[Path] = []
    if case == "missing":
        name = "dynofa-test-no-such-segment"
    elif case == "symlink":
        target = _segment(16384)
        link = SHM_DIR / f"{target.name}-link"
        link.symlink_to(target)
        made += [target, link]
        name = link.name
    elif case == "directory":
        directory = SHM_DIR / f"dynofa-test-dir-{os.getpid()}"
        directory.mkdir()
        made.append(directory)
        name = directory.name
    else:
        path = _segment(0 if case == "empty" else 16384, 0o644 if case == "world-readable" else 0o600)
        made.append(path)
        name = path.name
    try:
        assert _code(lambda: c.call("shm_register", app=app, name=name)) == protocol.BAD_REGION
        assert _code(lambda: c.call("shm_register", app=app, name="../etc/passwd")) == protocol.BAD_REQUEST
    finally:
        for path in made:
            if path.is_dir() and not path.is_symlink():
                path.rmdir()
            else:
                path.unlink()
    _still_serving(daemon)


def test_bad_slices_get_their_error_and_nothing_outside_the_output_slice_changes(
    daemon: Daemon, raw: tuple[Client, str]
) -> None:
    c, app = raw
    path = _segment(16384)
    try:
        region = c.call("shm_register", app=app, name=path.name)["region"]
        other = daemon.client()
        other.register("shm-other")

        def infer(source: dict[str, Any] = IN, target: dict[str, Any] = OUT, who: Client = c, as_app: str = app,
                  rid: str = region) -> dict[str, Any]:  # fmt: skip
            return who.call("infer_shm", app=as_app, region=rid, input=source, output=target)

        assert _code(lambda: infer(rid="r999999")) == protocol.UNKNOWN_REGION
        assert _code(lambda: infer(who=other, as_app="shm-other")) == protocol.UNKNOWN_REGION  # not its region
        assert _code(lambda: infer({**IN, "offset": 8192})) == protocol.REGION_BOUNDS  # past the end
        assert _code(lambda: infer({**IN, "offset": 2})) == protocol.REGION_BOUNDS  # misaligned float32
        assert _code(lambda: infer(target={"offset": 16000, "bytes": 4096})) == protocol.REGION_BOUNDS
        assert _code(lambda: infer(target={"offset": 8192, "bytes": 4096})) == protocol.REGION_BOUNDS  # overlap
        assert _code(lambda: infer({**IN, "dtype": "int8"})) == protocol.BAD_TENSOR
        assert _code(lambda: infer({**IN, "shape": [1, 1, 32, 32]})) == protocol.BAD_TENSOR
        assert _code(lambda: infer({**IN, "offset": -4})) == protocol.BAD_REQUEST
        # the output (40 bytes) does not fit 8 bytes of room: refused, and the bytes after the slice untouched
        with path.open("r+b") as fh:
            fh.write(np.zeros(4096, dtype=np.uint8).tobytes())
            fh.seek(12288)
            fh.write(b"\xab" * 4096)
        assert _code(lambda: infer(target={"offset": 12288, "bytes": 8})) == protocol.REGION_BOUNDS
        assert path.read_bytes()[12288:] == b"\xab" * 4096
        reply = infer(target={"offset": 12288, "bytes": 64})
        data = path.read_bytes()
        assert reply["output"] == {"dtype": "float32", "shape": [1, 10], "offset": 12288, "bytes": 40}
        assert data[12288 + 40 :] == b"\xab" * (4096 - 40)  # nothing written past the output
        other.unregister("shm-other")
    finally:
        path.unlink()
    _still_serving(daemon)


def test_a_region_shrunk_mid_flight_is_an_error_not_a_crash(daemon: Daemon, raw: tuple[Client, str]) -> None:
    c, app = raw
    path = _segment(16384)
    try:
        region = c.call("shm_register", app=app, name=path.name)["region"]
        # keep the worker busy with a large batch, queue the shm inference behind it, then shrink the region
        dealer = zmq.Context.instance().socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(daemon.endpoint)
        try:
            batch = np.random.default_rng(0).random((32, 3, 48, 48), dtype=np.float32)
            for k in range(2):
                slow = protocol.request("infer", id=f"slow{k}", app=app, dtype="float32", shape=list(batch.shape))
                dealer.send_multipart([b"", protocol.encode(slow), batch.tobytes()])
            # output first, input after it: the shrink cuts the input only
            source, target = {**IN, "offset": 4096}, {"offset": 0, "bytes": 4096}
            shm = protocol.request("infer_shm", id="shm", app=app, region=region, input=source, output=target)
            dealer.send_multipart([b"", protocol.encode(shm)])
            time.sleep(0.01)  # the main loop checks the request at once; the worker is still on the batches
            os.truncate(path, 8192)
            replies = {}
            for _ in range(3):
                assert dealer.poll(60_000), "the daemon must answer both"
                header = json.loads(dealer.recv_multipart()[1])
                replies[header["id"]] = header
        finally:
            dealer.close()
        assert replies["slow0"]["ok"] is True and replies["slow1"]["ok"] is True
        error = replies["shm"].get("error") or {}
        # region_truncated: shrunk between the request's check and the worker's read (the usual order here);
        # region_bounds: shrunk before the main loop read the request
        assert error.get("code") in (protocol.REGION_TRUNCATED, protocol.REGION_BOUNDS), replies["shm"]
    finally:
        path.unlink()
    _still_serving(daemon)


def test_regions_need_a_local_client_and_are_bounded(tmp_path: Path) -> None:
    table = RegionTable(shm_dir=tmp_path)
    with pytest.raises(protocol.RequestError) as err:
        table.register("app", "seg", uid=None, pid=None)  # a tcp (CURVE) caller: no kernel credentials
    assert err.value.code == protocol.BAD_REGION and "tcp" in err.value.message


_CLIENT = """
import sys, time, numpy as np
from dynofa.client import Client
c = Client(sys.argv[1])
c.register(sys.argv[2])
reply = c.infer(sys.argv[2], np.ones((1, 3, 32, 32), dtype=np.float32))
print(reply.transport, flush=True)
time.sleep(600)
"""


def _shm_fds(pid: int) -> list[str]:
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(SHM_DIR)):
            out.append(target)
    return out


def _shm_maps(pid: int) -> list[str]:
    return [line for line in Path(f"/proc/{pid}/maps").read_text().splitlines() if str(SHM_DIR) in line]


def test_killed_clients_leak_no_segment_descriptor_or_mapping(daemon: Daemon) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    clients = [
        subprocess.Popen([sys.executable, "-c", _CLIENT, daemon.endpoint, f"shm-killed-{i}"], stdout=subprocess.PIPE,
                         text=True, env=env)  # fmt: skip
        for i in range(2)
    ]
    pids = [p.pid for p in clients]
    try:
        for p in clients:
            assert p.stdout is not None and p.stdout.readline().strip() == "shm"
        mine = [t for t in _shm_fds(daemon.proc.pid) if any(f"dynofa-{pid}-" in t for pid in pids)]
        assert len(mine) == 2, _shm_fds(daemon.proc.pid)  # the daemon holds each client's region open
    finally:
        for p in clients:
            p.send_signal(signal.SIGKILL)
            p.wait()
    deadline = time.monotonic() + 30
    while any(f"dynofa-{pid}-" in t for t in _shm_fds(daemon.proc.pid) for pid in pids):
        assert time.monotonic() < deadline, f"regions of killed clients still open: {_shm_fds(daemon.proc.pid)}"
        time.sleep(0.2)
    assert not _shm_maps(daemon.proc.pid)  # the daemon never maps a region
    assert not [n for n in os.listdir(SHM_DIR) if any(n.startswith(f"dynofa-{pid}-") for pid in pids)]
    _still_serving(daemon)


def test_client_can_turn_shared_memory_off(daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DYNOFA_SHM", "0")
    c = daemon.client()
    c.register("shm-off")
    try:
        assert c.infer("shm-off", image(32, seed=2)).transport == "frames"
    finally:
        c.unregister("shm-off")
    region = ClientRegion(64)
    region.close()
    assert not region.path.exists()


def test_input_array_is_read_in_place_and_answers_like_frames(
    daemon: Daemon, local: Any, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    import dynofa.shm

    copies: list[tuple[int, ...]] = []
    real_copyto = np.copyto

    def counting_copyto(dst: np.ndarray, src: Any, *args: Any, **kwargs: Any) -> None:
        copies.append(tuple(dst.shape))
        real_copyto(dst, src, *args, **kwargs)

    monkeypatch.setattr(dynofa.shm.np, "copyto", counting_copyto)
    zc, frames = daemon.client(), daemon.client()
    frames.shm = False
    zc.register("shm-zero-copy")
    try:
        for k, sid in enumerate(local.catalog.ids):
            r = local.catalog.get(sid).resolution
            x = zc.input_array("shm-zero-copy", (1, 3, r, r))
            for seed in (40 + k, 60 + k):  # a second frame written over the first: the daemon reads the new one
                x[...] = image(r, seed)
                copies.clear()
                reply = zc.infer("shm-zero-copy", x if seed % 2 else x[0], subnet=sid)  # NCHW or CHW
                assert reply.transport == "shm" and reply.subnet == sid, zc.shm_problem
                assert not copies, f"infer copied an input the app wrote into the region: {copies}"
                assert reply.output.tobytes() == frames.infer("shm-zero-copy", x.copy(), subnet=sid).output.tobytes()
                np.testing.assert_allclose(reply.output, local(x.copy(), sid), rtol=0, atol=ATOL)
        # an array of another shape (or an old one) still works, through one copy
        big = zc.input_array("shm-zero-copy", (1, 3, 64, 64))
        big[...] = image(64, seed=7)
        old = np.ascontiguousarray(image(40, seed=8))
        copies.clear()
        assert zc.infer("shm-zero-copy", old).output.tobytes() == frames.infer("shm-zero-copy", old).output.tobytes()
        assert copies == [(1, 3, 40, 40)]
    finally:
        zc.unregister("shm-zero-copy")


def test_input_array_without_shared_memory_is_a_plain_array(daemon: Daemon) -> None:
    c = daemon.client()
    c.shm = False
    c.register("shm-no-zero-copy")
    try:
        x = c.input_array("shm-no-zero-copy", (1, 3, 32, 32))
        assert isinstance(x, np.ndarray) and x.flags.owndata and x.dtype == np.float32
        x[...] = image(32, seed=3)
        assert c.infer("shm-no-zero-copy", x).transport == "frames"
        with pytest.raises(ValueError, match="dtype"):
            c.input_array("shm-no-zero-copy", (1, 3, 32, 32), dtype="complex64")
        with pytest.raises(ValueError, match="positive"):
            c.input_array("shm-no-zero-copy", (1, 0, 32, 32))
    finally:
        c.unregister("shm-no-zero-copy")


def test_a_client_keeps_serving_through_shared_memory_across_a_daemon_restart(
    tmp_path: Path, tiny_catalog: Path, local: Any, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    import dynofa.shm

    copies: list[tuple[int, ...]] = []
    real_copyto = np.copyto

    def counting_copyto(dst: np.ndarray, src: Any, *args: Any, **kwargs: Any) -> None:
        copies.append(tuple(dst.shape))
        real_copyto(dst, src, *args, **kwargs)

    monkeypatch.setattr(dynofa.shm.np, "copyto", counting_copyto)
    config = write_config(tmp_path, tiny_catalog)
    sid = local.catalog.ids[0]
    r = local.catalog.get(sid).resolution
    first = start_daemon(config, log_name="first.log")
    second = None
    try:
        c = first.client()
        c.register("shm-restart")
        x = c.input_array("shm-restart", (1, 3, r, r))
        x[...] = image(r, seed=11)
        before = c.infer("shm-restart", x, subnet=sid)
        assert before.transport == "shm" and not copies, c.shm_problem
        assert first.stop(signal.SIGTERM) == 0  # which also closes the client, and with it its region
        x[0, 0, 0, 0] += 0.0  # the array outlives its region's close: still mapped (else this crashes the test)
        second = start_daemon(config, log_name="second.log")
        # the region died with the first daemon: the client registers a new one by itself, and the
        # array it handed out (a view of the old region) still serves, through one copy
        after = c.infer("shm-restart", x, subnet=sid)
        assert after.transport == "shm" and copies == [(1, 3, r, r)], c.shm_problem
        assert after.output.tobytes() == before.output.tobytes()
        copies.clear()
        y = c.input_array("shm-restart", (1, 3, r, r))  # asked again: in the new region, no copy
        y[...] = image(r, seed=12)
        again = c.infer("shm-restart", y, subnet=sid)
        assert again.transport == "shm" and not copies
        np.testing.assert_allclose(again.output, local(image(r, seed=12), sid), rtol=0, atol=ATOL)
        assert not np.allclose(again.output, before.output, atol=1e-3)  # the new frame was read, not the old
        c.close()
    finally:
        first.stop()
        if second is not None:
            second.stop()
