"""A real daemon process and real clients over ZeroMQ: every op, bad input, load, notifications, stop."""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

from cli.main import main as cli_main
from dynofa import protocol
from dynofa.client import Telemetry
from dynofa.protocol import RemoteError
from tests.service.grammar import APPS, any_request, mutate, readable_id, valid_corpus
from tests.service.harness import Daemon, NotifyListener, raw_request


def header(**fields: object) -> bytes:
    return json.dumps({"v": 1, **fields}).encode()


def image(resolution: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((1, 3, resolution, resolution), dtype=np.float32)


def test_ready_status_and_watchdog_notifications(daemon: Daemon, notify: NotifyListener) -> None:
    notify.wait_for("READY", "1")
    before = sum(1 for m in notify.snapshot() if m.get("WATCHDOG") == "1")
    time.sleep(1.5)  # WATCHDOG_USEC=400000: a ping every 0.2 s from the control loop
    messages = notify.snapshot()
    assert sum(1 for m in messages if m.get("WATCHDOG") == "1") >= before + 2, messages[-5:]
    assert any("STATUS" in m for m in messages)


def test_every_op(daemon: Daemon, tiny_catalog: Path) -> None:
    c = daemon.client()
    hello = c.hello()
    assert hello["protocol"] == protocol.PROTOCOL_VERSION and "tiny" in hello["models"]
    assert set(hello["ops"]) == set(protocol.OPS)
    assert c.ping()["ok"] is True
    reg = c.register("ops-app", model="tiny", budget={"latency_ms": 1000.0})
    assert reg["model"] == "tiny" and reg["budget"]["latency_ms"] == 1000.0
    catalog = json.loads(tiny_catalog.read_text())
    ids = [s["id"] for s in catalog["subnets"]]
    subnets = c.subnets()
    assert [s["id"] for s in subnets["tiny"]] == ids
    with pytest.raises(RemoteError) as err:
        c.subnets(model="nope")
    assert err.value.code == protocol.UNKNOWN_MODEL

    result = c.infer("ops-app", image(32))
    assert result.output.shape == (1, 10) and result.output.dtype == np.float32
    assert np.isfinite(result.output).all()
    assert result.subnet in ids and result.pe == "cpu" and result.latency_ms > 0
    forced = c.infer("ops-app", image(48), subnet=ids[0])
    assert forced.subnet == ids[0]

    assert c.set_budget("ops-app", latency_ms=500.0, min_accuracy=0.5)["budget"]["min_accuracy"] == 0.5
    assert c.budgets()["ops-app"]["budget"]["latency_ms"] == 500.0
    assert c.feedback("ops-app", 0.75, detail={"note": "fine"})["qoe"] == 0.75
    kept = [json.loads(line)["feedback"] for line in (daemon.state_dir / "trace.jsonl").read_text().splitlines()
            if '"feedback"' in line]  # fmt: skip
    assert {"app": "ops-app", "qoe": 0.75, "detail": {"note": "fine"}} in kept  # the detail is kept, not dropped
    state = c.state()
    app = state["apps"]["ops-app"]
    assert app["inferences"] == 2 and app["qoe"] == 0.75
    assert app["operating_point"]["subnet"] in ids
    assert "cpu" in state["pes"] and state["platform"]["board"]
    assert state["policy"]["name"]
    assert c.clear_budget("ops-app")["budget"] is None
    assert c.budgets()["ops-app"]["budget"] is None
    assert c.unregister("ops-app")["app"] == "ops-app"
    with pytest.raises(RemoteError) as err:
        c.feedback("ops-app", 0.5)
    assert err.value.code == protocol.UNKNOWN_APP


def test_inference_equals_in_process_pool(daemon: Daemon, tiny_catalog: Path) -> None:
    """The daemon runs the catalog's real subnets: same input, same logits as a local pool."""
    import torch

    import subnets.ofa_compat
    from dynofa.catalog import load_catalog

    subnets.ofa_compat.install()
    from subnets.pool import SubnetPool

    catalog = load_catalog(tiny_catalog)
    sid = catalog.entries[1].id
    x = image(catalog.entries[1].resolution, seed=3)
    c = daemon.client()
    c.register("same-app")
    remote = c.infer("same-app", x, subnet=sid)
    with SubnetPool.from_catalog(catalog, ids=[sid]) as pool:
        local = pool.infer(torch.from_numpy(x.copy()), subnet=sid).output.numpy()
    np.testing.assert_allclose(remote.output, local, rtol=1e-4, atol=1e-5)
    c.unregister("same-app")


def test_policy_switches_subnet_when_budget_tightens(daemon: Daemon, tiny_catalog: Path) -> None:
    catalog = json.loads(tiny_catalog.read_text())
    by_accuracy = sorted(catalog["subnets"], key=lambda s: s["accuracy"]["top1"])
    c = daemon.client()
    c.register("tight-app", budget={"latency_ms": 10_000.0})
    deadline = time.monotonic() + 30
    while c.state()["apps"]["tight-app"]["operating_point"]["subnet"] != by_accuracy[-1]["id"]:
        assert time.monotonic() < deadline, "a loose budget should get the most accurate subnet"
        time.sleep(0.1)
    # tighter than any subnet's catalog latency: the policy must fall back to a smaller one
    c.set_budget("tight-app", latency_ms=0.01)
    deadline = time.monotonic() + 30
    while c.state()["apps"]["tight-app"]["operating_point"]["subnet"] == by_accuracy[-1]["id"]:
        assert time.monotonic() < deadline, "a tight budget should leave the largest subnet"
        time.sleep(0.1)
    assert c.state()["apps"]["tight-app"]["switches"] >= 1
    c.unregister("tight-app")


def test_first_inference_after_a_budget_change_runs_at_the_new_point(daemon: Daemon, tiny_catalog: Path) -> None:
    """The reply to register/set_budget comes once the new decision is in place: no polling needed."""
    catalog = json.loads(tiny_catalog.read_text())
    largest = max(catalog["subnets"], key=lambda s: s["accuracy"]["top1"])["id"]
    x = image(48)
    c = daemon.client()
    c.register("first-app", budget={"latency_ms": 10_000.0})
    assert c.infer("first-app", x).subnet == largest
    c.set_budget("first-app", latency_ms=0.01)  # nothing meets it: best effort is the fastest subnet
    after = c.infer("first-app", x)
    assert after.subnet != largest
    assert after.subnet == c.state()["policy"]["decision"]["points"]["first-app"]["subnet"]
    c.set_budget("first-app", latency_ms=10_000.0)
    assert c.infer("first-app", x).subnet == largest
    # a budget given with register: the very first inference already runs at the decided point
    reply = c.register("first-app-2", budget={"latency_ms": 0.01})
    assert reply["operating_point"]["subnet"] != largest
    assert c.infer("first-app-2", x).subnet == reply["operating_point"]["subnet"]
    c.unregister("first-app")
    c.unregister("first-app-2")


def test_budget_objective_end_to_end(daemon: Daemon) -> None:
    """objective: protocol -> policy -> decision; the feasibility report names the objective that ruled."""
    c = daemon.client()

    def outcome(objective: str) -> dict:
        deadline = time.monotonic() + 30
        while True:
            decision = c.state()["policy"]["decision"] or {}
            got = decision.get("outcomes", {}).get("obj-app")
            if got is not None and got["objective"] == objective:
                return got
            assert time.monotonic() < deadline, f"no decision under objective {objective}"
            time.sleep(0.05)

    c.register("obj-app", budget={"latency_ms": 10_000.0, "objective": "accuracy"})
    accurate = outcome("accuracy")
    c.set_budget("obj-app", latency_ms=10_000.0, objective="energy")
    assert c.budgets()["obj-app"]["budget"]["objective"] == "energy"
    lean = outcome("energy")
    # the lowest energy per frame within a loose deadline: a faster, less accurate subnet (faster by the
    # figures the daemon holds: predicted_ms also carries the contention estimate of the moment it was made)
    assert lean["accuracy"] < accurate["accuracy"] and lean["nominal_ms"] < accurate["nominal_ms"]
    # that it is the cheapest point is the policy's unit test (tests/governors/test_objective.py): two
    # decisions' energy_j, made at two moments with a 10 s period's idle energy in each, differ by less
    # than what the load estimate moves between them (2.5374 vs 2.5360 J in one CI run)
    assert lean["feasible"] and lean["energy_j"] is not None and lean["energy_j"] > 0
    with pytest.raises(RemoteError, match="objective must be one of"):
        c.set_budget("obj-app", latency_ms=10.0, objective="speed")
    assert c.budgets()["obj-app"]["budget"]["objective"] == "energy"  # kept
    c.unregister("obj-app")


MALFORMED = [
    ([b"\xff\xfe not utf8"], protocol.BAD_JSON),
    ([b"{not json"], protocol.BAD_JSON),
    ([b"[1, 2, 3]"], protocol.BAD_REQUEST),
    ([b"42"], protocol.BAD_REQUEST),
    ([json.dumps({"op": "ping"}).encode()], protocol.UNSUPPORTED_VERSION),
    ([json.dumps({"v": 99, "op": "ping"}).encode()], protocol.UNSUPPORTED_VERSION),
    ([header(op="launch_missiles")], protocol.UNKNOWN_OP),
    ([header(op=7)], protocol.UNKNOWN_OP),
    ([header(op="register")], protocol.BAD_REQUEST),
    ([header(op="register", app=5)], protocol.BAD_REQUEST),
    ([header(op="register", app="../../etc")], protocol.BAD_REQUEST),
    ([header(op="register", app="ok", colour="red")], protocol.BAD_REQUEST),
    ([header(op="set_budget", app="bad", budget={"latency_ms": -1})], protocol.BAD_BUDGET),
    ([header(op="set_budget", app="bad", budget={"latency_ms": "fast"})], protocol.BAD_BUDGET),
    ([header(op="set_budget", app="bad", budget={"min_accuracy": 0.5})], protocol.BAD_BUDGET),
    ([header(op="set_budget", app="bad", budget=[1])], protocol.BAD_REQUEST),
    ([header(op="feedback", app="x", qoe=3)], protocol.BAD_REQUEST),
    ([header(op="feedback", app="nobody", qoe=0.5)], protocol.UNKNOWN_APP),
    ([header(op="ping"), b"extra"], protocol.BAD_REQUEST),
    ([header(op="ping", id=[1])], protocol.BAD_REQUEST),
    # inference: half a multipart, wrong dtype, wrong shape, byte count mismatch
    ([header(op="infer", app="infer-app", dtype="float32", shape=[1, 3, 32, 32])], protocol.BAD_TENSOR),
    ([header(op="infer", app="infer-app", dtype="int8", shape=[1, 3, 32, 32]), bytes(3072)], protocol.BAD_TENSOR),
    ([header(op="infer", app="infer-app", dtype="float32", shape=[1, 3, 32, 32]), bytes(100)], protocol.BAD_TENSOR),
    ([header(op="infer", app="infer-app", dtype="float32", shape=[1, 1, 32, 32]), bytes(4096)], protocol.BAD_TENSOR),
    ([header(op="infer", app="infer-app", dtype="float32", shape=[3, 32, 32]), bytes(12288)], protocol.BAD_TENSOR),
    ([header(op="infer", app="infer-app", dtype="float32", shape=[1, 3, 4, 4]), bytes(192)], protocol.BAD_TENSOR),
    ([header(op="infer", app="infer-app", dtype="float32", shape=[0, 3]), b""], protocol.BAD_REQUEST),
    ([header(op="infer", app="infer-app", dtype="float32", shape="big"), b""], protocol.BAD_REQUEST),
    ([header(op="infer", app="infer-app", dtype="float32", shape=[1, 3, 32, 32], subnet="nope"),
      bytes(12288)], protocol.UNKNOWN_SUBNET),  # fmt: skip
    ([header(op="infer", app="stranger", dtype="float32", shape=[1, 3, 32, 32]), bytes(12288)], protocol.UNKNOWN_APP),
    ([header(op="ping"), b"", b"", b"", b""], protocol.BAD_REQUEST),
]


@pytest.mark.parametrize(("frames", "code"), MALFORMED)
def test_malformed_requests_get_structured_errors(daemon: Daemon, frames: list[bytes], code: str) -> None:
    daemon.client().register("infer-app")
    reply = raw_request(daemon.endpoint, frames)
    assert reply is not None, "the daemon must answer a malformed request"
    assert reply["ok"] is False and reply["v"] == protocol.PROTOCOL_VERSION
    assert reply["error"]["code"] == code, reply
    assert isinstance(reply["error"]["message"], str) and reply["error"]["message"]
    assert daemon.client().ping()["ok"] is True


def test_oversized_messages(daemon: Daemon) -> None:
    daemon.client().register("big-app")
    soft = 1 << 20
    shape = [1, 3, 300, 300]  # 1.08 MB: above the soft limit, below zmq's hard one
    frames = [header(op="infer", app="big-app", dtype="float32", shape=shape), bytes(4 * 3 * 300 * 300)]
    assert sum(len(f) for f in frames) > soft
    reply = raw_request(daemon.endpoint, frames)
    assert reply is not None and reply["error"]["code"] == protocol.TOO_LARGE
    # above MAXMSGSIZE libzmq drops the connection without reading the message: no reply, no harm
    assert raw_request(daemon.endpoint, [header(op="ping"), bytes(5 << 20)], timeout_ms=1000) is None
    assert daemon.client().ping()["ok"] is True


def test_many_concurrent_clients_lose_no_reply(daemon: Daemon) -> None:
    n_clients, n_requests = 12, 30
    errors: list[str] = []
    counts = [0] * n_clients

    def run(i: int) -> None:
        c = daemon.client(timeout_s=60.0)
        app = f"conc-{i}"
        c.register(app)
        for k in range(n_requests):
            try:
                if k % 3 == 0:
                    reply = c.infer(app, image(32, seed=k))
                    assert reply.output.shape == (1, 10)
                elif k % 3 == 1:
                    assert c.state()["apps"][app]["app"] == app
                else:
                    c.feedback(app, (k % 10) / 10)
                counts[i] += 1
            except Exception as exc:  # noqa: BLE001 - collected and reported below
                errors.append(f"client {i} request {k}: {exc!r}")
        c.unregister(app)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:5]
    assert counts == [n_requests] * n_clients


def test_vanished_and_slow_clients_do_not_block(daemon: Daemon) -> None:
    daemon.client().register("gone-app")
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    frames = [header(op="infer", app="gone-app", dtype="float32", shape=[1, 3, 32, 32]), image(32).tobytes()]
    for _ in range(3):  # send a burst of inferences and vanish before the replies
        dealer = ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 1000)
        dealer.connect(daemon.endpoint)
        for _ in range(20):
            dealer.send_multipart([b"", *frames])
        dealer.close()
    # a client that never reads its replies
    slow = ctx.socket(zmq.DEALER)
    slow.setsockopt(zmq.LINGER, 0)
    slow.setsockopt(zmq.RCVHWM, 1)
    slow.connect(daemon.endpoint)
    for _ in range(200):
        slow.send_multipart([b"", header(op="state")])
    c = daemon.client(timeout_s=30)
    for _ in range(20):  # each within the client's timeout: behaviour, not a wall-clock bound
        assert c.ping()["ok"] is True
    assert c.infer("gone-app", image(32)).output.shape == (1, 10)
    slow.close()


def test_max_apps(daemon: Daemon) -> None:
    c = daemon.client()
    existing = len(c.budgets())
    names = [f"cap-{i}" for i in range(16 - existing)]
    for name in names:
        c.register(name)
    with pytest.raises(RemoteError) as err:
        c.register("one-too-many")
    assert err.value.code == protocol.TOO_MANY_APPS
    for name in names:
        c.unregister(name)
    c.register("one-too-many")
    c.unregister("one-too-many")


def test_telemetry_publishes_budgets_points_and_state(daemon: Daemon) -> None:
    with Telemetry(daemon.telemetry) as sub:
        time.sleep(0.3)  # PUB/SUB slow joiner
        c = daemon.client()
        c.register("tele-app")
        c.set_budget("tele-app", latency_ms=0.01)
        seen: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not {"budget", "state", "op"} <= set(seen):
            item = sub.receive(1.0)
            if item is None:
                continue
            topic, message = item
            mine = "tele-app" in message["apps"] if topic == "state" else message.get("app") == "tele-app"
            if mine:
                seen.setdefault(topic, message)
        assert seen["budget"]["budget"]["latency_ms"] == 0.01
        assert seen["op"]["new"]["subnet"] != seen["op"]["old"]["subnet"]
    c.unregister("tele-app")


def test_a_repeated_budget_is_acknowledged_without_a_new_decision(daemon: Daemon) -> None:
    """The same budget again changes nothing: no budget message on the telemetry (nor a save or a
    control step); a different one is published, and is the next budget message after the first."""
    with Telemetry(daemon.telemetry) as sub:
        time.sleep(0.3)  # PUB/SUB slow joiner
        c = daemon.client()
        c.register("same-budget")
        try:
            c.set_budget("same-budget", latency_ms=40.0, min_accuracy=0.0)
            for _ in range(3):  # the same budget, the defaults spelt out or not
                assert c.set_budget("same-budget", latency_ms=40.0)["budget"]["latency_ms"] == 40.0
            c.set_budget("same-budget", latency_ms=41.0)
            budgets: list[float | None] = []
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and 41.0 not in budgets:
                item = sub.receive(1.0)
                if item is not None and item[0] == "budget" and item[1].get("app") == "same-budget":
                    budgets.append((item[1]["budget"] or {}).get("latency_ms"))
            assert budgets == [40.0, 41.0]  # PUB keeps order: nothing was published for the repeats
            assert c.budgets()["same-budget"]["budget"]["latency_ms"] == 41.0
        finally:
            c.unregister("same-budget")


def test_cli_status_top_budget_and_plot(
    daemon: Daemon, capsys: pytest.CaptureFixture[str], tmp_path: Path, tiny_catalog: Path
) -> None:
    ep = ["--endpoint", daemon.endpoint]
    assert cli_main(["budget", "set", "cli-app", "--latency-ms", "25", "--min-accuracy", "0.5", *ep]) == 0
    assert "latency <= 25 ms" in capsys.readouterr().out
    assert cli_main(["budget", "list", *ep]) == 0
    assert "cli-app" in capsys.readouterr().out
    assert cli_main(["budget", "list", "--json", *ep]) == 0
    assert json.loads(capsys.readouterr().out)["budgets"]["cli-app"]["budget"]["latency_ms"] == 25
    daemon.client().infer("cli-app", image(32))
    assert cli_main(["status", *ep]) == 0
    out = capsys.readouterr().out
    assert "cli-app" in out and "25 ms" in out and "PE" in out
    assert f"model tiny: 4 subnets from {tiny_catalog}" in out  # the served model and its catalog
    direct = next(line for line in out.splitlines() if line.startswith("inference endpoints cpu unix://"))
    assert Path(direct.split("unix://", 1)[1]).is_socket()  # where local clients' inferences really go
    assert cli_main(["subnets", *ep]) == 0  # asks the daemon, not the bundled file
    out = capsys.readouterr().out
    assert f"model tiny served by the daemon from {tiny_catalog}: 4 subnet(s)" in out
    assert cli_main(["status", "--json", *ep]) == 0
    assert json.loads(capsys.readouterr().out)["apps"]["cli-app"]["inferences"] >= 1
    assert cli_main(["top", "--iterations", "2", "--interval", "0.1", *ep]) == 0
    assert capsys.readouterr().out.count("cli-app") == 2
    assert cli_main(["budget", "clear", "cli-app", *ep]) == 0
    capsys.readouterr()
    time.sleep(0.5)  # a few trace records
    png = tmp_path / "timeline.png"
    assert cli_main(["plot", "--trace", str(daemon.state_dir / "trace.jsonl"), "-o", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    daemon.client().unregister("cli-app")


def test_cli_reports_a_missing_daemon(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    for argv in (["status"], ["top", "--once"], ["budget", "list"]):
        assert cli_main([*argv, "--endpoint", f"ipc://{tmp_path}/none.sock"]) == 1
        assert "not running" in capsys.readouterr().err


def test_socket_files_are_group_only(daemon: Daemon) -> None:
    for name in ("control.sock", "telemetry.sock"):
        assert (daemon.runtime / name).stat().st_mode & 0o777 == 0o660


# --- fuzz: thousands of random messages, each answered with a well-formed reply -----------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12)
_json_values = _scalars | st.lists(_scalars, max_size=3) | st.dictionaries(st.text(max_size=6), _scalars, max_size=3)
_fields = st.fixed_dictionaries(
    {},
    optional={
        "app": st.sampled_from(["fuzz-a", "fuzz-b", "", "x" * 100, 5]) | _json_values,
        "budget": st.fixed_dictionaries({}, optional={
            "latency_ms": _json_values | st.floats(0.01, 1e4), "min_accuracy": _json_values | st.floats(0, 1),
            "power_cap_w": _json_values, "priority": _json_values,
        }) | _json_values,  # fmt: skip
        "model": st.sampled_from(["tiny", "other"]) | _json_values,
        "qoe": st.floats(-1, 2) | _json_values,
        "dtype": st.sampled_from(["float32", "float16", "int64", "bogus"]) | _json_values,
        "shape": st.lists(st.integers(-2, 70), max_size=5) | _json_values,
        "subnet": _json_values,
        "id": _json_values,
        "extra": _json_values,
    },
)
_headers = st.builds(
    lambda v, op, fields: json.dumps({"v": v, "op": op, **fields}).encode(),
    st.sampled_from([1, 1, 1, 2, "1", None]),
    st.sampled_from([*protocol.OPS, "", "INFER", "shutdown"]) | st.text(max_size=10),
    _fields,
)
_frames = st.lists(_headers | st.binary(max_size=64), min_size=1, max_size=5).map(
    lambda frames: frames if frames[0] else [b"{}", *frames[1:]]  # an empty first frame is REQ's delimiter
)


def _check_reply(frames: list[bytes], sock: zmq.Socket) -> bool:  # type: ignore[type-arg]
    sock.send_multipart(frames)
    reply = json.loads(sock.recv_multipart()[0])
    assert reply["v"] == protocol.PROTOCOL_VERSION and isinstance(reply["ok"], bool)
    if not reply["ok"]:
        assert reply["error"]["code"] in protocol.ERROR_CODES, (frames[:1], reply)
        assert reply["error"]["code"] != protocol.INTERNAL, (frames[:1], reply)
    # the id is echoed whenever the header is an object with a readable id (found without the daemon's parser)
    assert reply.get("id") == readable_id(frames[0]), (frames[0][:200], reply)
    return bool(reply["ok"])


def test_fuzz_random_messages_never_crash_the_daemon(daemon: Daemon) -> None:
    """Thousands of mutated requests plus hypothesis-built ones: each gets a well-formed reply."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 20000)
    sock.connect(daemon.endpoint)
    answered = 0
    try:
        rng = random.Random(1234)
        corpus = valid_corpus()
        for _ in range(3000):
            frames = rng.choice(corpus)
            for _ in range(rng.randint(1, 3)):
                frames = mutate(rng, frames)
            _check_reply(frames, sock)
            answered += 1

        @settings(max_examples=60, deadline=None, derandomize=True, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
        @given(batch=st.lists(_frames, min_size=5, max_size=5))
        def structured(batch: list[list[bytes]]) -> None:
            nonlocal answered
            for frames in batch:
                _check_reply(frames, sock)
                answered += 1

        structured()

        # the whole header grammar, numbers at and beyond every limit (tests/service/grammar.py)
        @settings(max_examples=600, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        @given(request=any_request())
        def grammar(request: tuple[list[bytes], Any]) -> None:
            nonlocal answered
            frames = request[0] if request[0][0] else [b"{}", *request[0][1:]]
            _check_reply(frames, sock)
            answered += 1

        grammar()
    finally:
        sock.close()
    assert answered >= 3600
    assert "Traceback" not in daemon.log(), "a refused request must never log a traceback"
    c = daemon.client()
    assert c.ping()["ok"] is True
    for app in APPS:
        if app in c.budgets():
            c.unregister(app)


def test_c_client_example(daemon: Daemon, tmp_path: Path) -> None:
    """examples/dynofa_client.c speaks the protocol with nothing but libzmq."""
    import shutil
    import subprocess

    cc = shutil.which("cc") or shutil.which("gcc")
    pkg = shutil.which("pkg-config")
    if cc is None or pkg is None:
        pytest.skip("no C compiler or pkg-config")
    flags = subprocess.run([pkg, "--cflags", "--libs", "libzmq"], capture_output=True, text=True)
    if flags.returncode != 0:
        pytest.skip("libzmq development files are not installed (apt-get install libzmq3-dev)")
    source = Path(__file__).resolve().parents[2] / "examples" / "dynofa_client.c"
    binary = tmp_path / "dynofa_client"
    build = subprocess.run([cc, "-O2", "-Wall", "-o", str(binary), str(source), *flags.stdout.split()],
                           capture_output=True, text=True)  # fmt: skip
    assert build.returncode == 0, build.stderr
    shm_before = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    run = subprocess.run([str(binary), "-o", "energy", "-s", daemon.endpoint, "c-app", "40"], capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert '"ok":true' in run.stdout and '"subnet":' in run.stdout
    assert "outputs: 10," in run.stdout
    # the shm transport gave the frame transport's output on the same subnet, bit for bit, and left nothing behind
    assert "shm output equals the frames output bit for bit" in run.stdout
    assert not {n for n in os.listdir("/dev/shm") if n.startswith("dynofa-c-")} - shm_before
    assert daemon.client().state()["apps"]["c-app"]["inferences"] == 2
    assert daemon.client().budgets()["c-app"]["budget"]["objective"] == "energy"
    daemon.client().unregister("c-app")


def test_graceful_stop_answers_in_flight_requests(daemon: Daemon, notify: NotifyListener) -> None:
    """Runs last in this module: SIGTERM with inferences queued; each gets an answer, then a clean exit.

    Inferences a worker already queued finish (ok); requests still unread are answered shutting_down.
    """
    daemon.client().register("stop-app")
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(daemon.endpoint)
    frames = [header(op="infer", app="stop-app", dtype="float32", shape=[1, 3, 48, 48]), image(48).tobytes()]
    n = 20
    for i in range(n):
        dealer.send_multipart([b"", header(op="ping", id=f"p{i}")] if i == 0 else [b"", *frames])
    dealer.recv_multipart()  # the daemon holds the requests: queue them, then stop
    daemon.proc.send_signal(signal.SIGTERM)
    replies = 0
    poller = zmq.Poller()
    poller.register(dealer, zmq.POLLIN)
    codes = []
    while replies < n - 1 and poller.poll(30000):
        _, head, *_ = dealer.recv_multipart()
        reply = json.loads(head)
        codes.append("ok" if reply["ok"] else reply["error"]["code"])
        replies += 1
    dealer.close()
    assert replies == n - 1
    assert set(codes) <= {"ok", protocol.SHUTTING_DOWN}, codes
    # wait for the exit the one SIGTERM started: a second signal from stop() could land after the daemon has
    # put the default handlers back, during interpreter shutdown, and turn a clean exit into -15
    assert daemon.proc.wait(timeout=60) == 0
    assert daemon.stop() == 0
    notify.wait_for("STOPPING", "1")
    assert not (daemon.runtime / "control.sock").exists()
    assert not (daemon.runtime / "dynofa.lock").exists()

