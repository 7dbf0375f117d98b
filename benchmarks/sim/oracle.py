"""The oracle of the simulated SoC: a lower bound by construction (evaluation only, not a daemon policy).

It knows, for every frame of a trace, the true latency of every subnet on every PE at
every ladder frequency (the phase's slowdown and that frame's jitter included: the draw is
a function of frame and app, :meth:`~benchmarks.sim.soc.SimulatedSoC.jitter`) and the true
power, and searches exhaustively, every frame, over every mapping of apps to PEs (several
apps on one PE included: they share it as the simulator models, one clock, forwards in
serving order) and, per PE, over its frequencies x the subnets of each app on it. Its
energy is priced as the simulator prices it (:func:`~benchmarks.sim.soc.pe_frame_energy_j`,
the counted PEs left idle included). Two questions:

* :func:`objective_run` - each app's best point by its budget's own objective, frame by
  frame: ``accuracy`` ranks (deadline missed, floor missed, -accuracy, energy), ``energy``
  ranks (floor missed, deadline missed, energy), the same rule that decides what yields
  in the planner (:mod:`governors.policies.search`), summed over the apps of the frame.
  Frame by frame no policy whose apps have those objectives can rank better on the same
  trace (its points were candidates).
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

from benchmarks.sim.soc import FrameRecord, Phase, RunResult, SimApp, SimulatedSoC, pe_frame_energy_j, starved
from dynofa.budget import Budget
from dynofa.catalog import CatalogEntry
from governors.policies.base import AppRequest, PeInfo, accuracy_of
from governors.policies.search import serving_order


@dataclass(frozen=True)
class _Options:
    """One app's candidates on one PE in one phase: arrays over (frequency, entry)."""

    pe: PeInfo
    entries: tuple[CatalogEntry, ...]
    expected_ms: np.ndarray  # (freqs, entries), without the frame's jitter
    accuracy: np.ndarray  # (entries,)

    @property
    def freqs(self) -> tuple[int | None, ...]:
        return self.pe.freqs or (None,)


def _options(soc: SimulatedSoC, app: SimApp, phase: Phase) -> dict[str, _Options]:
    out = {}
    for pe in soc.board.pes:
        entries = tuple(e for e in app.entries if pe.name in e.latency)
        if not entries:
            continue
        t = np.array([[soc.expected_ms(e, pe, f, phase) or np.inf for e in entries] for f in pe.freqs or (None,)])
        out[pe.name] = _Options(pe, entries, t, np.array([accuracy_of(e) for e in entries]))
    return out


#: (frame, app, its budget, accuracy and latency over its PE's grid) -> its ranking keys; energy is ranked last
KeysOf = Callable[[int, SimApp, Budget, np.ndarray, np.ndarray], list[np.ndarray]]


@dataclass(frozen=True)
class _Pick:
    cost: tuple[float, ...]  # the group's keys summed over its apps, energy last
    records: tuple[FrameRecord, ...]


@dataclass(frozen=True)
class _Frame:
    """What the search of one frame needs."""

    index: int
    phase: Phase
    apps: tuple[SimApp, ...]
    options: dict[str, dict[str, _Options]]  # app -> PE -> its options there
    keys_of: KeysOf

    @property
    def frame_ms(self) -> float:
        """The frame's length: the longest period of its apps (what the simulator prices every PE over)."""
        return max(self.phase.budget_of(a.name).latency_ms for a in self.apps)


def _grid(n_apps: int, k: int, a: np.ndarray) -> np.ndarray:
    """``a`` over (freq, entries of app k) reshaped to broadcast over (freq, entry of app 0, ..., app n-1)."""
    shape = [a.shape[0]] + [1] * n_apps
    shape[1 + k] = a.shape[-1]
    return a.reshape(shape)


def _best_on_pe(soc: SimulatedSoC, fr: _Frame, pe: PeInfo, group: Sequence[SimApp]) -> _Pick | None:
    """Every clock x every subnet of each app of ``group`` on ``pe``, served in order: the lowest summed cost."""
    n = len(group)
    opts = [fr.options[a.name][pe.name] for a in group]
    index = {a.name: k for k, a in enumerate(fr.apps)}
    budgets = [fr.phase.budget_of(a.name) for a in group]
    forwards = [_grid(n, k, o.expected_ms * soc.jitter(fr.index, index[a.name], pe.name))
                for k, (a, o) in enumerate(zip(group, opts, strict=True))]
    periods = [b.latency_ms for b in budgets]
    late = starved(forwards, periods)
    latency = [np.where(over, np.inf, t) for over, t in zip(late, itertools.accumulate(forwards), strict=True)]
    power = soc.truth_power
    freqs = opts[0].freqs
    active = _grid(n, 0, np.array([[power.active_w(pe.name, pe.khz(f))] for f in freqs]))
    idle = _grid(n, 0, np.array([[power.idle_w(pe.name, pe.khz(f))] for f in freqs]))
    energy = pe_frame_energy_j(active, idle, forwards, periods, fr.frame_ms)
    shape = np.broadcast_shapes(*(t.shape for t in latency))
    keys: list[np.ndarray] | None = None
    for k, (a, o, b) in enumerate(zip(group, opts, budgets, strict=True)):
        acc = _grid(n, k, o.accuracy[None, :])
        mine = [np.broadcast_to(x, shape) for x in fr.keys_of(fr.index, a, b, acc, latency[k])]
        mine.append(np.broadcast_to(energy[k], shape))
        keys = mine if keys is None else [x + y for x, y in zip(keys, mine, strict=True)]
    assert keys is not None
    flat = [k.ravel() for k in keys]
    i = int(np.lexsort(tuple(reversed(flat)))[0])
    if not np.isfinite(flat[0][i]):
        return None
    at = np.unravel_index(i, shape)
    def at_best(x: np.ndarray) -> float:
        return float(np.broadcast_to(x, shape)[at])

    records = []
    for k, (a, o, b) in enumerate(zip(group, opts, budgets, strict=True)):
        entry = o.entries[int(at[1 + k])]
        records.append(FrameRecord(
            fr.index, fr.phase.name, entry.id, pe.name, freqs[int(at[0])], at_best(latency[k]), b.latency_ms,
            at_best(energy[k]), accuracy_of(entry), app=a.name, min_accuracy=b.min_accuracy,
            forward_ms=at_best(forwards[k])))
    return _Pick(tuple(float(x[i]) for x in flat), tuple(records))


def _serving(fr: _Frame, group: Sequence[SimApp]) -> list[SimApp]:
    """``group`` in the order the PE's worker serves them (the simulator's and the planner's rule)."""
    by_name = {a.name: a for a in group}
    requests = [AppRequest(name=a.name, budget=fr.phase.budget_of(a.name), entries=a.entries) for a in group]
    return [by_name[r.name] for r in serving_order(requests)]


def _search_frame(soc: SimulatedSoC, fr: _Frame, counted_pes: Sequence[str],
                  cache: dict[tuple[str, tuple[str, ...]], _Pick | None]) -> tuple[list[FrameRecord], float]:
    """Every mapping of the frame's apps to PEs (sharing included): the lowest summed cost; its records and unused J."""
    best: tuple[tuple[float, ...], list[FrameRecord], float] | None = None
    for mapping in itertools.product(*(list(fr.options[a.name]) for a in fr.apps)):
        groups: dict[str, list[SimApp]] = {}
        for app, pe_name in zip(fr.apps, mapping, strict=True):
            groups.setdefault(pe_name, []).append(app)
        picks = []
        for pe_name, group in groups.items():
            key = (pe_name, tuple(a.name for a in group))
            if key not in cache:
                cache[key] = _best_on_pe(soc, fr, soc.board.pe(pe_name), _serving(fr, group))
            picks.append(cache[key])
        if any(p is None for p in picks):
            continue
        unused_j = soc.unused_idle_w([pe for pe in counted_pes if pe not in groups]) * fr.frame_ms / 1e3
        cost = [sum(c) for c in zip(*(p.cost for p in picks if p is not None), strict=True)]
        cost[-1] += unused_j
        if best is None or tuple(cost) < best[0]:
            records = sorted((r for p in picks if p is not None for r in p.records),
                             key=lambda r: [a.name for a in fr.apps].index(r.app))
            best = (tuple(cost), records, unused_j)
    if best is None:
        raise ValueError(f"the oracle found no mapping for frame {fr.index}")
    return best[1], best[2]


def _search(soc: SimulatedSoC, phases: Sequence[Phase], apps: Sequence[SimApp], name: str, keys_of: KeysOf,
            counted_pes: Sequence[str]) -> RunResult:
    """Every frame, the mapping, clocks and subnets with the lowest cost by ``keys_of`` (then energy)."""
    result = RunResult(policy=name, counted_pes=tuple(counted_pes))
    frame = 0
    for phase in phases:
        options = {a.name: _options(soc, a, phase) for a in apps}
        for _ in range(phase.frames):
            fr = _Frame(frame, phase, tuple(apps), options, keys_of)
            records, unused_j = _search_frame(soc, fr, counted_pes, {})
            result.records.extend(records)
            if unused_j:
                result.unused_j[frame] = unused_j
            frame += 1
    return result


def objective_run(soc: SimulatedSoC, phases: Sequence[Phase], apps: Sequence[SimApp] | None = None,
                  counted_pes: Sequence[str] = ()) -> RunResult:
    """Every frame, each app's exhaustive best by its own objective (module doc)."""
    def keys_of(frame: int, app: SimApp, budget: Budget, acc: np.ndarray, t: np.ndarray) -> list[np.ndarray]:
        late = (t > budget.latency_ms).astype(float)
        low = (acc < budget.min_accuracy).astype(float)
        if (budget.objective or "accuracy") == "energy":
            return [low, late, np.zeros(1)]
        return [late, low, -acc]

    return _search(soc, phases, _apps(soc, apps), "oracle", keys_of, counted_pes)


def dominating_run(soc: SimulatedSoC, phases: Sequence[Phase], run: RunResult,
                   apps: Sequence[SimApp] | None = None) -> RunResult:
    """Every frame, the cheapest points doing at least as well as ``run`` did for each app (module doc).

    Its energy is priced over the same counted PEs as ``run``'s.
    """
    theirs = {(r.frame, r.app): r for r in run.records}

    def keys_of(frame: int, app: SimApp, budget: Budget, acc: np.ndarray, t: np.ndarray) -> list[np.ndarray]:
        ref = theirs[(frame, app.name)]
        deadline = max(budget.latency_ms, ref.latency_ms) * (1 + 1e-12)
        ok = (t <= deadline) & (acc >= ref.accuracy - 1e-12)
        return [np.where(ok, 0.0, np.inf)]

    return _search(soc, phases, _apps(soc, apps), f"oracle-for-{run.policy}", keys_of, run.counted_pes)


def _apps(soc: SimulatedSoC, apps: Sequence[SimApp] | None) -> list[SimApp]:
    return list(apps) if apps is not None else [SimApp("app", soc.board.entries)]
