"""A SIMULATED SoC for evaluating policies: not a board, a model of one.

Used by ``benchmarks/simulated_soc.py`` and the tests. Everything a policy sees goes
through the same :class:`~governors.policies.base.DecisionInput` / ``observe`` path the
daemon uses; the simulator supplies the latencies, energies and monitor readings.

Ground truth per board (:func:`sim_board`):

* frequency ladders of the real board (platforms.md where it lists them, else as cited);
* catalog latencies at the top frequency from published figures (cited per board);
* true latency at frequency ``f``: ``t_top * (m + (1 - m) * (f_top / f) ** gamma)`` with a
  per-PE non-scaling fraction ``m`` and a curvature ``gamma`` that the policies' fitted
  ``a + b/f`` regression does not know exactly (so the regression has a real error);
* contention: a per-phase, per-PE slowdown multiplying the latency, and monitor readings
  (other processes' CPU utilisation, GPU load) consistent with it;
* jitter: log-normal per inference (``noise_sd``);
* power: the board's :mod:`governors.power_model` constants perturbed (static +30 %,
  C_eff +10 %) so that the policies' model is not the truth; the simulated power rail
  reports the true power, which the policies may use for calibration;
* time sharing: apps mapped to one PE run one after the other each frame in serving
  order (priority, then name: :func:`~governors.policies.search.serving_order`, as the
  daemon's one inference worker per device serves them), at the PE's one clock for the
  frame; an app's latency is the forwards served before it plus its own
  (:func:`pe_frame_energy_j` prices the PE's frame); an app whose forwards and those
  before it need more than the PE's time is :func:`starved` (its frames are late).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from dynofa.budget import Budget
from dynofa.catalog import Accuracy, CatalogEntry, Latency
from dynofa.operating_point import OperatingPoint
from governors.contention import LoadView
from governors.latency_model import FrequencyScaling, LatencyModel, ScalingPoint, fit_frequency_scaling
from governors.policies.base import AppRequest, Decision, DecisionInput, PeInfo, Policy
from governors.policies.search import serving_order
from governors.power_model import BOARD_MODELS, PePower, PowerModel


def make_entry(subnet: str, accuracy: float, latency: Mapping[str, float], threads: int = 1,
               freq_khz: Mapping[str, int] | None = None, macs: int = 0) -> CatalogEntry:
    """A catalog entry with measured latency per PE (ms) and a top-1 accuracy fraction."""
    return CatalogEntry(
        id=subnet, config={"level": subnet}, resolution=224, macs=macs or int(latency_sum(latency) * 1e6), params=0,
        latency={pe: Latency(ms=ms, source="measured", threads=threads,
                             freq_khz=(freq_khz or {}).get(pe)) for pe, ms in latency.items()},
        accuracy=Accuracy(top1=accuracy, source="measured", dataset="sim"),
    )


def latency_sum(latency: Mapping[str, float]) -> float:
    return sum(latency.values())


@dataclass(frozen=True)
class SimBoard:
    """Ground truth of a simulated board."""

    name: str  # platform board name, e.g. "jetson-xavier-nx"
    pes: tuple[PeInfo, ...]
    entries: tuple[CatalogEntry, ...]
    nonscaling: dict[str, float]
    gamma: dict[str, float]
    noise_sd: dict[str, float]
    power: dict[str, PePower]
    sources: tuple[str, ...] = ()

    def pe(self, name: str) -> PeInfo:
        return next(p for p in self.pes if p.name == name)


# Jetson Xavier NX. Frequency ladders are those the device's cpufreq/devfreq list under
# JetPack 4.x (GUESS from memory of a device: platforms.md gives only the cluster layout).
XNX_CPU_KHZ = (115200, 192000, 268800, 345600, 422400, 499200, 576000, 652800, 729600, 806400, 883200, 960000,
               1036800, 1113600, 1190400, 1267200, 1344000, 1420800, 1497600, 1574400, 1651200, 1728000, 1804800,
               1881600, 1907200)
XNX_GPU_HZ = (114750000, 204000000, 306000000, 408000000, 510000000, 599250000, 701250000, 752250000, 803250000,
              854250000, 905250000, 956250000, 1007250000, 1058250000, 1109250000)
# Dynamic-OFA's shipped GPU level set on Xavier NX: accuracies from UoS-EEC/DynamicOFA
# runtime_demo/runtime_adjustment/test2.py (accu_list), GPU latencies 41.2 ms (74.20 %) to
# 61.7 ms (79.03 %) from the paper (anchors.md). Intermediate latencies are interpolated
# linearly in accuracy (GUESS). CPU latencies (six Carmel cores) are taken as 3.2x the GPU
# ones (GUESS: the paper's CPU level set is a different one).
XNX_LEVELS = (74.202, 74.968, 76.134, 77.54, 78.346, 79.03)


def _xavier_nx() -> SimBoard:
    lo, hi = XNX_LEVELS[0], XNX_LEVELS[-1]
    entries = []
    for i, acc in enumerate(XNX_LEVELS):
        gpu_ms = 41.2 + (61.7 - 41.2) * (acc - lo) / (hi - lo)
        entries.append(make_entry(f"dofa-l{i}", acc / 100.0, {"gpu": round(gpu_ms, 2), "cpu": round(3.2 * gpu_ms, 2)},
                                  threads=6, freq_khz={"gpu": XNX_GPU_HZ[-1] // 1000, "cpu": XNX_CPU_KHZ[-1]}))
    return SimBoard(
        name="jetson-xavier-nx",
        pes=(PeInfo("cpu", "cpu", XNX_CPU_KHZ, cpus=6), PeInfo("gpu", "gpu", XNX_GPU_HZ)),
        entries=tuple(entries),
        nonscaling={"cpu": 0.12, "gpu": 0.3},
        gamma={"cpu": 1.0, "gpu": 0.92},
        noise_sd={"cpu": 0.04, "gpu": 0.03},
        power=dict(BOARD_MODELS["jetson-xavier-nx"]),
        sources=("Dynamic-OFA (Lou, Xun et al. CVPRW 2021) GPU levels on Xavier NX",
                 "power: see governors/power_model"),
    )


# Odroid XU3 (Exynos 5422). Ladders from platforms.md: A7 200-1400 MHz, A15 200-2000 MHz,
# 100 MHz steps. Subnets: the four levels of a group-pruned AlexNet on CIFAR-10 (Xun et al.,
# MLCAD 2019, run on this board); per-level latency and accuracy are GUESSes shaped like that
# paper's (accuracy rising with groups, latency roughly linear in groups), A7 cluster 3.5x
# slower than the A15 cluster at their top clocks (GUESS).
XU3_BIG_KHZ = tuple(range(200000, 2000001, 100000))
XU3_LITTLE_KHZ = tuple(range(200000, 1400001, 100000))
XU3_LEVELS = ((0.71, 16.0), (0.76, 29.0), (0.79, 43.0), (0.81, 58.0))


def _odroid_xu3() -> SimBoard:
    entries = [make_entry(f"group-{i + 1}", acc, {"cpu-big": ms, "cpu-little": round(3.5 * ms, 2)}, threads=4,
                          freq_khz={"cpu-big": 2000000, "cpu-little": 1400000})
               for i, (acc, ms) in enumerate(XU3_LEVELS)]
    return SimBoard(
        name="odroid-xu3",
        pes=(PeInfo("cpu-little", "cpu", XU3_LITTLE_KHZ, cpus=4), PeInfo("cpu-big", "cpu", XU3_BIG_KHZ, cpus=4)),
        entries=tuple(entries),
        nonscaling={"cpu-big": 0.1, "cpu-little": 0.05},
        gamma={"cpu-big": 1.0, "cpu-little": 1.0},
        noise_sd={"cpu-big": 0.04, "cpu-little": 0.03},
        power=dict(BOARD_MODELS["odroid-xu3"]),
        sources=("group-pruned AlexNet levels (GUESS after Xun et al. MLCAD 2019)", "power: see governors/power_model"),
    )


def one_app_per_pe(board: SimBoard, pes: Sequence[str]) -> list[SimApp]:
    """Apps named after PEs, each with the board's catalog restricted to its PE (pinned: no task mapping)."""
    return [SimApp(f"{pe}-app", tuple(replace(e, latency={pe: e.latency[pe]}) for e in board.entries), home=pe)
            for pe in pes]


def board_apps(board: SimBoard, homes: Sequence[str]) -> list[SimApp]:
    """Apps named after their home PEs, each with the board's whole catalog (every PE: task mapping is free)."""
    return [SimApp(f"{pe}-app", board.entries, home=pe) for pe in homes]


BOARDS: dict[str, Callable[[], SimBoard]] = {"xavier-nx": _xavier_nx, "odroid-xu3": _odroid_xu3}


def sim_board(name: str) -> SimBoard:
    factory = BOARDS.get(name)
    if factory is None:
        raise ValueError(f"unknown simulated board {name!r}; choose one of: {', '.join(BOARDS)}")
    return factory()


@dataclass(frozen=True)
class Phase:
    """A stretch of a trace: ``frames`` frames at one budget (or one per app), with per-PE slowdowns."""

    name: str
    frames: int
    budget: Budget | Mapping[str, Budget]
    slowdown: Mapping[str, float] = field(default_factory=dict)
    load: LoadView = field(default_factory=LoadView)  # what the monitors report during the phase

    def budget_of(self, app: str) -> Budget:
        if isinstance(self.budget, Budget):
            return self.budget
        return self.budget[app]

    @property
    def latency_ms(self) -> float:
        """The tightest deadline of the phase."""
        if isinstance(self.budget, Budget):
            return self.budget.latency_ms
        return min(b.latency_ms for b in self.budget.values())


@dataclass(frozen=True)
class SimApp:
    """An app of a simulated trace: its name, the catalog entries it may run (and so its PEs), and
    ``home``: the PE a developer without dynofa pins its model to (the fixed-mapping baselines')."""

    name: str
    entries: tuple[CatalogEntry, ...]
    home: str = ""

    def home_pe(self) -> str:
        """``home``, else the PE of its first entry."""
        return self.home or next(iter(self.entries[0].latency))


def pe_frame_energy_j(active_w: Any, idle_w: Any, forwards_ms: Sequence[Any], periods_ms: Sequence[Any],
                      frame_ms: Any) -> list[Any]:
    """Each app's share (J) of one PE's energy over a frame of ``frame_ms``, its apps' forwards taking ``forwards_ms``.

    Each app runs one forward per its period; the PE is busy for the forwards (each at most
    its period) and idle the rest of its time, so its average power is
    ``active * u + idle * (1 - u)`` with ``u`` the busy fraction summed over its apps (at
    most 1), and its energy over the frame is that power x ``frame_ms`` (what a power meter
    on the board reads; the frame is the longest period of the trace's apps). Each app is
    charged in proportion to its share of the busy time. For one app whose period is the
    frame this is :meth:`~governors.power_model.PowerModel.frame_energy`:
    ``active * t + idle * (T - t)``. Floats or numpy arrays (broadcast), so the simulator
    and the oracle price alike.
    """
    shares = [np.minimum(t, p) / p for t, p in zip(forwards_ms, periods_ms, strict=True)]
    util = busy_fraction(forwards_ms, periods_ms)
    joules = (active_w * util + idle_w * (1.0 - util)) * frame_ms / 1e3
    total = sum(shares)
    return [joules * s / total for s in shares]


def busy_fraction(forwards_ms: Sequence[Any], periods_ms: Sequence[Any]) -> Any:
    """The fraction of its time a PE is busy with forwards of ``forwards_ms`` each per its app's period (<= 1)."""
    return np.minimum(1.0, _demand(forwards_ms, periods_ms))


def starved(forwards_ms: Sequence[Any], periods_ms: Sequence[Any]) -> list[Any]:
    """Per app of a PE, in serving order: whether the forwards up to and including its own need more than all
    of the PE's time. The worker serves by priority, so such an app's queue grows without bound while those
    served before it keep up: the simulator counts its frames late (latency infinite), as the planner's busy
    test (:func:`governors.policies.search.fits`) does. One app alone never is: its busy time is at most its
    period (a forward longer than its period is late already)."""
    return [_demand(forwards_ms[:k + 1], periods_ms[:k + 1]) > 1.0 + 1e-12 for k in range(len(forwards_ms))]


def _demand(forwards_ms: Sequence[Any], periods_ms: Sequence[Any]) -> Any:
    return sum(np.minimum(t, p) / p for t, p in zip(forwards_ms, periods_ms, strict=True))


def retarget(phases: Sequence[Phase], per_app: Mapping[str, Mapping[str, Any]] | None = None,
             **fields: Any) -> list[Phase]:
    """The same trace with budget fields replaced (e.g. ``objective="energy"``), ``per_app`` on top per app."""
    out = []
    for p in phases:
        budget: Budget | dict[str, Budget]
        if isinstance(p.budget, Budget):
            budget = replace(p.budget, **fields)
        else:
            budget = {a: replace(b, **{**fields, **(per_app or {}).get(a, {})}) for a, b in p.budget.items()}
        out.append(replace(p, budget=budget))
    return out


class SimulatedSoC:
    """Latency, energy and power-rail readings of a simulated board."""

    def __init__(self, board: SimBoard, seed: int = 0) -> None:
        self.board = board
        self.seed = seed
        self.rng = random.Random(seed)
        self.truth_power = PowerModel(board=board.name, pes={
            pe: replace(p, static_w=p.static_w * 1.3, ceff_f=p.ceff_f * 1.1) for pe, p in board.power.items()})

    def factor(self, pe: PeInfo, freq: int | None) -> float:
        if freq is None or not pe.freqs:
            return 1.0
        m, g = self.board.nonscaling[pe.name], self.board.gamma[pe.name]
        return m + (1.0 - m) * (pe.freqs[-1] / freq) ** g

    def expected_ms(self, entry: CatalogEntry, pe: PeInfo, freq: int | None,
                    phase: Phase | None = None) -> float | None:
        lat = entry.latency.get(pe.name)
        if lat is None:
            return None
        slow = phase.slowdown.get(pe.name, 1.0) if phase is not None else 1.0
        return lat.ms * self.factor(pe, freq) * slow

    def jitter(self, frame: int, app_index: int, pe: str) -> float:
        """The log-normal jitter of one inference: a function of (frame, app) and the PE's spread only,
        so every policy (and the oracle) meets the same draw for the same frame on the same trace."""
        z = random.Random(self.seed * 1_000_003 + frame * 31 + app_index).gauss(0.0, 1.0)
        sd = self.board.noise_sd[pe]
        return math.exp(-sd * sd / 2 + sd * z)

    def sample_ms(self, entry: CatalogEntry, pe: PeInfo, freq: int | None, phase: Phase | None = None) -> float:
        t = self.expected_ms(entry, pe, freq, phase)
        if t is None:
            raise ValueError(f"subnet {entry.id} cannot run on {pe.name}")
        sd = self.board.noise_sd[pe.name]
        return t * math.exp(self.rng.gauss(-sd * sd / 2, sd))

    def p99_ratio(self, pe: str) -> float:
        sd = self.board.noise_sd[pe]
        return math.exp(2.33 * sd)

    def unused_idle_w(self, pes: Sequence[str]) -> float:
        """The true idle power of PEs no app runs on: each at its lowest clock (the kernel's governor, unloaded)."""
        total = 0.0
        for name in pes:
            pe = self.board.pe(name)
            total += self.truth_power.idle_w(name, pe.khz(pe.freqs[0] if pe.freqs else None))
        return total

    def measure_scaling(self, entries: Sequence[CatalogEntry], pe: PeInfo, n_freqs: int = 4,
                        repeats: int = 5) -> FrequencyScaling:
        """Reg-Tune style: measure a few subnets at a few frequencies, fit ``a + b/f``."""
        if not pe.freqs:
            return FrequencyScaling(nonscaling=0.0)
        idx = sorted({round(i * (len(pe.freqs) - 1) / (n_freqs - 1)) for i in range(n_freqs)})
        points = []
        for entry in entries:
            for i in idx:
                f = pe.freqs[i]
                ms = sorted(self.sample_ms(entry, pe, f) for _ in range(repeats))[repeats // 2]
                points.append(ScalingPoint(entry.id, pe.khz(f) or 1, ms))
        return fit_frequency_scaling(points, ref_khz=pe.top_khz)


@dataclass
class FrameRecord:
    frame: int
    phase: str
    subnet: str
    pe: str
    freq: int | None
    latency_ms: float
    budget_ms: float
    energy_j: float
    accuracy: float
    app: str = "app"
    min_accuracy: float = 0.0
    forward_ms: float = 0.0  # its own forward (latency_ms adds the forwards served before it on its PE)


@dataclass
class RunResult:
    """A run's records (one per app per frame) and ``unused_j``: per frame, the idle energy of the
    ``counted_pes`` that no app ran on (they count whether a policy uses them or not)."""

    policy: str
    records: list[FrameRecord] = field(default_factory=list)
    counted_pes: tuple[str, ...] = ()
    unused_j: dict[int, float] = field(default_factory=dict)

    def frame_energy_j(self, frame: int) -> float:
        """Every app's energy in ``frame`` plus that of the counted PEs left idle."""
        return sum(r.energy_j for r in self.records if r.frame == frame) + self.unused_j.get(frame, 0.0)

    @property
    def frames(self) -> int:
        return len(self.records)

    @property
    def misses(self) -> int:
        return sum(1 for r in self.records if r.latency_ms > r.budget_ms)

    @property
    def miss_rate(self) -> float:
        return self.misses / self.frames if self.frames else 0.0

    @property
    def energy_j(self) -> float:
        return sum(r.energy_j for r in self.records) + sum(self.unused_j.values())

    @property
    def mean_accuracy(self) -> float:
        return sum(r.accuracy for r in self.records) / self.frames if self.frames else 0.0

    @property
    def switches(self) -> int:
        """Changes of operating point, counted per app."""
        last: dict[str, tuple[str, str, int | None]] = {}
        n = 0
        for r in self.records:
            point = (r.subnet, r.pe, r.freq)
            n += int(r.app in last and last[r.app] != point)
            last[r.app] = point
        return n

    def summary(self) -> dict[str, Any]:
        return {"miss_rate": round(self.miss_rate, 5), "misses": self.misses, "frames": self.frames,
                "energy_j": round(self.energy_j, 3), "mean_accuracy": round(self.mean_accuracy, 5),
                "switches": self.switches}


def _freq_of(point: OperatingPoint, pe: PeInfo) -> int | None:
    f = point.gpu_freq_hz if pe.kind == "gpu" else point.cpu_freq_khz.get(pe.name)
    if f is None and pe.freqs:
        return pe.freqs[-1]  # left as found: the simulated board runs at its top clock
    return f


class SchedutilLikePolicy(Policy):
    """Baseline: a fixed subnet under a ``schedutil``-like DVFS governor (simulation only).

    Linux schedutil picks ``next_freq = 1.25 * f_max * util`` with ``util`` the
    frequency-invariant utilisation (kernel/sched/cpufreq_schedutil.c, get_next_freq);
    here ``util`` is the last frame's busy time over the frame period, scaled by
    ``f_cur / f_max``, and the next frequency is the lowest ladder step at or above it.
    """

    name = "schedutil"

    def __init__(self, inner: Policy) -> None:
        self.inner = inner
        self._freq: dict[str, int] = {}
        self._util: dict[str, float] = {}
        self._period: dict[str, float] = {}
        self._pes: dict[str, PeInfo] = {}
        self._points: dict[str, OperatingPoint] = {}

    def decide(self, inp: DecisionInput) -> Decision:
        decision = self.inner.decide(inp)
        points = {}
        for app, point in decision.points.items():
            pe = inp.pe(point.pe)
            self._pes[app] = pe
            self._period[app] = next(a.period for a in inp.apps if a.name == app)
            if not pe.freqs:
                points[app] = point
                continue
            util = self._util.get(app, 1.0)
            target = 1.25 * pe.freqs[-1] * util
            f = next((x for x in pe.freqs if x >= target), pe.freqs[-1])
            self._freq[app] = f
            if pe.kind == "gpu":
                points[app] = replace(point, gpu_freq_hz=f)
            else:
                points[app] = replace(point, cpu_freq_khz={**point.cpu_freq_khz, pe.name: f})
        self._points = points
        return Decision(points=points, outcomes=decision.outcomes, energy_source="none")

    def observe(self, app: str, latency_ms: float, point: OperatingPoint | None = None) -> None:
        pe = self._pes.get(app)
        if pe is None or not pe.freqs:
            return
        f = self._freq.get(app, pe.freqs[-1])
        self._util[app] = min(1.0, latency_ms / self._period[app]) * f / pe.freqs[-1]
        self.inner.observe(app, latency_ms, point)


class PerAppPolicy(Policy):
    """Routes each app to its own policy (baselines that fix a different subnet and PE per app)."""

    def __init__(self, policies: Mapping[str, Policy], name: str = "per-app") -> None:
        self.policies = dict(policies)
        self.name = name

    def decide(self, inp: DecisionInput) -> Decision:
        points, outcomes = {}, {}
        for app in inp.apps:
            d = self.policies[app.name].decide(replace(inp, apps=(app,)))
            points.update(d.points)
            outcomes.update(d.outcomes)
        return Decision(points=points, outcomes=outcomes, energy_source="none")

    def observe(self, app: str, latency_ms: float, point: OperatingPoint | None = None) -> None:
        self.policies[app].observe(app, latency_ms, point)


def run_trace(soc: SimulatedSoC, policy: Policy, phases: Sequence[Phase], apps: Sequence[SimApp] | None = None,
              on_phase: Callable[[Phase], None] | None = None, counted_pes: Sequence[str] = ()) -> RunResult:
    """Drive ``policy`` through ``phases``: decide, run one simulated inference per app, observe; every frame.

    ``apps`` default to one app ("app") with the board's catalog. Apps that the decision maps
    to one PE share it (module doc): one clock for the frame (a decision giving that PE two
    clocks is an error), forwards in serving order, each app's latency the forwards before
    it plus its own; the policy observes each forward's own time (what the daemon's worker
    measures), the deadline is judged on the latency. ``counted_pes``: PEs whose energy
    counts every frame; one that no app runs on idles at its lowest clock for the frame's
    longest period. The simulated power rail reports the previous frame's true average power.
    """
    apps = list(apps) if apps is not None else [SimApp("app", soc.board.entries)]
    result = RunResult(policy=getattr(policy, "name", "policy"), counted_pes=tuple(counted_pes))
    frame = 0
    power_w: float | None = None
    for phase in phases:
        if on_phase is not None:
            on_phase(phase)
        requests = tuple(AppRequest(name=a.name, budget=phase.budget_of(a.name), entries=a.entries) for a in apps)
        for _ in range(phase.frames):
            load = LoadView(other_util=phase.load.other_util, gpu_load=phase.load.gpu_load,
                            throttled=phase.load.throttled, power_w=power_w)
            decision = policy.decide(DecisionInput(apps=requests, pes=soc.board.pes, board=soc.board.name,
                                                   load=load))
            records, power_w = _run_frame(soc, apps, requests, decision, phase, frame)
            order = [a.name for a in apps]
            records.sort(key=lambda r: order.index(r.app))
            for record in records:
                policy.observe(record.app, record.forward_ms, decision.points[record.app])
            result.records.extend(records)
            idle = [pe for pe in counted_pes if pe not in {r.pe for r in records}]
            if idle:
                idle_w = soc.unused_idle_w(idle)
                result.unused_j[frame] = idle_w * max(r.period for r in requests) / 1e3
                power_w += idle_w
            frame += 1
    return result


def _run_frame(soc: SimulatedSoC, apps: Sequence[SimApp], requests: Sequence[AppRequest], decision: Decision,
               phase: Phase, frame: int) -> tuple[list[FrameRecord], float]:
    """One frame of every app: per PE, its apps in serving order at its one clock; the records and the true power."""
    index = {a.name: k for k, a in enumerate(apps)}
    by_pe: dict[str, list[AppRequest]] = {}
    for request in requests:
        by_pe.setdefault(decision.points[request.name].pe, []).append(request)
    records: list[FrameRecord] = []
    watts = 0.0
    for pe_name, group in by_pe.items():
        pe = soc.board.pe(pe_name)
        clocks = {_freq_of(decision.points[r.name], pe) for r in group}
        if len(clocks) != 1:
            raise ValueError(f"{pe_name} got {len(clocks)} clocks for one frame ({sorted(map(str, clocks))})")
        freq = clocks.pop()
        wait = 0.0
        served: list[tuple[AppRequest, CatalogEntry, float, float]] = []  # request, entry, forward, latency
        for request in serving_order(group):
            app = apps[index[request.name]]
            entry = next(e for e in app.entries if e.id == decision.points[request.name].subnet)
            expected = soc.expected_ms(entry, pe, freq, phase)
            if expected is None:
                raise ValueError(f"subnet {entry.id} cannot run on {pe.name}")
            forward = expected * soc.jitter(frame, index[request.name], pe.name)
            wait += forward
            served.append((request, entry, forward, wait))
        late = starved([f for _, _, f, _ in served], [r.period for r, _, _, _ in served])
        served = [(r, e, f, math.inf if over else t) for (r, e, f, t), over in zip(served, late, strict=True)]
        khz = pe.khz(freq)
        energies = pe_frame_energy_j(soc.truth_power.active_w(pe.name, khz), soc.truth_power.idle_w(pe.name, khz),
                                     [f for _, _, f, _ in served], [r.period for r, _, _, _ in served],
                                     max(r.period for r in requests))
        for (request, entry, forward, latency), energy in zip(served, energies, strict=True):
            records.append(FrameRecord(frame, phase.name, entry.id, pe.name, freq, latency, request.budget.latency_ms,
                                       float(energy), entry.accuracy.top1 if entry.accuracy else 0.0,
                                       app=request.name, min_accuracy=request.budget.min_accuracy,
                                       forward_ms=forward))
        util = float(busy_fraction([f for _, _, f, _ in served], [r.period for r, _, _, _ in served]))
        watts += soc.truth_power.active_w(pe.name, khz) * util + soc.truth_power.idle_w(pe.name, khz) * (1 - util)
    return records, watts


def fitted_latency_model(soc: SimulatedSoC) -> LatencyModel:
    """Fit the frequency regression per PE from a few simulated measurements (2 subnets x 4 freqs)."""
    probe = [soc.board.entries[0], soc.board.entries[-1]]
    return LatencyModel(scalings={pe.name: soc.measure_scaling(probe, pe) for pe in soc.board.pes})
