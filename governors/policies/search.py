"""The planner shared by ``model-based`` and ``oracle``: subnets x mapping x DVFS for several apps.

Given a latency predictor (catalog x frequency regression x contention slowdown, or the
truth for the oracle), a safety margin per app and a power model, it chooses for every
app a subnet and a PE, and for every PE that hosts an app a frequency:

1. every mapping of apps to PEs is tried (apps x PEs is small on an SoC);
2. on each PE, at each ladder frequency, apps are served in priority order, as the
   daemon's one inference worker per device serves them: one forward after the other,
   never two at once, whatever the PE's core count. A frame that reaches several apps
   completes, for each, after the forwards of the apps served before it (:class:`Queue`).
   A subnet *fits* when those forwards plus its own, each predicted latency x its app's
   margin, meet the app's deadline, and the worker is not busy more than all of its time
   (:func:`fits`, the one budget test used by the planner and by :func:`evaluate`, the
   hysteresis re-check). An app's choice must leave the apps after it the budgets its
   fastest subnet would leave them (:func:`_room`; step 4 ranks every level's budgets
   before any accuracy). Within that, each app chooses by its budget's objective:

   * ``accuracy``: the most accurate fitting subnet that meets ``min_accuracy`` (else the
     most accurate fitting one: **the floor yields**); none fits: the fastest (best effort);
   * ``energy``: the fastest (so, at this frequency, the cheapest) fitting subnet that
     meets ``min_accuracy``; none does: the fastest subnet that meets the floor (**the
     latency yields**: an app that minimises energy at an accuracy floor keeps its floor);
     no subnet meets the floor at all: as ``accuracy``;

   an app that cannot get both is reported infeasible;
3. per PE, the frequency kept is the lowest-energy one that reaches the best outcome the
   PE can give its apps (so DVFS is per cluster and high enough for every app on it,
   whatever each app's objective);
4. mappings are ranked by: power cap respected; then, priority level by priority level
   (highest first), how many budgets are met (the constraint an app's objective keeps
   counting first); then the accuracy of the ``accuracy`` apps; then lowest power (the
   ``energy`` apps' objective). Task mapping thus moves an app to another PE when that is
   as good and cheaper.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from dynofa.catalog import CatalogEntry
from dynofa.operating_point import OperatingPoint
from governors.policies.base import AppOutcome, AppRequest, Decision, DecisionInput, PeInfo, accuracy_of
from governors.power_model import PowerModel

#: (app, entry, pe, ladder frequency or None) -> expected latency in ms, or None if the
#: entry cannot run on that PE.
Predictor = Callable[[AppRequest, CatalogEntry, PeInfo, "int | None"], "float | None"]

#: More mappings than this are not enumerated: apps are then placed greedily by priority.
MAX_MAPPINGS = 4096


@dataclass(frozen=True)
class Choice:
    app: AppRequest
    entry: CatalogEntry
    pe: PeInfo
    freq: int | None
    predicted_ms: float  # expected latency (no margin)
    meets_latency: bool
    meets_accuracy: bool
    margin: float = 1.0  # the safety margin the app was planned with
    wait_ms: float = 0.0  # the forwards (x their margins) served before this app's on its PE
    busy: float = 0.0  # the fraction of the worker's time those forwards take

    @property
    def status(self) -> int:
        return _status(self.app, self.meets_latency, self.meets_accuracy)


def _status(app: AppRequest, meets_latency: bool, meets_accuracy: bool) -> int:
    """Budget constraints met, the one the app's objective keeps (see the module doc) weighing most."""
    if app.objective == "energy":
        return 2 * int(meets_accuracy) + int(meets_latency)
    return 2 * int(meets_latency) + int(meets_accuracy)


@dataclass(frozen=True)
class Plan:
    choices: dict[str, Choice]
    freqs: dict[str, int | None]  # per PE hosting an app
    power_w: float
    cap_ok: bool

    def assignment(self) -> dict[str, tuple[str, str]]:
        """``{app: (subnet id, pe)}``."""
        return {a: (c.entry.id, c.pe.name) for a, c in self.choices.items()}

    def same_as(self, other: Plan) -> bool:
        return self.assignment() == other.assignment() and self.freqs == other.freqs


@dataclass(frozen=True)
class Queue:
    """What the apps served before one on its PE leave it (module doc, step 2).

    ``wait_ms``: their forwards, each predicted x its app's margin, which run before this
    app's (a frame reaches them all at once); ``busy``: the fraction of the worker's time
    they take (forward / period, summed). Not a share of the PE's time: the worker serves
    one forward at a time, so an app waits for the whole forward before it even on a
    cluster with cores to spare, and a tight budget before it does not take a loose
    budget's time away.
    """

    wait_ms: float = 0.0
    busy: float = 0.0

    def then(self, app: AppRequest, predicted_ms: float, margin: float) -> Queue:
        """The queue the next app meets once ``app``'s forward (``predicted_ms`` x ``margin``) is served."""
        t = predicted_ms * margin
        return Queue(self.wait_ms + t, self.busy + t / app.period)


def fits(app: AppRequest, predicted_ms: float, margin: float, queue: Queue) -> bool:
    """The budget test: the forwards before it and its own (x margin) within the deadline, the worker not overbooked."""
    t = predicted_ms * margin
    return queue.wait_ms + t <= app.budget.latency_ms and queue.busy + t / app.period <= 1.0 + 1e-12


def power_cap(apps: Sequence[AppRequest]) -> float | None:
    """The binding power cap: the lowest any app asks for (None = no cap)."""
    return min((a.budget.power_cap_w for a in apps if a.budget.power_cap_w is not None), default=None)


def serving_order(apps: Sequence[AppRequest]) -> list[AppRequest]:
    """The order in which one PE's worker serves the apps a frame reaches: priority, then name."""
    return sorted(apps, key=lambda a: (-a.budget.priority, a.name))


#: an app on a PE with its margin and its (entry, predicted ms) options there
_Served = tuple[AppRequest, float, list[tuple[CatalogEntry, float]]]


def _serve_pe(pe: PeInfo, apps: Sequence[AppRequest], freq: int | None, predict: Predictor,
              margin: Mapping[str, float], fixed: Mapping[str, CatalogEntry] | None = None) -> list[Choice]:
    """Step 2 for one PE at one frequency; with ``fixed``, each app's subnet is given (the re-check).

    An app's choice must leave the apps after it what its fastest subnet would leave them
    (:func:`_room`): the plans are ranked on every level's budgets before any accuracy, so a
    higher-priority app does not take the most accurate subnet that fits alone when that
    makes a lower-priority app miss a budget a smaller one lets it meet.
    """
    served: list[_Served] = []
    for app in serving_order(apps):
        options: list[tuple[CatalogEntry, float]] = []
        for entry in ((fixed[app.name],) if fixed is not None else app.entries):
            t = predict(app, entry, pe, freq)
            if t is not None:
                options.append((entry, t))
        if options:
            served.append((app, margin.get(app.name, 1.0), options))
    queue = Queue()
    out: list[Choice] = []
    for i, (app, m, options) in enumerate(served):
        rest = served[i + 1:] if fixed is None else []
        least = _room(rest, queue.then(app, min(t for _, t in options), m))

        def fit(t: float, app: AppRequest = app, m: float = m, queue: Queue = queue,
                rest: Sequence[_Served] = rest, least: tuple[int, ...] = least) -> bool:
            return fits(app, t, m, queue) and (not rest or _room(rest, queue.then(app, t, m)) >= least)

        entry, t = _pick(app, options, fit)
        out.append(Choice(app, entry, pe, freq, t, fits(app, t, m, queue),
                          accuracy_of(entry) >= app.budget.min_accuracy, m, queue.wait_ms, queue.busy))
        queue = queue.then(app, t, m)
    return out


def _room(rest: Sequence[_Served], queue: Queue) -> tuple[int, ...]:
    """The statuses the apps in ``rest`` can still reach after ``queue``, summed per priority level (highest first).

    Each takes, in turn, the fastest of its subnets that reaches its best status, so that it
    leaves the most time to the ones after it.
    """
    levels: dict[int, int] = {}
    for app, m, options in rest:
        floor = app.budget.min_accuracy
        status, t = max(((_status(app, fits(app, t, m, queue), accuracy_of(e) >= floor), t) for e, t in options),
                        key=lambda st: (st[0], -st[1]))
        levels[app.budget.priority] = levels.get(app.budget.priority, 0) + status
        queue = queue.then(app, t, m)
    return tuple(levels[p] for p in sorted(levels, reverse=True))


def _pick(app: AppRequest, options: Sequence[tuple[CatalogEntry, float]],
          fit: Callable[[float], bool]) -> tuple[CatalogEntry, float]:
    """One app's subnet among ``options`` ((entry, predicted ms)) by its objective (module doc, step 2)."""
    floor = app.budget.min_accuracy
    fitting = [(e, t) for e, t in options if fit(t)]
    accurate = [(e, t) for e, t in options if accuracy_of(e) >= floor]

    def fastest(pool: Sequence[tuple[CatalogEntry, float]]) -> tuple[CatalogEntry, float]:
        return min(pool, key=lambda et: (et[1], -accuracy_of(et[0])))

    if app.objective == "energy" and accurate:
        both = [(e, t) for e, t in fitting if accuracy_of(e) >= floor]
        return fastest(both or accurate)
    if fitting:
        pool = [(e, t) for e, t in fitting if accuracy_of(e) >= floor] or fitting
        return max(pool, key=lambda et: (accuracy_of(et[0]), -et[1]))
    return fastest(options)


def _pe_power(pe: PeInfo, choices: Sequence[Choice], power: PowerModel) -> float:
    util = sum(min(c.predicted_ms, c.app.period) / c.app.period for c in choices)
    u = min(1.0, util)
    khz = pe.khz(choices[0].freq) if choices else None
    return power.active_w(pe.name, khz) * u + power.idle_w(pe.name, khz) * (1.0 - u)


def score(choices: Sequence[Choice]) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Per priority level (highest first): statuses summed, then the ``accuracy`` apps' accuracies summed."""
    levels = sorted({c.app.budget.priority for c in choices}, reverse=True)
    statuses = tuple(sum(c.status for c in choices if c.app.budget.priority == p) for p in levels)
    accs = tuple(round(sum(accuracy_of(c.entry) for c in choices
                           if c.app.budget.priority == p and c.app.objective == "accuracy"), 9) for p in levels)
    return statuses, accs


def overshoot(choices: Sequence[Choice]) -> float:
    """How far best-effort apps miss their deadlines (ms, summed), margin included: smaller is a better best effort.

    With the margin, a point predicted just under the deadline but without the margin's room
    does not tie with the fastest one (and then win on power, to miss on the jitter). An app
    that the worker cannot keep up with (the forwards up to its own take more than all of the
    worker's time: its queue grows without bound) overshoots by that excess work per period,
    though its first frame may fit the deadline.
    """
    return round(sum(_overshoot(c) for c in choices if not c.meets_latency), 9)


def _overshoot(c: Choice) -> float:
    t = c.predicted_ms * c.margin
    late = c.wait_ms + t - c.app.budget.latency_ms
    overbooked = (c.busy + t / c.app.period - 1.0) * c.app.period
    return max(0.0, late, overbooked)


def _best_on_pe(pe: PeInfo, apps: Sequence[AppRequest], predict: Predictor, margin: Mapping[str, float],
                power: PowerModel) -> list[tuple[list[Choice], float]]:
    """All (choices, power) options at every frequency, best outcome first, then cheapest."""
    freqs: Sequence[int | None] = pe.freqs or (None,)
    options = []
    for f in freqs:
        choices = _serve_pe(pe, apps, f, predict, margin)
        if len(choices) != len(apps):
            return []  # some app has no catalog figure for this PE
        options.append((choices, _pe_power(pe, choices, power)))
    options.sort(key=lambda cp: (score(cp[0]), -overshoot(cp[0]), -cp[1]), reverse=True)
    return options


def plan(inp: DecisionInput, predict: Predictor, margin: Mapping[str, float], power: PowerModel,
         allowed: Mapping[str, Sequence[str]] | None = None) -> Plan | None:
    """The best plan for ``inp``, or None when some app has no catalog figure on any allowed PE."""
    apps = list(inp.apps)
    if not apps:
        return Plan({}, {}, 0.0, True)
    pe_names = [p.name for p in inp.pes]
    per_app: list[list[str]] = []
    for app in apps:
        names = [n for n in (allowed.get(app.name, pe_names) if allowed else pe_names)
                 if any(n in e.latency for e in app.entries) and n in pe_names]
        if not names:
            return None
        per_app.append(names)
    cap = power_cap(apps)
    n_mappings = 1
    for names in per_app:
        n_mappings *= len(names)
    mappings = itertools.product(*per_app) if n_mappings <= MAX_MAPPINGS else [_greedy_mapping(apps, per_app)]
    cache: dict[tuple[str, frozenset[str]], list[tuple[list[Choice], float]]] = {}
    best: Plan | None = None
    best_key: tuple[object, ...] | None = None
    for mapping in mappings:
        groups: dict[str, list[AppRequest]] = {}
        for app, pe_name in zip(apps, mapping, strict=True):
            groups.setdefault(pe_name, []).append(app)
        per_pe = []
        for pe_name, group in groups.items():
            ck = (pe_name, frozenset(a.name for a in group))
            if ck not in cache:
                cache[ck] = _best_on_pe(inp.pe(pe_name), group, predict, margin, power)
            if not cache[ck]:
                break
            per_pe.append((pe_name, cache[ck]))
        else:
            candidate = _combine(per_pe, cap)
            k = plan_key(candidate)
            if best_key is None or k > best_key:
                best, best_key = candidate, k
    return best


def plan_key(p: Plan) -> tuple[object, ...]:
    choices = list(p.choices.values())
    statuses, accs = score(choices)
    return (p.cap_ok, statuses, accs, -overshoot(choices), -round(p.power_w, 9))


def _combine(per_pe: Sequence[tuple[str, list[tuple[list[Choice], float]]]], cap: float | None) -> Plan:
    """Pick one option per PE: the best of each when no power cap binds, else search the product."""
    firsts = [opts[0] for _, opts in per_pe]
    total = sum(pw for _, pw in firsts)
    if cap is None or total <= cap:
        return _make_plan(per_pe, firsts, cap)
    best: Plan | None = None
    pruned = [opts[:: max(1, len(opts) // 12)] + [min(opts, key=lambda cp: cp[1])] for _, opts in per_pe]
    for combo in itertools.product(*pruned):
        candidate = _make_plan(per_pe, list(combo), cap)
        if best is None or plan_key(candidate) > plan_key(best):
            best = candidate
    assert best is not None
    return best


def _make_plan(per_pe: Sequence[tuple[str, object]], picks: Sequence[tuple[list[Choice], float]],
               cap: float | None) -> Plan:
    choices: dict[str, Choice] = {}
    freqs: dict[str, int | None] = {}
    total = 0.0
    for (pe_name, _), (cs, pw) in zip(per_pe, picks, strict=True):
        for c in cs:
            choices[c.app.name] = c
        freqs[pe_name] = cs[0].freq if cs else None
        total += pw
    return Plan(choices, freqs, total, cap is None or total <= cap + 1e-9)


def _greedy_mapping(apps: Sequence[AppRequest], per_app: Sequence[Sequence[str]]) -> tuple[str, ...]:
    """Fallback for very many apps: spread apps over PEs in priority order."""
    load: dict[str, int] = {}
    out = [""] * len(apps)
    order = sorted(range(len(apps)), key=lambda i: (-apps[i].budget.priority, apps[i].name))
    for i in order:
        name = min(per_app[i], key=lambda n: (load.get(n, 0), per_app[i].index(n)))
        load[name] = load.get(name, 0) + 1
        out[i] = name
    return tuple(out)


def evaluate(inp: DecisionInput, fixed: Mapping[str, tuple[str, str]], freqs: Mapping[str, int | None],
             predict: Predictor, margin: Mapping[str, float], power: PowerModel) -> Plan | None:
    """Outcome of a given assignment ``{app: (subnet id, pe)}`` at given PE frequencies (None if invalid).

    The same per-PE test as the planner (:func:`_serve_pe` with the subnets fixed), so the
    hysteresis re-check of the current plan cannot disagree with the planner about it.
    """
    groups: dict[str, list[AppRequest]] = {}
    entries: dict[str, CatalogEntry] = {}
    for app in inp.apps:
        if app.name not in fixed:
            return None
        subnet, pe_name = fixed[app.name]
        entry = next((e for e in app.entries if e.id == subnet), None)
        if entry is None or pe_name not in {p.name for p in inp.pes}:
            return None
        groups.setdefault(pe_name, []).append(app)
        entries[app.name] = entry
    choices: dict[str, Choice] = {}
    total = 0.0
    for pe_name, members in groups.items():
        pe = inp.pe(pe_name)
        f = freqs.get(pe_name)
        if f is not None and pe.freqs and f not in pe.freqs:
            return None
        cs = _serve_pe(pe, members, f, predict, margin, fixed=entries)
        if len(cs) != len(members):
            return None  # a fixed subnet has no figure on its PE
        choices.update((c.app.name, c) for c in cs)
        total += _pe_power(pe, cs, power)
    cap = power_cap(inp.apps)
    return Plan(choices, dict(freqs), total, cap is None or total <= cap + 1e-9)


def to_decision(p: Plan, inp: DecisionInput, power: PowerModel, notes: Sequence[str] = ()) -> Decision:
    """Operating points + feasibility report for a plan."""
    cpu_freqs = {pe: f for pe, f in p.freqs.items() if f is not None and inp.pe(pe).kind == "cpu"}
    gpu_hz = next((f for pe, f in p.freqs.items() if f is not None and inp.pe(pe).kind == "gpu"), None)
    points: dict[str, OperatingPoint] = {}
    outcomes: dict[str, AppOutcome] = {}
    for app in inp.apps:
        c = p.choices.get(app.name)
        if c is None:
            continue
        lat = c.entry.latency.get(c.pe.name)
        points[app.name] = OperatingPoint(subnet=c.entry.id, pe=c.pe.name, cpu_freq_khz=dict(cpu_freqs),
                                          gpu_freq_hz=gpu_hz, threads=lat.threads if lat is not None else 1)
        energy = power.frame_energy(c.pe.name, c.pe.khz(c.freq), c.predicted_ms, app.period)
        reasons = _reasons(c, p.cap_ok)
        outcomes[app.name] = AppOutcome(
            app=app.name, subnet=c.entry.id, pe=c.pe.name, predicted_ms=c.predicted_ms,
            accuracy=c.entry.accuracy.top1 if c.entry.accuracy is not None else None,
            energy_j=energy.joules, meets_latency=c.meets_latency, meets_accuracy=c.meets_accuracy,
            reason="; ".join(reasons), meets_power=p.cap_ok, objective=app.objective,
        )
    return Decision(points=points, outcomes=outcomes, power_w=p.power_w, energy_source=power.source,
                    notes=list(notes))


def _reasons(c: Choice, cap_ok: bool) -> list[str]:
    """Why a choice misses its budget, naming the objective that ruled and what yielded."""
    app = c.app
    reasons = []
    if not c.meets_latency and not c.meets_accuracy:
        reasons.append(f"no subnet meets {app.budget.latency_ms:g} ms or the accuracy minimum "
                       f"{app.budget.min_accuracy:.4f}; best effort: fastest subnet, predicted {c.predicted_ms:.1f} ms")
    elif not c.meets_latency and app.objective == "energy":
        reasons.append(f"objective energy: the accuracy minimum {app.budget.min_accuracy:.4f} holds and the latency "
                       f"yields: no subnet meeting it fits {app.budget.latency_ms:g} ms (fastest such predicted "
                       f"{c.predicted_ms:.1f} ms)")
    elif not c.meets_latency:
        after = f" after {c.wait_ms:.1f} ms of the forwards served before it on {c.pe.name}" if c.wait_ms else ""
        reasons.append(f"no subnet meets {app.budget.latency_ms:g} ms on any PE given the other apps; "
                       f"best effort: fastest subnet, predicted {c.predicted_ms:.1f} ms{after}")
    elif not c.meets_accuracy:
        reasons.append(f"objective {app.objective}: the latency holds and the accuracy minimum yields: "
                       f"accuracy {accuracy_of(c.entry):.4f} below the minimum {app.budget.min_accuracy:.4f} "
                       f"is the most accurate that fits {app.budget.latency_ms:g} ms")
    if not cap_ok:
        reasons.append("power cap exceeded by the best-effort plan")
    return reasons
