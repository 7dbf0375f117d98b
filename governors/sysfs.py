"""The one file-access layer every platform backend goes through.

Paths are written as on the target (``/sys/devices/system/cpu/...``) and resolved under
``root`` (default ``/``), so that a backend runs unchanged against a fake tree built in a
temporary directory. Tests can pass a ``hook`` that emulates what plain files cannot:
kernel write semantics (EINVAL for ``scaling_setspeed`` outside ``userspace``, min <= max),
permissions when the tests run as root, and injected faults. Production code passes none.
"""

from __future__ import annotations

import errno
import glob as _glob
import os
from typing import Protocol


class SysfsHook(Protocol):
    """Test seam: ``before_*`` may refuse an access (raise OSError); ``after_write`` applies side effects."""

    def before_read(self, path: str) -> None: ...

    def before_write(self, path: str, value: str) -> None: ...

    def after_write(self, path: str, value: str) -> None: ...

    def access(self, path: str, write: bool) -> bool: ...


def describe_oserror(exc: OSError, path: str) -> str:
    """A short human reason for a failed access, e.g. ``EACCES (permission denied) on /sys/...``."""
    code = errno.errorcode.get(exc.errno or 0, "E?")
    text = os.strerror(exc.errno) if exc.errno else str(exc)
    return f"{code} ({text.lower()}) on {path}"


class Sysfs:
    """Reads and writes small kernel attribute files under a root directory."""

    def __init__(self, root: str = "/", hook: SysfsHook | None = None) -> None:
        self.root = os.path.abspath(root)
        self.hook = hook

    def __repr__(self) -> str:
        return f"Sysfs(root={self.root!r})"

    @property
    def is_live(self) -> bool:
        """True when this reads the running system rather than a fake tree."""
        return self.root == "/"

    # -- paths -----------------------------------------------------------------------------
    def real(self, path: str) -> str:
        """The host path of a target path."""
        return os.path.join(self.root, path.lstrip("/"))

    def target(self, host_path: str) -> str:
        """The target path of a host path under the root (inverse of :meth:`real`)."""
        if self.root == "/":
            return host_path
        rel = os.path.relpath(host_path, self.root)
        return "/" if rel == "." else "/" + rel

    def exists(self, path: str) -> bool:
        return os.path.exists(self.real(path))

    def isdir(self, path: str) -> bool:
        return os.path.isdir(self.real(path))

    def listdir(self, path: str) -> list[str]:
        try:
            return sorted(os.listdir(self.real(path)))
        except OSError:
            return []

    def glob(self, pattern: str) -> list[str]:
        """Target paths matching a glob pattern, sorted."""
        return sorted(self.target(p) for p in _glob.glob(self.real(pattern)))

    def realpath(self, path: str) -> str:
        """Resolve symlinks (sysfs is full of them) and return the target path."""
        return self.target(os.path.realpath(self.real(path)))

    def access(self, path: str, write: bool = False) -> bool:
        """Whether the current user may read (or write) ``path``."""
        if self.hook is not None:
            return self.hook.access(path, write)
        return os.access(self.real(path), os.W_OK if write else os.R_OK)

    # -- reads -----------------------------------------------------------------------------
    def read_bytes(self, path: str) -> bytes:
        if self.hook is not None:
            self.hook.before_read(path)
        with open(self.real(path), "rb") as fh:
            return fh.read()

    def read(self, path: str) -> str:
        """The stripped text of a file; raises OSError."""
        return self.read_bytes(path).decode("utf-8", "replace").strip()

    def try_read(self, path: str) -> str | None:
        """The stripped text of a file, or None when it cannot be read."""
        try:
            return self.read(path)
        except (OSError, ValueError):
            return None

    def try_int(self, path: str) -> int | None:
        text = self.try_read(path)
        if text is None:
            return None
        try:
            return int(text.split()[0]) if text else None
        except ValueError:
            return None

    def try_ints(self, path: str) -> list[int]:
        """A whitespace-separated list of integers; empty when absent or malformed."""
        text = self.try_read(path)
        if not text:
            return []
        try:
            return [int(tok) for tok in text.split()]
        except ValueError:
            return []

    def try_words(self, path: str) -> list[str]:
        text = self.try_read(path)
        return text.split() if text else []

    # -- writes ----------------------------------------------------------------------------
    def write(self, path: str, value: str | int) -> None:
        """Write one value the way ``echo value > path`` does; raises OSError on refusal.

        Never creates a file: a missing attribute is ENOENT, as on a real sysfs.
        """
        text = str(value)
        if self.hook is not None:
            self.hook.before_write(path, text)
        fd = os.open(self.real(path), os.O_WRONLY | os.O_TRUNC)
        try:
            os.write(fd, (text + "\n").encode())
        finally:
            os.close(fd)
        if self.hook is not None:
            self.hook.after_write(path, text)


def parse_cpu_list(text: str) -> list[int]:
    """Parse a kernel CPU list, either ``"0 1 2 3"`` (cpufreq) or ``"0-3,6"`` (cpumask lists)."""
    cpus: list[int] = []
    for chunk in text.replace(",", " ").split():
        if "-" in chunk:
            lo, hi = chunk.split("-", 1)
            cpus.extend(range(int(lo), int(hi) + 1))
        else:
            cpus.append(int(chunk))
    return sorted(set(cpus))


class CachedReader:
    """Re-reads a fixed set of attribute files through kept-open descriptors (``pread`` at offset 0).

    sysfs and /proc regenerate a file's text on every read from offset 0, so one open per file
    for the life of a monitor makes a snapshot several times cheaper than open/read/close.
    """

    def __init__(self, sysfs: Sysfs) -> None:
        self.sysfs = sysfs
        self._fds: dict[str, int] = {}

    def read_bytes(self, path: str) -> bytes:
        hook = self.sysfs.hook
        if hook is not None:
            hook.before_read(path)
        fd = self._fds.get(path)
        if fd is None:
            fd = os.open(self.sysfs.real(path), os.O_RDONLY)
            self._fds[path] = fd
        data = os.pread(fd, 65536, 0)
        if len(data) == 65536:  # /proc/stat on a many-core machine: read it all
            chunks = [data]
            offset = len(data)
            while True:
                more = os.pread(fd, 65536, offset)
                if not more:
                    break
                chunks.append(more)
                offset += len(more)
            data = b"".join(chunks)
        return data

    def try_read(self, path: str) -> str | None:
        try:
            return self.read_bytes(path).decode("utf-8", "replace").strip()
        except OSError:
            self.forget(path)
            return None

    def try_int(self, path: str) -> int | None:
        text = self.try_read(path)
        if not text:
            return None
        try:
            return int(text.split()[0])
        except ValueError:
            return None

    def try_float(self, path: str) -> float | None:
        text = self.try_read(path)
        if not text:
            return None
        try:
            return float(text.split()[0])
        except ValueError:
            return None

    def forget(self, path: str) -> None:
        fd = self._fds.pop(path, None)
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        for path in list(self._fds):
            self.forget(path)
