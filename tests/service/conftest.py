"""Fixtures for the daemon tests: one tiny catalog per session, one real daemon per module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.service.harness import Daemon, NotifyListener, start_daemon, write_config
from tests.service.tiny import make_catalog


@pytest.fixture(scope="session")
def tiny_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_catalog(tmp_path_factory.mktemp("catalog"))


@pytest.fixture(scope="module")
def notify(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NotifyListener]:
    listener = NotifyListener(tmp_path_factory.mktemp("notify"))
    yield listener
    listener.close()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, tiny_catalog: Path, notify: NotifyListener) -> Iterator[Daemon]:
    directory = tmp_path_factory.mktemp("daemon")
    config = write_config(
        directory,
        tiny_catalog,
        limits={"max_message_bytes": 1 << 20, "hard_message_bytes": 4 << 20, "max_apps": 16, "infer_queue": 256},
    )
    d = start_daemon(config, env={"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "400000"})
    yield d
    d.stop()
