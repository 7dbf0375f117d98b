"""Contention: how much slower than predicted each processing element runs right now.

Two sources are combined (ALERT, USENIX ATC 2020, models the environment's slowdown
as one random variable filtered over time; we do the same per PE):

* **observations**: the ratio ``observed latency / predicted latency`` of each
  inference, filtered by a scalar Kalman filter (random-walk state, noisy measurement).
  A deadline miss bypasses the filter: the estimate jumps to the observed ratio at
  once, so the policy reacts within the next inference. Two ratios in a row far above
  the estimate (new load, before any miss), or three far below (load gone), reset it
  too; ordinary noise is smoothed. The spread of recent ratios gives the safety margin.
* **monitors**: utilisation by other processes per CPU cluster, GPU load and
  throttling (a :class:`LoadView`, built from a ``governors.monitors.Snapshot``). They
  give a prior slowdown for PEs the app is not running on (so that task mapping can
  avoid a GPU another process holds), and an early warning when the load on the
  current PE jumps before any miss.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from governors.monitors import Snapshot


@dataclass(frozen=True)
class LoadView:
    """What the policies need from a monitor snapshot; every field is optional.

    ``other_util``: per CPU cluster, the fraction of the cluster's capacity used by
    processes other than dynofa's inference (0..1). ``gpu_load``: GPU busy fraction
    from other processes (0..1). ``throttled``: PEs whose clock is capped (thermal or
    power). ``power_w``: measured board power, when the board has rails.
    """

    other_util: Mapping[str, float] = field(default_factory=dict)
    gpu_load: float | None = None
    throttled: frozenset[str] = frozenset()
    power_w: float | None = None
    energy_j: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "other_util": dict(self.other_util),
            "gpu_load": self.gpu_load,
            "throttled": sorted(self.throttled),
            "power_w": self.power_w,
            "energy_j": self.energy_j,
        }


def load_from_snapshot(snapshot: Snapshot | None) -> LoadView:
    """The policy's view of a monitor :class:`~governors.monitors.Snapshot`.

    ``cpu_util`` is other processes' load per cluster (fractions; None where unknown) and
    ``gpu_load`` is in percent; the view holds fractions.
    """
    if snapshot is None:
        return LoadView()
    return LoadView(
        other_util={name: min(1.0, max(0.0, u)) for name, u in snapshot.cpu_util.items() if u is not None},
        gpu_load=None if snapshot.gpu_load is None else min(1.0, max(0.0, snapshot.gpu_load / 100.0)),
        throttled=frozenset(snapshot.throttled),
        power_w=snapshot.power_w,
        energy_j=snapshot.energy_j,
    )


def prior_slowdown(pe: str, kind: str, cpus: int, threads: int, load: LoadView | None,
                   throttle_penalty: float = 1.2) -> float:
    """Slowdown a PE should show given the monitors alone.

    CPU cluster with ``cpus`` cores, other processes using a fraction ``u`` of it, and
    our ``threads`` runnable threads: with fair sharing each runnable thread gets
    ``cpus / (u * cpus + threads)`` of a core when that is below 1. GPU with another
    process busy a fraction ``g`` of the time: time slicing between two contexts gives
    roughly ``1 + g``. A throttled PE costs ``throttle_penalty`` more (its clock is below
    what the policy asked for). These are priors; observations override them.
    """
    if load is None:
        return 1.0
    slowdown = 1.0
    if kind == "gpu":
        if load.gpu_load is not None:
            slowdown = 1.0 + load.gpu_load
    else:
        u = load.other_util.get(pe)
        if u is not None and cpus > 0:
            slowdown = max(1.0, (u * cpus + max(1, threads)) / cpus)
    if pe in load.throttled:
        slowdown *= throttle_penalty
    return slowdown


class ScalarKalman:
    """Random-walk state ``x`` observed with noise: the filter ALERT uses for slowdown.

    ``q``: process noise variance (how fast the true slowdown drifts per step),
    ``r``: measurement noise variance (jitter of one inference's ratio).
    """

    def __init__(self, x0: float = 1.0, p0: float = 0.1, q: float = 1e-3, r: float = 1e-2) -> None:
        if q < 0 or r <= 0 or p0 < 0:
            raise ValueError(f"Kalman variances must be q >= 0, r > 0, p0 >= 0; got q={q}, r={r}, p0={p0}")
        self.x = x0
        self.p = p0
        self.q = q
        self.r = r
        self.p0 = p0

    def update(self, z: float) -> float:
        self.p += self.q
        gain = self.p / (self.p + self.r)
        self.x += gain * (z - self.x)
        self.p *= 1.0 - gain
        return self.x

    def reset(self, x: float) -> None:
        self.x = x
        self.p = self.p0


@dataclass
class _PeState:
    kalman: ScalarKalman
    spread: float = 0.0  # EWMA of the squared relative innovation
    noise: float = 0.0  # the same over every ratio that was not a regime change (clipped at 1): the PE's jitter
    outliers: list[float] = field(default_factory=list)  # innovations of the current run beyond the band
    observations: int = 0
    below_run: int = 0
    last_prior: float | None = None
    last_step: int = 0  # value of the estimator's step counter at the last observation
    above_run: int = 0
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=64))  # ratios since the last reset
    # The estimate came from the monitors (their load changed), not from an inference: the
    # next observation replaces it instead of being filtered against it.
    provisional: str | None = None  # "rise" or "fall": which way the monitors' load moved
    before_rise: float = 1.0  # the estimate a provisional rise replaced
    false_alarms: int = 0  # provisional rises in a row that the next inference did not confirm


class ContentionEstimator:
    """Per-PE slowdown estimate combining observed/predicted ratios and the monitors.

    ``jump``: ``jump_run`` consecutive ratios more than ``jump`` above the estimate reset it
    (onset of contention; a deadline miss resets it at once); ``drop_run`` consecutive
    ratios more than ``jump`` below it reset it down (contention gone). ``prior_jump``: when
    the monitors' prior for the PE rises by more than this since the last decision, the
    estimate is raised to it before any miss.
    """

    def __init__(self, q: float = 1e-4, r: float = 1e-2, jump: float = 0.25, drop_run: int = 3,
                 prior_jump: float = 0.2, spread_alpha: float = 0.03, stale_after: int = 200,
                 jump_run: int = 2, noise_k: float = 2.5) -> None:
        self.q, self.r = q, r
        self.noise_k = noise_k
        self.jump_run = jump_run
        self.stale_after = stale_after
        self._step = 0
        self.jump = jump
        self.drop_run = drop_run
        self.prior_jump = prior_jump
        self.spread_alpha = spread_alpha
        self._pes: dict[str, _PeState] = {}

    def _state(self, pe: str) -> _PeState:
        state = self._pes.get(pe)
        if state is None:
            state = _PeState(ScalarKalman(q=self.q, r=self.r))
            self._pes[pe] = state
        return state

    def observe(self, pe: str, observed_ms: float, predicted_ms: float, missed: bool = False) -> float:
        """Fold one inference in; returns the new estimate. ``missed``: the deadline was missed."""
        if not (observed_ms > 0 and predicted_ms > 0):
            return self.slowdown_observed(pe) or 1.0
        z = observed_ms / predicted_ms
        state = self._state(pe)
        k = state.kalman
        self._step += 1
        if state.observations and self._step - state.last_step > self.stale_after:
            state.observations = 0  # what we knew about this PE is too old to trust
        state.last_step = self._step
        jitter = max(-1.0, min(1.0, (z - k.x) / k.x))  # this ratio's distance from the estimate
        if state.provisional == "rise":
            # did the inference see the load the monitors saw? If not (monitor noise), trust
            # their rises less: the next one must be twice as large (see slowdown)
            confirmed = abs(z - state.before_rise) > self.jump * state.before_rise
            state.false_alarms = 0 if confirmed else min(1, state.false_alarms + 1)
            self._reset(state, z)
        elif state.observations == 0 or state.provisional:
            self._reset(state, z)
        elif missed and z > k.x:
            self._reset(state, z)  # react within the next inference: no filtering on a miss
        elif z > k.x * (1.0 + self._band(state)):
            state.above_run += 1  # one fast-enough spike may be noise; two in a row is new load
            state.below_run = 0
            if state.above_run >= self.jump_run:
                self._reset(state, z)
            else:
                state.recent.append(z)
                state.outliers.append(jitter)
        elif z < k.x * (1.0 - min(0.5, self._band(state))):
            state.above_run = 0
            state.below_run += 1
            if state.below_run >= self.drop_run:
                self._reset(state, z)
            else:  # hold the estimate; one or two fast frames may be outliers
                state.outliers.append(jitter)
        else:
            state.below_run = 0
            state.above_run = 0
            state.recent.append(z)
            innovation = (z - k.x) / k.x
            state.spread = (1 - self.spread_alpha) * state.spread + self.spread_alpha * innovation * innovation
            # the run beyond the band ended without a change: those ratios were the PE's jitter
            for j in (*state.outliers, jitter):
                state.noise = (1 - self.spread_alpha) * state.noise + self.spread_alpha * j * j
            state.outliers.clear()
            k.update(z)
        state.observations += 1
        return k.x

    def _band(self, state: _PeState) -> float:
        """How far a ratio must be from the estimate to count as a change, not noise: ``jump``, or
        ``noise_k`` standard deviations of the PE's own jitter where that is wider (a VM's host, a
        board's idle states: at batch 1 one forward's ratio spreads +-30 % there, and a threshold
        inside that made the estimate jump to single outliers)."""
        return max(self.jump, self.noise_k * math.sqrt(state.noise))

    @staticmethod
    def _reset(state: _PeState, z: float) -> None:
        state.kalman.reset(z)
        state.provisional = None
        state.below_run = state.above_run = 0
        state.outliers.clear()
        state.recent.clear()
        state.recent.append(z)

    def ratio_quantile(self, pe: str, q: float, min_samples: int = 12) -> float | None:
        """The ``q`` quantile of recent observed/predicted ratios on ``pe`` (since the last regime
        change), relative to the current estimate; None until ``min_samples`` were seen."""
        state = self._pes.get(pe)
        if state is None or len(state.recent) < min_samples or state.kalman.x <= 0:
            return None
        ordered = sorted(state.recent)
        idx = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
        return ordered[idx] / state.kalman.x

    def slowdown_observed(self, pe: str) -> float | None:
        state = self._pes.get(pe)
        if state is None or state.observations == 0:
            return None
        return state.kalman.x

    def relative_sd(self, pe: str) -> float:
        """Standard deviation of one inference's ratio around the estimate, relative to it."""
        state = self._pes.get(pe)
        return math.sqrt(state.spread) if state is not None else 0.0

    def slowdown(self, pe: str, prior: float = 1.0) -> float:
        """The estimate to plan with: observed if the PE was observed recently, else the monitors' prior.

        When the prior has jumped since the previous call (monitors see new load on this
        PE), the estimate is raised to it at once instead of waiting for a miss; when it has
        fallen as much (the other load left), the estimate is kept. Either way it is then
        *provisional* (:meth:`provisional`): the next inference's ratio replaces it, so the
        policy follows the new regime after one inference instead of after ``jump_run`` or
        ``drop_run`` filtered ones. Only a prior that also differs from the estimate by
        ``prior_jump`` counts, and after a rise that the next inference did not confirm
        (noisy monitors) a rise must be twice as large until one is confirmed.
        """
        state = self._state(pe)
        last = state.last_prior
        state.last_prior = prior
        if state.observations == 0 or self._step - state.last_step > self.stale_after:
            return prior  # never observed, or not for a long time (the app moved away)
        rise = self.prior_jump * 2 ** state.false_alarms
        if last is not None and prior > last * (1.0 + rise) and prior > state.kalman.x * (1.0 + self.prior_jump):
            state.before_rise = state.kalman.x
            state.kalman.reset(prior)
            state.recent.clear()  # a new regime: the old spread says nothing about it
            state.provisional = "rise"
        elif (last is not None and prior * (1.0 + self.prior_jump) < last
              and state.kalman.x > prior * (1.0 + self.prior_jump)):
            state.provisional = "fall"
        return state.kalman.x

    def provisional(self, pe: str) -> str | None:
        """``"rise"`` or ``"fall"`` while ``pe``'s estimate stands for a load change the monitors saw and no
        inference has measured yet (the estimate is then the monitors' prior, or the old one), else None."""
        state = self._pes.get(pe)
        return None if state is None else state.provisional

    def forget(self, pe: str) -> None:
        self._pes.pop(pe, None)

    def to_dict(self) -> dict[str, Any]:
        return {
            pe: {"slowdown": round(s.kalman.x, 4), "variance": s.kalman.p, "relative_sd": round(math.sqrt(s.spread), 4),
                 "observations": s.observations}
            for pe, s in sorted(self._pes.items())
        }
