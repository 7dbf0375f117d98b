"""Prometheus metrics: ``/metrics`` over HTTP when the config sets ``metrics.listen``.

A custom collector builds every metric at scrape time from the daemon's state snapshot (the same
one the ``state`` op and ``dynofa status`` show) plus the per-app latency histograms the engine
already keeps, so a scrape adds no work to the inference path and nothing is recorded twice.
Names follow the Prometheus conventions: base units (seconds, hertz, watts, joules, celsius,
ratios in 0..1), ``_total`` for counters, ``_info`` for label-only facts. docs/metrics.md lists them.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from dynofa.errors import ConfigError

log = logging.getLogger(__name__)

PREFIX = "dynofa"


class DaemonCollector(Collector):
    """Every dynofa metric, read from ``state()`` and ``histograms()`` when Prometheus scrapes."""

    def __init__(self, state: Callable[[], dict[str, Any]], histograms: Callable[[], Mapping[str, Any]]) -> None:
        self._state = state
        self._histograms = histograms

    def collect(self) -> Iterator[Metric]:
        state = self._state()
        yield from _daemon(state)
        yield from _apps(state.get("apps") or {}, self._histograms())
        yield from _pes(state.get("pes") or {}, state.get("monitor") or {})
        yield from _board(state.get("monitor") or {})
        yield from _policy(state.get("policy") or {})
        yield from _capabilities(state.get("capabilities") or {})


def _gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=labels)


def _daemon(state: dict[str, Any]) -> Iterator[Metric]:
    daemon = state.get("daemon") or {}
    platform = state.get("platform") or {}
    policy = state.get("policy") or {}
    info = InfoMetricFamily(f"{PREFIX}_daemon", "the running daemon: version, board, policy")
    info.add_metric([], {
        "version": str(daemon.get("version", "")), "board": str(platform.get("board", "")),
        "soc": str(platform.get("model", "")), "policy": str(policy.get("name", "")),
        "pid": str(daemon.get("pid", os.getpid())),
    })  # fmt: skip
    yield info
    uptime = float(daemon.get("uptime_s") or 0.0)
    up = _gauge("daemon_uptime_seconds", "seconds since the daemon started", [])
    up.add_metric([], uptime)
    yield up
    start = _gauge("daemon_start_time_seconds", "Unix time the daemon started", [])
    start.add_metric([], time.time() - uptime)
    yield start
    models = _gauge("model_subnets", "subnets in each served model's catalog", ["model"])
    for name, model in sorted((state.get("models") or {}).items()):
        models.add_metric([name], float(model.get("subnets", 0)))
    yield models


def _apps(apps: dict[str, Any], histograms: Mapping[str, Any]) -> Iterator[Metric]:
    labels = ["app", "model"]
    inferences = CounterMetricFamily(f"{PREFIX}_app_inferences", "inferences served", labels=labels)
    judged = CounterMetricFamily(f"{PREFIX}_app_budgeted_inferences", "inferences served while a budget was set",
                                 labels=labels)  # fmt: skip
    misses = CounterMetricFamily(f"{PREFIX}_app_deadline_misses", "inferences slower than the app's latency budget",
                                 labels=labels)  # fmt: skip
    switches = CounterMetricFamily(f"{PREFIX}_app_subnet_switches", "subnet changes decided for the app",
                                   labels=labels)  # fmt: skip
    point = InfoMetricFamily(f"{PREFIX}_app_operating_point", "the app's current operating point",
                             labels=labels)  # fmt: skip
    accuracy = _gauge("app_accuracy_ratio", "top-1 accuracy of the app's current subnet (catalog figure)", labels)
    budget_latency = _gauge("app_budget_latency_seconds", "the app's latency budget", labels)
    budget_accuracy = _gauge("app_budget_min_accuracy_ratio", "the app's minimum accuracy", labels)
    budget_power = _gauge("app_budget_power_cap_watts", "the app's board power cap", labels)
    budget_priority = _gauge("app_budget_priority", "the app's priority (higher wins)", labels)
    qoe = _gauge("app_qoe", "the app's last QoE feedback", labels)
    for name, app in sorted(apps.items()):
        key = [name, str(app.get("model", ""))]
        inferences.add_metric(key, float(app.get("inferences", 0)))
        judged.add_metric(key, float(app.get("budgeted_inferences", 0)))
        misses.add_metric(key, float(app.get("deadline_misses", 0)))
        switches.add_metric(key, float(app.get("switches", 0)))
        op = app.get("operating_point") or {}
        if op:
            point.add_metric(key, {"subnet": str(op.get("subnet", "")), "pe": str(op.get("pe", "")),
                                   "threads": str(op.get("threads", ""))})  # fmt: skip
        if app.get("accuracy") is not None:
            accuracy.add_metric(key, float(app["accuracy"]))
        if app.get("qoe") is not None:
            qoe.add_metric(key, float(app["qoe"]))
        budget = app.get("budget") or {}
        if budget:
            budget_latency.add_metric(key, float(budget["latency_ms"]) / 1000.0)
            budget_accuracy.add_metric(key, float(budget.get("min_accuracy") or 0.0))
            budget_priority.add_metric(key, float(budget.get("priority") or 0))
            if budget.get("power_cap_w") is not None:
                budget_power.add_metric(key, float(budget["power_cap_w"]))
    yield from (inferences, judged, misses, switches, point, accuracy, budget_latency, budget_accuracy, budget_power,
                budget_priority, qoe)  # fmt: skip
    forward = HistogramMetricFamily(f"{PREFIX}_app_forward_latency_seconds",
                                    "time of the subnet's forward pass per inference", labels=labels)  # fmt: skip
    e2e = HistogramMetricFamily(f"{PREFIX}_app_end_to_end_latency_seconds",
                                "time from a request's arrival in the daemon to its result (queue + resize + forward)",
                                labels=labels)  # fmt: skip
    for name, (model, fwd, total) in sorted(histograms.items()):
        forward.add_metric([name, model], fwd.cumulative(), fwd.sum_s)
        e2e.add_metric([name, model], total.cumulative(), total.sum_s)
    yield forward
    yield e2e


def _pes(pes: dict[str, Any], monitor: dict[str, Any]) -> Iterator[Metric]:
    freq = _gauge("pe_frequency_hertz", "current clock of the processing element", ["pe", "kind"])
    load = _gauge("pe_load_ratio", "utilisation of the processing element, 0..1: by others, or by everyone",
                  ["pe", "kind", "by"])  # fmt: skip
    throttled = _gauge("pe_throttled", "1 when the frequency ceiling is below the hardware maximum", ["pe", "kind"])
    capped = set(monitor.get("throttled") or [])
    for name, pe in sorted(pes.items()):
        kind = str(pe.get("kind", ""))
        hz = pe.get("freq_hz") if kind == "gpu" else (None if pe.get("freq_khz") is None else pe["freq_khz"] * 1000)
        if hz is not None:
            freq.add_metric([name, kind], float(hz))
        if kind == "gpu":
            if pe.get("load") is not None:
                load.add_metric([name, kind, "all"], float(pe["load"]) / 100.0)  # the GPU reports percent
        else:
            if pe.get("load_others") is not None:
                load.add_metric([name, kind, "others"], float(pe["load_others"]))
            if pe.get("load_total") is not None:
                load.add_metric([name, kind, "all"], float(pe["load_total"]))
        throttled.add_metric([name, kind], 1.0 if name in capped else 0.0)
    yield from (freq, load, throttled)


def _board(monitor: dict[str, Any]) -> Iterator[Metric]:
    power = _gauge("power_watts", "board power (sum of the input rails, or RAPL package)", [])
    if monitor.get("power_w") is not None:
        power.add_metric([], float(monitor["power_w"]))
    energy = CounterMetricFamily(f"{PREFIX}_energy_joules", "board energy since the daemon started", labels=[])
    energy.add_metric([], float(monitor.get("energy_j") or 0.0))
    rails = _gauge("rail_power_watts", "power of each rail", ["rail"])
    for rail, watts in sorted((monitor.get("rails_w") or {}).items()):
        rails.add_metric([rail], float(watts))
    rail_energy = CounterMetricFamily(f"{PREFIX}_rail_energy_joules", "energy of each rail since the daemon started",
                                      labels=["rail"])  # fmt: skip
    for rail, joules in sorted((monitor.get("rails_energy_j") or {}).items()):
        rail_energy.add_metric([rail], float(joules))
    temperature = _gauge("temperature_celsius", "temperature of each thermal zone", ["zone"])
    for zone, celsius in sorted((monitor.get("temperatures_c") or {}).items()):
        temperature.add_metric([zone], float(celsius))
    memory = _gauge("memory_available_bytes", "memory available to new work (MemAvailable)", [])
    if monitor.get("mem_available_bytes") is not None:
        memory.add_metric([], float(monitor["mem_available_bytes"]))
    yield from (power, energy, rails, rail_energy, temperature, memory)


def _policy(policy: dict[str, Any]) -> Iterator[Metric]:
    steps = CounterMetricFamily(f"{PREFIX}_policy_decisions", "control-loop periods the policy decided in", labels=[])
    steps.add_metric([], float(policy.get("steps") or 0))
    step_time = _gauge("policy_step_duration_seconds", "duration of the last control-loop period", [])
    if policy.get("last_step_ms") is not None:
        step_time.add_metric([], float(policy["last_step_ms"]) / 1000.0)
    healthy = _gauge("policy_step_ok", "0 when the last control-loop period failed (see the daemon's log)", [])
    healthy.add_metric([], 0.0 if policy.get("last_error") else 1.0)
    decision = policy.get("decision") or {}
    feasible = _gauge("policy_feasible", "1 when the last decision meets every app's budget", [])
    app_feasible = _gauge("app_feasible", "1 when the last decision meets the app's budget", ["app"])
    predicted = _gauge("app_predicted_latency_seconds", "latency the policy predicts for the app's operating point",
                       ["app"])  # fmt: skip
    if decision:
        feasible.add_metric([], 1.0 if decision.get("feasible") else 0.0)
        for app, outcome in sorted((decision.get("outcomes") or {}).items()):
            app_feasible.add_metric([app], 1.0 if outcome.get("feasible") else 0.0)
            if outcome.get("predicted_ms") is not None:
                predicted.add_metric([app], float(outcome["predicted_ms"]) / 1000.0)
    yield from (steps, step_time, healthy, feasible, app_feasible, predicted)


def _capabilities(capabilities: dict[str, Any]) -> Iterator[Metric]:
    usable = _gauge("capability_available", "1 when the platform capability is usable", ["capability", "status"])
    for name, cap in sorted(capabilities.items()):
        status = str(cap.get("status", ""))
        usable.add_metric([name, status], 1.0 if status == "available" else 0.0)
    yield usable


class MetricsServer:
    """The HTTP endpoint: ``/metrics`` from its own registry (the daemon's collector + this process's)."""

    def __init__(self, listen: tuple[str, int], collector: Collector) -> None:
        from prometheus_client.process_collector import ProcessCollector

        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)
        ProcessCollector(registry=self.registry)  # the daemon's own CPU seconds, memory, open files
        self.listen = listen
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        from prometheus_client import start_http_server

        host, port = self.listen
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise ConfigError(f"metrics.listen: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        log.info("metrics on http://%s:%d/metrics", host if ":" not in host else f"[{host}]", self.port)

    @property
    def port(self) -> int:
        """The bound port (the configured one, or the kernel's pick for port 0 in tests)."""
        return int(self._server.server_port) if self._server is not None else self.listen[1]

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
