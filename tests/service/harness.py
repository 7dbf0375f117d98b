"""Start a real ``dynofa serve`` process with a temporary config and talk to it over ZeroMQ."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
import zmq

from dynofa.client import Client, CurveKeys
from dynofa.errors import DynofaError

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 240.0  # torch + ofa imports and graph tracing on a loaded 2-core machine (a bound, not a goal)


def write_config(directory: Path, catalog: Path, **sections: Any) -> Path:
    """A config whose sockets live in a short temp dir (ipc paths are limited to 107 bytes)."""
    runtime = Path(tempfile.mkdtemp(prefix="dyn-"))
    config: dict[str, Any] = {
        "models": {"tiny": {"catalog": str(catalog)}},
        "paths": {"runtime_dir": str(runtime), "state_dir": str(directory / "state")},
        "control_interval_s": 0.1,
        "telemetry": {"period_s": 0.2},
        "logging": {"level": "debug"},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@dataclass
class Daemon:
    proc: subprocess.Popen[bytes]
    config: dict[str, Any]
    log_path: Path
    clients: list[Client] = field(default_factory=list)
    curve: CurveKeys | None = None  # for tcp:// daemons: the keys its clients use by default

    @property
    def runtime(self) -> Path:
        return Path(self.config["paths"]["runtime_dir"])

    @property
    def state_dir(self) -> Path:
        return Path(self.config["paths"]["state_dir"])

    @property
    def endpoint(self) -> str:
        configured = self.config.get("endpoints", {}).get("control")
        return str(configured) if configured else f"ipc://{self.runtime / 'control.sock'}"

    @property
    def telemetry(self) -> str:
        configured = self.config.get("endpoints", {}).get("telemetry")
        return str(configured) if configured else f"ipc://{self.runtime / 'telemetry.sock'}"

    def client(self, timeout_s: float = 20.0, retries: int = 0, curve: CurveKeys | None = None) -> Client:
        c = Client(self.endpoint, timeout_s=timeout_s, retries=retries, curve=curve or self.curve)
        self.clients.append(c)
        return c

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        for c in self.clients:
            c.close()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=timeout)
            shutil.rmtree(self.runtime, ignore_errors=True)  # a mkdtemp dir; a restart recreates it
            return code
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"daemon did not stop within {timeout} s; log:\n{self.log()[-3000:]}") from None


def start_daemon(
    config_path: Path, env: dict[str, str] | None = None, log_name: str = "daemon.log", curve: CurveKeys | None = None
) -> Daemon:
    """Start ``dynofa serve`` and wait until it answers a ping (the caller stops it, in ``finally``)."""
    config = yaml.safe_load(config_path.read_text())
    log_path = config_path.parent / log_name
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "serve", "--config", str(config_path)],
            stdout=log, stderr=subprocess.STDOUT, env=full_env, cwd=REPO,
        )  # fmt: skip
    daemon = Daemon(proc, config, log_path, curve=curve)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"daemon exited with {proc.returncode}; log:\n{daemon.log()[-4000:]}")
        if not daemon.endpoint.startswith("ipc://") or (daemon.runtime / "control.sock").exists():
            try:
                with Client(daemon.endpoint, timeout_s=2.0, retries=0, curve=curve) as c:
                    c.ping()
                return daemon
            except DynofaError:
                pass
        time.sleep(0.1)
    daemon.stop(signal.SIGKILL)
    raise AssertionError(f"daemon not ready after {START_TIMEOUT_S} s; log:\n{daemon.log()[-4000:]}")


def raw_request(endpoint: str, frames: list[bytes], timeout_ms: int = 20000) -> dict[str, Any] | None:
    """Send frames on a fresh REQ socket; the decoded reply header, or None when nothing came back."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, timeout_ms)
    sock.connect(endpoint)
    try:
        sock.send_multipart(frames)
        reply = sock.recv_multipart()
    except zmq.Again:
        return None
    finally:
        sock.close()
    return json.loads(reply[0])


class NotifyListener:
    """A real AF_UNIX datagram socket standing in for systemd's $NOTIFY_SOCKET, drained by a thread."""

    def __init__(self, directory: Path) -> None:
        self.path = str(Path(tempfile.mkdtemp(prefix="ntf-")) / "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except (TimeoutError, OSError):
                continue
            message = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            with self._lock:
                self.messages.append(message)

    def snapshot(self) -> list[dict[str, str]]:
        with self._lock:
            return list(self.messages)

    def wait_for(self, key: str, value: str, timeout: float = 30.0) -> dict[str, str]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for m in self.snapshot():
                if m.get(key) == value:
                    return m
            time.sleep(0.1)
        raise AssertionError(f"no {key}={value} notification; got {self.snapshot()[-10:]}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()
        shutil.rmtree(Path(self.path).parent, ignore_errors=True)
