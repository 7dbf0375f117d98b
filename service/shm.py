"""Shared-memory regions: apps on this machine pass tensors through a POSIX shm file, not frames.

An app creates ``/dev/shm/<name>`` (mode 0600, or 0660 with group ``dynofa`` when the daemon
runs as another user), sends ``shm_register`` once, and may unlink the name right away: the
daemon keeps the open file, so a crashed app leaves nothing behind in /dev/shm. ``infer_shm``
then names the region, the input's offset, dtype and shape, and the output's offset and room.

The daemon never maps a region. It reads the input with one ``pread`` into its own buffer
and writes the output with one ``pwrite``: a region the app shrinks mid-flight gives a short
read (``region_truncated``), never a SIGBUS that would kill the daemon, and nothing is ever
written outside the output slice. Every offset is checked against the region's current size
and the element alignment. Regions belong to the app and to the process that registered them:
they are closed on ``shm_unregister``, when the app is unregistered, and when that process is
gone (:meth:`RegionTable.sweep`), so a vanished client leaks no file descriptor.
"""

from __future__ import annotations

import logging
import math
import os
import stat
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dynofa import protocol
from dynofa.protocol import RequestError

log = logging.getLogger(__name__)

SHM_DIR = Path("/dev/shm")
MAX_REGIONS_PER_APP = 8
MAX_REGION_BYTES = 1 << 30


@dataclass
class Region:
    id: str
    app: str
    name: str
    fd: int
    pid: int | None  # the registering process; None when the transport did not say (then only unregister frees it)
    started: str | None  # that process's start time (/proc/<pid>/stat field 22): a reused pid is another process
    users: int = 0  # in-flight inferences reading or writing through fd
    closed: bool = False

    def size(self) -> int:
        return os.fstat(self.fd).st_size


@dataclass
class Transfer:
    """One ``infer_shm``: where to read the input and write the output (checked at request time)."""

    region: Region
    in_offset: int
    in_dtype: str
    in_shape: tuple[int, ...]
    out_offset: int
    out_room: int
    _table: RegionTable = field(repr=False)

    @property
    def in_bytes(self) -> int:
        return math.prod(self.in_shape) * np.dtype(self.in_dtype).itemsize

    def buffer(self) -> np.ndarray:
        """The daemon's own (writable) array the input is read into."""
        return np.empty(self.in_shape, dtype=np.dtype(self.in_dtype).newbyteorder("<"))

    def read_into(self, x: np.ndarray) -> None:
        view = x.data.cast("B")
        got = os.preadv(self.region.fd, [view], self.in_offset)
        if got != self.in_bytes:
            raise RequestError(
                protocol.REGION_TRUNCATED,
                f"region {self.region.id} shrank mid-flight: read {got} of {self.in_bytes} input bytes at offset "
                f"{self.in_offset}; keep the region's size while inferences use it",
            )

    def write_output(self, output: np.ndarray) -> dict[str, Any]:
        """Write ``output`` at the output offset; the reply's ``output`` fields."""
        fields, out = protocol.encode_tensor(output)
        data = out.data.cast("B")
        if len(data) > self.out_room:
            raise RequestError(
                protocol.REGION_BOUNDS,
                f"the output needs {len(data)} bytes (dtype {fields['dtype']}, shape {fields['shape']}); "
                f"output.bytes gives {self.out_room}",
            )
        end = self.out_offset + len(data)
        if self.region.size() < end:  # never grow a region the app shrank: that would write past its slice
            raise RequestError(
                protocol.REGION_TRUNCATED,
                f"region {self.region.id} shrank mid-flight below the output slice (it ends at byte {end})",
            )
        os.pwrite(self.region.fd, data, self.out_offset)
        return {**fields, "offset": self.out_offset, "bytes": len(data)}

    def release(self) -> None:
        self._table.release(self.region)


class RegionTable:
    """Every registered region, by id; thread-safe (the server registers, workers read and write)."""

    def __init__(self, shm_dir: Path = SHM_DIR, daemon_uid: int | None = None) -> None:
        self.shm_dir = shm_dir
        self.daemon_uid = os.geteuid() if daemon_uid is None else daemon_uid
        self._regions: dict[str, Region] = {}
        self._next = 0
        self._lock = threading.Lock()

    # registration ----------------------------------------------------------------------------
    def register(self, app: str, name: str, uid: int | None, pid: int | None) -> dict[str, Any]:
        if uid is None:
            raise RequestError(
                protocol.BAD_REGION,
                "shared memory is for clients on this machine (the ipc:// endpoint); over tcp send tensor frames",
            )
        with self._lock:
            if sum(1 for r in self._regions.values() if r.app == app) >= MAX_REGIONS_PER_APP:
                raise RequestError(
                    protocol.BAD_REGION,
                    f"app {app!r} already has {MAX_REGIONS_PER_APP} regions; shm_unregister one first",
                )
        fd = self._open(name, uid)
        with self._lock:
            self._next += 1
            region = Region(f"r{self._next}", app, name, fd, pid, _start_time(pid))
            self._regions[region.id] = region
        log.debug("region %s: %s for %s (pid %s, %d bytes)", region.id, name, app, pid, region.size())
        return {"app": app, "region": region.id, "bytes": region.size()}

    def _open(self, name: str, uid: int) -> int:
        path = self.shm_dir / name
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            raise RequestError(protocol.BAD_REGION, f"no shared-memory region {path}") from None
        except OSError as exc:
            raise RequestError(
                protocol.BAD_REGION,
                f"cannot open {path}: {exc.strerror} (create it 0600, or 0660 with group dynofa when the "
                "daemon runs as another user)",
            ) from None
        try:
            self._check(path, os.fstat(fd), uid)
        except RequestError:
            os.close(fd)
            raise
        return fd

    def _check(self, path: Path, st: os.stat_result, uid: int) -> None:
        problem = None
        if not stat.S_ISREG(st.st_mode):
            problem = "is not a regular file"
        elif st.st_uid != uid and uid not in (0, self.daemon_uid):
            problem = f"belongs to uid {st.st_uid}, not to the registering client (uid {uid})"
        elif st.st_mode & 0o007:
            problem = f"is accessible to other users (mode {stat.S_IMODE(st.st_mode):o}); use 0600 or 0660"
        elif st.st_size == 0:
            problem = "is empty (ftruncate it to its size before registering)"
        elif st.st_size > MAX_REGION_BYTES:
            problem = f"has {st.st_size} bytes, more than the {MAX_REGION_BYTES} a region may have"
        if problem is not None:
            raise RequestError(protocol.BAD_REGION, f"shared-memory region {path} {problem}")

    def unregister(self, app: str, region_id: str) -> dict[str, Any]:
        with self._lock:
            region = self._owned(app, region_id)
            self._drop(region)
        return {"app": app, "region": region_id}

    def forget_app(self, app: str) -> None:
        with self._lock:
            for region in [r for r in self._regions.values() if r.app == app]:
                self._drop(region)

    def sweep(self) -> list[str]:
        """Close the regions of processes that are gone; their ids."""
        with self._lock:
            gone = [r for r in self._regions.values() if r.pid is not None and _start_time(r.pid) != r.started]
            for region in gone:
                self._drop(region)
        if gone:
            log.info("closed %d shared-memory region(s) of vanished clients", len(gone))
        return [r.id for r in gone]

    def __len__(self) -> int:
        with self._lock:
            return len(self._regions)

    def close(self) -> None:
        with self._lock:
            for region in list(self._regions.values()):
                self._drop(region)

    # inference -------------------------------------------------------------------------------
    def transfer(self, app: str, region_id: str, source: dict[str, Any], target: dict[str, Any]) -> Transfer:
        """Check one ``infer_shm`` against the region as it is now; the region stays open until released."""
        in_shape = tuple(source["shape"])
        itemsize = np.dtype(source["dtype"]).itemsize
        in_bytes = math.prod(in_shape) * itemsize  # Python ints: no wrap-around, and no numpy call per request
        with self._lock:
            region = self._owned(app, region_id)
            size = region.size()
            _check_slice("input", source["offset"], in_bytes, itemsize, size)
            _check_slice("output", target["offset"], target["bytes"], 4, size)
            if _overlap(source["offset"], in_bytes, target["offset"], target["bytes"]):
                raise RequestError(protocol.REGION_BOUNDS, "the input and output slices overlap")
            region.users += 1
        return Transfer(region, source["offset"], source["dtype"], in_shape, target["offset"], target["bytes"], self)

    def release(self, region: Region) -> None:
        with self._lock:
            region.users -= 1
            if region.closed and region.users == 0:
                os.close(region.fd)

    # internals (callers hold the lock) -----------------------------------------------------------
    def _owned(self, app: str, region_id: str) -> Region:
        region = self._regions.get(region_id)
        if region is None or region.app != app:
            raise RequestError(
                protocol.UNKNOWN_REGION, f"app {app!r} has no region {region_id!r} (shm_register it first)"
            )
        return region

    def _drop(self, region: Region) -> None:
        del self._regions[region.id]
        region.closed = True
        if region.users == 0:  # else the last in-flight inference closes it: its fd must stay that file's
            os.close(region.fd)


def _check_slice(what: str, offset: int, nbytes: int, align: int, size: int) -> None:
    if offset % align:
        raise RequestError(protocol.REGION_BOUNDS, f"{what} offset {offset} is not a multiple of {align} bytes")
    if offset + nbytes > size:
        raise RequestError(
            protocol.REGION_BOUNDS,
            f"{what} slice [{offset}, {offset + nbytes}) lies outside the region's {size} bytes",
        )


def _overlap(a: int, a_len: int, b: int, b_len: int) -> bool:
    return a < b + b_len and b < a + a_len


def _start_time(pid: int | None) -> str | None:
    if pid is None:
        return None
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields: Sequence[str] = text[text.rindex(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None
