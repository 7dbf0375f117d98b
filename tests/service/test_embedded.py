"""Embedded apps through a real daemon: the app hosts its pool, the daemon decides and pushes.

Every test here runs a real ``dynofa serve`` and a real :class:`subnets.embedded.EmbeddedRuntime`
(in this process, or in a child process that the test kills).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cli.main import main
from dynofa import protocol
from dynofa.client import Client
from dynofa.protocol import RemoteError
from tests.service.harness import REPO, Daemon, start_daemon, write_config

ATOL = 1e-4  # same subnet, two pools: last-bit differences only
DIFFERENT = 1e-2  # distinct subnets differ by far more (the tiny catalog's BN is calibrated per subnet)
WAIT_S = 30.0


def image(resolution: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((1, 3, resolution, resolution), dtype=np.float32)


def wait_for(what: str, check: Callable[[], Any], timeout: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def reference(tiny_catalog: Path) -> Iterator[Callable[[np.ndarray, str], np.ndarray]]:
    """The in-process output of a subnet: its own pool, and the documented bilinear resize."""
    import torch

    import subnets.ofa_compat
    from dynofa.catalog import load_catalog

    subnets.ofa_compat.install()
    from subnets.pool import SubnetPool

    catalog = load_catalog(tiny_catalog)
    with SubnetPool.from_catalog(catalog) as pool:

        def run(x: np.ndarray, subnet: str) -> np.ndarray:
            r = catalog.get(subnet).resolution
            t = torch.nn.functional.interpolate(torch.from_numpy(x.copy()), size=(r, r), mode="bilinear",
                                                align_corners=False)  # fmt: skip
            return np.asarray(pool.infer(t, subnet=subnet).output.numpy())

        yield run


def embedded(daemon: Daemon, catalog: Path, app: str, **options: Any) -> Any:
    import subnets.ofa_compat

    subnets.ofa_compat.install()
    from subnets.embedded import EmbeddedRuntime

    return EmbeddedRuntime.from_catalog(app, catalog, endpoint=daemon.endpoint, report_period_s=0.05, **options)


def app_state(client: Client, app: str) -> dict[str, Any] | None:
    apps: dict[str, Any] = client.state()["apps"]
    return apps.get(app)


def test_embedded_app_follows_decisions_and_outputs_are_its_subnets(
    daemon: Daemon, tiny_catalog: Path, reference: Callable[[np.ndarray, str], np.ndarray]
) -> None:
    c = daemon.client()
    x = image(40, 7)  # not any subnet's resolution: the runtime resizes like the daemon does
    rt = embedded(daemon, tiny_catalog, "emb-follow", budget={"latency_ms": 10_000.0})
    try:
        assert rt.registered
        first = wait_for("the decision for a loose budget", lambda: (r := rt.infer(x)).seq >= 0 and r)
        state = app_state(c, "emb-follow")
        assert state is not None and state["kind"] == "embedded"
        assert first.subnet == state["operating_point"]["subnet"]  # the app runs what the daemon decided
        np.testing.assert_allclose(first.output.numpy(), reference(x, first.subnet), atol=ATOL)

        # a budget no subnet meets: the daemon decides the fastest, pushes it, the app follows
        c.set_budget("emb-follow", latency_ms=0.01)
        # (budget-before-reply has its own test; on a machine loaded past the daemon's 5 s change wait the
        # reply may come first, so this one waits for the decision rather than racing it)
        decided = wait_for("the decision for an impossible budget", lambda: (
            s := c.state()["apps"]["emb-follow"]["operating_point"]["subnet"]) != first.subnet and s)
        moved = wait_for("the app to follow the new decision", lambda: (r := rt.infer(x)).subnet == decided and r)
        assert moved.seq > first.seq
        np.testing.assert_allclose(moved.output.numpy(), reference(x, decided), atol=ATOL)
        assert np.abs(moved.output.numpy() - first.output.numpy()).max() > DIFFERENT  # two subnets, two answers

        # its reports make it look like a served app in the daemon's view
        seen = wait_for("the reports to arrive", lambda: (s := app_state(c, "emb-follow")) and s["inferences"] >= 2
                        and s)  # fmt: skip
        assert seen["latency_ms"]["median"] > 0 and seen["switches"] >= 1 and seen["embedded"]["reports"] >= 1
        assert seen["embedded"]["error"] is None
    finally:
        rt.close()
    assert app_state(c, "emb-follow") is None  # close unregisters


def test_served_and_embedded_apps_share_one_policy(daemon: Daemon, tiny_catalog: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    c = daemon.client()
    c.register("served-peer", budget={"latency_ms": 5_000.0})
    rt = embedded(daemon, tiny_catalog, "emb-peer", budget={"latency_ms": 5_000.0})
    try:
        c.infer("served-peer", image(32, 1))
        wait_for("an embedded report", lambda: (rt.infer(image(32, 2)), (s := app_state(c, "emb-peer"))
                                                and s["inferences"] > 0)[1])  # fmt: skip
        state = c.state()
        points = state["policy"]["decision"]["points"]
        assert {"served-peer", "emb-peer"} <= set(points)  # one decision covers both
        assert state["apps"]["served-peer"]["kind"] == "served" and state["apps"]["emb-peer"]["kind"] == "embedded"
        assert points["served-peer"]["pe"] == points["emb-peer"]["pe"] == "cpu"  # one cluster, shared
        for app in ("served-peer", "emb-peer"):  # the same view of both
            assert set(state["apps"][app]) == set(state["apps"]["served-peer"])
        assert main(["status", "--endpoint", daemon.endpoint]) == 0  # and the operator sees which is which
        rows = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines() if "-peer" in line}
        assert rows["served-peer"] == "served" and rows["emb-peer"] == "embedded"
    finally:
        rt.close()
        c.unregister("served-peer")


def test_reports_are_checked(daemon: Daemon, tiny_catalog: Path) -> None:
    c = daemon.client()
    ids = [e["id"] for e in c.subnets()["tiny"]]
    reply = c.call("register_embedded", app="emb-raw", subnets=ids[:2])
    assert reply["kind"] == "embedded" and reply["topic"] == "decision/emb-raw/"
    assert reply["decision"]["point"]["subnet"] in ids[:2]
    with pytest.raises(RemoteError, match="registered no subnet") as err:
        c.call("report", app="emb-raw", samples=[[ids[3], "cpu", 1.0]])
    assert err.value.code == protocol.BAD_REQUEST
    with pytest.raises(RemoteError, match=r"samples\[0\]"):
        c.call("report", app="emb-raw", samples=[[ids[0], "cpu", -1.0]])
    with pytest.raises(RemoteError, match="has no subnet 'nope'") as err:
        c.call("register_embedded", app="emb-raw2", subnets=["nope"])
    assert err.value.code == protocol.UNKNOWN_SUBNET
    c.register("served-raw")
    with pytest.raises(RemoteError, match="served app; report is for embedded apps"):
        c.call("report", app="served-raw", samples=[])
    assert c.call("report", app="emb-raw", samples=[[ids[0], "cpu", 2.5]])["decision"]["seq"] >= 0
    assert c.state()["apps"]["emb-raw"]["inferences"] == 1
    for app in ("emb-raw", "served-raw"):
        c.unregister(app)


def points(client: Client) -> dict[str, Any]:
    decision = client.state()["policy"]["decision"] or {}
    return dict(decision.get("points") or {})


APP_SCRIPT = textwrap.dedent("""
    import sys, time
    import numpy as np
    import subnets.ofa_compat
    subnets.ofa_compat.install()
    from subnets.embedded import EmbeddedRuntime
    rt = EmbeddedRuntime.from_catalog("emb-killed", sys.argv[1], endpoint=sys.argv[2], lease_s=1.5,
                                      report_period_s=0.05, budget={"latency_ms": 5000.0})
    x = np.zeros((1, 3, 32, 32), dtype=np.float32)
    print("running", flush=True)
    while True:
        rt.infer(x)
        time.sleep(0.01)
""")


def test_killed_embedded_app_is_forgotten_after_its_lease(daemon: Daemon, tiny_catalog: Path) -> None:
    c = daemon.client()
    c.register("emb-survivor", budget={"latency_ms": 5_000.0})
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", APP_SCRIPT, str(tiny_catalog), daemon.endpoint],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO)  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "running", proc.stdout.read()
        wait_for("the app's reports", lambda: (s := app_state(c, "emb-killed")) and s["inferences"] > 0)
        wait_for("a decision covering it", lambda: "emb-killed" in points(c))
        proc.send_signal(signal.SIGKILL)  # no unregister: only the lease can end it
        proc.wait(timeout=10)
        killed_at = time.monotonic()
        wait_for("the daemon to forget the killed app", lambda: app_state(c, "emb-killed") is None, timeout=20)
        assert time.monotonic() - killed_at >= 1.0  # not before its lease (1.5 s, less the last report's age)
        # its share is freed: the next decision is for the survivor alone
        wait_for("a decision without it", lambda: set(points(c)) == {"emb-survivor"})
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        c.unregister("emb-survivor")


def test_embedded_app_survives_a_daemon_restart(tmp_path: Path, tiny_catalog: Path) -> None:
    config = write_config(tmp_path, tiny_catalog)
    first = start_daemon(config, log_name="first.log")
    rt = None
    second: Daemon | None = None
    try:
        rt = embedded(first, tiny_catalog, "emb-restart", budget={"latency_ms": 0.01}, timeout_s=1.0)
        x = image(32, 3)
        before = wait_for("the first decision", lambda: (r := rt.infer(x)).seq >= 0 and r)
        first.stop()
        for _ in range(5):  # no daemon: it keeps its last point
            assert rt.infer(x).subnet == before.subnet
        wait_for("the app to notice", lambda: rt.last_error is not None and "lost the daemon" in rt.last_error)
        second = start_daemon(config, log_name="second.log")
        c = second.client()
        state = wait_for("the app to register again by itself", lambda: app_state(c, "emb-restart"))
        assert state["kind"] == "embedded" and state["budget"]["latency_ms"] == 0.01
        after = wait_for("a decision from the new daemon", lambda: (r := rt.infer(x)).seq >= 0
                         and rt.registered and r)  # fmt: skip
        assert after.subnet == c.state()["apps"]["emb-restart"]["operating_point"]["subnet"]
        wait_for("fresh reports", lambda: (s := app_state(c, "emb-restart")) and s["inferences"] > 0)
    finally:
        if rt is not None:
            rt.close()
        for d in (first, second):
            if d is not None:
                d.stop()


def test_a_point_outside_the_apps_pool_is_refused_on_both_sides(daemon: Daemon, tiny_catalog: Path,
                                                                tmp_path: Path) -> None:  # fmt: skip
    """The daemon never sends a point the app's pool lacks (and says so to both); the app refuses one anyway."""
    from dynofa.catalog import load_catalog
    from dynofa.operating_point import OperatingPoint
    from service.engine import Engine
    from service.models import ModelRuntime
    from service.store import BudgetStore

    catalog = load_catalog(tiny_catalog)
    ids = catalog.ids
    published: list[tuple[str, dict[str, Any]]] = []

    class Quiet:  # a ControlInput that records nothing: the engine needs no controller
        def observe(self, app: str, point: OperatingPoint, latency_ms: float) -> None: ...
        def feedback(self, app: str, qoe: float) -> None: ...
        def changed(self, app: str) -> None: ...
        def forget(self, app: str) -> None: ...

    runtime = ModelRuntime("tiny", catalog, pools={}, pes=["cpu"], devices={"cpu": "cpu"})
    engine = Engine({"tiny": runtime}, "tiny", BudgetStore(tmp_path), 4, lambda t, m: published.append((t, m)),
                    Quiet())  # fmt: skip
    engine.register_embedded("emb-lacks", subnets=ids[1:])
    assert engine.apply_points({"emb-lacks": OperatingPoint(subnet=ids[0], pe="cpu")}) == []  # refused
    error = engine.state()["apps"]["emb-lacks"]["embedded"]["error"]
    assert ids[0] in error and "refused" in error and "cannot run" in error
    assert engine.state()["apps"]["emb-lacks"]["operating_point"]["subnet"] != ids[0]
    pushed = [m for t, m in published if t == protocol.decision_topic("emb-lacks")]
    assert pushed and "point" not in pushed[-1] and ids[0] in pushed[-1]["refused"]
    engine.close()

    rt = embedded(daemon, tiny_catalog, "emb-lacks", ids=ids[1:])
    c = daemon.client()
    try:
        rt._on_push(pushed[-1])  # the app side of the daemon's refusal
        assert rt.last_error is not None and "the daemon refused" in rt.last_error and ids[0] in rt.last_error
        # a decision for a subnet it lacks that reaches it anyway: refused by the app, reported to the daemon
        rt._offer({"epoch": 1.0, "seq": 99, "point": {"subnet": ids[0], "pe": "cpu"}})
        assert "not in this app's pool" in (rt.last_error or "")
        assert rt.infer(image(32, 4)).subnet != ids[0]
        wait_for("the daemon to record the app's refusal", lambda: "the app refused decision 99" in
                 (((app_state(c, "emb-lacks") or {}).get("embedded") or {}).get("error") or ""))  # fmt: skip
    finally:
        rt.close()
