"""The framing of the inference endpoints (extension ``direct``, docs/protocol.md): stdlib only.

An inference endpoint is a Unix stream socket read and answered by the daemon's inference
thread itself, with no ZeroMQ I/O thread in between: a round trip wakes two threads (the
client's and the daemon's), the fewest two processes can do. A message is the same frames as
on the control endpoint (a JSON header, then the tensor frame for ``infer``), framed as::

    u32 n (little-endian)   the number of frames, 1..MAX_FRAMES
    n x u64 (little-endian) each frame's length in bytes
    the frames' bytes, one after the other

Replies are framed the same way. :class:`Reader` reads one message at a time from a blocking or
a non-blocking socket: a small message in one system call, a tensor frame straight into its own
buffer (no copy of the tensor bytes after the kernel's); it refuses a frame count or a total size
out of bounds before it allocates anything.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Sequence
from typing import Any

SCHEME = "unix://"
MAX_FRAMES = 16
_COUNT = struct.Struct("<I")
#: the receive buffer a reader keeps: the largest message read in one system call
CHUNK = 32 * 1024


class FramingError(Exception):
    """A message that breaks the framing: the connection cannot be read further (``code``: the error code)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def pack(frames: Sequence[Any]) -> list[memoryview]:
    """The buffers to send for ``frames`` (bytes-like objects), the framing first."""
    views = [memoryview(f).cast("B") if not isinstance(f, memoryview) else f.cast("B") for f in frames]
    head = struct.pack(f"<I{len(views)}Q", len(views), *(v.nbytes for v in views))
    return [memoryview(head), *views]


def advance(buffers: list[memoryview], sent: int) -> list[memoryview]:
    """What is left of ``buffers`` after ``sent`` bytes went out."""
    while buffers and sent >= buffers[0].nbytes:
        sent -= buffers[0].nbytes
        buffers = buffers[1:]
    if buffers and sent:
        buffers = [buffers[0][sent:], *buffers[1:]]
    return buffers


class Reader:
    """Reads framed messages from one connection; :meth:`feed` returns a message once it is complete.

    Small messages (a header, a shared-memory request, a reply) arrive whole in one ``recv`` into
    a buffer the reader keeps (one system call per message, not one per part); a frame larger than
    that buffer is received straight into its own buffer, with no copy after the kernel's. Bytes of
    a next message that arrived with this one stay buffered: :meth:`buffered` says so, since the
    socket will not poll readable for them.
    """

    def __init__(
        self, max_bytes: int, max_frames: int = MAX_FRAMES, too_large: str = "too_large", chunk: int = CHUNK
    ) -> None:
        self.max_bytes = max_bytes
        self.max_frames = min(max_frames, MAX_FRAMES)
        self._too_large = too_large
        self._chunk = bytearray(chunk)
        self._view = memoryview(self._chunk)
        self._start = self._end = 0  # the buffered bytes not yet parsed: _chunk[_start:_end]
        self._lengths: tuple[int, ...] | None = None  # the frame lengths of the message being read
        self._frames: list[bytearray] = []
        self._large: memoryview | None = None  # a large frame's buffer, while it is received into directly
        self._large_pos = 0

    def buffered(self) -> bool:
        """Whether bytes of another message are already here (read them without waiting for the socket)."""
        return self._end > self._start

    def feed(self, sock: Any) -> list[bytearray] | None:
        """Read what the socket has; the frames of a complete message, or None (a non-blocking socket ran dry).

        Raises EOFError when the peer closed the connection, FramingError for a bad frame count or size,
        and what the socket raises (TimeoutError on a blocking socket with a timeout).
        """
        while True:
            if self._large is not None:
                if not self._receive_large(sock):
                    return None
            else:
                frames = self._parse()
                if frames is not None:
                    return frames
                if self._large is None and not self._fill(sock):
                    return None

    def _fill(self, sock: Any) -> bool:
        """Receive more bytes into the buffer; False when a non-blocking socket has none."""
        if self._start == self._end:
            self._start = self._end = 0
        elif len(self._chunk) - self._end < len(self._chunk) // 2:  # little room left: move the rest to the front
            kept = self._end - self._start
            self._chunk[:kept] = self._chunk[self._start : self._end]
            self._start, self._end = 0, kept
        got = _receive(sock, self._view[self._end :])
        if got is None:
            return False
        self._end += got
        return True

    def _receive_large(self, sock: Any) -> bool:
        assert self._large is not None
        while self._large_pos < len(self._large):
            got = _receive(sock, self._large[self._large_pos :])
            if got is None:
                return False
            self._large_pos += got
        self._large = None
        return True

    def _parse(self) -> list[bytearray] | None:
        """Take what the buffered bytes complete of the current message; its frames once it is whole."""
        if self._lengths is None:
            available = self._end - self._start
            if available < _COUNT.size:
                return None
            (n,) = _COUNT.unpack_from(self._chunk, self._start)
            if not 1 <= n <= self.max_frames:
                raise FramingError("bad_request", f"a message has 1 to {self.max_frames} frames, not {n}")
            if available < _COUNT.size + 8 * n:
                return None
            lengths = struct.unpack_from(f"<{n}Q", self._chunk, self._start + _COUNT.size)
            total = sum(lengths)
            if total > self.max_bytes:
                raise FramingError(
                    self._too_large, f"message of {total} bytes exceeds the limit of {self.max_bytes} bytes"
                )
            self._start += _COUNT.size + 8 * n
            self._lengths, self._frames = lengths, []
        while len(self._frames) < len(self._lengths):
            size = self._lengths[len(self._frames)]
            available = self._end - self._start
            if size <= available:
                self._frames.append(self._chunk[self._start : self._start + size])
                self._start += size
                continue
            if size <= len(self._chunk) // 2:
                return None  # a small frame not all here yet: the buffer has room for it
            frame = bytearray(size)  # received straight into its own buffer from here on
            frame[:available] = self._chunk[self._start : self._end]
            self._start = self._end = 0
            self._frames.append(frame)
            self._large, self._large_pos = memoryview(frame), available
            return None
        frames, self._lengths, self._frames = self._frames, None, []
        return frames


def _receive(sock: Any, into: memoryview) -> int | None:
    """Bytes received into ``into``; None when a non-blocking socket has none. EOFError: the peer left."""
    try:
        got = sock.recv_into(into)
    except BlockingIOError:
        return None
    if got == 0:
        raise EOFError("the peer closed the connection")
    return int(got)


class Connection:
    """A client's connection to an inference endpoint: one request at a time, its reply read back.

    The socket blocks in the kernel with the timeout set there (``SO_RCVTIMEO``/``SO_SNDTIMEO``),
    not in Python: a socket with a Python timeout polls before every receive, a system call and a
    wake-up more per message on the path whose cost is the point of this endpoint.
    """

    def __init__(self, path: str, timeout_s: float, max_bytes: int = 1 << 62) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.settimeout(timeout_s)  # for connect only
            self.sock.connect(path)
            self.sock.settimeout(None)
            seconds, micros = divmod(max(1, int(timeout_s * 1e6)), 1_000_000)
            timeval = struct.pack("ll", seconds, micros)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
        except BaseException:
            self.sock.close()
            raise
        self.reader = Reader(max_bytes)  # one per connection: it may hold bytes past a message

    def exchange(self, frames: Sequence[Any]) -> list[bytearray]:
        """Send one message and return the reply's frames. Raises TimeoutError when the peer does not
        take the request or answer within the timeout, and what :meth:`Reader.feed` raises."""
        buffers = pack(frames)
        try:
            while buffers:
                buffers = advance(buffers, self.sock.sendmsg(buffers))
        except BlockingIOError:
            raise TimeoutError("the endpoint did not take the request in time") from None
        reply = self.reader.feed(self.sock)
        if reply is None:  # a blocking socket comes back empty only when the kernel's timeout expired
            raise TimeoutError("the endpoint did not answer in time")
        return reply

    def close(self) -> None:
        self.sock.close()
