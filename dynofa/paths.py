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

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any


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


def ensure_private_dir(path: Path, mode: int = 0o750) -> Path:
    """Create ``path`` (and parents) if missing; a fresh directory gets ``mode``."""
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, mode)
    return path


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
