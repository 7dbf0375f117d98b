"""``model-based`` (the default): predictive choice of subnet, PE and frequencies, reacting to misses.

Predicted latency of a subnet on a PE at a frequency = catalog figure x frequency
regression (:mod:`governors.latency_model`) x the PE's contention slowdown
(:mod:`governors.contention`). An app gets the most accurate subnet whose predicted
latency x safety margin meets its deadline, on the PE where that is cheapest, at the
lowest-energy frequencies that still meet it (:mod:`governors.policies.search`).

* **Safety margin**: the ``quantile`` (0.999) of the recent observed/predicted ratios on
  the app's PE relative to the estimate, never below its normal approximation
  ``1 + z * sd`` (a few dozen ratios cannot show a 99.9th percentile) with ``sd`` the
  widest of the PEs the app may run on (a move to another PE is planned with that PE's
  jitter covered), clamped to ``[min_margin, max_margin]``: sized for about one inference
  in a thousand to miss.
* **Reaction**: a deadline miss resets the PE's slowdown to the observed ratio (no
  filtering), and the next ``decide`` drops to what fits: one inference.
* **Onset**: when the monitors see other processes' load rise on a PE, the estimate is
  raised to their prior before any inference slowed down, and is provisional: the first
  inference there is planned with ``max_margin`` at the PE's top clock (the prior is a
  guess), the next one on its measured ratio, adopted at once. Load that leaves makes the
  estimate provisional as well: one inference's ratio replaces it (on a PE none of the
  apps runs on, the monitors' prior stands for it meanwhile). A rise the next
  inference does not confirm makes the monitors' next rise count only when twice as large
  (:class:`~governors.contention.ContentionEstimator`), so noisy readings do not make it flap.
* ``dvfs=False`` keeps every clock at the top of its ladder (subnet and mapping choice
  under the Linux ``performance`` governor): the baseline that isolates what DVFS saves.
* **Hysteresis**: moving to a more accurate or cheaper point (an upgrade) needs the new
  point to fit with ``up_margin`` more headroom, and to have been the proposal for
  ``hold`` consecutive decisions; moving down (the current point misses a deadline or
  the power cap that the new one keeps) is immediate. A budget whose latency and
  ``min_accuracy`` cannot both be met is held at the point its objective's rule gives
  (:mod:`governors.policies.search`): gaining back the yielded constraint is an upgrade.
  Noise around a boundary therefore does not make it oscillate. A step up that fails
  (a step down within ``probation`` decisions) doubles the hold before that same step
  up is tried again (up to ``2 ** max_backoff``); one that holds clears its record.
"""

from __future__ import annotations

from dataclasses import replace
from statistics import NormalDist
from typing import Any

from dynofa.catalog import CatalogEntry
from dynofa.operating_point import OperatingPoint
from governors.contention import ContentionEstimator, prior_slowdown
from governors.latency_model import LatencyModel
from governors.policies.base import AppRequest, Decision, DecisionInput, PeInfo, Policy, PolicyError
from governors.policies.search import Plan, Predictor, evaluate, overshoot, plan, plan_key, to_decision
from governors.power_model import PowerModel


class ModelBasedPolicy(Policy):
    name = "model-based"

    def __init__(self, latency_model: LatencyModel | None = None, power_model: PowerModel | None = None,
                 min_margin: float = 1.05, up_margin: float = 1.02, hold: int = 5,
                 estimator: ContentionEstimator | None = None, use_monitors: bool = True,
                 max_margin: float = 1.5, dvfs: bool = True, quantile: float = 0.999,
                 probation: int = 30, max_backoff: int = 4) -> None:
        if not 0.5 < quantile < 1.0:
            raise PolicyError(f"quantile must be in (0.5, 1), got {quantile}")
        if min_margin < 1.0 or up_margin < 1.0 or hold < 0:
            raise PolicyError(f"need min_margin >= 1, up_margin >= 1, hold >= 0; got {min_margin}, {up_margin}, {hold}")
        self.latency_model = latency_model or LatencyModel()
        self._fixed_power = power_model
        self.power_model = power_model
        self.min_margin = min_margin
        self.up_margin = up_margin
        self.max_margin = max_margin
        self.hold = hold
        self.use_monitors = use_monitors
        self.dvfs = dvfs
        self.quantile = quantile
        self._z = NormalDist().inv_cdf(quantile)
        self.probation = probation
        self.max_backoff = max_backoff
        self.estimator = estimator or ContentionEstimator()
        self.reset()

    def reset(self) -> None:
        self.estimator = ContentionEstimator(
            q=self.estimator.q, r=self.estimator.r, jump=self.estimator.jump, drop_run=self.estimator.drop_run,
            prior_jump=self.estimator.prior_jump, spread_alpha=self.estimator.spread_alpha,
            stale_after=self.estimator.stale_after, jump_run=self.estimator.jump_run)
        self.power_model = self._fixed_power
        self._current: Plan | None = None
        self._signature: object = None
        self._pending: tuple[object, int] | None = None
        self._inp: DecisionInput | None = None
        self._points: dict[str, OperatingPoint] = {}
        self._switches = 0
        self._urgent = False
        self._onset = False
        self._decisions = 0
        self._last_upgrade: tuple[object, int] | None = None  # (plan key, decision index)
        self._last_margins: dict[str, float] = {}  # the safety margin per app the last decision planned with
        self._failures: dict[object, int] = {}  # step ups that failed within probation, per target

    def needs_decision(self) -> bool:
        return self._urgent

    def forget(self, app: str) -> None:
        self._points.pop(app, None)  # the app set changed: the next decision's signature re-plans the rest

    # -- prediction -------------------------------------------------------------------
    def nominal_ms(self, entry: CatalogEntry, pe: PeInfo, freq: int | None, batch: int = 1) -> float | None:
        """Latency without contention: catalog (at the app's batch size) x frequency regression."""
        return self.latency_model.predict_ms(entry, pe.name, pe.kind, pe.khz(freq), pe.top_khz, batch)

    def _predictor(self, inp: DecisionInput) -> Predictor:
        slow = {}
        in_use = {point.pe for point in self._points.values()}
        for pe in inp.pes:
            # our runnable threads on this PE: what the app would run there (the catalog's figure)
            threads = max((e.latency[pe.name].threads for a in inp.apps for e in a.entries if pe.name in e.latency),
                          default=1)
            prior = prior_slowdown(pe.name, pe.kind, pe.cpus, threads, inp.load) if self.use_monitors else 1.0
            slow[pe.name] = self.estimator.slowdown(pe.name, prior)
            if pe.name not in in_use and self.estimator.provisional(pe.name) == "fall":
                # the load left a PE none of our apps runs on: no inference will measure it there, so the
                # estimate from before would stay (until stale) and keep apps away; plan with the monitors'
                # prior (the first inference of an app moved there measures it)
                slow[pe.name] = prior

        def predict(app: AppRequest, entry: CatalogEntry, pe: PeInfo, freq: int | None) -> float | None:
            t = self.nominal_ms(entry, pe, freq, app.batch)
            return None if t is None else t * slow[pe.name]
        return predict

    def _margins(self, inp: DecisionInput) -> dict[str, float]:
        out = {}
        for app in inp.apps:
            point = self._points.get(app.name)
            if point is None:
                out[app.name] = self.min_margin
                continue
            if self.estimator.provisional(point.pe) == "rise":
                # the monitors saw the load change and the estimate is their guess: plan the
                # first inference of the new regime with the widest margin
                out[app.name] = self.max_margin
                continue
            # The quantile's tail of the ratio: a few dozen recent ratios cannot show a 99.9th
            # percentile, so the normal approximation of it is a floor under the empirical one
            # (a 98th-percentile margin missed 4-7 frames in 2100 where top clocks missed 1).
            q = self.estimator.ratio_quantile(point.pe, self.quantile)
            pes = {pe for e in app.entries for pe in e.latency} | {point.pe}
            m = max(q or 0.0, 1.0 + self._z * max(self.estimator.relative_sd(pe) for pe in pes))
            out[app.name] = min(self.max_margin, max(self.min_margin, m))
        return out

    def _power(self, inp: DecisionInput) -> PowerModel:
        if self.power_model is None or self.power_model.board != inp.board:
            self.power_model = PowerModel.for_board(inp.board, [(p.name, p.kind, p.top_khz) for p in inp.pes])
        for p in inp.pes:  # PEs the board table does not cover get the generic model
            if p.name not in self.power_model.pes:
                self.power_model.pes.update(PowerModel.for_board("", [(p.name, p.kind, p.top_khz)]).pes)
        return self.power_model

    # -- the decision -----------------------------------------------------------------
    def decide(self, inp: DecisionInput) -> Decision:
        if not self.dvfs:  # every clock at the top of its ladder: the Linux `performance` governor
            inp = replace(inp, pes=tuple(replace(p, freqs=p.freqs[-1:]) for p in inp.pes))
        power = self._power(inp)
        predict = self._predictor(inp)
        margins = self._margins(inp)
        self._last_margins = dict(margins)
        onset = self._onset_clocks(inp)
        best = plan(onset, predict, margins, power)
        if best is None:
            missing = [a.name for a in inp.apps
                       if not any(pe.name in e.latency for e in a.entries for pe in inp.pes)]
            raise PolicyError(f"no catalog latency for app(s) {', '.join(missing) or '?'} on any PE of this "
                              f"platform ({', '.join(p.name for p in inp.pes)}); rebuild or reprofile the catalog")
        signature = (tuple((a.name, a.budget, tuple(e.id for e in a.entries)) for a in inp.apps),
                     tuple((p.name, p.freqs) for p in inp.pes))
        notes: list[str] = []
        chosen = best
        # After an onset's top-clock frame the new regime is measured: the point the planner
        # now gives is adopted at once (that frame was a precaution, not a point to hold).
        if self._current is not None and signature == self._signature and not self._onset:
            current = evaluate(inp, self._current.assignment(), self._current.freqs, predict, margins, power)
            chosen, note = self._hysteresis(inp, current, best, predict, margins, power)
            if note:
                notes.append(note)
        else:
            self._pending = None
        self._signature = signature
        self._onset = onset is not inp
        self._urgent = False
        self._decisions += 1
        if self._last_upgrade is not None and self._decisions - self._last_upgrade[1] > self.probation:
            self._failures.pop(self._last_upgrade[0], None)  # it held: forget its past failures
            self._last_upgrade = None
        self._adopt(chosen)
        self._inp = inp
        self._measured_power(inp, chosen, power)
        decision = to_decision(chosen, inp, power, notes)
        self._with_nominal(decision, inp)
        self._points = dict(decision.points)
        return decision

    def _onset_clocks(self, inp: DecisionInput) -> DecisionInput:
        """``inp`` with the top clock only on PEs where the monitors just saw new load (a provisional rise).

        The slowdown there is the monitors' guess until one inference has measured it, and
        the guess can be low (another GPU context may cost more than its busy share): the
        first inference of the new regime runs at the top clock, down-clocking waits for a
        measurement. Costs one frame's extra energy per onset, saves the onset miss.
        """
        if not any(self.estimator.provisional(p.name) == "rise" for p in inp.pes):
            return inp
        return replace(inp, pes=tuple(replace(p, freqs=p.freqs[-1:]) if self.estimator.provisional(p.name) == "rise"
                                      else p for p in inp.pes))

    def _with_nominal(self, decision: Decision, inp: DecisionInput) -> None:
        """Add each outcome's contention-free prediction (what the prediction error is judged against)."""
        for app in inp.apps:
            outcome, point = decision.outcomes.get(app.name), decision.points.get(app.name)
            if outcome is None or point is None:
                continue
            entry = next(e for e in app.entries if e.id == point.subnet)
            pe = inp.pe(point.pe)
            freq = point.gpu_freq_hz if pe.kind == "gpu" else point.cpu_freq_khz.get(pe.name)
            decision.outcomes[app.name] = replace(outcome, nominal_ms=self.nominal_ms(entry, pe, freq, app.batch))

    def _hysteresis(self, inp: DecisionInput, current: Plan | None, best: Plan, predict: Predictor,
                    margins: dict[str, float], power: PowerModel) -> tuple[Plan, str]:
        if current is None:
            self._pending = None
            return best, "current point no longer valid"
        if best.same_as(current):
            self._pending = None
            return current, ""
        if self._step_down(current, best):
            self._pending = None
            if self._last_upgrade is not None and self._decisions - self._last_upgrade[1] <= self.probation:
                failed = self._last_upgrade[0]  # the step up did not hold: wait longer before retrying it
                self._failures[failed] = min(self.max_backoff, self._failures.get(failed, 0) + 1)
            self._last_upgrade = None
            return best, "step down: current point no longer meets the budget"
        if plan_key(best) <= plan_key(current):
            self._pending = None
            return current, ""
        # Step up only once the spread of the current regime is known: until a dozen ratios were
        # seen since the last change, plan the upgrade with the largest margin.
        up = {}
        for a, m in margins.items():
            point = self._points.get(a)
            known = point is not None and self.estimator.ratio_quantile(point.pe, self.quantile) is not None
            up[a] = (m if known else self.max_margin) * self.up_margin
        check = evaluate(inp, best.assignment(), best.freqs, predict, up, power)
        if check is None or any(not c.meets_latency for c in check.choices.values()):
            # the best point lacks the upgrade's headroom: the best one that has it may still
            # beat the current one (a smaller step down in frequency, a less accurate subnet)
            roomy = self._upgrade_with_headroom(inp, current, predict, margins, up, power)
            if roomy is None:
                self._pending = None
                return current, ""
            best = roomy
        key = (tuple(sorted(best.assignment().items())), tuple(sorted(best.freqs.items())))
        count = self._pending[1] + 1 if self._pending is not None and self._pending[0] == key else 1
        hold = self.hold * 2 ** self._failures.get(key, 0)
        if count > hold:
            self._pending = None
            self._last_upgrade = (key, self._decisions)
            return best, f"step up after {hold} stable decisions"
        self._pending = (key, count)
        return current, ""

    def _upgrade_with_headroom(self, inp: DecisionInput, current: Plan, predict: Predictor,
                               margins: dict[str, float], up: dict[str, float], power: PowerModel) -> Plan | None:
        """The best plan that fits with the upgrade margins ``up``, judged at ``margins``, if it beats ``current``."""
        roomy = plan(inp, predict, up, power)
        if roomy is None or roomy.same_as(current) or any(not c.meets_latency for c in roomy.choices.values()):
            return None
        target = evaluate(inp, roomy.assignment(), roomy.freqs, predict, margins, power)
        if target is None or plan_key(target) <= plan_key(current):
            return None
        return target

    def _step_down(self, current: Plan, best: Plan) -> bool:
        """Whether to leave ``current`` at once (no hold): the one rule that keeps infeasible budgets stable.

        Only a deadline or power cap that the current plan breaks and the best one keeps
        (fewer apps missing, priority level by priority level) moves at once, or, when both
        miss the same apps, a best effort that overshoots clearly less (by more than
        ``up_margin``). Everything else, such as an accuracy floor that seems to fit again,
        is an upgrade: it waits ``hold`` decisions and must fit with the larger margin, so a
        budget whose floor and latency cannot both be met holds one point instead of
        flipping between "meets the floor" and "meets the latency" with the noise.
        """
        if not current.cap_ok and best.cap_ok:
            return True
        cur, new = _misses(current), _misses(best)
        if new != cur:
            return new < cur
        if not any(cur):
            return False
        return overshoot(list(best.choices.values())) * self.up_margin < overshoot(list(current.choices.values()))

    def _adopt(self, chosen: Plan) -> None:
        if self._current is None or not chosen.same_as(self._current):
            self._switches += 1
        self._current = chosen

    def _measured_power(self, inp: DecisionInput, chosen: Plan, power: PowerModel) -> None:
        if inp.load is not None and inp.load.power_w is not None and chosen.power_w > 0:
            power.calibrate(inp.load.power_w, chosen.power_w)

    # -- feedback ---------------------------------------------------------------------
    def observe(self, app: str, latency_ms: float, point: OperatingPoint | None = None) -> None:
        point = point or self._points.get(app)
        inp = self._inp
        if point is None or inp is None or not latency_ms > 0:
            return
        request = next((a for a in inp.apps if a.name == app), None)
        pe = next((p for p in inp.pes if p.name == point.pe), None)
        if request is None or pe is None:
            return
        entry = next((e for e in request.entries if e.id == point.subnet), None)
        if entry is None:
            return
        freq = point.gpu_freq_hz if pe.kind == "gpu" else point.cpu_freq_khz.get(pe.name)
        nominal = self.nominal_ms(entry, pe, freq, request.batch)
        if nominal is None:
            return
        missed = latency_ms > request.budget.latency_ms
        self.estimator.observe(pe.name, latency_ms, nominal, missed=missed)
        if missed:
            self._urgent = True

    @property
    def switches(self) -> int:
        return self._switches

    def state(self) -> dict[str, Any]:
        return {
            "contention": self.estimator.to_dict(),
            "latency_model": self.latency_model.to_dict(),
            "power_model": self.power_model.to_dict() if self.power_model is not None else None,
            "switches": self._switches,
            "pending_upgrade": None if self._pending is None else self._pending[1],
            "margins": {a: round(m, 4) for a, m in self._last_margins.items()},
        }


def _misses(p: Plan) -> tuple[int, ...]:
    """Apps missing their deadline per priority level, highest first (same apps in both plans compared)."""
    levels = sorted({c.app.budget.priority for c in p.choices.values()}, reverse=True)
    return tuple(sum(1 for c in p.choices.values() if c.app.budget.priority == lv and not c.meets_latency)
                 for lv in levels)
