"""Where the daemon keeps its files, and how it writes them.

The runtime directory holds the IPC sockets and the lock file; it is systemd's
``RuntimeDirectory`` (``$RUNTIME_DIRECTORY``) under the service, ``/run/dynofa`` for root,
``$XDG_RUNTIME_DIR/dynofa`` for a desktop user, else ``/tmp/dynofa-$UID``. The state
directory holds what must survive a restart (budgets, the actuator's rollback data):
``$DYNOFA_STATE_DIR`` or ``$STATE_DIRECTORY`` (systemd), else ``/var/lib/dynofa`` for root,
else ``$XDG_STATE_HOME/dynofa`` (``~/.local/state/dynofa``) -- the rule
:func:`governors.state.default_state_dir` uses too. Files there are written atomically (temp file in
the same directory, fsync, rename) so a crash never leaves half a file.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any

from dynofa.errors import DynofaError


class UnsafePathError(DynofaError):
    """A runtime or state path is not a directory/file the daemon can trust (owner, mode, symlink)."""


def _first_systemd_dir(value: str | None) -> Path | None:
    # systemd passes a colon-separated list when a unit names several directories
    if not value:
        return None
    first = value.split(":")[0]
    return Path(first) if first else None


def runtime_dir(env: Mapping[str, str] | None = None, euid: int | None = None) -> Path:
    """The directory for sockets and the lock file (not created here)."""
    env = os.environ if env is None else env
    systemd = _first_systemd_dir(env.get("RUNTIME_DIRECTORY"))
    if systemd is not None:
        return systemd
    if (os.geteuid() if euid is None else euid) == 0:
        return Path("/run/dynofa")
    xdg = env.get("XDG_RUNTIME_DIR")
    if xdg:
        return Path(xdg) / "dynofa"
    return Path(tempfile.gettempdir()) / f"dynofa-{os.getuid()}"


def state_dir(env: Mapping[str, str] | None = None, euid: int | None = None) -> Path:
    """The directory for persistent state (not created here)."""
    env = os.environ if env is None else env
    for var in ("DYNOFA_STATE_DIR", "STATE_DIRECTORY"):
        chosen = _first_systemd_dir(env.get(var))
        if chosen is not None:
            return chosen
    if (os.geteuid() if euid is None else euid) == 0:
        return Path("/var/lib/dynofa")
    xdg = env.get("XDG_STATE_HOME")
    if xdg:
        return Path(xdg) / "dynofa"
    return Path.home() / ".local" / "state" / "dynofa"


def ensure_private_dir(path: Path, what: str = "directory", mode: int = 0o750) -> Path:
    """Create ``path`` (and parents) with ``mode`` if missing, else check that only this user can write it.

    The daemon runs as root on a shared board: a directory another user owns or can write would
    let that user swap the lock, the sockets or the state under it. ``what`` names the setting
    (``paths.state_dir``) in the error.
    """
    try:
        path.mkdir(parents=True, mode=mode)
        os.chmod(path, mode)  # mkdir's mode is filtered by the umask
    except FileExistsError:
        pass
    except OSError as exc:
        raise UnsafePathError(f"{what} {path}: cannot create it: {exc.strerror or exc}") from None
    try:
        info = os.stat(path)
    except OSError as exc:
        raise UnsafePathError(f"{what} {path}: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafePathError(f"{what} {path} is a file, not a directory: remove it or point {what} elsewhere")
    check_private(path, info, what)
    return path


def check_private(path: Path, info: os.stat_result, what: str) -> None:
    """Refuse ``path`` when another user owns it or when its group or others may write it."""
    if info.st_uid != os.geteuid():
        raise UnsafePathError(
            f"{what} {path} belongs to uid {info.st_uid}, not to the daemon's user (uid {os.geteuid()}): "
            f"`chown {os.geteuid()} {path}` or point {what} elsewhere"
        )
    if info.st_mode & 0o022:
        raise UnsafePathError(
            f"{what} {path} is writable by {'others' if info.st_mode & 0o002 else 'its group'} "
            f"(mode {stat.S_IMODE(info.st_mode):04o}): `chmod go-w {path}` or point {what} elsewhere"
        )


def open_private(path: Path, flags: int, mode: int = 0o640, what: str = "file") -> int:
    """``os.open`` that never follows a symlink at ``path`` and refuses a file that is not ours and regular."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePathError(f"{what} {path} is a symbolic link (never followed): remove it") from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafePathError(f"{what} {path} is not a regular file: remove it")
        if info.st_uid != os.geteuid():
            raise UnsafePathError(f"{what} {path} belongs to uid {info.st_uid}, not the daemon's user: remove it")
        if flags & os.O_CREAT and stat.S_IMODE(info.st_mode) != mode:
            os.fchmod(fd, mode)  # the mode given, not what the umask left of it
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_text_private(path: Path, what: str = "file") -> str:
    """A state file's text, refusing a symlink (raises FileNotFoundError when absent)."""
    fd = open_private(path, os.O_RDONLY, what=what)
    with os.fdopen(fd, encoding="utf-8") as fh:
        return fh.read()


def append_private(path: Path, mode: int = 0o640) -> IO[str]:
    """Open ``path`` for appending (created with ``mode``, never through a symlink)."""
    fd = open_private(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, mode, what="trace file")
    return os.fdopen(fd, "a", encoding="utf-8")


def remove_stale_temp_files(directory: Path, names: Iterable[str]) -> list[Path]:
    """Remove what :func:`write_bytes_atomic` left behind when killed between its write and its rename."""
    removed = []
    for name in names:
        for stale in directory.glob(f".{name}.*"):
            with contextlib.suppress(OSError):
                stale.unlink()
                removed.append(stale)
    return removed


def write_bytes_atomic(target: Path, data: bytes, mode: int = 0o640, durable: bool = True) -> None:
    """Replace ``target`` with ``data`` so that readers see the old or the new file, never half.

    ``durable`` adds the fsyncs that make the new content survive a kernel crash; files that a
    reboot makes stale anyway (the DVFS rollback file) skip them.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        _fsync_dir(target.parent)


def write_json_atomic(target: Path, data: Any, mode: int = 0o640, durable: bool = True, sort_keys: bool = True) -> None:
    text = json.dumps(data, indent=1, sort_keys=sort_keys) + "\n"
    write_bytes_atomic(target, text.encode(), mode, durable)


def _fsync(path: Path) -> None:
    # best effort: a filesystem that cannot fsync (tmpfs, some FUSE) must not fail the write
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    # the rename is durable only once the directory entry is flushed
    _fsync(directory)


def fsync_path(path: Path) -> None:
    """Flush a file written with ``durable=False``, and its directory entry, to the disk."""
    _fsync(path)
    _fsync_dir(path.parent)
