"""Daemon parts without a daemon: config, paths, protocol, sd_notify, client, budget store, CURVE.

The systemd unit is checked as `make install` writes it: tests/test_install.py."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

from dynofa import protocol
from dynofa.budget import Budget
from dynofa.client import Client, CurveKeys, default_endpoint
from dynofa.config import Config, config_from_dict, default_config_path, load_config
from dynofa.errors import ConfigError, DaemonUnavailableError
from dynofa.paths import runtime_dir, state_dir, write_json_atomic
from service.sdnotify import Notifier
from service.store import BudgetStore, SavedApp

REPO = Path(__file__).resolve().parents[2]


# --- configuration ------------------------------------------------------------------------------


def test_embedded_default_needs_no_file() -> None:
    config = load_config(None)
    assert isinstance(config, Config)
    assert list(config.models) == ["demo"] and config.models["demo"].catalog is None
    assert config.policy.name == "model-based" and config.policy.objective == "accuracy"
    assert config.control_endpoint().startswith("ipc://") and config.control_endpoint().endswith("control.sock")
    assert config.limits.max_message_bytes <= config.limits.hard_message_bytes
    assert config_from_dict(config.to_dict()).to_dict() == config.to_dict()


def test_config_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "models:\n  cam:\n    catalog: /x/catalog.json\n    device: cuda:0\n    pes: [cpu-big, gpu]\n"
        "policy:\n  name: bandit\n  options: {epsilon: 0.1}\n  objective: energy\n"
        "limits: {max_apps: 3}\nendpoints: {socket_mode: '0640'}\nlogging: {level: WARNING}\n"
    )
    config = load_config(path)
    assert config.models["cam"].pes == ("cpu-big", "gpu") and config.models["cam"].device == "cuda:0"
    assert config.policy.options == {"epsilon": 0.1} and config.limits.max_apps == 3
    assert config.policy.objective == "energy"
    assert config.endpoints.socket_mode == 0o640 and config.logging.level == "warning"
    assert config.source == str(path)


@pytest.mark.parametrize(
    ("data", "field", "expected"),
    [
        ({"colour": 1}, "colour", "expected one of"),
        ({"limits": {"max_apps": "many"}}, "limits.max_apps", "an integer"),
        ({"limits": {"max_apps": 0}}, "limits.max_apps", "in [1,"),
        ({"limits": {"request_timeout_s": True}}, "limits.request_timeout_s", "a number"),
        ({"limits": {"max_message_bytes": 1 << 30, "hard_message_bytes": 1 << 20}}, "limits.hard_message_bytes", ">="),
        ({"limits": {"bogus": 1}}, "limits.bogus", "expected one of"),
        ({"models": {}}, "models", "non-empty mapping"),
        ({"models": {"a b": {}}}, "models", "names made of"),
        ({"models": {"m": {"device": "tpu"}}}, "models.m.device", "cpu, cuda or cuda:N"),
        ({"models": {"m": {"pes": "cpu"}}}, "models.m.pes", "a list"),
        ({"models": {"m": {"catalog": 3}}}, "models.m.catalog", "non-empty string"),
        ({"default_model": "zzz"}, "default_model", "one of the configured models"),
        ({"policy": {"options": []}}, "policy.options", "a mapping"),
        ({"policy": "static"}, "policy", "a mapping"),
        ({"policy": {"objective": "speed"}}, "policy.objective", "one of accuracy, energy"),
        ({"control_interval_s": 0}, "control_interval_s", "a number in"),
        ({"telemetry": {"trace": 5}}, "telemetry.trace", "a file path"),
        ({"logging": {"level": "loud"}}, "logging.level", "one of debug"),
        ({"endpoints": {"socket_mode": "rw"}}, "endpoints.socket_mode", "octal"),
        ({"endpoints": {"control": "http://x"}}, "endpoints.control", "ipc://PATH or tcp://"),
        ({"endpoints": {"control": "ipc:///" + "d" * 120}}, "endpoints.control", "at most 107 bytes"),
        ({"endpoints": {"control": "tcp://127.0.0.1:5555"}}, "endpoints.control", "CURVE"),
        ({"endpoints": {"curve": {"server_key": "x"}}}, "endpoints.curve.server_key", "expected one of"),
        ([1, 2], "(top level)", "a mapping"),
    ],
)
def test_bad_config_names_field_and_expected_value(data: Any, field: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict(data)
    assert field in str(err.value) and expected in str(err.value), str(err.value)


def test_bad_config_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_config(empty).policy.name == "model-based"


def test_default_config_path_prefers_the_environment(tmp_path: Path) -> None:
    assert default_config_path({"DYNOFA_CONFIG": str(tmp_path / "x.yaml")}) == tmp_path / "x.yaml"


# --- paths ------------------------------------------------------------------------------------


def test_runtime_and_state_dirs_follow_systemd_then_user_conventions() -> None:
    assert runtime_dir({"RUNTIME_DIRECTORY": "/run/dynofa:/run/other"}, euid=1000) == Path("/run/dynofa")
    assert runtime_dir({}, euid=0) == Path("/run/dynofa")
    assert runtime_dir({"XDG_RUNTIME_DIR": "/run/user/1000"}, euid=1000) == Path("/run/user/1000/dynofa")
    assert runtime_dir({}, euid=1000) == Path(tempfile.gettempdir()) / f"dynofa-{os.getuid()}"
    assert state_dir({"STATE_DIRECTORY": "/var/lib/dynofa"}, euid=1000) == Path("/var/lib/dynofa")
    assert state_dir({"DYNOFA_STATE_DIR": "/srv/d"}, euid=0) == Path("/srv/d")
    assert state_dir({}, euid=0) == Path("/var/lib/dynofa")
    assert state_dir({"XDG_STATE_HOME": "/h/s"}, euid=1000) == Path("/h/s/dynofa")


def test_atomic_json_write_leaves_no_temporary_files(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "state.json"
    write_json_atomic(target, {"a": 1})
    write_json_atomic(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 2}
    assert [p.name for p in target.parent.iterdir()] == ["state.json"]


def test_budget_store_round_trip_and_corrupt_file(tmp_path: Path) -> None:
    store = BudgetStore(tmp_path)
    store.save({"cam": SavedApp("demo", Budget(30.0, 0.8)), "idle": SavedApp("demo", None)})
    loaded = store.load()
    assert loaded["cam"].budget == Budget(30.0, 0.8) and loaded["idle"].budget is None
    store.path.write_text("{half")
    assert store.load() == {}
    assert (tmp_path / "budgets.json.corrupt").exists() and not store.path.exists()


def test_budgets_are_renamed_into_place_then_synced_in_the_background(tmp_path: Path) -> None:
    from service.store import BackgroundSync

    store = BudgetStore(tmp_path)
    sync = BackgroundSync(store.path)
    for ms in range(1, 21):
        store.save({"cam": SavedApp("demo", Budget(float(ms)))}, durable=False)
        assert store.load()["cam"].budget == Budget(float(ms))  # visible at once, before any fsync
        sync.request()
    assert sync.flush(10)
    sync.close()
    assert [p.name for p in tmp_path.iterdir()] == ["budgets.json"]


# --- protocol ---------------------------------------------------------------------------------


def test_parse_infer_request_views_the_tensor_frame() -> None:
    x = np.arange(12, dtype=np.float32).reshape(1, 3, 2, 2)
    head = protocol.encode(protocol.request("infer", id=7, app="a", dtype="float32", shape=[1, 3, 2, 2]))
    req = protocol.parse_request([head, x.tobytes()], max_bytes=1 << 20)
    assert req.op == "infer" and req.id == 7 and req.args["app"] == "a"
    assert req.tensor is not None
    np.testing.assert_array_equal(req.tensor, x)


def test_replies_are_versioned_and_structured() -> None:
    assert protocol.ok(3, x=1) == {"v": 1, "ok": True, "id": 3, "x": 1}
    err = protocol.error(protocol.BUSY, "later", 3)
    assert err["error"] == {"code": "busy", "message": "later"}
    with pytest.raises(protocol.RemoteError) as exc:
        protocol.check_reply(err, "infer")
    assert exc.value.code == "busy"
    assert set(protocol.ERROR_CODES) >= {protocol.BAD_JSON, protocol.TOO_LARGE, protocol.BAD_TENSOR}


def test_every_op_is_documented() -> None:
    doc = (REPO / "docs" / "protocol.md").read_text()
    for op in protocol.OPS:
        assert f"`{op}`" in doc, op
    for code in protocol.ERROR_CODES:
        assert f"`{code}`" in doc, code


# --- sd_notify against a real datagram socket -------------------------------------------------


def _datagram_socket(address: str | bytes) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(5)
    return sock


def test_sd_notify_path_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    with _datagram_socket(path) as sock:
        n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"})
        assert n.enabled and n.watchdog_interval_s == 1.0
        assert n.ready("cam: mbv3@cpu\nsecond line")
        assert sock.recv(4096) == b"READY=1\nSTATUS=cam: mbv3@cpu second line"
        assert n.watchdog() and sock.recv(4096) == b"WATCHDOG=1"
        assert n.stopping() and sock.recv(4096) == b"STOPPING=1\nSTATUS=stopping"
        n.close()


def test_sd_notify_abstract_socket() -> None:
    name = f"dynofa-test-{os.getpid()}"
    with _datagram_socket(b"\0" + name.encode()) as sock:
        n = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert n.status("hello") and sock.recv(4096) == b"STATUS=hello"
        n.close()


def test_sd_notify_outside_systemd_and_with_a_stuck_receiver(tmp_path: Path) -> None:
    assert not Notifier({}).enabled and Notifier({}).ready() is False
    assert Notifier({"WATCHDOG_USEC": "100", "WATCHDOG_PID": "1"}).watchdog_interval_s is None
    path = str(tmp_path / "full")
    with _datagram_socket(path):  # never read: the queue fills and sends must fail, not block
        n = Notifier({"NOTIFY_SOCKET": path})
        results = [n.watchdog() for _ in range(2000)]
        assert results[0] and not results[-1]
        n.close()


# --- client -----------------------------------------------------------------------------------


def test_client_never_imports_torch() -> None:
    code = (
        "import sys, numpy as np; import dynofa.client as c; c.Client('ipc:///nonexistent'); "
        "assert 'torch' not in sys.modules, 'torch imported'; "
        "assert 'yaml' not in sys.modules; print('ok')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_client_reports_a_missing_daemon() -> None:
    with Client("ipc:///nonexistent/dynofa.sock") as c, pytest.raises(DaemonUnavailableError, match="not running"):
        c.ping()


def test_default_endpoint_honours_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DYNOFA_ENDPOINT", "ipc:///x/control.sock")
    assert default_endpoint() == "ipc:///x/control.sock"


class _FlakyServer(threading.Thread):
    """A ROUTER that ignores the first ``drop`` requests, then answers ping."""

    def __init__(self, endpoint: str, drop: int) -> None:
        super().__init__(daemon=True)
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(endpoint)
        self.drop = drop
        self.seen = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            if not self.sock.poll(50):
                continue
            envelope_and_body = self.sock.recv_multipart()
            self.seen += 1
            if self.seen <= self.drop:
                continue
            head = json.loads(envelope_and_body[-1])
            self.sock.send_multipart([*envelope_and_body[:-1], protocol.encode(protocol.ok(head.get("id")))])

    def close(self) -> None:
        self.stopped.set()
        self.join(5)
        self.sock.close()
        self.ctx.term()


def test_lazy_pirate_reconnects_after_a_timeout(tmp_path: Path) -> None:
    endpoint = f"ipc://{tmp_path}/flaky.sock"
    server = _FlakyServer(endpoint, drop=1)
    server.start()
    with Client(endpoint, timeout_s=0.3, retries=1) as c:
        assert c.ping()["ok"] is True  # first try dropped, the reopened socket's retry answered
    assert server.seen == 2
    with Client(endpoint, timeout_s=0.2, retries=0) as c:
        server.drop = 10
        with pytest.raises(DaemonUnavailableError, match="did not answer"):
            c.ping()
    server.close()


def test_tcp_endpoints_require_curve_and_reject_clients_without_the_key(tmp_path: Path) -> None:
    """The server side of `dynofa serve` on tcp://: an encrypted client is served, a plain one is not."""
    from zmq.auth import create_certificates

    from service.server import Outbox, Server

    server_public, server_secret = create_certificates(str(tmp_path), "server")
    config = config_from_dict({
        "endpoints": {"control": "tcp://127.0.0.1:0", "telemetry": "tcp://127.0.0.1:0",
                      "curve": {"server_secret_key": server_secret}},
    })  # fmt: skip
    # ping needs no engine; port 0 binds an ephemeral port
    server = Server(config, engine=None, outbox=Outbox(), workers={})  # type: ignore[arg-type]
    server.bind()
    assert server.router is not None
    endpoint = server.router.getsockopt_string(zmq.LAST_ENDPOINT)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        keys = CurveKeys.load(server_public)
        with Client(endpoint, timeout_s=5, retries=0, curve=keys) as c:
            assert c.ping()["ok"] is True
        with Client(endpoint, timeout_s=0.5, retries=0) as plain, pytest.raises(DaemonUnavailableError):
            plain.ping()
    finally:
        server.request_stop()
        thread.join(5)
        server.close(linger_ms=0)


def test_printed_config_shows_the_socket_mode_in_octal_and_loads_back() -> None:
    from dynofa.config import Config, config_from_dict

    data = Config().to_dict()
    assert data["endpoints"]["socket_mode"] == "0660"
    assert config_from_dict(data) == Config()  # what --print-config shows is a valid config file


def test_an_empty_config_is_the_dataclass_defaults() -> None:
    """The defaults live in the dataclasses only: the parsers read them from there, never a literal of their own."""
    assert config_from_dict({}) == Config()
    sections = {"models": {"demo": {}}, "policy": {}, "endpoints": {}, "paths": {}, "limits": {}, "telemetry": {},
                "logging": {}, "metrics": {}}  # fmt: skip
    assert config_from_dict(sections) == Config()
