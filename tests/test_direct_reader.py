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
    tensor = os.urandom(3 * direct.CHUNK + 17)
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
