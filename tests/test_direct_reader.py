"""The inference endpoints' framing (dynofa.direct) on real socket pairs: a small message costs one
receive, a tensor frame goes straight into its own buffer, a message that came with the previous
one is kept and reported, every split of the bytes reads the same, and limits hold before any
allocation."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dynofa import direct


@pytest.fixture()
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def _wire(*frames: bytes) -> bytes:
    return b"".join(bytes(buffer) for buffer in direct.pack(frames))


class Counting:
    """A socket that counts its receives (each one a system call)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.receives = sock, 0

    def recv_into(self, buffer: Any) -> int:
        self.receives += 1
        return self.sock.recv_into(buffer)


def test_a_small_message_is_read_with_one_receive(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    frames = (b'{"op":"infer_shm","id":1}', b"", bytes(range(200)))
    a.sendall(_wire(*frames))
    counting = Counting(b)
    assert direct.Reader(1 << 20).feed(counting) == [bytearray(f) for f in frames]
    assert counting.receives == 1  # count, lengths and all three frames in one system call


def test_a_message_that_came_with_the_previous_one_is_kept_and_reported(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    a.sendall(_wire(b"first", b"x" * 100) + _wire(b"second"))
    a.shutdown(socket.SHUT_WR)  # nothing more will come: the second message must be served from the buffer
    reader = direct.Reader(1 << 20)
    assert reader.feed(b) == [bytearray(b"first"), bytearray(b"x" * 100)]
    assert reader.buffered()  # the socket will not poll readable for it
    assert reader.feed(b) == [bytearray(b"second")]
    assert not reader.buffered()
    with pytest.raises(EOFError):
        reader.feed(b)


def test_a_tensor_frame_larger_than_the_buffer_goes_into_its_own_buffer(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    tensor = os.urandom(16 * direct.CHUNK + 17)  # 4 times what a Unix socket buffers: the kernel hands it in pieces
    wire = _wire(b'{"op":"infer"}', tensor) + _wire(b"next")
    sender = threading.Thread(target=a.sendall, args=(wire,))  # more than the socket buffer holds
    sender.start()
    try:
        b.settimeout(20)
        counting = Counting(b)
        reader = direct.Reader(1 << 24)
        got = reader.feed(counting)
        assert got is not None and [bytes(f) for f in got] == [b'{"op":"infer"}', tensor]
        # the tensor's bytes past the first receive were not received in buffer-sized pieces
        assert counting.receives < len(tensor) // direct.CHUNK
        assert reader.feed(b) == [bytearray(b"next")]
    finally:
        sender.join()


@pytest.mark.parametrize("step", [1, 3, 7, 4096])
def test_every_split_of_the_bytes_reads_the_same_messages(
    pair: tuple[socket.socket, socket.socket], step: int
) -> None:
    a, b = pair
    b.setblocking(False)
    messages = [(b"h1", os.urandom(direct.CHUNK // 2 + 5)), (b"h2",), (b"h3", os.urandom(2 * direct.CHUNK))]
    wire = b"".join(_wire(*m) for m in messages)
    reader = direct.Reader(1 << 24)
    got: list[list[bytes]] = []
    for start in range(0, len(wire), step):
        a.sendall(wire[start : start + step])
        while True:
            frames = reader.feed(b)  # a non-blocking socket that ran dry gives None
            if frames is None:
                break
            got.append([bytes(f) for f in frames])
        if step == 1 and start > 200:  # byte by byte is slow in Python: the start covers every header split
            a.sendall(wire[start + 1 :])
            while len(got) < len(messages):
                frames = reader.feed(b)
                if frames is not None:
                    got.append([bytes(f) for f in frames])
            break
    assert got == [list(m) for m in messages]


def test_limits_are_refused_before_anything_is_allocated(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    a.sendall((0).to_bytes(4, "little"))
    with pytest.raises(direct.FramingError) as err:
        direct.Reader(1 << 20).feed(b)
    assert err.value.code == "bad_request"
    # a header that claims 1 TiB: refused from the lengths alone
    a.sendall((1).to_bytes(4, "little") + (1 << 40).to_bytes(8, "little"))
    with pytest.raises(direct.FramingError) as err:
        direct.Reader(1 << 20).feed(b)
    assert err.value.code == "too_large" and str(1 << 40) in err.value.message


def test_a_connection_exchanges_one_message_and_times_out_in_the_kernel(tmp_path: Any) -> None:
    path = str(tmp_path / "e.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    conn = direct.Connection(path, timeout_s=0.2)
    try:
        peer, _ = server.accept()
        peer.sendall(_wire(b"reply", b"out"))  # answered before it is asked: the exchange reads it back
        assert conn.exchange([b"request"]) == [bytearray(b"reply"), bytearray(b"out")]
        assert direct.Reader(1 << 20).feed(peer) == [bytearray(b"request")]
        assert conn.sock.gettimeout() is None  # blocking in the kernel, no poll before each receive
        with pytest.raises(TimeoutError):
            conn.exchange([b"unanswered"])
        peer.close()
    finally:
        conn.close()
        server.close()


class Script:
    """A non-blocking socket stand-in that delivers ``data`` in the given pieces, then runs dry."""

    def __init__(self, data: bytes, cuts: list[int]) -> None:
        bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
        self.pieces = [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
        self.closed = False

    def recv_into(self, buffer: Any) -> int:
        if not self.pieces:
            if self.closed:
                return 0
            raise BlockingIOError
        piece = self.pieces[0]
        n = min(len(piece), len(buffer))
        buffer[:n] = piece[:n]
        self.pieces[0] = piece[n:]
        if not self.pieces[0]:
            self.pieces.pop(0)
        return n


def _drain(reader: direct.Reader, sock: Script) -> list[list[bytes]]:
    got = []
    while True:
        frames = reader.feed(sock)
        if frames is None:
            return got
        got.append([bytes(f) for f in frames])


_frame = st.binary(max_size=300) | st.integers(min_value=0, max_value=3 * direct.CHUNK).map(lambda n: b"\x5a" * n)


@settings(max_examples=150, deadline=None)
@given(
    messages=st.lists(st.lists(_frame, min_size=1, max_size=4), min_size=1, max_size=4),
    cuts=st.lists(st.integers(min_value=0, max_value=1 << 20), max_size=12),
)
def test_any_messages_split_anywhere_read_back_as_sent(messages: list[list[bytes]], cuts: list[int]) -> None:
    sock = Script(b"".join(_wire(*m) for m in messages), cuts)
    reader = direct.Reader(1 << 24)
    assert _drain(reader, sock) == messages  # it stops when the socket runs dry: every piece was read
    assert not reader.buffered()


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=600), cuts=st.lists(st.integers(min_value=0, max_value=600), max_size=6))
def test_any_bytes_read_as_messages_or_a_framing_error_never_anything_else(data: bytes, cuts: list[int]) -> None:
    sock = Script(data, cuts)
    sock.closed = True  # then the peer leaves: the end of the bytes is an EOF
    reader = direct.Reader(1 << 16, too_large="too_large")
    try:
        while True:
            _drain(reader, sock)
    except direct.FramingError as exc:
        assert exc.code in ("bad_request", "too_large") and exc.message
    except EOFError:
        pass
