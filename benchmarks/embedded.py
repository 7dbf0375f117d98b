"""Embedded-app figures for ``benchmarks.api`` (same daemon, same run, alternating with the reference).

* ``embedded_vs_in_process_median`` (and ``_small``): an embedded app's ``EmbeddedRuntime.infer``
  (numpy in, numpy out, while being managed: decision hand-over, batched reports) against the same
  subnet's ``SubnetPool.infer`` in process, with the same pool configuration;
* ``decision_to_embedded_app_inferences_max``: after each decision the daemon makes for an
  embedded app (budgets flipped between tight and loose from another thread), the inferences the
  app started on the old point after the decision's time stamp (telemetry ``op`` topic).
"""

from __future__ import annotations

import statistics
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np


def embedded_figures(daemon: Any, catalog_path: Path, n: int, flips: int = 6) -> dict[str, Any]:
    import torch

    from dynofa.catalog import load_catalog
    from subnets.embedded import EmbeddedRuntime
    from subnets.pool import SubnetPool

    catalog = load_catalog(catalog_path)
    out: dict[str, Any] = {}
    for suffix, resolution in (("", 224), ("_small", 32)):
        sid = next(e.id for e in catalog.entries if e.resolution == resolution)
        x = np.random.default_rng(0).random((1, 3, resolution, resolution), dtype=np.float32)
        reference = SubnetPool.from_catalog(catalog, ids=[sid], graphs=True)
        rt = EmbeddedRuntime(f"bench-emb{suffix}", SubnetPool.from_catalog(catalog, ids=[sid], graphs=True),
                             endpoint=daemon.endpoint, budget={"latency_ms": 1000.0})  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while rt.infer(x).seq < 0:  # managed: it runs at a decision of the daemon
                assert time.monotonic() < deadline, "no decision reached the embedded app"
            times: dict[str, list[float]] = {"embedded": [], "in_process": []}

            def local(x: np.ndarray = x, pool: SubnetPool = reference) -> None:
                pool.infer(torch.from_numpy(x)).output.numpy()  # its one subnet

            def managed(x: np.ndarray = x, rt: EmbeddedRuntime = rt) -> None:
                rt.infer(x).output.numpy()

            for i in range(n + 5):
                for name, call in (("embedded", managed), ("in_process", local))[:: 1 if i % 2 else -1]:
                    t = time.perf_counter()
                    call()
                    if i >= 5:
                        times[name].append((time.perf_counter() - t) * 1e3)
            emb, loc = statistics.median(times["embedded"]), statistics.median(times["in_process"])
            out[f"embedded_ms_median{suffix}"] = round(emb, 4)
            out[f"embedded_in_process_ms_median{suffix}"] = round(loc, 4)
            out[f"embedded_vs_in_process_median{suffix}"] = round(emb / loc, 4)
        finally:
            rt.close()
            reference.close()
    out.update(_decision_lag(daemon, catalog, flips))
    return out


def _decision_lag(daemon: Any, catalog: Any, flips: int) -> dict[str, Any]:
    """Inferences on the old point after each decision, the app looping in this (main) thread."""
    from dynofa.client import Telemetry
    from subnets.embedded import EmbeddedRuntime

    app = "bench-emb-lag"
    rt = EmbeddedRuntime.from_catalog(app, catalog, endpoint=daemon.endpoint, budget={"latency_ms": 10_000.0})
    telemetry = Telemetry(daemon.telemetry, topics=("op",))
    ran: list[tuple[float, str]] = []  # (time.time() at the start of each inference, subnet)
    stop = threading.Event()

    def flip() -> None:
        client = daemon.client(timeout_s=30)
        for i in range(flips):
            time.sleep(0.3)
            client.set_budget(app, latency_ms=0.01 if i % 2 == 0 else 10_000.0)
        time.sleep(0.3)
        stop.set()

    x = np.random.default_rng(1).random((1, 3, 32, 32), dtype=np.float32)
    try:
        while rt.infer(x).seq < 0:
            pass
        changer = threading.Thread(target=flip, daemon=True)
        changer.start()
        while not stop.is_set():
            started = time.time()
            ran.append((started, rt.infer(x).subnet))
        changer.join()
        decisions = []
        while (item := telemetry.receive(0.5)) is not None:
            if item[1].get("app") == app and item[1].get("old"):
                decisions.append((float(item[1]["t"]), item[1]["old"]["subnet"], item[1]["new"]["subnet"]))
    finally:
        telemetry.close()
        rt.close()
    lags = []
    for t, old, new in decisions:
        after = [subnet for started, subnet in ran if started >= t]
        count = 0
        for subnet in after:
            if subnet == new:
                break
            count += subnet == old
        lags.append(count)
    return {
        "decision_to_embedded_app_inferences_max": max(lags) if lags else None,
        "decision_to_embedded_app_inferences": lags,
    }
