"""The rollback state file: original DVFS settings saved before the first change.

Written atomically (temporary file + rename) *before* each new setting is touched,
so a daemon killed at any point leaves a file from which its next start restores the board.
The file records the boot it was written in: after a reboot the kernel has reset every
setting, so a leftover file from an earlier boot is discarded instead of replayed.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dynofa.errors import DynofaError, PlatformError
from dynofa.paths import read_text_private, remove_stale_temp_files, state_dir, write_json_atomic

STATE_FILE = "dvfs-state.json"
DEGRADED_FILE = "capabilities.json"
SCHEMA = 1
BOOT_ID = "/proc/sys/kernel/random/boot_id"


@dataclass
class SavedSetting:
    """Original values of one cpufreq policy or devfreq device (``kind``: ``cpufreq`` | ``devfreq``), or of
    one plain sysfs file the daemon writes, such as an INA231 sensor's ``enable`` (``kind``: ``value``)."""

    kind: str
    path: str  # target path of the policy / devfreq directory, or of the file
    governor: str | None
    min: int | None
    max: int | None
    speed: int | None = None  # scaling_setspeed / userspace/set_freq when the governor was userspace
    value: str | None = None  # kind "value": the file's original contents

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SavedSetting:
        def opt_int(v: Any) -> int | None:
            return None if v is None else int(v)

        kind = str(d["kind"])
        if kind not in ("cpufreq", "devfreq", "value"):
            raise ValueError(f"unknown setting kind {kind!r}")
        return cls(
            kind=kind,
            path=str(d["path"]),
            governor=None if d.get("governor") is None else str(d["governor"]),
            min=opt_int(d.get("min")),
            max=opt_int(d.get("max")),
            speed=opt_int(d.get("speed")),
            value=None if d.get("value") is None else str(d["value"]),
        )


@dataclass
class SavedState:
    root: str
    board: str
    pid: int
    boot_id: str | None
    created: float = field(default_factory=time.time)
    settings: list[SavedSetting] = field(default_factory=list)

    def find(self, path: str) -> SavedSetting | None:
        for s in self.settings:
            if s.path == path:
                return s
        return None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["schema"] = SCHEMA
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SavedState:
        if d.get("schema") != SCHEMA:
            raise ValueError(f"unknown schema {d.get('schema')!r} (expected {SCHEMA})")
        return cls(
            root=str(d["root"]),
            board=str(d["board"]),
            pid=int(d["pid"]),
            boot_id=None if d.get("boot_id") is None else str(d["boot_id"]),
            created=float(d.get("created", 0.0)),
            settings=[SavedSetting.from_dict(s) for s in d.get("settings", [])],
        )


def current_boot_id() -> str | None:
    """This boot's id (always of the real machine: a fake tree does not reboot)."""
    try:
        with open(BOOT_ID) as fh:
            return fh.read().strip() or None
    except OSError:
        return None


def default_state_dir() -> str:
    """The daemon's state directory (one rule for every component: :func:`dynofa.paths.state_dir`)."""
    return str(state_dir())


def atomic_write_json(path: str, data: dict[str, Any]) -> None:
    """Write JSON so that readers see the old or the new file, never half of one.

    No fsync: a crashed *process* leaves the page cache intact, and a crashed *kernel* reboots,
    which resets every clock and makes the file stale (it is discarded by boot id).
    """
    write_json_atomic(Path(path), data, mode=0o640, durable=False)


class StateStore:
    """Load/save/clear the rollback file in one directory."""

    def __init__(self, state_dir: str) -> None:
        self.dir = os.path.abspath(state_dir)
        self.path = os.path.join(self.dir, STATE_FILE)
        self.degraded_path = os.path.join(self.dir, DEGRADED_FILE)

    def load(self) -> SavedState | None:
        """The saved state, or None if there is none. A corrupt file raises PlatformError.

        The file is never read through a symlink (its values are written to sysfs as root).
        """
        if os.path.isdir(self.dir):
            remove_stale_temp_files(Path(self.dir), [STATE_FILE, DEGRADED_FILE])
        try:
            data = json.loads(read_text_private(Path(self.path), what="rollback state file"))
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (OSError, ValueError, RecursionError, DynofaError) as exc:
            raise PlatformError(
                f"rollback state file {self.path} is unreadable or corrupt ({exc}); inspect it, restore "
                "the frequencies by hand (or reboot), then delete it"
            ) from exc
        try:
            return SavedState.from_dict(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise PlatformError(
                f"rollback state file {self.path} is malformed: {exc}; delete it after checking"
            ) from exc

    def save(self, state: SavedState) -> None:
        try:
            atomic_write_json(self.path, state.to_dict())
        except OSError as exc:
            raise PlatformError(
                f"cannot write the rollback state file {self.path}: {exc}; refusing to change frequencies "
                "without a way back (set --state-dir / DYNOFA_STATE_DIR to a writable directory)"
            ) from exc

    def clear(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    # Degraded capabilities, so that `dynofa platform` (another process) can show them.
    def save_degraded(self, root: str, degraded: dict[str, str]) -> None:
        record = {"root": root, "boot_id": current_boot_id(), "degraded": degraded}
        with contextlib.suppress(OSError):  # best effort: the daemon's own status still reports them
            atomic_write_json(self.degraded_path, record)

    def clear_degraded(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.degraded_path)

    def load_degraded(self, root: str) -> dict[str, str]:
        try:
            with open(self.degraded_path) as fh:
                data = json.load(fh)
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("root") != root or data.get("boot_id") != current_boot_id():
            return {}
        degraded = data.get("degraded")
        return {str(k): str(v) for k, v in degraded.items()} if isinstance(degraded, dict) else {}
