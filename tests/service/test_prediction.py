"""Predictions an app can trust, through a real daemon: latency is predicted for the batch size it sends."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

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
            for _ in range(30):
                c.infer(app, x)
            state = c.state()
            assert state["apps"][app]["batch"] == batch
            prediction = state["apps"][app]["prediction"]
            assert prediction is not None, state["apps"][app]
            vs_catalog = prediction["measured_over_catalog"]
            assert vs_catalog["samples"] >= 20
            medians[batch] = vs_catalog["median"]
            if quiet:  # measured / predicted within 10 % of 1, against the catalog and against the decision
                assert 0.9 <= vs_catalog["median"] <= 1.1, (batch, prediction)
                assert 0.9 <= prediction["measured_over_predicted"]["median"] <= 1.1, (batch, prediction)
            c.unregister(app)
        # The figure is opt-in: it once failed at 1.22 at batch 1 on a quiet 2-core box, when the start-up
        # re-timing timed an eager copy of each subnet 5 times while the daemon served its traced graph. It
        # now times the served forward (deterministic check: tests/service/test_reprofile_at_start.py); the
        # policy side is checked in tests/governors/test_batch_prediction.py.
        print(f"measured / catalog latency, median per batch size: {medians} (asserted: {quiet})")  # shown with -s
        assert set(medians) == {1, 32}
    finally:
        daemon.stop()
