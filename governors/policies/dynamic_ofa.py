"""``dynamic-ofa``: the published Dynamic-OFA runtime rule, reproduced as the baseline.

Dynamic-OFA (Lou, Xun et al., CVPRW 2021; code UoS-EEC/DynamicOFA,
``runtime_demo/runtime_adjustment``) keeps a ladder of subnets ("levels") sorted by
accuracy and, on one fixed processing element with no DVFS:

* records each frame's latency since the last switch; once 20 frames are recorded, if
  the mean of the last 20 exceeds the latency constraint, it steps **down** one level;
* if the current level's accuracy is below the accuracy target (and 20 frames were seen
  at this level), it steps **up** one level;
* a switch starts a fresh window (their runtime restarts the process per switch).

It never steps up for latency slack: with no accuracy target it stays at the level it
fell to. Their code also skips the first frames after a switch (process warm-up,
``warmup_frames``, default 0 here because our switches are reference swaps) and drops
frames over a fixed 90 ms as outliers of their setup; that filter is not reproduced.
The step-down check runs before the step-up check, as in their loop.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from dynofa.catalog import CatalogEntry
from dynofa.operating_point import OperatingPoint
from governors.policies.base import (
    AppOutcome,
    AppRequest,
    Decision,
    DecisionInput,
    PeInfo,
    Policy,
    PolicyError,
    accuracy_of,
)

WINDOW = 20


@dataclass
class _AppState:
    levels: list[CatalogEntry]
    pe: str
    level: int
    window: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))
    seen: int = 0  # frames since the last switch (warm-up included)
    budget_ms: float = 0.0
    target: float = 0.0
    known: frozenset[str] = frozenset()


class DynamicOfaPolicy(Policy):
    name = "dynamic-ofa"

    def __init__(self, pe: str | None = None, window: int = WINDOW, warmup_frames: int = 0,
                 start: str = "top") -> None:
        if window < 1 or warmup_frames < 0:
            raise PolicyError(f"window must be >= 1 and warmup_frames >= 0, got {window}, {warmup_frames}")
        if start not in ("top", "bottom"):
            raise PolicyError(f"start must be 'top' or 'bottom', got {start!r}")
        self.pe_option = pe
        self.window = window
        self.warmup_frames = warmup_frames
        self.start = start
        self._apps: dict[str, _AppState] = {}
        self.switches = 0

    def reset(self) -> None:
        self._apps.clear()

    def forget(self, app: str) -> None:
        self._apps.pop(app, None)
        self.switches = 0

    def _pick_pe(self, app: AppRequest, pes: tuple[PeInfo, ...]) -> str:
        names = [p.name for p in pes if any(p.name in e.latency for e in app.entries)]
        if self.pe_option is not None:
            if self.pe_option not in names:
                raise PolicyError(f"dynamic-ofa: PE {self.pe_option!r} not usable for app {app.name!r}; "
                                  f"usable: {', '.join(names) or 'none'}")
            return self.pe_option
        if not names:
            raise PolicyError(f"dynamic-ofa: app {app.name!r} has no catalog latency on any PE")
        # Their deployment runs on the GPU when there is one, else on the (fastest) CPU.
        if "gpu" in names:
            return "gpu"

        def mean_ms(pe: str) -> float:
            lats = [e.latency[pe].ms for e in app.entries if pe in e.latency]
            return sum(lats) / len(lats)
        return min(names, key=mean_ms)

    def _state(self, app: AppRequest, pes: tuple[PeInfo, ...]) -> _AppState:
        st = self._apps.get(app.name)
        if st is None or st.known != frozenset(e.id for e in app.entries):
            pe = self._pick_pe(app, pes)
            levels = sorted((e for e in app.entries if pe in e.latency),
                            key=lambda e: (accuracy_of(e), -e.latency[pe].ms))
            st = _AppState(levels=levels, pe=pe, level=len(levels) - 1 if self.start == "top" else 0,
                           window=deque(maxlen=self.window), known=frozenset(e.id for e in app.entries))
            self._apps[app.name] = st
        st.budget_ms = app.budget.latency_ms
        st.target = app.budget.min_accuracy
        return st

    def decide(self, inp: DecisionInput) -> Decision:
        points: dict[str, OperatingPoint] = {}
        outcomes: dict[str, AppOutcome] = {}
        for app in inp.apps:
            st = self._state(app, inp.pes)
            entry = st.levels[st.level]
            lat = entry.latency[st.pe]
            points[app.name] = OperatingPoint(subnet=entry.id, pe=st.pe, threads=lat.threads)
            acc = accuracy_of(entry)
            ms = lat.at_batch(app.batch)
            outcomes[app.name] = AppOutcome(
                app=app.name, subnet=entry.id, pe=st.pe, predicted_ms=ms,
                accuracy=entry.accuracy.top1 if entry.accuracy is not None else None, energy_j=None,
                meets_latency=ms <= app.budget.latency_ms, meets_accuracy=acc >= app.budget.min_accuracy,
                reason="catalog figure; dynamic-ofa does not model contention, DVFS or mapping",
            )
        for gone in set(self._apps) - {a.name for a in inp.apps}:
            del self._apps[gone]
        return Decision(points=points, outcomes=outcomes, energy_source="none")

    def observe(self, app: str, latency_ms: float, point: OperatingPoint | None = None) -> None:
        st = self._apps.get(app)
        if st is None:
            return
        st.seen += 1
        if st.seen <= self.warmup_frames:
            return
        st.window.append(latency_ms)
        full = len(st.window) == self.window
        if full and sum(st.window) / len(st.window) > st.budget_ms and st.level > 0:
            self._switch(st, st.level - 1)
        elif full and accuracy_of(st.levels[st.level]) < st.target and st.level < len(st.levels) - 1:
            self._switch(st, st.level + 1)

    def _switch(self, st: _AppState, level: int) -> None:
        st.level = level
        st.window.clear()
        st.seen = 0
        self.switches += 1

    def state(self) -> dict[str, Any]:
        return {app: {"pe": st.pe, "level": st.level, "subnet": st.levels[st.level].id,
                      "window_mean_ms": (sum(st.window) / len(st.window)) if st.window else None}
                for app, st in self._apps.items()}
