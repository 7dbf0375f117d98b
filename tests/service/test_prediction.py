"""Predictions an app can trust, through a real daemon: latency is predicted for the batch size it sends."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from tests.service.harness import start_daemon, write_config


def _with_batch_figures(catalog: Path, out: Path, batch: int = 32) -> Path:
    """The tiny catalog with a (predicted) figure at ``batch`` on every PE: the daemon re-times it at start."""
    data = json.loads(catalog.read_text())
    for subnet in data["subnets"]:
        if subnet.get("bn_stats"):  # relative to the original catalog's file
            subnet["bn_stats"] = str(catalog.parent / subnet["bn_stats"])
        for lat in subnet["latency"].values():
            lat["batch"] = {str(batch): {k: v for k, v in lat.items() if k != "batch"} | {"ms": lat["ms"] * batch}}
    out.write_text(json.dumps(data))
    return out


#: how long the app sends inferences at each batch size
SERVE_S = 2.5


def test_prediction_error_at_batch_1_and_32_on_a_quiet_machine(tmp_path: Path, tiny_catalog: Path) -> None:
    catalog = _with_batch_figures(tiny_catalog, tmp_path / "catalog-batch.json")
    daemon = start_daemon(write_config(tmp_path, catalog), log_name="prediction.log")
    try:
        c = daemon.client()
        largest = max(json.loads(catalog.read_text())["subnets"], key=lambda s: s["accuracy"]["top1"])
        res = largest["resolution"]
        # the 10 % figure is a timing claim (the standards keep those out of the default run): it is asserted
        # only when asked for, on a machine the caller knows is quiet (DYNOFA_TIMING_TESTS=1)
        quiet = os.environ.get("DYNOFA_TIMING_TESTS") == "1" and os.getloadavg()[0] < 0.5 * (os.cpu_count() or 1)
        medians: dict[int, float] = {}
        for batch in (1, 32):
            app = f"pred-{batch}"
            c.register(app, budget={"latency_ms": 10_000.0})
            x = np.random.default_rng(batch).random((batch, 3, res, res), dtype=np.float32)
            # long enough for the daemon to learn what this app's forwards take (its correction) and for
            # the 64-inference window to hold inferences predicted with it
            start, n = time.monotonic(), 0
            while n < 30 or time.monotonic() - start < SERVE_S:
                c.infer(app, x)
                n += 1
            state = c.state()
            assert state["apps"][app]["batch"] == batch
            prediction = state["apps"][app]["prediction"]
            assert prediction is not None, state["apps"][app]
            print(f"batch {batch} ({n} inferences): {json.dumps(prediction)}")  # shown with -s
            assert str(batch) in prediction["correction"]["cpu"], prediction  # learnt per batch size, shown
            vs_predicted = prediction["measured_over_predicted"]
            assert vs_predicted["samples"] >= 20
            medians[batch] = vs_predicted["median"]
            if quiet:  # measured / predicted within 10 % of 1
                assert 0.9 <= vs_predicted["median"] <= 1.1, (batch, prediction)
            c.unregister(app)
        # The figure is opt-in: it once failed at 1.22 at batch 1 on a quiet 2-core box, when the start-up
        # re-timing timed an eager copy of each subnet 5 times while the daemon served its traced graph. It
        # now times the served forward (deterministic check: tests/service/test_reprofile_at_start.py); the
        # policy side is checked in tests/governors/test_batch_prediction.py. Re-timing back to back, while
        # requests arrive after an idle wait, read 1.13-1.48 at batch 1 on the 2-core VM (4 runs); timed as
        # served (one timer, an idle wait before each run) 0.98-1.47, median 1.1 (7 runs): the rest is how
        # much that machine's speed drifts between the start-up re-timing and the app's inferences (6 more
        # runs of 30 inferences: 0.47-1.57 at batch 1). No start-up figure holds 10 % there, so the daemon learns
        # each app's own latency while it serves (governors.latency_model.AppCorrection), and the claim is its
        # prediction's: over 2.5 s per batch size, measured / predicted read 0.85-1.12 at batch 1 (8 of 10 quiet
        # runs within 10 %) and 0.97-1.01 at batch 32 (8 of 8), where the catalog figure alone read 0.56-1.14 and
        # 0.68-1.24; without the correction and the contention estimate's jitter band, 0.68-1.01 at batch 1 (3
        # runs). What is left at batch 1 is the contention estimate a decision snapshots: one forward there
        # jitters +-30 % and the machine's speed drifts within a second.
        print(f"measured / predicted latency, median per batch size: {medians} (asserted: {quiet})")  # shown with -s
        assert set(medians) == {1, 32}
    finally:
        daemon.stop()


def test_the_daemons_latency_and_the_reprofiled_figures_are_one_measurement(
    tmp_path: Path, tiny_catalog: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The figure a prediction is judged against and the latency it is judged by come from one function.

    Both sides once timed different things: re-profiling timed back-to-back forwards with its own
    clock around the pool's call, the daemon reported the span inside the pool for requests that
    arrive after an idle wait, and the catalog read 1.2-1.6x low at batch 1 on a quiet machine.
    Here the one timer (``subnets.timing.timed_forward``, as the pool calls it) reports a fixed
    time: the daemon's latency for a served inference and every re-profiled figure (batch 1 and
    32) must be that time, and every timed run of the re-profiling must follow a served idle wait.
    """
    import torch

    import subnets.pool
    import subnets.timing
    from dynofa.config import ModelConfig
    from dynofa.operating_point import OperatingPoint
    from service.models import ModelRuntime
    from subnets.timing import SERVED_IDLE_S, ForwardTime

    events: list[str] = []

    def timer(run, device):  # type: ignore[no-untyped-def]
        with torch.inference_mode():
            out = run()
        events.append("forward")
        return out, ForwardTime(wall_ms=7.25, cpu_ms=7.25)

    def idle(seconds: float) -> None:
        events.append(f"idle {seconds}")

    monkeypatch.setattr(subnets.pool, "timed_forward", timer)
    monkeypatch.setattr(subnets.timing, "_idle", idle)
    catalog = _with_batch_figures(tiny_catalog, tmp_path / "catalog-batch.json")
    runtime = ModelRuntime.load("tiny", ModelConfig(catalog=str(catalog), reprofile=True), ["cpu"])
    try:
        info = runtime.catalog.latency_models["cpu"]["reprofile"]
        assert info["clock"] in ("thread", "wall") and info["idle_ms"] == 1e3 * SERVED_IDLE_S > 0
        measured = [e for e in runtime.catalog.entries if e.latency["cpu"].source == "measured"]
        assert len(measured) == 3
        for entry in measured:
            assert entry.latency["cpu"].ms == 7.25, entry.id
            assert entry.latency["cpu"].batch[32].ms == 7.25, entry.id
        # every timed forward of the re-profiling came right after a served idle wait
        timed = [i for i, e in enumerate(events) if e == "forward"]
        assert timed and all(i > 0 and events[i - 1] == f"idle {SERVED_IDLE_S}" for i in timed), events[:12]

        sid = runtime.most_accurate()
        runtime.select("app", OperatingPoint(subnet=sid, pe="cpu"))
        res = next(e.resolution for e in runtime.catalog.entries if e.id == sid)
        x = np.random.default_rng(0).random((1, 3, res, res), dtype=np.float32)
        assert runtime.infer("app", "cpu", x).latency_ms == 7.25  # what the engine records and compares
    finally:
        runtime.close()
