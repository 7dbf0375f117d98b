"""Daemon API figures: control round trip and throughput, idle CPU, and the app's inference path.

Runs a real ``dynofa serve`` (tiny OFA MobileNetV3 catalog with calibrated BN, one 32-px and one
224-px subnet, private runtime/state dirs) and prints ONE JSON object. Baselines are measured in
the same run: a bare pyzmq REQ/ROUTER echo for the transport, and for inference the same subnet
in process (``SubnetPool.infer`` with the daemon's pool configuration, numpy in and out),
alternating with the daemon calls (the order rotated each round) so that machine load hits all alike:

* ``daemon_forward_vs_in_process_median``: the forward inside the daemon (``latency_ms``) against
  the same forward in process; ``..._busy_...`` the same while another process floods the daemon
  with ``state`` and ``set_budget`` requests (server, control loop and monitors busy);
* ``infer_frames_vs_in_process_median`` / ``infer_shm_vs_in_process_median``: end-to-end round
  trips with tensor frames / through shared memory against the in-process call (the client's
  default path: after the first, on the inference endpoint, extension ``direct``);
  ``infer_shm_zero_copy_...``: shared memory with the input written in place (``Client.input_array``),
  so that no copy is left on the client either;
  ``infer_frames_control_...``: frames through the control endpoint (``Client(direct=False)``);
* ``infer_floor_shm_vs_in_process_median`` / ``infer_floor_frames_vs_in_process_median``: the in-process
  time plus the cheapest round trip between two Python processes here (``Floor``: the same framing,
  a canned reply, no daemon), the best any out-of-process path can reach on this machine;
* the same for a 1x3x32x32 input as ``*_small``;
* ``embedded_vs_in_process_median(_small)`` and ``decision_to_embedded_app_inferences_max``: an
  embedded app (``subnets.embedded``) against in-process, and its lag behind decisions
  (``benchmarks.embedded``).

    python -m benchmarks.api [--requests N] [--infer N]

Goals: control_rtt_ms_p99 <= 1, control_requests_per_s >= 5000, idle_cpu_percent <= 1 (of one core),
daemon forward <= 1.05x, frames <= 1.2x, shm <= 1.05x, embedded <= 1.02x in-process, at most 1 inference
of an embedded app on the old point after a decision.
"""

from __future__ import annotations

import argparse
import itertools
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

from benchmarks.embedded import embedded_figures
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


# --------------------------------------------------------------------------- inference


class _Reference:
    """What an app would do in process with the same subnet: numpy in, pool forward, numpy out."""

    def __init__(self, catalog: Any, sid: str, graphs: bool) -> None:
        import torch

        from subnets.pool import SubnetPool

        self.torch = torch
        self.pool = SubnetPool.from_catalog(catalog, ids=[sid], graphs=graphs)
        self.sid = sid

    def __call__(self, x: np.ndarray) -> dict[str, float]:
        t = time.perf_counter()
        result = self.pool.infer(self.torch.from_numpy(x), subnet=self.sid)
        result.output.numpy()
        return {"in_process_ms": (time.perf_counter() - t) * 1e3, "in_process_forward_ms": result.latency_ms}


_FLOOR = """
import socket, sys
from dynofa import direct
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(sys.argv[1])
srv.listen(1)
head = (b'{"v":1,"ok":true,"id":1,"app":"bench-infer","subnet":"mbv3-r224-000000","pe":"cpu","latency_ms":1.0,'
        b'"queue_ms":0.01,"output":{"dtype":"float32","shape":[1,1000],"offset":602112,"bytes":4000}}')
out = bytes(int(sys.argv[2]))
print("ready", flush=True)
conn, _ = srv.accept()
reader = direct.Reader(1 << 31)
try:
    while True:
        frames = reader.feed(conn)
        reply = direct.pack([head] if len(frames) == 1 else [head, out])
        while reply:
            reply = direct.advance(reply, conn.sendmsg(reply))
except EOFError:  # the benchmark is done with it
    pass
"""


class Floor:
    """The cheapest out-of-process round trip on this machine: another Python process answering the
    inference endpoints' framing with a canned reply at once (no parsing, no forward). Added to the
    in-process time, it is what no daemon on this machine can beat: ``infer_floor_*`` keys."""

    def __init__(self, output_bytes: int) -> None:
        import subprocess

        from dynofa import direct

        path = Path(tempfile.mkdtemp(prefix="dynfloor-")) / "floor.sock"
        self.proc = subprocess.Popen([sys.executable, "-c", _FLOOR, str(path), str(output_bytes)],
                                     stdout=subprocess.PIPE, text=True)  # fmt: skip
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"
        self.path = path
        self.conn = direct.Connection(str(path), timeout_s=60)
        self.header = protocol.encode(protocol.request(
            "infer_shm", id=1, app="bench-infer", region="r1", subnet="mbv3-r224-000000",
            input={"offset": 0, "dtype": "float32", "shape": [1, 3, 224, 224]},
            output={"offset": 602112, "bytes": 1 << 20},
        ))  # fmt: skip

    def shm(self, x: np.ndarray) -> dict[str, float]:
        """A header each way (what ``infer_shm`` sends)."""
        t = time.perf_counter()
        self.conn.exchange([self.header])
        return {"floor_shm_rtt_ms": (time.perf_counter() - t) * 1e3}

    def frames(self, x: np.ndarray) -> dict[str, float]:
        """The tensor there, the output back (what ``infer`` sends)."""
        t = time.perf_counter()
        self.conn.exchange([self.header, x.data.cast("B")])
        return {"floor_frames_rtt_ms": (time.perf_counter() - t) * 1e3}

    def close(self) -> None:
        self.conn.close()
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.path.parent, ignore_errors=True)


def _remote(client: Any, app: str, sid: str, label: str, key: str | None = None) -> Any:
    def call(x: np.ndarray) -> dict[str, float]:
        reply = client.infer(app, x, subnet=sid)
        assert reply.transport == label, client.shm_problem
        name = key or label
        return {f"{name}_ms": reply.round_trip_ms, f"{name}_forward_ms": reply.latency_ms}

    return call


def _zero_copy(client: Any, app: str, sid: str, x: np.ndarray) -> Any:
    """shm with the input already in the region (``Client.input_array``): what the app's frame source fills."""
    view = client.input_array(app, x.shape, x.dtype)
    view[...] = x
    timed = _remote(client, app, sid, "shm", "shm_zero_copy")

    def call(_: np.ndarray) -> dict[str, float]:
        return timed(view)

    return call


def _alternating(calls: list[Any], x: np.ndarray, n: int, warmup: int = 5) -> dict[str, list[float]]:
    """Each call once per round, the order rotated every round so that load drifts hit all alike."""
    out: dict[str, list[float]] = {}
    for i in range(n + warmup):
        k = i % len(calls)
        for call in calls[k:] + calls[:k]:
            for key, value in call(x).items():
                if i >= warmup:
                    out.setdefault(key, []).append(value)
    return out


def _med(values: list[float]) -> float:
    return statistics.median(values)


_FLOOD = """
import sys, zmq
from dynofa import protocol
ctx = zmq.Context()
dealer = ctx.socket(zmq.DEALER)
dealer.connect(sys.argv[1])
state = protocol.encode(protocol.request("state"))
budget = [protocol.encode(protocol.request("set_budget", app="flood", budget={"latency_ms": ms}))
          for ms in (900.0, 1000.0)]
print("ready", flush=True)
sent = in_flight = 0
while True:  # 8 in flight: the server, and through set_budget the control loop and monitors, stay busy
    while in_flight < 8:  # state, set_budget 900, state, set_budget 1000, ...: every set_budget a change
        dealer.send_multipart([b"", state if sent % 2 else budget[sent // 2 % 2]])
        sent += 1
        in_flight += 1
    dealer.recv_multipart()
    in_flight -= 1
"""


class Flood:
    """Another process keeping the daemon's server, control loop and monitors busy."""

    def __init__(self, endpoint: str) -> None:
        import subprocess

        self.proc = subprocess.Popen([sys.executable, "-c", _FLOOD, endpoint], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def _busy(daemon: Any, calls: list[Any], x: np.ndarray, n: int, suffix: str = "") -> dict[str, float]:
    """The daemon's forward against in process while another process floods the daemon."""
    flood = Flood(daemon.endpoint)
    try:
        busy = _alternating(calls, x, n)
    finally:
        flood.close()
    ratio = _med(busy["frames_forward_ms"]) / _med(busy["in_process_forward_ms"])
    return {f"daemon_forward_busy_ms_median{suffix}": round(_med(busy["frames_forward_ms"]), 4),
            f"daemon_forward_busy_vs_in_process_median{suffix}": round(ratio, 4)}  # fmt: skip


def _eager_busy(work: Path, catalog_path: Path, n: int) -> dict[str, float]:
    """The same flooded figure from a daemon without graphs (models.<name>.graphs: false), eager in process."""
    import torch

    from dynofa.catalog import load_catalog
    from tests.service.harness import start_daemon, write_config

    models = {"tiny": {"catalog": str(catalog_path), "graphs": False}}
    daemon = start_daemon(write_config(work, catalog_path, models=models, logging={"level": "warning"}),
                          log_name="daemon-eager.log")  # fmt: skip
    try:
        catalog = load_catalog(catalog_path)
        sid = next(e.id for e in catalog.entries if e.resolution == 224)
        client = daemon.client(timeout_s=60)
        client.shm = False
        client.register("bench-eager")
        torch.set_num_threads(client.state()["apps"]["bench-eager"]["operating_point"]["threads"])
        reference = _Reference(catalog, sid, graphs=False)
        x = np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)
        figures = _busy(daemon, [reference, _remote(client, "bench-eager", sid, "frames")], x, n, "_eager")
        reference.pool.close()
        return figures
    finally:
        daemon.stop()


def _inference_figures(daemon: Any, catalog_path: Path, n: int) -> dict[str, Any]:
    """Daemon forward, frames and shm round trips against in-process, same subnet, alternating."""
    import torch

    import subnets.ofa_compat
    from dynofa.catalog import load_catalog

    subnets.ofa_compat.install()
    from service.malloc import retain_freed_memory

    retain_freed_memory()  # the reference gets the daemon's allocator settings: only the path differs
    catalog = load_catalog(catalog_path)
    frames, shm, control = daemon.client(timeout_s=60), daemon.client(timeout_s=60), daemon.client(timeout_s=60)
    frames.shm, shm.shm, control.shm = False, True, False
    control.direct = False  # frames through the control endpoint: the two hand-offs the direct endpoint avoids
    frames.register("bench-infer")
    shm.register("bench-infer")
    threads = frames.state()["apps"]["bench-infer"]["operating_point"]["threads"]
    torch.set_num_threads(threads)  # the daemon runs this operating point with that many threads
    out: dict[str, Any] = {"torch_threads": threads}
    for suffix, resolution in (("", 224), ("_small", 32)):
        sid = next(e.id for e in catalog.entries if e.resolution == resolution)
        x = np.random.default_rng(0).random((1, 3, resolution, resolution), dtype=np.float32)
        reference = _Reference(catalog, sid, graphs=True)  # the daemon's pool configuration
        eager = _Reference(catalog, sid, graphs=False)
        calls = [reference, _remote(frames, "bench-infer", sid, "frames"), _remote(shm, "bench-infer", sid, "shm"),
                 _remote(control, "bench-infer", sid, "frames", "control")]  # fmt: skip

        def eager_call(x: np.ndarray, eager: _Reference = eager) -> dict[str, float]:
            return {"eager_forward_ms": eager(x)["in_process_forward_ms"]}

        zero_copy = _zero_copy(shm, "bench-infer", sid, x)

        floor = Floor(frames.infer("bench-infer", x, subnet=sid).output.nbytes)
        try:
            # each floor call after one to the daemon, never right after the other floor call: a round trip
            # right after another to the same process finds it awake, while each daemon call waits for a wake-up
            got = _alternating([calls[0], calls[1], floor.shm, calls[2], floor.frames, calls[3], zero_copy, eager_call],
                               x, n)  # fmt: skip
        finally:
            floor.close()
        local, forward = _med(got["in_process_ms"]), _med(got["in_process_forward_ms"])
        floor_shm, floor_frames = _med(got["floor_shm_rtt_ms"]), _med(got["floor_frames_rtt_ms"])
        out.update({
            f"infer_input{suffix}": list(x.shape),
            f"infer_subnet{suffix}": sid,
            f"infer_in_process_ms_median{suffix}": round(local, 4),
            f"infer_in_process_forward_ms_median{suffix}": round(forward, 4),
            f"infer_in_process_eager_forward_ms_median{suffix}": round(_med(got["eager_forward_ms"]), 4),
            f"daemon_forward_ms_median{suffix}": round(_med(got["frames_forward_ms"]), 4),
            f"infer_frames_ms_median{suffix}": round(_med(got["frames_ms"]), 4),
            f"infer_shm_ms_median{suffix}": round(_med(got["shm_ms"]), 4),
            f"daemon_forward_vs_in_process_median{suffix}": round(_med(got["frames_forward_ms"]) / forward, 4),
            f"infer_frames_vs_in_process_median{suffix}": round(_med(got["frames_ms"]) / local, 4),
            f"infer_shm_vs_in_process_median{suffix}": round(_med(got["shm_ms"]) / local, 4),
            f"infer_shm_zero_copy_ms_median{suffix}": round(_med(got["shm_zero_copy_ms"]), 4),
            f"infer_shm_zero_copy_vs_in_process_median{suffix}": round(_med(got["shm_zero_copy_ms"]) / local, 4),
            f"infer_frames_control_ms_median{suffix}": round(_med(got["control_ms"]), 4),
            f"infer_frames_control_vs_in_process_median{suffix}": round(_med(got["control_ms"]) / local, 4),
            f"infer_shm_minus_in_process_ms_median{suffix}": round(_med(got["shm_ms"]) - local, 4),
            f"floor_shm_rtt_ms_median{suffix}": round(floor_shm, 4),
            f"floor_frames_rtt_ms_median{suffix}": round(floor_frames, 4),
            f"infer_floor_shm_vs_in_process_median{suffix}": round((local + floor_shm) / local, 4),
            f"infer_floor_frames_vs_in_process_median{suffix}": round((local + floor_frames) / local, 4),
        })  # fmt: skip
        if suffix == "":
            out.update(_busy(daemon, calls[:2], x, max(20, n // 2)))
        reference.pool.close()
        eager.pool.close()
    frames.close()
    shm.close()
    control.close()
    return out


def _wakeup_held(client: Any, asked: bool, timeout_s: float = 10.0) -> bool:
    """Whether the daemon holds the PM QoS bound; when asked for, waits (a control step) until it does."""
    deadline = time.monotonic() + timeout_s
    while True:
        held = bool(client.state()["daemon"]["wakeup_latency"]["held"])
        if held or not asked or time.monotonic() > deadline:
            return held
        time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000, help="control round trips timed")
    parser.add_argument("--infer", type=int, default=100, help="paired inferences timed")
    parser.add_argument("--idle-seconds", type=float, default=6.0)
    parser.add_argument("--wakeup-latency-us", type=int, default=None,
                        help="run the daemon with cpu_wakeup_latency_us (PM QoS; needs root; default: off)")
    parser.add_argument("--eager-daemon", action="store_true",
                        help="also flood a daemon without graphs (the GIL stall the graphs remove)")  # fmt: skip
    args = parser.parse_args(argv)

    from tests.service.harness import start_daemon, write_config
    from tests.service.tiny import make_catalog

    work = Path(tempfile.mkdtemp(prefix="dynofa-bench-"))
    catalog_path = make_catalog(work, resolutions=(32, 224), n=2)  # one 32-px and one 224-px subnet
    # defaults for the loop and telemetry periods, so that the idle figure is the shipped one
    config = write_config(work, catalog_path, control_interval_s=0.5, telemetry={"period_s": 1.0},
                          logging={"level": "warning"}, cpu_wakeup_latency_us=args.wakeup_latency_us)  # fmt: skip
    daemon = start_daemon(config)
    result: dict[str, Any] = {"machine_cpus": os.cpu_count(), "cpu_wakeup_latency_us": args.wakeup_latency_us}
    try:
        time.sleep(1.0)
        result["idle_cpu_percent"] = round(_idle_cpu_percent(daemon.proc.pid, args.idle_seconds), 3)

        client = daemon.client(timeout_s=30)
        client.set_budget("bench", latency_ms=1000.0)
        result["cpu_wakeup_latency_held"] = _wakeup_held(client, args.wakeup_latency_us is not None)
        echo = RawEcho()
        try:
            rtts = _interleaved({"budgets": client.budgets, "ping": client.ping, "raw": echo.call}, args.requests)
        finally:
            echo.close()
        budgets, ping, raw = rtts["budgets"], rtts["ping"], rtts["raw"]
        state = _rtts(client.state, max(200, args.requests // 10))
        flip = itertools.cycle((1001.0, 1000.0))  # every call a change: saved, published, decided
        set_budget = _rtts(lambda: client.set_budget("bench", latency_ms=next(flip)),
                           max(200, args.requests // 10))  # fmt: skip
        same_budget = _rtts(lambda: client.set_budget("bench", latency_ms=1000.0), max(200, args.requests // 10))
        result.update({
            "control_rtt_ms_p99": round(_p(budgets, 99), 4),
            "control_rtt_ms_median": round(statistics.median(budgets), 4),
            "ping_rtt_ms_p99": round(_p(ping, 99), 4),
            "state_rtt_ms_p99": round(_p(state, 99), 4),
            "set_budget_rtt_ms_p99": round(_p(set_budget, 99), 4),
            "set_budget_unchanged_rtt_ms_p99": round(_p(same_budget, 99), 4),
            "baseline_raw_zmq_rtt_ms_p99": round(_p(raw, 99), 4),
            "control_rtt_p99_vs_raw_zmq": round(_p(budgets, 99) / _p(raw, 99), 2),
        })  # fmt: skip
        result["control_requests_per_s"] = round(_throughput(daemon.endpoint, args.requests * 3))

        result.update(_inference_figures(daemon, catalog_path, args.infer))
        result.update(embedded_figures(daemon, catalog_path, args.infer))
        result["goals"] = {
            "control_rtt_ms_p99": result["control_rtt_ms_p99"] <= 1.0,
            "control_requests_per_s": result["control_requests_per_s"] >= 5000,
            "idle_cpu_percent": result["idle_cpu_percent"] <= 1.0,
            "daemon_forward_vs_in_process_median": result["daemon_forward_vs_in_process_median"] <= 1.05,
            "infer_frames_vs_in_process_median": result["infer_frames_vs_in_process_median"] <= 1.2,
            "infer_shm_vs_in_process_median": result["infer_shm_vs_in_process_median"] <= 1.05,
            "infer_shm_zero_copy_vs_in_process_median": result["infer_shm_zero_copy_vs_in_process_median"] <= 1.05,
            "daemon_forward_busy_vs_in_process_median": result["daemon_forward_busy_vs_in_process_median"] <= 1.05,
            "embedded_vs_in_process_median": result["embedded_vs_in_process_median"] <= 1.02,
            "decision_to_embedded_app_inferences_max": (result["decision_to_embedded_app_inferences_max"] or 0) <= 1,
        }  # fmt: skip
        daemon.stop()
        if args.eager_daemon:
            result.update(_eager_busy(work, catalog_path, max(20, args.infer // 2)))
    finally:
        daemon.stop()
        shutil.rmtree(work, ignore_errors=True)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
