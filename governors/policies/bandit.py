"""``bandit``: QoE-driven operating-point selection by a contextual bandit (LinUCB).

After Lu et al. (QoE-optimal model selection, anchors.md item 5): device state is the
context, operating points are the arms, the app's QoE is the reward. Each app has its
own disjoint LinUCB (Li et al., WWW 2010): per arm a ridge regression ``theta_a`` of the
reward on the context ``x = [1, CPU load by others, GPU load, observed slowdown]`` and
the arm with the highest ``theta_a . x + alpha * sqrt(x' A_a^-1 x)`` is played.

* Arms: (subnet, PE, frequency) with frequencies at the top, middle and bottom quarter of
  each PE's ladder, to keep the arm count small enough to learn online.
* Priors: each arm starts from the catalog (``prior_weight`` pseudo-observations of the
  reward the catalog predicts: accuracy if its latency meets the budget, else 0, minus
  the energy term), so the bandit starts sensibly and learns from feedback.
* Reward: the QoE an app reports through :meth:`feedback` (any scale, ideally 0..1); apps
  that never report get ``accuracy x [deadline met] - energy_weight x energy / max energy``.
* A budget change starts the app's arms afresh (the reward of every arm changed).
* Stickiness: the arm in use is kept unless another's index beats it by ``stickiness``.
"""

from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dynofa.catalog import CatalogEntry
from dynofa.operating_point import OperatingPoint
from governors.latency_model import LatencyModel
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
from governors.power_model import PowerModel

DIM = 4


@dataclass
class _Arm:
    entry: CatalogEntry
    pe: PeInfo
    freq: int | None
    nominal_ms: float
    energy_j: float
    a: np.ndarray
    b: np.ndarray
    pulls: int = 0

    def theta(self) -> np.ndarray:
        return np.linalg.solve(self.a, self.b)


@dataclass
class _AppBandit:
    budget_key: object
    arms: list[_Arm]
    max_energy: float
    last: int | None = None
    last_x: np.ndarray | None = None
    explicit: bool = False
    ratios: deque[float] = field(default_factory=lambda: deque(maxlen=10))


def _ladder_sample(pe: PeInfo) -> list[int | None]:
    if not pe.freqs:
        return [None]
    n = len(pe.freqs)
    idx = sorted({n - 1, n // 2, n // 4})
    return [pe.freqs[i] for i in idx]


class BanditPolicy(Policy):
    name = "bandit"

    def __init__(self, alpha: float = 0.3, prior_weight: float = 5.0, energy_weight: float = 0.1,
                 latency_model: LatencyModel | None = None, seed: int = 0, stickiness: float = 0.02) -> None:
        if alpha < 0 or prior_weight <= 0 or energy_weight < 0:
            raise PolicyError(f"bandit: need alpha >= 0, prior_weight > 0, energy_weight >= 0; "
                              f"got {alpha}, {prior_weight}, {energy_weight}")
        self.alpha = alpha
        self.stickiness = stickiness
        self.prior_weight = prior_weight
        self.energy_weight = energy_weight
        self.latency_model = latency_model or LatencyModel()
        self._rng = random.Random(seed)
        self._apps: dict[str, _AppBandit] = {}
        self._power: PowerModel | None = None
        self._budgets: dict[str, float] = {}

    def reset(self) -> None:
        self._apps.clear()

    def forget(self, app: str) -> None:
        self._apps.pop(app, None)
        self._budgets.pop(app, None)

    def _context(self, inp: DecisionInput, st: _AppBandit | None) -> np.ndarray:
        load = inp.load
        cpu = max(load.other_util.values(), default=0.0) if load is not None else 0.0
        gpu = (load.gpu_load or 0.0) if load is not None else 0.0
        slow = (sum(st.ratios) / len(st.ratios) - 1.0) if st is not None and st.ratios else 0.0
        return np.array([1.0, cpu, gpu, max(0.0, slow)])

    def _build(self, app: AppRequest, inp: DecisionInput, power: PowerModel) -> _AppBandit:
        raw: list[tuple[CatalogEntry, PeInfo, int | None, float, float]] = []
        for pe in inp.pes:
            for entry in app.entries:
                for f in _ladder_sample(pe):
                    t = self.latency_model.predict_ms(entry, pe.name, pe.kind, pe.khz(f), pe.top_khz, app.batch)
                    if t is not None:
                        e = power.frame_energy(pe.name, pe.khz(f), t, app.period).joules
                        raw.append((entry, pe, f, t, e))
        if not raw:
            raise PolicyError(f"bandit: app {app.name!r} has no catalog latency on any PE")
        max_e = max(r[4] for r in raw) or 1.0
        arms = []
        for entry, pe, f, t, e in raw:
            prior = (accuracy_of(entry) if t <= app.budget.latency_ms else 0.0) - self.energy_weight * e / max_e
            a = self.prior_weight * np.eye(DIM)
            b = np.zeros(DIM)
            b[0] = self.prior_weight * prior
            arms.append(_Arm(entry, pe, f, t, e, a, b))
        return _AppBandit(budget_key=(app.budget, tuple(x.id for x in app.entries)), arms=arms, max_energy=max_e)

    def decide(self, inp: DecisionInput) -> Decision:
        if self._power is None or self._power.board != inp.board:
            self._power = PowerModel.for_board(inp.board, [(p.name, p.kind, p.top_khz) for p in inp.pes])
        chosen: dict[str, _Arm] = {}
        for app in inp.apps:
            st = self._apps.get(app.name)
            key = (app.budget, tuple(x.id for x in app.entries))
            if st is None or st.budget_key != key:
                st = self._build(app, inp, self._power)
                self._apps[app.name] = st
            x = self._context(inp, st)
            best_i, best_v = 0, -math.inf
            values = []
            for i, arm in enumerate(st.arms):
                a_inv = np.linalg.inv(arm.a)
                v = float(arm.theta() @ x + self.alpha * math.sqrt(float(x @ a_inv @ x)))
                v += self._rng.random() * 1e-9  # break exact ties at random
                values.append(v)
                if v > best_v:
                    best_i, best_v = i, v
            # stickiness: keep the arm in use unless another one is clearly better (no flapping
            # between near-equal arms as the confidence bonuses shrink in turn)
            if st.last is not None and values[st.last] >= best_v - self.stickiness:
                best_i = st.last
            st.last, st.last_x = best_i, x
            self._budgets[app.name] = app.budget.latency_ms
            chosen[app.name] = st.arms[best_i]
        # DVFS is per cluster: the frequency must suit every app on it.
        top: dict[str, int] = {}
        for arm in chosen.values():
            if arm.freq is not None:
                top[arm.pe.name] = max(top.get(arm.pe.name, 0), arm.freq)
        cpu = {pe: f for pe, f in top.items() if inp.pe(pe).kind == "cpu"}
        gpu = next((f for pe, f in top.items() if inp.pe(pe).kind == "gpu"), None)
        points, outcomes = {}, {}
        for app in inp.apps:
            arm = chosen[app.name]
            points[app.name] = OperatingPoint(subnet=arm.entry.id, pe=arm.pe.name, cpu_freq_khz=dict(cpu),
                                              gpu_freq_hz=gpu, threads=arm.entry.latency[arm.pe.name].threads)
            outcomes[app.name] = AppOutcome(
                app=app.name, subnet=arm.entry.id, pe=arm.pe.name, predicted_ms=arm.nominal_ms,
                accuracy=arm.entry.accuracy.top1 if arm.entry.accuracy is not None else None,
                energy_j=arm.energy_j, meets_latency=arm.nominal_ms <= app.budget.latency_ms,
                meets_accuracy=accuracy_of(arm.entry) >= app.budget.min_accuracy,
                reason="bandit arm (catalog prediction; learned from QoE)",
            )
        for gone in set(self._apps) - {a.name for a in inp.apps}:
            del self._apps[gone]
        return Decision(points=points, outcomes=outcomes, energy_source=self._power.source)

    def _update(self, st: _AppBandit, reward: float) -> None:
        if st.last is None or st.last_x is None:
            return
        arm = st.arms[st.last]
        x = st.last_x
        arm.a += np.outer(x, x)
        arm.b += reward * x
        arm.pulls += 1

    def observe(self, app: str, latency_ms: float, point: OperatingPoint | None = None) -> None:
        st = self._apps.get(app)
        if st is None or st.last is None:
            return
        arm = st.arms[st.last]
        if arm.nominal_ms > 0:
            st.ratios.append(latency_ms / arm.nominal_ms)
        if st.explicit:
            return
        hit = latency_ms <= self._budgets.get(app, math.inf)
        reward = (accuracy_of(arm.entry) if hit else 0.0) - self.energy_weight * arm.energy_j / st.max_energy
        self._update(st, reward)

    def feedback(self, app: str, qoe: float) -> None:
        st = self._apps.get(app)
        if st is None or not math.isfinite(qoe):
            return
        st.explicit = True
        self._update(st, float(qoe))

    def state(self) -> dict[str, Any]:
        return {app: {"arms": len(st.arms), "last": None if st.last is None else st.arms[st.last].entry.id,
                      "explicit_qoe": st.explicit} for app, st in self._apps.items()}
