"""REAL contention on this machine: do the policies keep each app inside its latency budget?

    python -m benchmarks.contention [--scale 1.0] [--trace out.jsonl] [--plot out.png]
    python -m benchmarks.contention --plot out.png --from-trace out.jsonl     # plot an earlier run

An app runs inference in a loop from the demo catalog (``subnets.demo`` + ``SubnetPool``;
``--stand-in`` or a missing demo catalog uses labelled synthetic matmul subnets instead)
with a latency budget. Each inference runs ``--batch`` images (default 32) so that it lasts
longer than a scheduler time slice: contention then stretches it rather than only delaying
its start. The machine has no cpufreq, so there is no DVFS here: subnet choice only.

Budgets are chosen from a calibration of this machine (printed in the JSON) so that the right
choice differs **by construction**: over the Pareto front of (quiet latency here, accuracy),
three levels ``low`` < ``mid`` < ``top`` (``top`` the most accurate; ``mid`` the most accurate
subnet whose 95th percentile is at most 1 / ``SEPARATION`` of ``top``'s median; ``low`` the same
below ``mid``). ``between(lo, hi)`` is a budget that ``lo`` meets with room and that ``hi``'s
median misses: min(1.5 x lo's p95, the geometric mean of lo's p95 and hi's median). Phases:

1. ``quiet``: no extra load, budget Bq = between(mid, top): the choice is ``mid``;
2. ``busy-1``, ``busy-2``, ``busy-3``: graded contention, 1, 2 and 3 x ``--workers`` busy-loop
   processes (default half a process per CPU: 1, 2, 3 on two cores; bounded in time, killed at
   the end) at the same priority, budget Bq: ``mid`` while it still fits, then ``low``;
3. ``membw``: ``--workers`` memory-bandwidth hogs (each streams a 64 MiB array), budget Bq;
4. ``loose``: the load stops and the budget loosens to Bl = 2 x top's p95: the policy must step
   up (``step_up_inferences``: inferences until it runs the phase's best choice): ``top``;
5. ``floor``: budget Bl with ``objective: energy`` and ``min_accuracy`` = mid's accuracy: the
   cheapest subnet over the floor, ``mid``, not the most accurate one that fits;
6. ``tight``: Bt = between(low, mid): ``low``;
7. ``two-apps``: a second app (``app-b``, priority 1 below the first app's 2) joins on the same
   core: this phase pins the benchmark to one CPU and gives the policies a one-CPU PE. A frame
   reaches both apps at once and the higher priority runs first (as the daemon's one inference
   worker per device serves them one after the other), so app-b's latency is both forwards.
   Budget B2 for both, between (mid + low)'s p95s and 2 x mid's median: the first app keeps
   ``mid``, app-b must yield to ``low``.

The policies run **in the same run, interleaved** (each tick, every policy decides and runs
its apps' inferences, in a rotating order), so they meet the same contention: ``model-based``
and ``dynamic-ofa``. A probe times the front's subnets in turn (two per tick; a subnet that
missed twice in a phase is not probed again in it: its hit rate there cannot reach 0.99).
A static subnet's hit rate is its probe's, per phase, weighted by the phases' durations
(``hit_rate_static_largest``/``_smallest``; running the largest subnet every tick would take
most of the run). From the probe's samples the per-phase best static choice (the oracle:
by the phase's objective, the most accurate subnet, or the fastest one over the floor, among
those whose probed hit rate in that phase is >= 0.99; for app-b, with the first app's oracle
choice run before it) is derived after the run. ``oracle_sequence`` lists the first app's
choice phase by phase, ``oracle_distinct`` counts the different choices. Goals per app
(``apps``): hit rate >= 0.99 outside the reaction windows (``--reaction-window`` inferences
after each event) and mean accuracy within 1 pp of the oracle's on the same inferences. The
1-minute load average before and after is reported: on a shared machine, other users' load
changes what any policy can achieve (``hit_rate_oracle``: what the oracle achieved in the
same run). Progress goes to stderr (``--quiet`` silences it).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from statistics import median
from typing import Any, TextIO

from dynofa.budget import Budget
from dynofa.catalog import Accuracy, CatalogEntry, Latency
from governors.contention import LoadView
from governors.policies import make_policy
from governors.policies.base import AppRequest, DecisionInput, PeInfo, Policy

RunOne = Callable[[str], float]  # subnet id -> latency (ms) of one inference

_SPIN = (
    "import sys, time\n"
    "t0, t1 = float(sys.argv[1]), float(sys.argv[2])\n"
    "while time.time() < t0: time.sleep(0.002)\n"
    "x = 0\n"
    "while time.time() < t1: x += 1\n"
)
# streams a 64 MiB array (far beyond any cache) back and forth: memory bandwidth, not arithmetic
_MEMBW = (
    "import sys, time\n"
    "import numpy as np\n"
    "t0, t1 = float(sys.argv[1]), float(sys.argv[2])\n"
    "a = np.ones(1 << 24, dtype=np.float32); b = np.empty_like(a)\n"
    "while time.time() < t0: time.sleep(0.002)\n"
    "while time.time() < t1: np.copyto(b, a); np.copyto(a, b)\n"
)
HOGS = {"spin": _SPIN, "membw": _MEMBW}

#: a level's quiet median over the next faster level's quiet 95th percentile (levels, module doc)
SEPARATION = 1.5
PRIORITY_A, PRIORITY_B = 2, 1  # the first app outranks the one that joins in the two-app phase


@dataclass
class Workload:
    """Subnets to choose from and a callable that runs one inference of one of them."""

    entries: list[CatalogEntry]
    run: RunOne
    kind: str  # "demo-catalog" or "stand-in"
    source: str
    close: Callable[[], None] = lambda: None


def pool_workload(catalog_path: str | None, batch: int = 1) -> Workload:
    """The demo catalog (or ``catalog_path``) served by a weight-shared SubnetPool on the CPU.

    ``batch`` images per inference (an app that sends several frames per request).
    """
    import torch

    from dynofa.catalog import load_catalog
    from subnets.ofa_compat import install
    from subnets.pool import SubnetPool

    install()  # before anything imports `ofa`
    if catalog_path is None:
        from subnets.demo import demo_catalog_path

        catalog_path = str(demo_catalog_path())
    catalog = load_catalog(catalog_path)
    pool = SubnetPool.from_catalog(catalog, device="cpu")
    inputs = {sid: torch.randn(pool.family.input_shape(pool.spec(sid), batch=batch)) for sid in pool.ids}

    def run(subnet: str) -> float:
        return float(pool.infer(inputs[subnet], subnet).latency_ms)

    return Workload(list(catalog.entries), run, "demo-catalog", f"{catalog_path} (batch {batch})", pool.close)


def stand_in_workload(levels: int = 5) -> Workload:
    """Synthetic subnets: chains of matmuls growing with the level. Accuracies are SYNTHETIC labels."""
    import torch

    torch.manual_seed(0)
    entries, mats = [], {}
    for i in range(levels):
        width = 288 + 48 * i  # ~1:4 in latency: none far below a scheduler time slice
        sid = f"standin-l{i}"
        mats[sid] = [torch.randn(width, width) for _ in range(6)]
        entries.append(CatalogEntry(id=sid, config={"level": i}, resolution=width, macs=6 * width**3, params=0,
                                    latency={"cpu": Latency(ms=1.0, source="measured")},
                                    accuracy=Accuracy(top1=0.60 + 0.05 * i, source="predicted", dataset="synthetic")))

    def run(subnet: str) -> float:
        ms = mats[subnet]
        start = time.perf_counter()
        x = ms[0]
        with torch.inference_mode():
            for m in ms[1:]:
                x = torch.tanh(x @ m * 0.01)
        return (time.perf_counter() - start) * 1e3

    return Workload(entries, run, "stand-in", "synthetic matmul chains (accuracies are labels, not measured)")


def calibrate(work: Workload, repeats: int) -> tuple[dict[str, float], dict[str, float]]:
    """Quiet median and 95th percentile latency of every subnet on this machine (warm-up first)."""
    for e in work.entries:
        work.run(e.id)
    samples: dict[str, list[float]] = {e.id: [] for e in work.entries}
    for _ in range(repeats):
        for e in work.entries:
            samples[e.id].append(work.run(e.id))
    return ({sid: median(v) for sid, v in samples.items()},
            {sid: sorted(v)[max(0, math.ceil(0.95 * len(v)) - 1)] for sid, v in samples.items()})


def pareto_front(entries: Sequence[CatalogEntry], latency: dict[str, float]) -> list[CatalogEntry]:
    """Subnets not dominated in (latency on this machine, accuracy), fastest first."""
    front: list[CatalogEntry] = []
    for e in sorted(entries, key=lambda e: (latency[e.id], -(e.accuracy.top1 if e.accuracy else 0.0))):
        acc = e.accuracy.top1 if e.accuracy else 0.0
        if not front or acc > (front[-1].accuracy.top1 if front[-1].accuracy else 0.0):
            front.append(e)
    return front


def levels(front: Sequence[CatalogEntry], quiet: dict[str, float],
           p95: dict[str, float]) -> tuple[CatalogEntry, CatalogEntry, CatalogEntry, bool]:
    """``low``, ``mid``, ``top`` of the front (module doc) and whether they are ``SEPARATION`` apart."""
    top = front[-1]
    mids = [f for f in front[:-1] if quiet[top.id] >= SEPARATION * p95[f.id]]
    mid = mids[-1] if mids else front[max(0, len(front) - 2)]
    lows = [f for f in front[: front.index(mid)] if quiet[mid.id] >= SEPARATION * p95[f.id]]
    low = lows[-1] if lows else front[0]
    return low, mid, top, bool(mids and lows)


def between(lo_p95: float, hi_median: float) -> float:
    """A budget that a subnet of 95th percentile ``lo_p95`` meets with room and ``hi_median`` misses."""
    return min(1.5 * lo_p95, math.sqrt(lo_p95 * hi_median))


def start_background(n: int, start_at: float, stop_at: float, hog: str = "spin") -> list[subprocess.Popen[bytes]]:
    """``n`` load processes (``hog``: busy loop or memory streaming) spinning from ``start_at``, gone by ``stop_at``."""
    return [subprocess.Popen([sys.executable, "-c", HOGS[hog], repr(start_at), repr(stop_at)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(n)]


def stop_background(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=2)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@dataclass(frozen=True)
class PhasePlan:
    name: str
    seconds: float
    budget_ms: float
    load: bool | int  # background processes: False/0 none, True = --workers, an int = that many
    event: bool  # a change the policies must react to (contention starts, budget tightens)
    objective: str = "accuracy"
    min_accuracy: float = 0.0
    hog: str = "spin"  # what the background processes do (HOGS)
    two_apps: bool = False  # app-b joins on the same core (module doc, phase 7)

    def workers(self, default: int) -> int:
        if isinstance(self.load, bool):
            return default if self.load else 0
        return self.load

    def budget(self, priority: int = 0) -> Budget:
        return Budget(latency_ms=self.budget_ms, min_accuracy=self.min_accuracy, objective=self.objective,
                      priority=priority)

    def describe(self, default_workers: int) -> str:
        n = self.workers(default_workers)
        load = f"{n} {'memory-bandwidth hog' if self.hog == 'membw' else 'busy process'}{'es' * (n != 1)}" if n else \
            "no load"
        extra = f", {self.objective} objective, floor {self.min_accuracy:.3f}" if self.objective != "accuracy" else ""
        return f"budget {self.budget_ms:.1f} ms, {load}{extra}{', two apps on one core' if self.two_apps else ''}"


def _monitor() -> Any:
    """The platforms engineer's monitor on this machine, or None when it cannot run here."""
    try:
        from governors.monitors import Monitor
        from governors.platform import detect_platform

        mon = Monitor(detect_platform())
        mon.register_current_thread()
        return mon
    except Exception:  # noqa: BLE001 - the benchmark runs without monitors too
        return None


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    work = stand_in_workload() if args.stand_in else _try_pool(args.catalog, args.batch)
    try:
        return _run(args, work)
    finally:
        work.close()


def _try_pool(catalog: str | None, batch: int) -> Workload:
    try:
        return pool_workload(catalog, batch)
    except (ImportError, OSError, Exception) as exc:  # noqa: BLE001 - say why and fall back
        if catalog is not None:
            raise
        print(f"demo catalog unavailable ({type(exc).__name__}: {exc}); using the stand-in workload",
              file=sys.stderr)
        return stand_in_workload()


def plan_phases(args: argparse.Namespace, front: Sequence[CatalogEntry], quiet: dict[str, float],
                p95: dict[str, float]) -> tuple[list[PhasePlan], dict[str, Any]]:
    """The phases and their budgets from the calibration (module doc); the second value goes into the JSON."""
    low, mid, top, separated = levels(front, quiet, p95)
    bq = args.budget_ms or between(p95[mid.id], quiet[top.id])
    bt = args.tight_budget_ms or between(p95[low.id], quiet[mid.id])
    bl = 2.0 * p95[top.id]
    b2 = between(p95[mid.id] + p95[low.id], 2.0 * quiet[mid.id])
    floor = mid.accuracy.top1 if mid.accuracy is not None else 0.0
    s, w = args.scale, args.workers
    phases = [PhasePlan("quiet", 10 * s, bq, False, False),
              PhasePlan("busy-1", 10 * s, bq, w, True), PhasePlan("busy-2", 10 * s, bq, 2 * w, True),
              PhasePlan("busy-3", 10 * s, bq, 3 * w, True), PhasePlan("membw", 10 * s, bq, w, True, hog="membw"),
              PhasePlan("loose", 12 * s, bl, False, True),
              PhasePlan("floor", 10 * s, bl, False, True, objective="energy", min_accuracy=floor),
              PhasePlan("tight", 10 * s, bt, False, True),
              PhasePlan("two-apps", 16 * s, b2, False, True, two_apps=True)]
    design = {"levels": {"low": low.id, "mid": mid.id, "top": top.id}, "levels_separated": separated,
              "separation": SEPARATION,
              "budgets_ms": {"Bq": round(bq, 3), "Bl": round(bl, 3), "Bt": round(bt, 3), "B2": round(b2, 3)}}
    return phases, design


def _run(args: argparse.Namespace, work: Workload) -> dict[str, Any]:
    say = (lambda _msg: None) if getattr(args, "quiet", False) else (lambda msg: print(msg, file=sys.stderr))
    load_before = os.getloadavg()[0]
    say(f"calibrating {len(work.entries)} subnets ({work.source}) ...")
    quiet, quiet_p95 = calibrate(work, repeats=args.calibration_repeats)
    entries = [replace(e, latency={"cpu": Latency(ms=quiet[e.id], source="measured", threads=1)})
               for e in work.entries]
    front = pareto_front(entries, quiet)  # fastest first; each more accurate than every faster one
    phases, design = plan_phases(args, front, quiet, quiet_p95)
    say(f"front {[e.id for e in front]}; levels {design['levels']} (separated: {design['levels_separated']}); "
        f"budgets {design['budgets_ms']}; {sum(p.seconds for p in phases):.0f} s of phases")
    cpus = os.cpu_count() or 1
    # the static baselines are not run: a fixed subnet's hit rate is its probe's (``summarise``), and
    # running the largest subnet every tick would take most of the run
    policies: dict[str, Policy] = {
        "model-based": make_policy("model-based", use_monitors=args.monitor),
        "dynamic-ofa": make_policy("dynamic-ofa", pe="cpu"),
    }
    monitor = _monitor() if args.monitor else None
    trace: TextIO | None = open(args.trace, "w", encoding="utf-8") if args.trace else None  # noqa: SIM115
    records: list[dict[str, Any]] = []
    procs: list[subprocess.Popen[bytes]] = []
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    t_start = time.time()
    try:
        tick = 0
        probe_i = 0
        load = LoadView()
        last_sample = 0.0
        for idx, phase in enumerate(phases):
            missed = dict.fromkeys((e.id for e in front), 0)
            t_phase = time.time()
            t_end = t_phase + phase.seconds
            n = phase.workers(args.workers)
            if n:
                procs = start_background(n, t_phase, t_end + 0.5, phase.hog)
            pe = PeInfo("cpu", "cpu", (), cpus=cpus)
            requests = [AppRequest("app", phase.budget(PRIORITY_A if phase.two_apps else 0), tuple(entries))]
            if phase.two_apps:
                # both apps on one core: the policies see a one-CPU PE, and this process runs there
                pe = PeInfo("cpu", "cpu", (), cpus=1)
                requests.append(AppRequest("app-b", phase.budget(PRIORITY_B), tuple(entries)))
                if affinity:
                    os.sched_setaffinity(0, {max(affinity)})
            while time.time() < t_end:
                if monitor is not None and time.time() - last_sample > 0.1:
                    from governors.contention import load_from_snapshot

                    load = load_from_snapshot(monitor.sample())
                    last_sample = time.time()
                inp = DecisionInput(apps=tuple(requests), pes=(pe,), board="generic-linux", load=load)
                names = list(policies)
                order = names[tick % len(names):] + names[: tick % len(names)]
                for name in order:
                    policy = policies[name]
                    decision = policy.decide(inp)
                    done = 0.0  # the frame reached every app at once: each app waits for the ones before it
                    for req in requests:
                        point = decision.points[req.name]
                        ms = work.run(point.subnet)
                        policy.observe(req.name, ms, point)
                        done += ms
                        records.append(_record(tick, phase, idx, name, point.subnet, done, entries, t_start, policy,
                                               app=req.name, forward_ms=ms,
                                               predicted_ms=decision.outcomes[req.name].predicted_ms
                                               if req.name in decision.outcomes else None))
                for _ in range(2):
                    # a subnet that missed twice cannot reach a 0.99 hit rate within a phase (200 samples):
                    # the oracle's verdict on it is in, so the probe's time goes to the others
                    live = [e for e in front if missed[e.id] < 2] or front[:1]
                    probe = live[probe_i % len(live)]
                    probe_i += 1
                    rec = _record(tick, phase, idx, "probe", probe.id, work.run(probe.id), entries, t_start, None)
                    missed[probe.id] += not rec["hit"]
                    records.append(rec)
                tick += 1
            if procs:
                stop_background(procs)
                procs = []
            if phase.two_apps and affinity:
                os.sched_setaffinity(0, affinity)
            mine = [r for r in records if r["phase_index"] == idx and r["policy"] == "model-based"]
            ran = {app: [r for r in mine if r["app"] == app] for app in dict.fromkeys(r["app"] for r in mine)}
            say(f"[{time.time() - t_start:6.1f} s] {phase.name}: {phase.describe(args.workers)}; model-based ran "
                + ", ".join(f"{app} {_mode([r['subnet'] for r in rs])} (hit {sum(r['hit'] for r in rs) / len(rs):.2f})"
                            for app, rs in ran.items()))
        if trace is not None:
            for r in records:
                trace.write(json.dumps(r) + "\n")
    finally:
        if procs:
            stop_background(procs)
        if affinity:
            os.sched_setaffinity(0, affinity)
        if trace is not None:
            trace.close()
        if monitor is not None:
            monitor.close()
    result = summarise(records, phases, entries, args.reaction_window)
    result.update({
        "workload": work.kind, "workload_source": work.source,
        "calibration_ms": {k: round(v, 3) for k, v in quiet.items()},
        "calibration_p95_ms": {k: round(v, 3) for k, v in quiet_p95.items()},
        **design,
        "pareto_front": [e.id for e in front],
        "background_processes": args.workers, "monitors": monitor is not None,
        "load_average_1min": {"start": round(load_before, 2), "end": round(os.getloadavg()[0], 2),
                              "cpus": os.cpu_count()},
        "wall_s": round(time.time() - t_start, 1),
        "trace": args.trace,
    })
    return result


def _record(tick: int, phase: PhasePlan, idx: int, policy: str, subnet: str, ms: float,
            entries: Sequence[CatalogEntry], t0: float, obj: Policy | None, app: str = "app",
            forward_ms: float | None = None, predicted_ms: float | None = None) -> dict[str, Any]:
    entry = next(e for e in entries if e.id == subnet)
    rec: dict[str, Any] = {
        "t": round(time.time() - t0, 4), "tick": tick, "phase": phase.name, "phase_index": idx, "policy": policy,
        "app": app, "subnet": subnet, "accuracy": entry.accuracy.top1 if entry.accuracy else 0.0,
        "latency_ms": round(ms, 4), "budget_ms": round(phase.budget_ms, 4), "hit": ms <= phase.budget_ms,
        "min_accuracy": phase.min_accuracy, "objective": phase.objective,
        "cpu_khz": None,  # no cpufreq on this machine: no DVFS
    }
    if forward_ms is not None and forward_ms != ms:
        rec["forward_ms"] = round(forward_ms, 4)
    if predicted_ms is not None:
        rec["predicted_ms"] = round(predicted_ms, 4)  # the policy's own-forward prediction (no wait, no margin)
    if obj is not None and policy == "model-based":
        state = obj.state()
        rec["slowdown"] = state.get("contention", {}).get("cpu", {}).get("slowdown")
        # the margin the prediction was planned with: with predicted_ms, what the planner assumed of this frame
        rec["margin"] = state.get("margins", {}).get(app)
    return rec


def phase_oracles(records: Sequence[dict[str, Any]], acc: dict[str, float]) -> dict[tuple[str, str], tuple[str, float]]:
    """Per (phase, app): the oracle's choice and its probed hit rate, from the probe records (module doc).

    The first app's choice comes from the probe's latencies; an app that waits for another (app-b,
    whose frame is served after the first app's) is judged on the first app's choice plus its own.
    """
    out: dict[tuple[str, str], tuple[str, float]] = {}
    probes: dict[str, dict[str, list[float]]] = {}
    for r in records:
        if r["policy"] == "probe":
            probes.setdefault(r["phase"], {}).setdefault(r["subnet"], []).append(r["latency_ms"])
    for phase, first in {r["phase"]: r for r in records if r["policy"] == "probe"}.items():
        samples = probes[phase]
        budget, objective = first["budget_ms"], first.get("objective", "accuracy")
        floor = first.get("min_accuracy", 0.0)
        pick_a = _oracle_pick(samples, budget, acc, objective, floor)
        out[(phase, "app")] = pick_a
        if any(r.get("app") == "app-b" for r in records if r["phase"] == phase):
            out[(phase, "app-b")] = _pick_after(samples, pick_a[0], budget, acc, objective, floor)
    return out


def _pick_after(samples: dict[str, list[float]], first: str, budget: float, acc: dict[str, float], objective: str,
                min_accuracy: float) -> tuple[str, float]:
    """The oracle's choice for an app whose frame waits for one forward of ``first`` (app-b after app)."""
    before = samples[first]
    # pair the samples (a subnet with itself: the next sample)
    waited = {sid: [a + b for a, b in zip(before, v[1:] if sid == first else v, strict=False)]
              for sid, v in samples.items()}
    return _oracle_pick({k: v for k, v in waited.items() if v}, budget, acc, objective, min_accuracy)


def oracle_given_first_app(records: Sequence[dict[str, Any]], acc: dict[str, float], policy: str,
                           app: str = "app-b") -> dict[int, str]:
    """Per tick of ``policy``'s ``app`` (which waits for ``"app"``): the oracle's choice after the subnet the first
    app really ran then, not after the oracle's own choice for it.

    ``phase_oracles`` judges app-b after the first app's oracle choice, so app-b's gap there also counts what the
    first app ran: a first app below its oracle leaves app-b more time (a gap below 0 is possible), one at it
    leaves the oracle's. This one isolates how app-b was planned for the time it was actually left.
    """
    probes: dict[str, dict[str, list[float]]] = {}
    for r in records:
        if r["policy"] == "probe":
            probes.setdefault(r["phase"], {}).setdefault(r["subnet"], []).append(r["latency_ms"])
    first = {r["tick"]: r["subnet"] for r in records if r["policy"] == policy and r.get("app", "app") == "app"}
    out: dict[int, str] = {}
    cache: dict[tuple[str, str], str] = {}
    for r in records:
        if r["policy"] != policy or r.get("app") != app or r["tick"] not in first or r["phase"] not in probes:
            continue
        key = (r["phase"], first[r["tick"]])
        if key not in cache and key[1] in probes[key[0]]:
            cache[key] = _pick_after(probes[key[0]], key[1], r["budget_ms"], acc, r.get("objective", "accuracy"),
                                     r.get("min_accuracy", 0.0))[0]
        if key in cache:
            out[r["tick"]] = cache[key]
    return out


def _oracle_pick(samples: dict[str, list[float]], budget: float, acc: dict[str, float], objective: str,
                 min_accuracy: float) -> tuple[str, float]:
    rates = {sid: sum(v <= budget for v in s) / len(s) for sid, s in sorted(samples.items())}
    return _pick_by(rates, {sid: median(s) for sid, s in samples.items()}, acc, objective, min_accuracy)


def _pick_by(rates: dict[str, float], ms: dict[str, float], acc: dict[str, float], objective: str,
             min_accuracy: float) -> tuple[str, float]:
    """By the objective among the subnets whose hit rate is >= 0.99: the most accurate, or (energy) the fastest
    over the floor (on a CPU without DVFS the energy per frame grows with the busy time)."""
    ok = [sid for sid, rate in rates.items() if rate >= 0.99]
    over = [sid for sid in ok if acc[sid] >= min_accuracy]
    if objective == "energy" and over:
        pick = min(over, key=lambda sid: ms[sid])
    else:
        # none meets the budget: the one that meets it most often, the fastest of those
        pick = max(ok, key=lambda sid: acc[sid]) if ok else max(rates, key=lambda sid: (rates[sid], -ms[sid]))
    return pick, rates[pick]


def summarise(records: Sequence[dict[str, Any]], phases: Sequence[PhasePlan], entries: Sequence[CatalogEntry],
              window: int) -> dict[str, Any]:
    acc = {e.id: (e.accuracy.top1 if e.accuracy else 0.0) for e in entries}
    records = [r if "app" in r else {**r, "app": "app"} for r in records]
    by: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        by.setdefault((r["policy"], r["app"]), []).append(r)
    events = {i for i, p in enumerate(phases) if p.event}
    oracles = phase_oracles(records, acc)

    def split(rs: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, int]]:
        """Records outside the reaction windows (the first ``window`` inferences after an event), and misses in them."""
        outside: list[dict[str, Any]] = []
        reaction: dict[str, int] = {}
        seen: dict[int, int] = {}
        for r in rs:
            k = r["phase_index"]
            seen[k] = seen.get(k, 0) + 1
            if k in events and seen[k] <= window:
                reaction[phases[k].name] = reaction.get(phases[k].name, 0) + (0 if r["hit"] else 1)
                continue
            outside.append(r)
        return outside, reaction

    def stats(name: str, app: str) -> dict[str, Any]:
        rs = by.get((name, app), [])
        outside, reaction = split(rs)
        n = max(1, len(rs))
        counts = {p.name: sum(1 for r in rs if r["phase"] == p.name) for p in phases}
        oracle_acc = sum(acc[oracles[(p, app)][0]] * c for p, c in counts.items() if c and (p, app) in oracles) / n
        mean_acc = sum(r["accuracy"] for r in rs) / n
        extra: dict[str, Any] = {}
        if app != "app" and rs and "tick" in rs[0]:
            given = oracle_given_first_app(records, acc, name, app)
            judged = [r for r in rs if r["tick"] in given]
            if judged:
                oracle_given = sum(acc[given[r["tick"]]] for r in judged) / len(judged)
                mean_judged = sum(r["accuracy"] for r in judged) / len(judged)
                extra = {"oracle_accuracy_given_first_app": round(oracle_given, 5),
                         "accuracy_gap_given_first_app_pp": round((oracle_given - mean_judged) * 100, 3)}
        return {
            "inferences": len(rs),
            "hit_rate": round(sum(r["hit"] for r in outside) / len(outside), 5) if outside else None,
            "hit_rate_all": round(sum(r["hit"] for r in rs) / n, 5),
            "mean_accuracy": round(mean_acc, 5),
            "oracle_accuracy_same_inferences": round(oracle_acc, 5),
            "accuracy_gap_vs_oracle_pp": round((oracle_acc - mean_acc) * 100, 3),
            "misses_in_reaction_window": reaction,
            "per_phase_hit_rate": {p: round(sum(r["hit"] for r in rs if r["phase"] == p) / c, 4)
                                   for p, c in counts.items() if c},
            "switches": sum(1 for a, b in zip(rs, rs[1:], strict=False) if a["subnet"] != b["subnet"]),
            **extra,
        }

    names = list(dict.fromkeys(r["policy"] for r in records if r["policy"] != "probe"))
    per = {name: stats(name, "app") for name in names}
    apps = list(dict.fromkeys(r["app"] for r in records if r["policy"] != "probe"))
    mb_apps = {app: stats("model-based", app) for app in apps if ("model-based", app) in by}
    mb = per.get("model-based", {})
    mb_rs = by.get(("model-based", "app"), [])
    front = sorted({r["subnet"] for r in records if r["policy"] == "probe"}, key=lambda sid: acc[sid])
    static = {name: _static_hit_rate(records, phases, sid) for name, sid in
              (("static-largest", front[-1] if front else None), ("static-smallest", front[0] if front else None))}
    oracle_hits = sum(oracles[(r["phase"], "app")][1] for r in mb_rs if (r["phase"], "app") in oracles) / max(
        1, len(mb_rs))
    reaction = mb.get("misses_in_reaction_window", {})
    sequence = [oracles[(p.name, "app")][0] for p in phases if (p.name, "app") in oracles]
    step_up = _step_up_inferences(mb_rs, phases, {p: v[0] for (p, a), v in oracles.items() if a == "app"}, acc)
    goals_per_app = {app: {"hit_rate_ge_0.99_outside_reaction": (st["hit_rate"] or 0.0) >= 0.99,
                           "accuracy_within_1pp_of_oracle": st["accuracy_gap_vs_oracle_pp"] <= 1.0}
                     for app, st in mb_apps.items()}
    return {
        "benchmark": "contention",
        "hit_rate": mb.get("hit_rate"),
        "hit_rate_all": mb.get("hit_rate_all"),
        "hit_rate_dynamic_ofa": per.get("dynamic-ofa", {}).get("hit_rate_all"),
        "hit_rate_static_largest": static["static-largest"],
        "hit_rate_static_smallest": static["static-smallest"],
        "hit_rate_oracle": round(oracle_hits, 5),
        "mean_accuracy": mb.get("mean_accuracy"),
        "mean_accuracy_dynamic_ofa": per.get("dynamic-ofa", {}).get("mean_accuracy"),
        "mean_accuracy_static_largest": round(acc[front[-1]], 5) if front else None,
        "mean_accuracy_static_smallest": round(acc[front[0]], 5) if front else None,
        "mean_accuracy_oracle": mb.get("oracle_accuracy_same_inferences"),
        "accuracy_gap_vs_oracle_pp": mb.get("accuracy_gap_vs_oracle_pp"),
        "reaction_inferences": max(reaction.values(), default=0),
        "reaction_inferences_per_event": reaction,
        "reaction_window": window,
        "oracle_per_phase": {p.name: oracles[(p.name, "app")][0] for p in phases if (p.name, "app") in oracles},
        "oracle_per_phase_app_b": {p: v[0] for (p, a), v in oracles.items() if a == "app-b"},
        "oracle_sequence": sequence,
        "oracle_distinct": len(set(sequence)),
        "step_up_inferences": step_up,
        "policy_sequence": {name: [_mode([r["subnet"] for r in by.get((name, "app"), []) if r["phase"] == p.name])
                                   for p in phases] for name in per},
        "phases": [{"name": p.name, "seconds": p.seconds, "budget_ms": round(p.budget_ms, 3), "load": p.load,
                    "hog": p.hog, "objective": p.objective, "min_accuracy": p.min_accuracy, "two_apps": p.two_apps}
                   for p in phases],
        "apps": mb_apps,
        "policies": per,
        "goals": {
            "hit_rate_ge_0.99_outside_reaction": all(g["hit_rate_ge_0.99_outside_reaction"]
                                                     for g in goals_per_app.values()) and bool(goals_per_app),
            "reaction_le_3": max(reaction.values(), default=0) <= 3,
            "accuracy_within_1pp_of_oracle": all(g["accuracy_within_1pp_of_oracle"] for g in goals_per_app.values())
            and bool(goals_per_app),
            "oracle_distinct_ge_3": len(set(sequence)) >= 3,
            "step_up_le_50": step_up is not None and step_up <= 50,
            "per_app": goals_per_app,
        },
    }


def _static_hit_rate(records: Sequence[dict[str, Any]], phases: Sequence[PhasePlan],
                     subnet: str | None) -> float | None:
    """What always running ``subnet`` achieves: its probed hit rate per phase, weighted by the phases' durations."""
    rates = []
    for p in phases:
        hits = [r["hit"] for r in records if r["policy"] == "probe" and r["phase"] == p.name and r["subnet"] == subnet]
        if hits:
            rates.append((sum(hits) / len(hits), p.seconds))
    return round(sum(r * s for r, s in rates) / sum(s for _, s in rates), 5) if rates else None


def _mode(values: Sequence[str]) -> str | None:
    return max(set(values), key=values.count) if values else None


def _step_up_inferences(rs: Sequence[dict[str, Any]], phases: Sequence[PhasePlan], oracle: dict[str, str],
                        acc: dict[str, float]) -> int | None:
    """Inferences of the policy in the first phase whose budget loosened until it ran a subnet at least as
    accurate as that phase's oracle choice (None: no such phase, or it never did)."""
    for i, p in enumerate(phases):
        if i == 0 or p.budget_ms <= phases[i - 1].budget_ms or p.objective != "accuracy":
            continue
        mine = [r for r in rs if r["phase_index"] == i]
        for k, r in enumerate(mine):
            if acc[r["subnet"]] >= acc[oracle[p.name]]:
                return k + 1
        return None
    return None


def plot(trace_path: str, out: str) -> None:
    """Timeline: budget and measured latency, subnet accuracy beside the per-phase oracle's, slowdown estimate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in Path(trace_path).read_text(encoding="utf-8").splitlines() if line]
    if not records:
        raise SystemExit(f"trace {trace_path} is empty")
    records = [r if "app" in r else {**r, "app": "app"} for r in records]
    shown = ["model-based", "dynamic-ofa"]
    colors = {"model-based": "tab:blue", "dynamic-ofa": "tab:orange"}
    fig, axes = plt.subplots(3, 1, figsize=(11, 8.5), sharex=True)
    ax_lat, ax_acc, ax_freq = axes
    for name in shown:
        rs = [r for r in records if r["policy"] == name and r["app"] == "app"]
        ax_lat.plot([r["t"] for r in rs], [r["latency_ms"] for r in rs], ".", ms=2, color=colors[name], label=name)
        ax_acc.step([r["t"] for r in rs], [r["accuracy"] * 100 for r in rs], where="post", color=colors[name],
                    label=name, lw=1.2)
    b = [r for r in records if r["policy"] == "model-based" and r["app"] == "app-b"]
    if b:
        ax_lat.plot([r["t"] for r in b], [r["latency_ms"] for r in b], "x", ms=3, color="tab:purple",
                    label="model-based, app-b (waits for app)")
        ax_acc.step([r["t"] for r in b], [r["accuracy"] * 100 for r in b], where="post", color="tab:purple",
                    label="model-based, app-b", lw=1.2)
    acc = {r["subnet"]: r["accuracy"] for r in records if r["policy"] == "probe"}
    acc.update({r["subnet"]: r["accuracy"] for r in records})
    oracles = phase_oracles(records, acc)
    labelled = set()
    for (phase, app), (pick, _) in oracles.items():
        rs = [r for r in records if r["phase"] == phase]
        line, color, label = ("--", "k", "oracle (per phase)") if app == "app" else (":", "tab:purple", "oracle, app-b")
        ax_acc.plot([rs[0]["t"], rs[-1]["t"]], [acc[pick] * 100] * 2, linestyle=line, lw=2.0, color=color,
                    label=None if app in labelled else label)
        labelled.add(app)
    mb = [r for r in records if r["policy"] == "model-based" and r["app"] == "app"]
    ax_lat.step([r["t"] for r in mb], [r["budget_ms"] for r in mb], where="post", color="k", label="budget")
    ax_lat.set_ylabel("latency (ms)")
    ax_lat.set_yscale("log")
    ax_lat.legend(loc="upper left", fontsize=7, markerscale=4, ncol=2)
    ax_acc.set_ylabel("subnet accuracy (%)")
    ax_acc.legend(loc="lower left", fontsize=7, ncol=3)
    slow = [(r["t"], r["slowdown"]) for r in mb if r.get("slowdown") is not None]
    if slow:
        ax_freq.plot([t for t, _ in slow], [s for _, s in slow], color="tab:blue",
                     label="model-based slowdown estimate")
    khz = [(r["t"], r["cpu_khz"]) for r in mb if r.get("cpu_khz")]
    if khz:
        ax2 = ax_freq.twinx()
        ax2.step([t for t, _ in khz], [k / 1000 for _, k in khz], where="post", color="tab:green")
        ax2.set_ylabel("CPU MHz")
    else:
        ax_freq.text(0.99, 0.9, "CPU frequency: not controllable on this machine (no cpufreq)",
                     transform=ax_freq.transAxes, ha="right", fontsize=8)
    ax_freq.set_ylabel("slowdown (x)")
    ax_freq.set_xlabel("time (s)")
    ax_freq.legend(loc="upper left", fontsize=8)
    starts: dict[str, float] = {}
    ends: dict[str, float] = {}
    for r in records:
        starts.setdefault(r["phase"], r["t"])
        ends[r["phase"]] = r["t"]
    for i, (name, t0) in enumerate(starts.items()):
        for ax in axes:
            ax.axvspan(t0, ends[name], color="grey" if i % 2 else "white", alpha=0.12, lw=0)
        ax_lat.text(t0, 1.01, name, transform=ax_lat.get_xaxis_transform(), fontsize=7)
    fig.suptitle("dynofa contention benchmark (real, this machine): budget, latency, subnet vs the per-phase oracle")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Real-contention benchmark of dynofa's policies (one JSON object).")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every phase's duration (1.0 = 98 s)")
    parser.add_argument("--catalog", help="catalog file (default: the demo catalog)")
    parser.add_argument("--stand-in", action="store_true", help="synthetic matmul subnets instead of the catalog")
    parser.add_argument("--batch", type=int, default=32,
                        help="images per inference (default 32: an inference longer than a scheduler time slice, "
                             "so that contention stretches it rather than only delaying its start)")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                        help="background processes of the lightest contention phase; the next two run 2x and 3x, "
                             "the memory-bandwidth phase 1x (default: half a process per CPU)")
    parser.add_argument("--budget-ms", type=float,
                        help="budget Bq of the quiet and loaded phases (default: from calibration)")
    parser.add_argument("--tight-budget-ms", type=float,
                        help="budget Bt of the tight phase (default: from calibration)")
    parser.add_argument("--reaction-window", type=int, default=3, help="inferences after an event not counted")
    parser.add_argument("--calibration-repeats", type=int, default=15)
    parser.add_argument("--no-monitor", dest="monitor", action="store_false",
                        help="do not feed the platform monitor to the policies")
    parser.add_argument("--trace", help="write every inference as JSON lines to this file")
    parser.add_argument("--plot", help="write a timeline PNG (needs --trace or --from-trace)")
    parser.add_argument("--from-trace", help="plot an existing trace instead of running")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    if not args.scale > 0 or args.workers < 0 or args.reaction_window < 0 or args.batch < 1:
        parser.error("--scale must be positive, --batch >= 1, --workers and --reaction-window non-negative")
    if args.calibration_repeats < 2:
        parser.error("--calibration-repeats must be at least 2 (a median and a 95th percentile)")
    if args.from_trace:
        if not args.plot:
            parser.error("--from-trace needs --plot")
        plot(args.from_trace, args.plot)
        return 0
    if args.plot and not args.trace:
        args.trace = str(Path(args.plot).with_suffix(".jsonl"))
    result = run(args)
    if args.plot:
        plot(args.trace, args.plot)
        result["plot"] = args.plot
    json.dump(result, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
