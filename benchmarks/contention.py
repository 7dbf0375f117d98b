"""REAL contention on this machine: do the policies keep an app inside its latency budget?

    python -m benchmarks.contention [--scale 1.0] [--trace out.jsonl] [--plot out.png]
    python -m benchmarks.contention --plot out.png --from-trace out.jsonl     # plot an earlier run

An app runs inference in a loop from the demo catalog (``subnets.demo`` + ``SubnetPool``;
``--stand-in`` or a missing demo catalog uses labelled synthetic matmul subnets instead)
with a latency budget. Phases, by wall-clock time, chosen so that the right choice changes:

1. ``quiet``: no extra load, budget B1 (the largest subnet fits);
2. ``busy-1``, ``busy-2``, ``busy-3``: graded contention, 1, 2 and 3 x ``--workers``
   background processes (default half a process per CPU: 1, 2, 3 on two cores; bounded in
   time, killed at the end) busy-looping at the same priority, same budget;
3. ``loose``: the load stops and the budget loosens to B3 (the most accurate subnet fits
   with room): the policy must step up (``step_up_inferences``: inferences until it runs
   the phase's best choice);
4. ``floor``: budget B3 with ``objective: energy`` and ``min_accuracy`` = the accuracy of
   the second fastest subnet of the front (the fastest on a front of three): the right
   choice is the cheapest subnet over the floor, not the most accurate one that fits;
5. ``tight``: the budget tightens to B2 (only smaller subnets fit).

The policies run **in the same run, interleaved** (each tick, every policy decides and
runs one inference, in a rotating order), so they meet the same contention:
``model-based``, ``dynamic-ofa``, ``static`` largest and smallest. A probe runs every
subnet in turn; from its samples the per-phase best static choice (the oracle: by the
phase's objective, the most accurate subnet, or the fastest one over the floor, among those
whose probed hit rate in that phase is >= 0.99) is derived after the run; ``oracle_sequence``
lists it phase by phase and ``oracle_distinct`` counts the different choices.

Budgets are set from a calibration of this machine, printed in the JSON, over the Pareto
front of (quiet latency here, accuracy): B1 = the larger of 1.3 x the most accurate subnet's
quiet median and 1.15 x the fastest subnet's 95th percentile under the background load (so
that some subnet can meet it under contention); B2 = 1.15 x the mean of the quiet medians of the two
most accurate front subnets, at least 1.3 x the fastest's quiet 95th percentile. The
1-minute load average before and after is reported: on a shared machine, other users' load
changes what any policy can achieve (``hit_rate_oracle`` says what the per-phase best static
choice achieved in the same run). Each inference runs ``--batch`` images (default 32) so that
it lasts longer than a scheduler time slice: contention then stretches it rather than only
delaying its start. The machine has no cpufreq, so there is no DVFS here: subnet choice only.
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


def calibrate_contended(work: Workload, ids: Sequence[str], workers: int, seconds: float) -> dict[str, float]:
    """95th percentile latency of subnets ``ids`` while the background load runs (budget design only)."""
    if workers <= 0 or seconds <= 0:
        return {}
    now = time.time()
    procs = start_background(workers, now, now + seconds + 1.0)
    samples: dict[str, list[float]] = {sid: [] for sid in ids}
    try:
        while time.time() < now + seconds:
            for sid in ids:
                samples[sid].append(work.run(sid))
    finally:
        stop_background(procs)
    return {sid: sorted(v)[max(0, math.ceil(0.95 * len(v)) - 1)] for sid, v in samples.items() if v}


def start_background(n: int, start_at: float, stop_at: float) -> list[subprocess.Popen[bytes]]:
    """``n`` busy-loop processes that start spinning at ``start_at`` and exit by ``stop_at`` on their own."""
    return [subprocess.Popen([sys.executable, "-c", _SPIN, repr(start_at), repr(stop_at)],
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

    def workers(self, default: int) -> int:
        if isinstance(self.load, bool):
            return default if self.load else 0
        return self.load

    def budget(self) -> Budget:
        return Budget(latency_ms=self.budget_ms, min_accuracy=self.min_accuracy, objective=self.objective)


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


def _run(args: argparse.Namespace, work: Workload) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    quiet, quiet_p95 = calibrate(work, repeats=args.calibration_repeats)
    entries = [replace(e, latency={"cpu": Latency(ms=quiet[e.id], source="measured", threads=1)})
               for e in work.entries]
    front = pareto_front(entries, quiet)  # fastest first; each more accurate than every faster one
    largest, smallest = front[-1], front[0]
    second = front[-2] if len(front) > 1 else front[-1]
    # B1: the most accurate subnet fits when quiet, and the fastest still fits under the background
    # load (so that switching, not luck, decides the hit rate); B2: between the two most accurate.
    heaviest = 3 * args.workers
    loaded = {} if args.budget_ms else calibrate_contended(work, [smallest.id], heaviest, args.calibration_load_s)
    b1 = args.budget_ms or max(1.3 * quiet[largest.id], 1.15 * loaded.get(smallest.id, 0.0))
    b2 = args.tight_budget_ms or max(1.15 * (quiet[largest.id] + quiet[second.id]) / 2,
                                     1.3 * quiet_p95[smallest.id])
    b3 = max(b1, 2.0 * quiet_p95[largest.id])  # loose: the most accurate subnet fits with room
    # the floor phase's best choice: the front's second fastest (the fastest on a front of three or fewer,
    # whose other two subnets are the other phases' choices)
    floor = front[1 if len(front) > 3 else 0].accuracy
    s = args.scale
    w = args.workers
    phases = [PhasePlan("quiet", 12 * s, b1, False, False),
              PhasePlan("busy-1", 12 * s, b1, w, True), PhasePlan("busy-2", 12 * s, b1, 2 * w, True),
              PhasePlan("busy-3", 12 * s, b1, 3 * w, True), PhasePlan("loose", 15 * s, b3, False, True),
              PhasePlan("floor", 12 * s, b3, False, True, objective="energy",
                        min_accuracy=floor.top1 if floor is not None else 0.0),
              PhasePlan("tight", 15 * s, b2, False, True)]
    pe = PeInfo("cpu", "cpu", (), cpus=os.cpu_count() or 1)
    policies: dict[str, Policy] = {
        "model-based": make_policy("model-based", use_monitors=args.monitor),
        "dynamic-ofa": make_policy("dynamic-ofa", pe="cpu"),
        "static-largest": make_policy("static", subnet=largest.id, pe="cpu"),
        "static-smallest": make_policy("static", subnet=smallest.id, pe="cpu"),
    }
    monitor = _monitor() if args.monitor else None
    trace: TextIO | None = open(args.trace, "w", encoding="utf-8") if args.trace else None  # noqa: SIM115
    records: list[dict[str, Any]] = []
    procs: list[subprocess.Popen[bytes]] = []
    t_start = time.time()
    try:
        tick = 0
        probe_i = 0
        load = LoadView()
        last_sample = 0.0
        for idx, phase in enumerate(phases):
            t_phase = time.time()
            t_end = t_phase + phase.seconds
            if phase.workers(args.workers):
                procs = start_background(phase.workers(args.workers), t_phase, t_end + 0.5)
            request = AppRequest("app", phase.budget(), tuple(entries))
            while time.time() < t_end:
                if monitor is not None and time.time() - last_sample > 0.1:
                    from governors.contention import load_from_snapshot

                    load = load_from_snapshot(monitor.sample())
                    last_sample = time.time()
                inp = DecisionInput(apps=(request,), pes=(pe,), board="generic-linux", load=load)
                names = list(policies)
                order = names[tick % len(names):] + names[: tick % len(names)]
                for name in order:
                    policy = policies[name]
                    decision = policy.decide(inp)
                    point = decision.points["app"]
                    ms = work.run(point.subnet)
                    policy.observe("app", ms, point)
                    records.append(_record(tick, phase, idx, name, point.subnet, ms, entries, t_start, policy))
                probe = entries[probe_i % len(entries)]
                probe_i += 1
                records.append(_record(tick, phase, idx, "probe", probe.id, work.run(probe.id), entries, t_start,
                                       None))
                tick += 1
            if procs:
                stop_background(procs)
                procs = []
        if trace is not None:
            for r in records:
                trace.write(json.dumps(r) + "\n")
    finally:
        if procs:
            stop_background(procs)
        if trace is not None:
            trace.close()
        if monitor is not None:
            monitor.close()
    result = summarise(records, phases, entries, args.reaction_window)
    result.update({
        "workload": work.kind, "workload_source": work.source,
        "calibration_ms": {k: round(v, 3) for k, v in quiet.items()},
        "calibration_under_load_p95_ms": {k: round(v, 3) for k, v in loaded.items()},
        "budgets_ms": {"B1": round(b1, 3), "B2": round(b2, 3), "B3": round(b3, 3)},
        "pareto_front": [e.id for e in front],
        "background_processes": args.workers, "monitors": monitor is not None,
        "load_average_1min": {"start": round(load_before, 2), "end": round(os.getloadavg()[0], 2),
                              "cpus": os.cpu_count()},
        "wall_s": round(time.time() - t_start, 1),
        "trace": args.trace,
    })
    return result


def _record(tick: int, phase: PhasePlan, idx: int, policy: str, subnet: str, ms: float,
            entries: Sequence[CatalogEntry], t0: float, obj: Policy | None) -> dict[str, Any]:
    entry = next(e for e in entries if e.id == subnet)
    rec: dict[str, Any] = {
        "t": round(time.time() - t0, 4), "tick": tick, "phase": phase.name, "phase_index": idx, "policy": policy,
        "subnet": subnet, "accuracy": entry.accuracy.top1 if entry.accuracy else 0.0,
        "latency_ms": round(ms, 4), "budget_ms": round(phase.budget_ms, 4), "hit": ms <= phase.budget_ms,
        "min_accuracy": phase.min_accuracy, "objective": phase.objective,
        "cpu_khz": None,  # no cpufreq on this machine: no DVFS
    }
    if obj is not None and policy == "model-based":
        est = obj.state().get("contention", {}).get("cpu", {})
        rec["slowdown"] = est.get("slowdown")
    return rec


def summarise(records: Sequence[dict[str, Any]], phases: Sequence[PhasePlan], entries: Sequence[CatalogEntry],
              window: int) -> dict[str, Any]:
    acc = {e.id: (e.accuracy.top1 if e.accuracy else 0.0) for e in entries}
    by_policy: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_policy.setdefault(r["policy"], []).append(r)
    # reaction windows: the first `window` inferences of each policy after an event
    events = {i for i, p in enumerate(phases) if p.event}

    def split(rs: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, int]]:
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

    # oracle: per phase, by the phase's objective, among the subnets whose probed hit rate is >= 0.99:
    # the most accurate (accuracy), or the fastest that meets the floor (energy: on a CPU without DVFS
    # the energy per frame grows with the busy time)
    oracle_choice: dict[str, str] = {}
    oracle_hit: dict[str, float] = {}
    probes = by_policy.get("probe", [])
    for p in phases:
        pick, rate = oracle_pick([r for r in probes if r["phase"] == p.name], acc, p.objective, p.min_accuracy)
        oracle_choice[p.name], oracle_hit[p.name] = pick, rate

    def stats(name: str) -> dict[str, Any]:
        rs = by_policy.get(name, [])
        outside, reaction = split(rs)
        n = max(1, len(rs))
        phase_counts = {p.name: sum(1 for r in rs if r["phase"] == p.name) for p in phases}
        oracle_acc = sum(acc[oracle_choice[p]] * c for p, c in phase_counts.items()) / n
        switches = sum(1 for a, b in zip(rs, rs[1:], strict=False) if a["subnet"] != b["subnet"])
        return {
            "inferences": len(rs),
            "hit_rate": round(sum(r["hit"] for r in outside) / max(1, len(outside)), 5),
            "hit_rate_all": round(sum(r["hit"] for r in rs) / n, 5),
            "mean_accuracy": round(sum(r["accuracy"] for r in rs) / n, 5),
            "oracle_accuracy_same_inferences": round(oracle_acc, 5),
            "misses_in_reaction_window": reaction,
            "per_phase_hit_rate": {p.name: round(sum(r["hit"] for r in rs if r["phase"] == p.name)
                                                 / max(1, phase_counts[p.name]), 4) for p in phases},
            "switches": switches,
        }

    per = {name: stats(name) for name in by_policy if name != "probe"}
    mb = per.get("model-based", {})
    oracle_hits = sum(oracle_hit[p.name] * sum(1 for r in by_policy.get("model-based", []) if r["phase"] == p.name)
                      for p in phases) / max(1, mb.get("inferences", 1))
    reaction = mb.get("misses_in_reaction_window", {})
    sequence = [oracle_choice[p.name] for p in phases]
    step_up = _step_up_inferences(by_policy.get("model-based", []), phases, oracle_choice, acc)
    return {
        "benchmark": "contention",
        "hit_rate": mb.get("hit_rate"),
        "hit_rate_all": mb.get("hit_rate_all"),
        "hit_rate_dynamic_ofa": per.get("dynamic-ofa", {}).get("hit_rate_all"),
        "hit_rate_static_largest": per.get("static-largest", {}).get("hit_rate_all"),
        "hit_rate_static_smallest": per.get("static-smallest", {}).get("hit_rate_all"),
        "hit_rate_oracle": round(oracle_hits, 5),
        "mean_accuracy": mb.get("mean_accuracy"),
        "mean_accuracy_dynamic_ofa": per.get("dynamic-ofa", {}).get("mean_accuracy"),
        "mean_accuracy_static_largest": per.get("static-largest", {}).get("mean_accuracy"),
        "mean_accuracy_static_smallest": per.get("static-smallest", {}).get("mean_accuracy"),
        "mean_accuracy_oracle": mb.get("oracle_accuracy_same_inferences"),
        "accuracy_gap_vs_oracle_pp": round((mb.get("oracle_accuracy_same_inferences", 0.0)
                                            - mb.get("mean_accuracy", 0.0)) * 100, 3),
        "reaction_inferences": max(reaction.values(), default=0),
        "reaction_inferences_per_event": reaction,
        "reaction_window": window,
        "oracle_per_phase": oracle_choice,
        "oracle_sequence": sequence,
        "oracle_distinct": len(set(sequence)),
        "step_up_inferences": step_up,
        "policy_sequence": {name: [_mode([r["subnet"] for r in by_policy.get(name, []) if r["phase"] == p.name])
                                   for p in phases] for name in per},
        "phases": [{"name": p.name, "seconds": p.seconds, "budget_ms": round(p.budget_ms, 3), "load": p.load}
                   for p in phases],
        "policies": per,
        "goals": {
            "hit_rate_ge_0.99_outside_reaction": (mb.get("hit_rate") or 0) >= 0.99,
            "reaction_le_3": max(reaction.values(), default=0) <= 3,
            "accuracy_within_1pp_of_oracle": abs(mb.get("oracle_accuracy_same_inferences", 0.0)
                                                 - mb.get("mean_accuracy", 0.0)) * 100 <= 1.0,
            "oracle_distinct_ge_3": len(set(sequence)) >= 3,
            "step_up_le_50": step_up is not None and step_up <= 50,
        },
    }


def oracle_pick(probes: Sequence[dict[str, Any]], acc: dict[str, float], objective: str,
                min_accuracy: float) -> tuple[str, float]:
    """A phase's best static choice from its probe records, and that subnet's probed hit rate."""
    rates, ms = {}, {}
    for sid in sorted({r["subnet"] for r in probes}):
        s = [r for r in probes if r["subnet"] == sid]
        rates[sid] = sum(r["hit"] for r in s) / len(s)
        ms[sid] = median(r["latency_ms"] for r in s)
    ok = [sid for sid, rate in rates.items() if rate >= 0.99]
    over = [sid for sid in ok if acc[sid] >= min_accuracy]
    if objective == "energy" and over:
        pick = min(over, key=lambda sid: ms[sid])
    else:
        pick = max(ok, key=lambda sid: acc[sid]) if ok else max(rates, key=lambda sid: (rates[sid], acc[sid]))
    return pick, rates[pick]


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
    """Timeline: budget and measured latency, subnet accuracy, model-based slowdown/frequency, per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in Path(trace_path).read_text(encoding="utf-8").splitlines() if line]
    if not records:
        raise SystemExit(f"trace {trace_path} is empty")
    shown = ["model-based", "dynamic-ofa", "static-largest"]
    colors = {"model-based": "tab:blue", "dynamic-ofa": "tab:orange", "static-largest": "tab:red"}
    fig, axes = plt.subplots(3, 1, figsize=(11, 8), sharex=True)
    ax_lat, ax_acc, ax_freq = axes
    for name in shown:
        rs = [r for r in records if r["policy"] == name]
        ax_lat.plot([r["t"] for r in rs], [r["latency_ms"] for r in rs], ".", ms=2, color=colors[name], label=name)
        ax_acc.step([r["t"] for r in rs], [r["accuracy"] * 100 for r in rs], where="post", color=colors[name],
                    label=name)
    acc = {r["subnet"]: r["accuracy"] for r in records if r["policy"] == "probe"}
    for name in dict.fromkeys(r["phase"] for r in records):
        rs = [r for r in records if r["phase"] == name]
        probes = [r for r in rs if r["policy"] == "probe"]
        if probes:
            pick, _ = oracle_pick(probes, acc, rs[0].get("objective", "accuracy"), rs[0].get("min_accuracy", 0.0))
            ax_acc.plot([rs[0]["t"], rs[-1]["t"]], [acc[pick] * 100] * 2, "k--", lw=1.5,
                        label="oracle (per phase)" if name == records[0]["phase"] else None)
    mb = [r for r in records if r["policy"] == "model-based"]
    ax_lat.step([r["t"] for r in mb], [r["budget_ms"] for r in mb], where="post", color="k", label="budget")
    ax_lat.set_ylabel("latency (ms)")
    ax_lat.set_yscale("log")
    ax_lat.legend(loc="upper left", fontsize=8, markerscale=4)
    ax_acc.set_ylabel("subnet accuracy (%)")
    ax_acc.legend(loc="lower left", fontsize=8)
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
    # phase shading
    starts: dict[str, float] = {}
    ends: dict[str, float] = {}
    for r in records:
        starts.setdefault(r["phase"], r["t"])
        ends[r["phase"]] = r["t"]
    for i, (name, t0) in enumerate(starts.items()):
        for ax in axes:
            ax.axvspan(t0, ends[name], color="grey" if i % 2 else "white", alpha=0.12, lw=0)
        ax_lat.text(t0, 1.01, name, transform=ax_lat.get_xaxis_transform(), fontsize=8)
    fig.suptitle("dynofa contention benchmark (real, this machine): budget, latency, subnet, slowdown")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Real-contention benchmark of dynofa's policies (one JSON object).")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every phase's duration (1.0 = 90 s)")
    parser.add_argument("--catalog", help="catalog file (default: the demo catalog)")
    parser.add_argument("--stand-in", action="store_true", help="synthetic matmul subnets instead of the catalog")
    parser.add_argument("--batch", type=int, default=32,
                        help="images per inference (default 32: an inference longer than a scheduler time slice, "
                             "so that contention stretches it rather than only delaying its start)")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                        help="background processes of the lightest contention phase; the next two run 2x and 3x "
                             "(default: half a process per CPU)")
    parser.add_argument("--budget-ms", type=float, help="budget of the first phases (default: from calibration)")
    parser.add_argument("--tight-budget-ms", type=float, help="budget of the last phase (default: from calibration)")
    parser.add_argument("--reaction-window", type=int, default=3, help="inferences after an event not counted")
    parser.add_argument("--calibration-repeats", type=int, default=15)
    parser.add_argument("--calibration-load-s", type=float, default=4.0,
                        help="seconds of loaded calibration used to set the budget (0: skip)")
    parser.add_argument("--no-monitor", dest="monitor", action="store_false",
                        help="do not feed the platform monitor to the policies")
    parser.add_argument("--trace", help="write every inference as JSON lines to this file")
    parser.add_argument("--plot", help="write a timeline PNG (needs --trace or --from-trace)")
    parser.add_argument("--from-trace", help="plot an existing trace instead of running")
    args = parser.parse_args(argv)
    if not args.scale > 0 or args.workers < 0 or args.reaction_window < 0 or args.batch < 1:
        parser.error("--scale must be positive, --batch >= 1, --workers and --reaction-window non-negative")
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
