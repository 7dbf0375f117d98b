"""App ownership and per-client quotas, through a real daemon (docs/protocol.md, "Ownership").

Two clients that the daemon can tell apart need two identities: over tcp:// each CURVE key is a
client, so one daemon on tcp (CURVE on both sockets, an authorized_clients directory) shows one
client cannot touch another's app, the quota per client, and that both survive a restart. The
ipc daemon of conftest.py (every test process has the same uid there) shows tokens and the
operator override, which needs the kernel-verified uid only ipc gives.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

from dynofa import protocol
from dynofa.client import Client, CurveKeys, Telemetry, new_token
from dynofa.errors import DaemonUnavailableError
from dynofa.protocol import RemoteError
from service.tenancy import Caller, caller_of
from tests.service.harness import Daemon, start_daemon, write_config

IMAGE = np.zeros((1, 3, 32, 32), dtype=np.float32)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class CurveSetup:
    def __init__(self, directory: Path) -> None:
        from zmq.auth import create_certificates

        keys, allowed = directory / "keys", directory / "authorized"
        keys.mkdir()
        allowed.mkdir()
        self.server_public, self.server_secret = create_certificates(str(keys), "server")
        self.secrets: dict[str, str] = {}
        for name in ("alice", "bob", "mallory"):
            public, secret = create_certificates(str(keys), name)
            self.secrets[name] = secret
            if name != "mallory":  # mallory's key is valid CURVE but not authorised
                shutil.copy(public, allowed)
        self.allowed = allowed

    def keys(self, name: str) -> CurveKeys:
        return CurveKeys.load(self.server_public, self.secrets[name])


@pytest.fixture(scope="module")
def curve_setup(tmp_path_factory: pytest.TempPathFactory) -> CurveSetup:
    return CurveSetup(tmp_path_factory.mktemp("curve"))


@pytest.fixture(scope="module")
def tcp_config(tmp_path_factory: pytest.TempPathFactory, tiny_catalog: Path, curve_setup: CurveSetup) -> Path:
    return write_config(
        tmp_path_factory.mktemp("tcp-daemon"),
        tiny_catalog,
        endpoints={
            "control": f"tcp://127.0.0.1:{_free_port()}",
            "telemetry": f"tcp://127.0.0.1:{_free_port()}",
            "curve": {"server_secret_key": curve_setup.server_secret, "authorized_clients": str(curve_setup.allowed)},
        },
        limits={"max_apps": 5, "max_apps_per_client": 2},
    )


@pytest.fixture(scope="module")
def tcp_daemon(tcp_config: Path, curve_setup: CurveSetup) -> Iterator[Daemon]:
    daemon = start_daemon(tcp_config, curve=curve_setup.keys("alice"), log_name="tcp.log")
    try:
        yield daemon
    finally:
        daemon.stop()


def _code(call: Any) -> str:
    with pytest.raises(RemoteError) as err:
        call()
    return err.value.code


def test_one_client_cannot_change_or_remove_another_clients_app(tcp_daemon: Daemon, curve_setup: CurveSetup) -> None:
    alice = tcp_daemon.client(curve=curve_setup.keys("alice"))
    bob = tcp_daemon.client(curve=curve_setup.keys("bob"))
    reply = alice.register("alice-cam", budget={"latency_ms": 50})
    assert reply["owner"].startswith("curve:")
    for attempt in (
        lambda: bob.set_budget("alice-cam", latency_ms=1),
        lambda: bob.clear_budget("alice-cam"),
        lambda: bob.unregister("alice-cam"),
        lambda: bob.feedback("alice-cam", 0.1),
        lambda: bob.infer("alice-cam", IMAGE),
        lambda: bob.register("alice-cam", budget={"latency_ms": 1}),
        lambda: bob.set_budget("alice-cam", latency_ms=1, override=True),  # override is for ipc operators only
    ):
        assert _code(attempt) == protocol.FORBIDDEN
    assert bob.budgets()["alice-cam"]["budget"]["latency_ms"] == 50  # reading is open to every client
    # the owner still may do everything
    assert alice.set_budget("alice-cam", latency_ms=40)["budget"]["latency_ms"] == 40
    assert alice.infer("alice-cam", IMAGE).output.shape == (1, 10)
    assert alice.feedback("alice-cam", 0.9)["qoe"] == 0.9
    alice.unregister("alice-cam")


def test_per_client_quota_leaves_room_for_others(tcp_daemon: Daemon, curve_setup: CurveSetup) -> None:
    alice = tcp_daemon.client(curve=curve_setup.keys("alice"))
    bob = tcp_daemon.client(curve=curve_setup.keys("bob"))
    alice.register("quota-1")
    alice.register("quota-2")
    with pytest.raises(RemoteError) as err:
        alice.register("quota-3")
    assert err.value.code == protocol.TOO_MANY_APPS and "max_apps_per_client" in err.value.message
    bob.register("quota-bob")  # alice's apps did not exhaust limits.max_apps
    for name in ("quota-1", "quota-2"):
        alice.unregister(name)
    bob.unregister("quota-bob")


def test_unauthorized_curve_key_gets_no_answer(tcp_daemon: Daemon, curve_setup: CurveSetup) -> None:
    """endpoints.curve.authorized_clients is enforced: a valid key not in the directory is not served."""
    mallory = Client(tcp_daemon.endpoint, timeout_s=1.0, retries=0, curve=curve_setup.keys("mallory"))
    with mallory, pytest.raises(DaemonUnavailableError):
        mallory.ping()
    assert tcp_daemon.client(curve=curve_setup.keys("bob")).ping()["ok"] is True


def test_telemetry_is_encrypted_too(tcp_daemon: Daemon, curve_setup: CurveSetup) -> None:
    """With tcp:// endpoints both sockets use CURVE: a plain subscriber hears nothing, an authorised one does."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    plain = ctx.socket(zmq.SUB)
    plain.setsockopt(zmq.LINGER, 0)
    plain.setsockopt(zmq.SUBSCRIBE, b"")
    plain.connect(tcp_daemon.telemetry)
    try:
        with Telemetry(tcp_daemon.telemetry, topics=("state",), curve=curve_setup.keys("bob")) as sub:
            deadline = time.monotonic() + 20
            heard = None
            while heard is None and time.monotonic() < deadline:
                heard = sub.receive(1.0)
            assert heard is not None and heard[0] == "state"
        assert plain.poll(1000) == 0, "a subscriber without CURVE must not receive telemetry"
    finally:
        plain.close()


def test_ownership_survives_a_restart(tcp_config: Path, tcp_daemon: Daemon, curve_setup: CurveSetup) -> None:
    """Runs last in the tcp group: restarts the module's daemon (SIGKILL, like a crash)."""
    alice = tcp_daemon.client(curve=curve_setup.keys("alice"))
    alice.set_budget("kept", latency_ms=30)
    tcp_daemon.stop(signal.SIGKILL)
    second = start_daemon(tcp_config, curve=curve_setup.keys("alice"), log_name="tcp-2.log")
    try:
        bob = second.client(curve=curve_setup.keys("bob"))
        assert _code(lambda: bob.unregister("kept")) == protocol.FORBIDDEN
        alice = second.client(curve=curve_setup.keys("alice"))
        assert alice.budgets()["kept"]["budget"]["latency_ms"] == 30
        alice.unregister("kept")
    finally:
        second.stop()
        tcp_daemon.proc = second.proc  # the module fixture's stop() then finds it stopped


# --- ipc: tokens and the operator override ---------------------------------------------------------


def test_token_binds_an_app_to_one_process_and_an_operator_can_override(daemon: Daemon) -> None:
    owner, other = daemon.client(), daemon.client()
    token = new_token()
    owner.register("tok-app", token=token)
    owner.set_budget("tok-app", latency_ms=25)  # the client sends its token by itself
    assert owner.infer("tok-app", IMAGE).output.shape == (1, 10)
    # another process of the same user without the token is refused
    assert _code(lambda: other.set_budget("tok-app", latency_ms=1)) == protocol.FORBIDDEN
    assert _code(lambda: other.unregister("tok-app")) == protocol.FORBIDDEN
    assert _code(lambda: other.call("feedback", app="tok-app", qoe=0.5, token="wrong-token-0123456789")) == (
        protocol.FORBIDDEN
    )
    # the token itself is enough, from any connection
    assert other.call("feedback", app="tok-app", qoe=0.5, token=token)["qoe"] == 0.5
    # the test runs as the daemon's user on ipc: an operator, who must ask explicitly
    assert other.set_budget("tok-app", latency_ms=99, override=True)["budget"]["latency_ms"] == 99
    assert other.unregister("tok-app", override=True)["app"] == "tok-app"
    assert "tok-app" not in owner.budgets()


def test_the_token_is_stored_hashed(daemon: Daemon) -> None:
    c = daemon.client()
    token = new_token()
    c.register("hash-app", token=token)
    saved = json.loads((daemon.state_dir / "budgets.json").read_text())["apps"]["hash-app"]
    assert token not in json.dumps(saved)
    assert len(saved["token_sha256"]) == 64 and saved["owner"].startswith("uid:")
    c.unregister("hash-app")


class _Frame:
    def __init__(self, props: dict[str, str]) -> None:
        self.props = props

    def get(self, name: str) -> str:
        if name not in self.props:
            raise zmq.ZMQError(zmq.EINVAL)
        return self.props[name]


def test_caller_identity_comes_from_the_transport_only() -> None:
    assert caller_of(_Frame({"Peer-Address": "localhost:1000:1000:42"}), ipc=True) == Caller("uid:1000", 1000, 42)
    # on tcp an IPv6 address can end like credentials: never trusted as a uid
    assert caller_of(_Frame({"Peer-Address": "fe80::0:0:0"}), ipc=False).uid is None
    assert caller_of(_Frame({"User-Id": "KEY", "Peer-Address": "1.2.3.4"}), ipc=False).identity == "curve:KEY"
    assert caller_of(b"plain bytes", ipc=True).identity == "anonymous"
    assert Caller("uid:0", 0).is_operator(daemon_uid=1000)
    assert not Caller("uid:5", 5).is_operator(daemon_uid=1000)


def test_cli_operator_override(daemon: Daemon, capsys: pytest.CaptureFixture[str]) -> None:
    """`dynofa budget ... --override`: without it the CLI is refused like any other client."""
    from cli.main import main as cli_main

    daemon.client().register("cli-owned", token=new_token())
    ep = ["--endpoint", daemon.endpoint]
    assert cli_main(["budget", "set", "cli-owned", "--latency-ms", "5", *ep]) == 1
    assert "forbidden" in capsys.readouterr().err
    assert cli_main(["budget", "set", "cli-owned", "--latency-ms", "5", "--override", *ep]) == 0
    assert cli_main(["budget", "list", *ep]) == 0
    assert "uid:" in capsys.readouterr().out
    assert cli_main(["budget", "remove", "cli-owned", *ep]) == 1
    assert cli_main(["budget", "remove", "cli-owned", "--override", *ep]) == 0
    assert "cli-owned" not in daemon.client().budgets()
