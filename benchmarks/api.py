"""Daemon API figures: control round trip, control throughput, inference overhead, idle CPU.

Runs a real ``dynofa serve`` (tiny random-weight OFA MobileNetV3 catalog with one 224x224 subnet,
private runtime/state dirs) and prints ONE JSON object. Baselines are measured in the same run:
a bare pyzmq REQ/ROUTER echo for the transport, and in-process ``SubnetPool.infer`` of the same
subnet for inference (paired with the ZeroMQ calls, alternating, so machine load hits both alike).

    python -m benchmarks.api [--requests N] [--infer N]

Goals: control_rtt_ms_p99 <= 1, infer_overhead_ms_median <= 0.5, control_requests_per_s >= 5000,
idle_cpu_percent <= 1 (of one core).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from dynofa import protocol


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def _rtts(call: Any, n: int, warmup: int = 50) -> list[float]:
    for _ in range(warmup):
        call()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        call()
        out.append((time.perf_counter() - t) * 1e3)
    return out


_ECHO = """
import sys, zmq
from dynofa import protocol
ctx = zmq.Context()
router = ctx.socket(zmq.ROUTER)
router.bind(sys.argv[1])
reply = protocol.encode(protocol.ok(None))
print("ready", flush=True)
while True:
    frames = router.recv_multipart()
    router.send_multipart([*frames[:2], reply])
"""


class RawEcho:
    """Transport baseline: another process echoing a fixed JSON reply over a ROUTER (no daemon logic)."""

    def __init__(self) -> None:
        import subprocess

        path = Path(tempfile.mkdtemp(prefix="dynecho-")) / "echo.sock"
        self.endpoint = f"ipc://{path}"
        self.proc = subprocess.Popen([sys.executable, "-c", _ECHO, self.endpoint], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"
        self.req: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.REQ)
        self.req.connect(self.endpoint)
        self.msg = protocol.encode(protocol.request("budgets", id=1))

    def call(self) -> None:
        self.req.send(self.msg)
        self.req.recv()

    def close(self) -> None:
        self.req.close(0)
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(Path(self.endpoint[len("ipc://") :]).parent, ignore_errors=True)


def _interleaved(calls: dict[str, Any], n: int, block: int = 100) -> dict[str, list[float]]:
    """Round trips of each call, measured in alternating blocks so that load bursts hit all alike."""
    out: dict[str, list[float]] = {name: [] for name in calls}
    for call in calls.values():
        _rtts(call, 0, warmup=50)
    while min(len(v) for v in out.values()) < n:
        for name, call in calls.items():
            out[name].extend(_rtts(call, block, warmup=0))
    return out


def _throughput(endpoint: str, n: int, window: int = 64) -> float:
    """Requests per second with ``window`` requests in flight on one DEALER (pipelined)."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(endpoint)
    msg = protocol.encode(protocol.request("budgets"))
    sent = received = 0
    t = time.perf_counter()
    while received < n:
        while sent < n and sent - received < window:
            dealer.send_multipart([b"", msg])
            sent += 1
        dealer.recv_multipart()
        received += 1
    rate = n / (time.perf_counter() - t)
    dealer.close()
    return rate


def _idle_cpu_percent(pid: int, seconds: float) -> float:
    import psutil

    proc = psutil.Process(pid)
    before = proc.cpu_times()
    t = time.perf_counter()
    time.sleep(seconds)
    after = proc.cpu_times()
    used = (after.user - before.user) + (after.system - before.system)
    return 100.0 * used / (time.perf_counter() - t)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000, help="control round trips timed")
    parser.add_argument("--infer", type=int, default=100, help="paired inferences timed")
    parser.add_argument("--idle-seconds", type=float, default=6.0)
    args = parser.parse_args(argv)

    from dynofa.catalog import load_catalog
    from tests.service.harness import start_daemon, write_config
    from tests.service.tiny import make_catalog

    work = Path(tempfile.mkdtemp(prefix="dynofa-bench-"))
    catalog_path = make_catalog(work, resolutions=(224,), n=2)
    # defaults for the loop and telemetry periods, so that the idle figure is the shipped one
    config = write_config(work, catalog_path, control_interval_s=0.5, telemetry={"period_s": 1.0},
                          logging={"level": "warning"})  # fmt: skip
    daemon = start_daemon(config)
    result: dict[str, Any] = {"machine_cpus": os.cpu_count()}
    try:
        time.sleep(1.0)
        result["idle_cpu_percent"] = round(_idle_cpu_percent(daemon.proc.pid, args.idle_seconds), 3)

        client = daemon.client(timeout_s=30)
        client.set_budget("bench", latency_ms=1000.0)
        echo = RawEcho()
        try:
            rtts = _interleaved({"budgets": client.budgets, "ping": client.ping, "raw": echo.call}, args.requests)
        finally:
            echo.close()
        budgets, ping, raw = rtts["budgets"], rtts["ping"], rtts["raw"]
        state = _rtts(client.state, max(200, args.requests // 10))
        set_budget = _rtts(lambda: client.set_budget("bench", latency_ms=1000.0), max(200, args.requests // 10))
        result.update({
            "control_rtt_ms_p99": round(_p(budgets, 99), 4),
            "control_rtt_ms_median": round(statistics.median(budgets), 4),
            "ping_rtt_ms_p99": round(_p(ping, 99), 4),
            "state_rtt_ms_p99": round(_p(state, 99), 4),
            "set_budget_rtt_ms_p99": round(_p(set_budget, 99), 4),
            "baseline_raw_zmq_rtt_ms_p99": round(_p(raw, 99), 4),
            "control_rtt_p99_vs_raw_zmq": round(_p(budgets, 99) / _p(raw, 99), 2),
        })  # fmt: skip
        result["control_requests_per_s"] = round(_throughput(daemon.endpoint, args.requests * 3))

        # inference: ZeroMQ round trip vs in-process on the same subnet, alternating
        import torch

        import subnets.ofa_compat

        subnets.ofa_compat.install()
        from subnets.pool import SubnetPool

        catalog = load_catalog(catalog_path)
        sid = max(catalog.entries, key=lambda e: e.macs).id
        pool = SubnetPool.from_catalog(catalog, ids=[sid])
        x = np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)
        xt = torch.from_numpy(x.copy())
        client.clear_budget("bench")
        client.infer("bench", x, subnet=sid)
        threads = client.state()["apps"]["bench"]["operating_point"]["threads"]
        torch.set_num_threads(threads)  # the daemon ran this operating point with that many threads
        remote_ms, local_ms, pairs, transport = [], [], [], []

        def remote() -> float:
            t = time.perf_counter()
            reply = client.infer("bench", x, subnet=sid)
            rtt = (time.perf_counter() - t) * 1e3
            transport.append(rtt - reply.latency_ms)  # the daemon's own forward time, same call
            return rtt

        def local() -> float:
            t = time.perf_counter()
            pool.infer(xt, subnet=sid)
            return (time.perf_counter() - t) * 1e3

        for i in range(args.infer + 5):
            # alternate the order within each pair so that load drifts hit both sides alike
            r, loc = (remote(), local()) if i % 2 == 0 else tuple(reversed((local(), remote())))
            if i >= 5:
                remote_ms.append(r)
                local_ms.append(loc)
                pairs.append(r - loc)
        transport = transport[5:]
        pool.close()
        result.update({
            "infer_overhead_ms_median": round(statistics.median(pairs), 4),
            "infer_zmq_ms_median": round(statistics.median(remote_ms), 4),
            "infer_in_process_ms_median": round(statistics.median(local_ms), 4),
            "infer_zmq_vs_in_process": round(statistics.median(remote_ms) / statistics.median(local_ms), 4),
            "infer_rtt_minus_daemon_forward_ms_median": round(statistics.median(transport), 4),
            "infer_input": [1, 3, 224, 224],
            "torch_threads": torch.get_num_threads(),
        })  # fmt: skip
        result["goals"] = {
            "control_rtt_ms_p99": result["control_rtt_ms_p99"] <= 1.0,
            "infer_overhead_ms_median": result["infer_overhead_ms_median"] <= 0.5,
            "control_requests_per_s": result["control_requests_per_s"] >= 5000,
            "idle_cpu_percent": result["idle_cpu_percent"] <= 1.0,
        }
    finally:
        daemon.stop()
        shutil.rmtree(work, ignore_errors=True)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
