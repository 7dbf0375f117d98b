"""What the daemon knows about each registered app: budget, operating point, measured latency."""

from __future__ import annotations

import bisect
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from dynofa.budget import Budget
from dynofa.catalog import CatalogEntry
from dynofa.operating_point import OperatingPoint
from service.tenancy import Owner

WINDOW = 64  # recent inferences kept per app for the measured-latency figures
#: upper bounds (s) of the latency histograms exported as Prometheus metrics: DNN inference on a board
#: runs from well under a millisecond (tiny nets) to seconds (a big net on a little core)
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25,
                     0.5, 1.0, 2.5, 5.0, 10.0)  # fmt: skip


@dataclass
class LatencyHistogram:
    """Lifetime latency counts per bucket of :data:`LATENCY_BUCKETS_S` (one increment per inference)."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_S) + 1))  # last: above all
    sum_s: float = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
        self.sum_s += seconds

    def copy(self) -> LatencyHistogram:
        return LatencyHistogram(list(self.counts), self.sum_s)

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, count of observations <= le)`` pairs ending with ``+Inf``, as Prometheus wants them."""
        out, running = [], 0
        for bound, count in zip((*map(repr, LATENCY_BUCKETS_S), "+Inf"), self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out


@dataclass
class LatencyWindow:
    """Recent inference latencies (ms) and lifetime counters of deadline hits."""

    recent: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))
    count: int = 0
    hits: int = 0  # inferences within the budget (counted only while a budget is set)
    judged: int = 0  # inferences that had a budget to be judged against

    def add(self, latency_ms: float, budget: Budget | None) -> bool | None:
        self.recent.append(latency_ms)
        self.count += 1
        if budget is None:
            return None
        hit = latency_ms <= budget.latency_ms
        self.judged += 1
        self.hits += int(hit)
        return hit

    def median(self) -> float | None:
        if not self.recent:
            return None
        ordered = sorted(self.recent)
        return ordered[len(ordered) // 2]

    def p90(self) -> float | None:
        if not self.recent:
            return None
        ordered = sorted(self.recent)
        return ordered[min(len(ordered) - 1, math.ceil(0.9 * len(ordered)) - 1)]

    def hit_rate(self) -> float | None:
        return self.hits / self.judged if self.judged else None


@dataclass
class RatioWindow:
    """Recent measured / predicted latency ratios: the daemon's prediction error for one app."""

    recent: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))

    def add(self, ratio: float) -> None:
        if ratio > 0 and math.isfinite(ratio):
            self.recent.append(ratio)

    def to_dict(self) -> dict[str, Any] | None:
        """Median and spread (10th and 90th percentiles) of the recent ratios; None before the first."""
        if not self.recent:
            return None
        ordered = sorted(self.recent)

        def q(p: float) -> float:
            return round(ordered[min(len(ordered) - 1, max(0, math.ceil(p * len(ordered)) - 1))], 4)
        return {"median": round(ordered[len(ordered) // 2], 4), "p10": q(0.1), "p90": q(0.9), "samples": len(ordered)}


@dataclass
class Embedded:
    """An embedded app's part of its record: it hosts its own pool; the daemon pushes its points to it."""

    lease_s: float  # forgotten when it has not reported for this long
    seq: int = 0  # decisions pushed so far; the app applies the highest it received
    error: str | None = None  # the last refusal (a point its pool cannot run), on either side
    refusal: str | None = None  # the daemon's last refusal, said once (not every control period)
    reports: int = 0


@dataclass
class AppRecord:
    name: str
    model: str
    budget: Budget | None = None
    point: OperatingPoint | None = None
    latency: LatencyWindow = field(default_factory=LatencyWindow)
    forward_s: LatencyHistogram = field(default_factory=LatencyHistogram)  # the pool's forward
    end_to_end_s: LatencyHistogram = field(default_factory=LatencyHistogram)  # request arrival -> result
    switches: int = 0  # subnet changes decided for this app
    qoe: float | None = None
    owner: Owner = field(default_factory=lambda: Owner(None))
    batch: int = 1  # images in the app's last inference: latency is predicted for that batch size
    registered_at: float = field(default_factory=time.time)
    last_seen: float = field(default_factory=time.monotonic)
    entries: tuple[CatalogEntry, ...] = ()  # the subnets the policy may choose for this app
    pes: tuple[str, ...] = ()  # the processing elements it may run on
    embedded: Embedded | None = None  # None: a served app (the daemon runs its inferences)

    @property
    def kind(self) -> str:
        return "served" if self.embedded is None else "embedded"

    def can_run(self, point: OperatingPoint) -> bool:
        return point.pe in self.pes and any(e.id == point.subnet for e in self.entries)

    def most_accurate(self) -> str:
        """The subnet an app without a budget gets: the most accurate it may run."""
        return max(self.entries, key=lambda e: (e.accuracy.top1 if e.accuracy else 0.0, e.macs)).id

    def accuracy_of(self, subnet: str) -> float | None:
        for entry in self.entries:
            if entry.id == subnet:
                return None if entry.accuracy is None else entry.accuracy.top1
        return None

    def to_dict(self, accuracy: float | None = None) -> dict[str, Any]:
        return {
            "app": self.name,
            "model": self.model,
            "budget": None if self.budget is None else self.budget.to_dict(),
            "operating_point": None if self.point is None else self.point.to_dict(),
            "accuracy": accuracy,
            "latency_ms": {"median": self.latency.median(), "p90": self.latency.p90(), "last": _last(self.latency)},
            "inferences": self.latency.count,
            "budgeted_inferences": self.latency.judged,
            "deadline_misses": self.latency.judged - self.latency.hits,
            "hit_rate": self.latency.hit_rate(),
            "switches": self.switches,
            "qoe": self.qoe,
            "owner": self.owner.identity,
            "batch": self.batch,
            "kind": self.kind,
            "embedded": None if self.embedded is None else {
                "lease_s": self.embedded.lease_s, "seq": self.embedded.seq, "error": self.embedded.error,
                "reports": self.embedded.reports, "subnets": [e.id for e in self.entries],
            },
        }  # fmt: skip


def _last(window: LatencyWindow) -> float | None:
    return window.recent[-1] if window.recent else None
