"""Budgets that survive a restart or a crash: one JSON file in the state directory, written atomically."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dynofa.budget import Budget
from dynofa.errors import DynofaError
from dynofa.paths import UnsafePathError, fsync_path, read_text_private, remove_stale_temp_files, write_json_atomic

log = logging.getLogger(__name__)
SCHEMA = "dynofa.budgets/1"


@dataclass(frozen=True)
class SavedApp:
    model: str
    budget: Budget | None
    owner: str | None = None  # the registering client's identity (service.tenancy); None in older files
    token_sha256: str | None = None


class BudgetStore:
    """``<state_dir>/budgets.json``: app -> model and budget."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "budgets.json"

    def load(self) -> dict[str, SavedApp]:
        """The saved apps; a corrupt file is moved aside (and logged), never fatal.

        Temporary files a killed daemon left between write and rename are removed first.
        """
        for stale in remove_stale_temp_files(self.path.parent, [self.path.name]):
            log.info("removed %s, left by a daemon killed while saving budgets", stale)
        try:
            data = json.loads(read_text_private(self.path, what="budgets file"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, RecursionError, UnsafePathError) as exc:  # RecursionError: nested too deep
            self._quarantine(f"unreadable ({str(exc)[:200]})")
            return {}
        if not isinstance(data, dict) or data.get("schema") != SCHEMA or not isinstance(data.get("apps"), dict):
            self._quarantine("not a dynofa budgets file")
            return {}
        apps: dict[str, SavedApp] = {}
        for name, item in data["apps"].items():
            try:
                budget = None if item.get("budget") is None else Budget.from_dict(item["budget"])
                apps[str(name)] = SavedApp(
                    model=str(item["model"]),
                    budget=budget,
                    owner=_optional_text(item.get("owner")),
                    token_sha256=_optional_text(item.get("token_sha256")),
                )
            except (DynofaError, KeyError, TypeError, AttributeError) as exc:
                log.warning("ignoring saved budget of app %r in %s: %s", name, self.path, exc)
        return apps

    def save(self, apps: dict[str, SavedApp], durable: bool = True) -> None:
        data: dict[str, Any] = {
            "schema": SCHEMA,
            "apps": {
                name: {
                    "model": a.model,
                    "budget": None if a.budget is None else a.budget.to_dict(),
                    "owner": a.owner,
                    "token_sha256": a.token_sha256,
                }
                for name, a in sorted(apps.items())
            },
        }
        write_json_atomic(self.path, data, mode=0o640, durable=durable)

    def _quarantine(self, why: str) -> None:
        aside = self.path.with_suffix(".json.corrupt")
        log.warning("budgets file %s is %s; moved to %s, starting with no budgets", self.path, why, aside)
        with contextlib.suppress(OSError):
            self.path.replace(aside)


def _optional_text(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"expected a string or null, got {type(value).__name__}")
    return value


class BackgroundSync:
    """fsyncs the budgets file on a thread, so that a ``set_budget`` reply never waits for the disk.

    The request path writes the file atomically without fsync (temp file + rename: a SIGKILL right
    after the reply still finds the new budgets); this thread then makes it survive a power loss.
    Requests coalesce; ``close`` (at stop) waits for the last one.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._wanted = 0
        self._done = 0
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="dynofa-fsync", daemon=True)
        self._thread.start()

    def request(self) -> None:
        with self._cond:
            self._wanted += 1
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._wanted == self._done and not self._closed:
                    self._cond.wait()
                if self._wanted == self._done:
                    return
                target = self._wanted
            fsync_path(self.path)
            with self._cond:
                self._done = target
                self._cond.notify_all()

    def flush(self, timeout_s: float = 10.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._done == self._wanted, timeout_s)

    def close(self) -> None:
        self.flush()
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=5)
