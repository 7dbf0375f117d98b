"""The framing of the inference endpoints (extension ``direct``, docs/protocol.md): stdlib only.

An inference endpoint is a Unix stream socket read and answered by the daemon's inference
thread itself, with no ZeroMQ I/O thread in between: a round trip wakes two threads (the
client's and the daemon's), the fewest two processes can do. A message is the same frames as
on the control endpoint (a JSON header, then the tensor frame for ``infer``), framed as::

    u32 n (little-endian)   the number of frames, 1..MAX_FRAMES
    n x u64 (little-endian) each frame's length in bytes
    the frames' bytes, one after the other

Replies are framed the same way. :class:`Reader` reads one message at a time from a blocking or
a non-blocking socket, straight into one buffer per frame (no copy of the tensor bytes after the
kernel's), and refuses a frame count or a total size out of bounds before it allocates anything.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

SCHEME = "unix://"
MAX_FRAMES = 16
_COUNT = struct.Struct("<I")


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
    """Reads framed messages from one connection; :meth:`feed` returns a message once it is complete."""

    def __init__(self, max_bytes: int, max_frames: int = MAX_FRAMES, too_large: str = "too_large") -> None:
        self.max_bytes = max_bytes
        self.max_frames = min(max_frames, MAX_FRAMES)
        self._too_large = too_large
        self._reset()

    def _reset(self) -> None:
        self._stage = 0  # 0: frame count, 1: lengths, 2: frame bytes
        self._buffer = bytearray(_COUNT.size)
        self._target = memoryview(self._buffer)
        self._pos = 0
        self._frames: list[bytearray] = []
        self._index = 0

    def feed(self, sock: Any) -> list[bytearray] | None:
        """Read what the socket has; the frames of a complete message, or None (a non-blocking socket ran dry).

        Raises EOFError when the peer closed the connection, FramingError for a bad frame count or size,
        and what the socket raises (TimeoutError on a blocking socket with a timeout).
        """
        while True:
            while self._pos < len(self._target):
                try:
                    got = sock.recv_into(self._target[self._pos :])
                except BlockingIOError:
                    return None
                if got == 0:
                    raise EOFError("the peer closed the connection")
                self._pos += got
            frames = self._step()
            if frames is not None:
                return frames

    def _step(self) -> list[bytearray] | None:
        if self._stage == 0:
            (n,) = _COUNT.unpack(self._buffer)
            if not 1 <= n <= self.max_frames:
                raise FramingError("bad_request", f"a message has 1 to {self.max_frames} frames, not {n}")
            self._stage, self._buffer = 1, bytearray(8 * n)
            self._target, self._pos = memoryview(self._buffer), 0
            return None
        if self._stage == 1:
            lengths = struct.unpack(f"<{len(self._buffer) // 8}Q", self._buffer)
            total = sum(lengths)
            if total > self.max_bytes:
                raise FramingError(
                    self._too_large, f"message of {total} bytes exceeds the limit of {self.max_bytes} bytes"
                )
            self._frames = [bytearray(n) for n in lengths]
            self._stage, self._index = 2, 0
            return self._next_frame()
        self._index += 1
        return self._next_frame()

    def _next_frame(self) -> list[bytearray] | None:
        while self._index < len(self._frames) and not self._frames[self._index]:
            self._index += 1  # an empty frame: nothing to read
        if self._index == len(self._frames):
            frames = self._frames
            self._reset()
            return frames
        self._target, self._pos = memoryview(self._frames[self._index]), 0
        return None
