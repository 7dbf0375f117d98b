"""Prometheus metrics: a real daemon (fake Odroid XU3 board) scraped over HTTP, the exposition parsed."""

from __future__ import annotations

import math
import re
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from service.apps import LATENCY_BUCKETS_S, LatencyHistogram
from tests.fakes.boards import build_board
from tests.service.harness import start_daemon, write_config


def _scrape(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=20) as reply:
        assert reply.status == 200
        assert reply.headers["Content-Type"].startswith("text/plain")
        text = reply.read().decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def _value(families: dict[str, Any], sample_name: str, **labels: str) -> float:
    family_name = sample_name.removesuffix("_total").removesuffix("_bucket").removesuffix("_count").removesuffix("_sum")
    for candidate in (family_name, sample_name):
        for sample in families[candidate].samples if candidate in families else []:
            if sample.name == sample_name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    raise AssertionError(f"no sample {sample_name}{labels}")


def test_a_real_daemon_serves_metrics_over_http(tmp_path: Path, tiny_catalog: Path) -> None:
    board = build_board("odroid-xu3", str(tmp_path / "xu3"))
    config = write_config(tmp_path, tiny_catalog, paths={"sysfs_root": board.root},
                          metrics={"listen": "127.0.0.1:0"})  # fmt: skip
    daemon = start_daemon(config)
    try:
        client = daemon.client()
        client.register("cam", model="tiny", budget={"latency_ms": 5000.0, "min_accuracy": 0.0, "priority": 2})
        image = np.random.default_rng(0).random((1, 3, 32, 32), dtype=np.float32)
        for _ in range(3):
            client.infer("cam", image)
        client.set_budget("cam", latency_ms=0.01, priority=2)  # every later inference misses its deadline
        for _ in range(2):
            client.infer("cam", image)
        state = client.state()
        url = state["daemon"]["metrics"]
        assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
        families = _scrape(url)
    finally:
        daemon.stop()

    assert _value(families, "dynofa_app_inferences_total", app="cam", model="tiny") == 5
    assert _value(families, "dynofa_app_budgeted_inferences_total", app="cam") == 5
    assert _value(families, "dynofa_app_deadline_misses_total", app="cam") == 2
    for histogram in ("dynofa_app_forward_latency_seconds", "dynofa_app_end_to_end_latency_seconds"):
        assert families[histogram].type == "histogram"
        assert _value(families, f"{histogram}_count", app="cam") == 5
        assert _value(families, f"{histogram}_bucket", app="cam", le="+Inf") == 5
        assert 0 < _value(families, f"{histogram}_sum", app="cam") < 60
    # end to end includes the forward: its sum can only be larger
    assert _value(families, "dynofa_app_end_to_end_latency_seconds_sum", app="cam") >= _value(
        families, "dynofa_app_forward_latency_seconds_sum", app="cam")
    assert _value(families, "dynofa_app_budget_latency_seconds", app="cam") == 1e-5
    assert _value(families, "dynofa_app_budget_priority", app="cam") == 2
    point = families["dynofa_app_operating_point_info"].samples[0]
    assert point.name == "dynofa_app_operating_point_info" and point.labels["subnet"] in state["apps"]["cam"][
        "operating_point"]["subnet"]  # fmt: skip
    assert 0 <= _value(families, "dynofa_app_accuracy_ratio", app="cam") <= 1
    # the fake XU3: two clusters, INA231 rails, thermal zones
    assert _value(families, "dynofa_pe_frequency_hertz", pe="cpu-big", kind="cpu") > 1e8
    assert {s.labels["pe"] for s in families["dynofa_pe_frequency_hertz"].samples} == {"cpu-little", "cpu-big"}
    assert families["dynofa_pe_load_ratio"].type == "gauge"  # a static fake /proc/stat has no load to show
    assert _value(families, "dynofa_power_watts") >= 0  # the fake INA231 sensors read 0 W
    assert {s.labels["rail"] for s in families["dynofa_rail_power_watts"].samples} == {
        "VDD_ARM", "VDD_G3D", "VDD_KFC", "VDD_MEM"}  # fmt: skip
    assert families["dynofa_energy_joules"].type == "counter"
    assert families["dynofa_temperature_celsius"].samples
    assert _value(families, "dynofa_policy_decisions_total") >= 1
    assert _value(families, "dynofa_policy_feasible") in (0.0, 1.0)
    assert families["dynofa_daemon_info"].samples[0].labels["board"] == "odroid-xu3"
    assert _value(families, "dynofa_daemon_uptime_seconds") > 0
    capabilities = families["dynofa_capability_available"].samples
    assert {c.labels["capability"] for c in capabilities} >= {"task-mapping", "power", "thermal"}
    assert all(c.value == (c.labels["status"] == "available") for c in capabilities)  # 8 fake CPUs may degrade
    samples = {s.name for f in families.values() for s in f.samples}
    assert "process_cpu_seconds_total" in samples
    # the shipped Grafana dashboard asks only for metrics the daemon serves
    dashboard = (Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json").read_text()
    wanted = set(re.findall(r"dynofa_[a-z_]+", dashboard))
    assert wanted and wanted <= samples | set(families), wanted - samples - set(families)


def test_without_metrics_listen_nothing_is_served(tmp_path: Path, tiny_catalog: Path) -> None:
    from dynofa.config import load_config

    config = load_config(write_config(tmp_path, tiny_catalog))
    assert config.metrics.address() is None  # off by default


def test_histogram_buckets_count_observations_at_or_below_each_bound() -> None:
    h = LatencyHistogram()
    for seconds in (0.0005, 0.0006, 0.02, 99.0):
        h.observe(seconds)
    cumulative = dict(h.cumulative())
    assert cumulative[repr(0.0005)] == 1  # le is inclusive
    assert cumulative[repr(0.001)] == 2
    assert cumulative[repr(0.02)] == 3
    assert cumulative[repr(LATENCY_BUCKETS_S[-1])] == 3 and cumulative["+Inf"] == 4
    assert math.isclose(h.sum_s, 99.0211)


def test_collector_converts_the_state_to_base_units() -> None:
    from prometheus_client import generate_latest
    from prometheus_client.registry import CollectorRegistry

    from service.metrics import DaemonCollector

    state = {
        "daemon": {"version": "0.1.0", "pid": 1, "uptime_s": 12.5},
        "platform": {"board": "jetson-orin", "model": "orin"},
        "apps": {},
        "pes": {
            "cpu-big": {"kind": "cpu", "freq_khz": 1_500_000, "load_others": 0.25, "load_total": 0.75},
            "gpu": {"kind": "gpu", "freq_hz": 900_000_000, "load": 40.0},
        },
        "monitor": {"power_w": 7.5, "energy_j": 100.0, "rails_w": {"VDD_IN": 7.5}, "temperatures_c": {"cpu": 51.0},
                    "throttled": ["gpu"]},
        "policy": {"name": "model-based", "steps": 9, "last_step_ms": 2.0,
                   "decision": {"feasible": False, "outcomes": {"a": {"feasible": False, "predicted_ms": 31.0}}}},
        "capabilities": {"dvfs:cpu": {"status": "degraded"}},
    }  # fmt: skip
    registry = CollectorRegistry()
    registry.register(DaemonCollector(lambda: state, dict))
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}
    assert _value(families, "dynofa_pe_frequency_hertz", pe="cpu-big") == 1.5e9
    assert _value(families, "dynofa_pe_load_ratio", pe="cpu-big", by="others") == 0.25
    assert _value(families, "dynofa_pe_load_ratio", pe="cpu-big", by="all") == 0.75
    assert _value(families, "dynofa_pe_load_ratio", pe="gpu", by="all") == 0.4  # percent -> ratio
    assert _value(families, "dynofa_pe_throttled", pe="gpu") == 1 and _value(families, "dynofa_pe_throttled",
                                                                             pe="cpu-big") == 0  # fmt: skip
    assert _value(families, "dynofa_energy_joules_total") == 100.0
    assert _value(families, "dynofa_policy_step_duration_seconds") == 0.002
    assert _value(families, "dynofa_policy_feasible") == 0
    assert _value(families, "dynofa_app_predicted_latency_seconds", app="a") == 0.031
    assert _value(families, "dynofa_capability_available", capability="dvfs:cpu", status="degraded") == 0
