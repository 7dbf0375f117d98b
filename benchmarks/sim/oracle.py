"""The oracle of the simulated SoC: a lower bound by construction (evaluation only, not a daemon policy).

It knows, for every frame of a trace, the true latency of every subnet on every PE at
every ladder frequency (the phase's slowdown and that frame's jitter included: the draw is
a function of frame and app, :meth:`~benchmarks.sim.soc.SimulatedSoC.jitter`) and the true
power, and searches exhaustively over subnet x PE x frequency for every app and over the
mappings of apps to PEs (one app per PE, as the simulator models). Two questions:

* :func:`objective_run` - each app's best point by its budget's own objective, frame by
  frame: ``accuracy`` ranks (deadline missed, floor missed, -accuracy, energy), ``energy``
  ranks (floor missed, deadline missed, energy), the same rule that decides what yields
  in the planner (:mod:`governors.policies.search`). Frame by frame no policy whose apps
  have those objectives can rank better on the same trace (its point was a candidate).
* :func:`dominating_run` - for one policy's run, the cheapest way to do at least as well
  on every frame: each app's accuracy at least the policy's and its latency within the
  deadline or no later than the policy's. Its energy is at most the policy's on every
  frame, so ``energy_vs_oracle`` >= 1 holds by construction for any policy, a fixed
  subnet under a Linux governor included; how far above 1 is what that policy wastes.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from benchmarks.sim.soc import FrameRecord, Phase, RunResult, SimApp, SimulatedSoC
from dynofa.budget import Budget
from dynofa.catalog import CatalogEntry
from governors.policies.base import accuracy_of


@dataclass(frozen=True)
class _Options:
    """One app's candidates on one PE in one phase: arrays over (entry, frequency)."""

    pe: str
    entries: tuple[CatalogEntry, ...]
    freqs: tuple[int | None, ...]
    expected_ms: np.ndarray  # (entries, freqs), without the frame's jitter
    accuracy: np.ndarray  # (entries, 1)
    active_w: np.ndarray  # (1, freqs)
    idle_w: np.ndarray  # (1, freqs)

    def latency(self, jitter: float) -> np.ndarray:
        return self.expected_ms * jitter

    def energy_j(self, latency_ms: np.ndarray, period_ms: float) -> np.ndarray:
        # the same accounting as SimulatedSoC.frame_energy_j (PowerModel.frame_energy)
        busy = np.minimum(latency_ms, period_ms)
        idle = np.maximum(0.0, period_ms - latency_ms)
        return (self.active_w * busy + self.idle_w * idle) / 1e3


def _options(soc: SimulatedSoC, app: SimApp, phase: Phase) -> list[_Options]:
    out = []
    for pe in soc.board.pes:
        entries = tuple(e for e in app.entries if pe.name in e.latency)
        if not entries:
            continue
        freqs: tuple[int | None, ...] = pe.freqs or (None,)
        t = np.array([[soc.expected_ms(e, pe, f, phase) or np.inf for f in freqs] for e in entries])
        power = soc.truth_power
        out.append(_Options(
            pe=pe.name, entries=entries, freqs=freqs, expected_ms=t,
            accuracy=np.array([[accuracy_of(e)] for e in entries]),
            active_w=np.array([[power.active_w(pe.name, pe.khz(f)) for f in freqs]]),
            idle_w=np.array([[power.idle_w(pe.name, pe.khz(f)) for f in freqs]]),
        ))
    return out


@dataclass(frozen=True)
class _Pick:
    cost: tuple[float, ...]
    record: FrameRecord


def _best(o: _Options, cost_keys: Sequence[np.ndarray], frame: int, phase: Phase, app: str, latency: np.ndarray,
          energy: np.ndarray, budget_ms: float, min_accuracy: float) -> _Pick | None:
    """The candidate of ``o`` with the lexicographically smallest ``cost_keys`` (most significant first)."""
    keys = [np.broadcast_to(k, latency.shape).ravel() for k in cost_keys]
    order = np.lexsort(tuple(reversed(keys)))
    i = int(order[0])
    if not np.isfinite(keys[0][i]):
        return None
    e, f = divmod(i, latency.shape[1])
    entry = o.entries[e]
    record = FrameRecord(frame, phase.name, entry.id, o.pe, o.freqs[f], float(latency.ravel()[i]), budget_ms,
                         float(energy.ravel()[i]), accuracy_of(entry), app=app, min_accuracy=min_accuracy)
    return _Pick(tuple(float(k[i]) for k in keys), record)


def _combine(per_app: Sequence[dict[str, _Pick]]) -> list[FrameRecord]:
    """The injective mapping of apps to PEs with the smallest summed cost (lexicographic)."""
    best: tuple[tuple[float, ...], list[FrameRecord]] | None = None
    for mapping in itertools.product(*(list(p) for p in per_app)):
        if len(set(mapping)) != len(mapping):
            continue
        picks = [p[pe] for p, pe in zip(per_app, mapping, strict=True)]
        cost = tuple(sum(c) for c in zip(*(p.cost for p in picks), strict=True))
        if best is None or cost < best[0]:
            best = (cost, [p.record for p in picks])
    if best is None:
        raise ValueError("the oracle found no mapping of one app per PE")
    return best[1]


#: (frame, app, its budget, its candidates on one PE, their latency, their energy) -> cost keys
KeysOf = Callable[[int, SimApp, Budget, _Options, np.ndarray, np.ndarray], list[np.ndarray]]


def _search(soc: SimulatedSoC, phases: Sequence[Phase], apps: Sequence[SimApp], name: str,
            keys_of: KeysOf) -> RunResult:
    """Every frame, every app's candidates on every PE ranked by ``keys_of``, then the best mapping."""
    result = RunResult(policy=name)
    frame = 0
    for phase in phases:
        options = {a.name: _options(soc, a, phase) for a in apps}
        for _ in range(phase.frames):
            per_app = []
            for k, app in enumerate(apps):
                budget = phase.budget_of(app.name)
                picks = {}
                for o in options[app.name]:
                    t = o.latency(soc.jitter(frame, k, o.pe))
                    energy = o.energy_j(t, budget.latency_ms)
                    keys = keys_of(frame, app, budget, o, t, energy)
                    pick = _best(o, keys, frame, phase, app.name, t, energy, budget.latency_ms, budget.min_accuracy)
                    if pick is not None:
                        picks[o.pe] = pick
                per_app.append(picks)
            result.records.extend(_combine(per_app))
            frame += 1
    return result


def objective_run(soc: SimulatedSoC, phases: Sequence[Phase], apps: Sequence[SimApp] | None = None) -> RunResult:
    """Every frame, each app's exhaustive best by its own objective (module doc)."""
    def keys_of(frame: int, app: SimApp, budget: Budget, o: _Options, t: np.ndarray,
                energy: np.ndarray) -> list[np.ndarray]:
        late = (t > budget.latency_ms).astype(float)
        low = (o.accuracy < budget.min_accuracy).astype(float)
        if (budget.objective or "accuracy") == "energy":
            return [np.where(np.isfinite(t), low, np.inf), late, np.zeros(1), energy]
        return [np.where(np.isfinite(t), late, np.inf), low, -o.accuracy, energy]

    return _search(soc, phases, _apps(soc, apps), "oracle", keys_of)


def dominating_run(soc: SimulatedSoC, phases: Sequence[Phase], run: RunResult,
                   apps: Sequence[SimApp] | None = None) -> RunResult:
    """Every frame, the cheapest points doing at least as well as ``run`` did for each app (module doc)."""
    theirs = {(r.frame, r.app): r for r in run.records}

    def keys_of(frame: int, app: SimApp, budget: Budget, o: _Options, t: np.ndarray,
                energy: np.ndarray) -> list[np.ndarray]:
        ref = theirs[(frame, app.name)]
        deadline = max(budget.latency_ms, ref.latency_ms) * (1 + 1e-12)
        ok = (t <= deadline) & (o.accuracy >= ref.accuracy - 1e-12)
        return [np.where(ok, 0.0, np.inf), energy]

    return _search(soc, phases, _apps(soc, apps), f"oracle-for-{run.policy}", keys_of)


def _apps(soc: SimulatedSoC, apps: Sequence[SimApp] | None) -> list[SimApp]:
    return list(apps) if apps is not None else [SimApp("app", soc.board.entries)]
