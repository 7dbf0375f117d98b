"""The client's side of shared-memory inference (docs/protocol.md, "Shared memory"); numpy only.

A :class:`ClientRegion` is one POSIX shm file mapped into this process: the input tensor at
offset 0, the output after it. It is created 0600 (0660 with group ``dynofa`` when this process
is in that group, so that a daemon running as the ``dynofa`` user can open it), registered with
the daemon, then unlinked at once: the daemon holds its own descriptor, and a crash of either
side leaves nothing in /dev/shm.
"""

from __future__ import annotations

import contextlib
import grp
import math
import mmap
import os
import secrets
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from dynofa import protocol

SHM_DIR = Path("/dev/shm")
DAEMON_GROUP = "dynofa"
ALIGN = 64  # the output slice starts on a cache line
OUTPUT_ROOM_BYTES = 1 << 20  # room for the output (1 MiB: 262144 float32 logits); tmpfs allocates touched pages only


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


class ClientRegion:
    """A mapped shm file with room for inputs of ``input_bytes`` and an output slice after them."""

    def __init__(self, input_bytes: int, shm_dir: Path = SHM_DIR) -> None:
        self.input_bytes = input_bytes
        self.out_offset = _align(input_bytes)
        self.size = self.out_offset + OUTPUT_ROOM_BYTES
        self.name = f"dynofa-{os.getpid()}-{secrets.token_hex(8)}"
        self.path = shm_dir / self.name
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            _share_with_daemon_group(fd)
            os.ftruncate(fd, self.size)
            self._map = mmap.mmap(fd, self.size)
            self._base = _address(self._map)
        except BaseException:
            self.unlink()
            raise
        finally:
            os.close(fd)  # the mapping keeps the memory; the daemon opens the file by name
        self.region: str | None = None  # the daemon's id, once registered
        # the last input_view (weakly: a live view would keep close from unmapping), known by identity;
        # and the output slice as the last reply named it: a repeated inference looks up neither again
        self._input: weakref.ref[np.ndarray] | None = None
        self._output: tuple[tuple[Any, ...], np.ndarray] | None = None

    def fits(self, nbytes: int) -> bool:
        return nbytes <= self.input_bytes

    def input_view(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
        """A writable array over the input bytes at offset 0: what the app fills is what the daemon reads.

        Made through a memoryview (``np.frombuffer``), which holds a buffer export of the mapping as long as
        the array or any view of it lives: :meth:`close` then cannot unmap memory the app still uses
        (``np.ndarray(buffer=mmap)`` holds none, and its array would point at unmapped pages)."""
        count = math.prod(shape)
        view = np.frombuffer(self._map, dtype=dtype, count=count, offset=0).reshape(shape)
        self._input = weakref.ref(view)
        return view

    def holds_input(self, array: np.ndarray) -> bool:
        """Whether ``array`` already is the input bytes at offset 0 (a view from :meth:`input_view`)."""
        known = self._input
        if known is not None and known() is array:
            return True
        return array.flags.c_contiguous and array.ctypes.data == self._base and array.nbytes <= self.input_bytes

    def write_input(self, array: np.ndarray) -> dict[str, Any]:
        """Put ``array`` (little-endian, C-contiguous) at offset 0; the request's ``input`` fields.

        An array that already lies there (the app filled :meth:`input_view`) is not copied.
        """
        if not self.holds_input(array):
            np.copyto(self.input_view(array.shape, array.dtype), array)
        return {"offset": 0, "dtype": protocol.dtype_name(array.dtype), "shape": list(array.shape)}

    def output_slice(self) -> dict[str, int]:
        return {"offset": self.out_offset, "bytes": OUTPUT_ROOM_BYTES}

    def read_output(self, fields: dict[str, Any]) -> np.ndarray:
        """A copy of the output the daemon wrote (the slice is reused by the next inference)."""
        key = (fields["offset"], fields["bytes"], fields["dtype"], fields["shape"])
        known = self._output
        if known is not None and known[0] == key:
            return known[1].copy()
        offset, nbytes = int(fields["offset"]), int(fields["bytes"])
        if not self.out_offset <= offset or offset + nbytes > self.size:
            raise ValueError(f"the daemon named output bytes [{offset}, {offset + nbytes}) outside the output slice")
        dtype = np.dtype(str(fields["dtype"]))
        data = np.frombuffer(self._map, dtype=dtype, count=nbytes // dtype.itemsize, offset=offset)
        view = data.reshape([int(d) for d in fields["shape"]])
        self._output = ((key[0], key[1], key[2], list(key[3])), view)
        return view.copy()

    def unlink(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()

    def close(self, unregister: Callable[[str], object] | None = None) -> None:
        if unregister is not None and self.region is not None:
            with contextlib.suppress(Exception):  # best effort: the daemon also frees it when this process ends
                unregister(self.region)
        self.unlink()
        self._output = None  # its view holds a buffer export of the mapping
        with contextlib.suppress(BufferError, ValueError):  # BufferError: an input_view lives; unmapped with it
            self._map.close()


def _address(mapping: mmap.mmap) -> int:
    """The mapping's start address (from a transient view: one kept alive would stop ``close`` from unmapping)."""
    return int(np.frombuffer(mapping, dtype=np.uint8, count=1).ctypes.data)


def _share_with_daemon_group(fd: int) -> None:
    try:
        gid = grp.getgrnam(DAEMON_GROUP).gr_gid
    except KeyError:
        return  # no system daemon group: the daemon runs as this user, 0600 is enough
    if gid != os.getegid() and gid not in os.getgroups():
        return
    with contextlib.suppress(OSError):
        os.fchown(fd, -1, gid)
        os.fchmod(fd, 0o660)
