"""SIMULATION of a board driven by dynofa's policies: energy at equal accuracy, misses, and a true oracle.

    python -m benchmarks.simulated_soc --board xavier-nx|odroid-xu3 [--scale 0.5] [--seed 0]

This is **not a measurement on hardware**: the board is :mod:`benchmarks.sim.soc`
(frequency ladders of the real board; latency and power calibrated from published
figures, each cited there and in :mod:`governors.power_model`; GUESSes marked). The
policies run unchanged through the same ``DecisionInput``/``observe`` path as in the
daemon. One trace per board with quiet phases, contention on the GPU or a CPU cluster
(with monitor readings consistent with it), and budget changes. Compared in the same run,
on the same jitter draws:

* ``model-based`` (dynofa's default, budgets with ``objective: accuracy``) and
  ``model-based-energy`` (``objective: energy`` with ``min_accuracy`` = the fixed subnet's
  accuracy, the comparison at equal accuracy), ``bandit``, ``dynamic-ofa`` (published
  rule, no DVFS);
* ``performance``: the Linux ``performance`` governor (every clock at the top) under the
  same subnet and mapping selection as model-based (``dvfs=False``):
  ``energy_vs_performance_governor`` is therefore what DVFS saves at equal accuracy;
* ``performance-fixed``: the ``performance`` governor with a fixed subnet (the most accurate
  one that meets the tightest budget of the trace without contention);
* ``schedutil``: a schedutil-like DVFS governor with that fixed subnet:
  ``energy_vs_schedutil_same_accuracy`` = model-based-energy / schedutil;
* a second trace with two concurrent apps, each at home on its own PE, contention moving
  between them: ``two_apps_energy_vs_schedutil`` (model-based-energy at each app's
  fixed-subnet accuracy, free to map both apps to any PE, one PE shared included, against
  schedutil with each app's fixed subnet pinned to its home PE); ``pinned_*`` is the same
  with each app kept home (no task mapping);
* the oracle (:mod:`benchmarks.sim.oracle`): exhaustive per frame with the true latencies
  and power. ``oracle`` is each app's best by its objective; ``energy_vs_oracle`` compares
  every policy with the cheapest run that does at least as well on every frame (>= 1 by
  construction).

Prints one JSON object. Energy counts the PEs running the apps (busy and idle until the
next frame); in the single-app trace the other PEs are outside the comparison, in the
two-app trace every PE of the board counts (one left without an app idles at its lowest
clock), since a policy that moves both apps to one PE must not be credited with the other.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from benchmarks.sim.oracle import dominating_run, objective_run
from benchmarks.sim.soc import (
    PerAppPolicy,
    Phase,
    RunResult,
    SchedutilLikePolicy,
    SimApp,
    SimBoard,
    SimulatedSoC,
    board_apps,
    fitted_latency_model,
    retarget,
    run_trace,
    sim_board,
)
from dynofa.budget import Budget
from governors.contention import LoadView
from governors.policies import make_policy
from governors.policies.base import PeInfo, Policy


def trace(board: str, scale: float) -> list[Phase]:
    def n(frames: int) -> int:
        return max(20, int(frames * scale))

    if board == "xavier-nx":
        return [
            Phase("quiet", n(400), Budget(100.0)),
            Phase("gpu-contention", n(400), Budget(100.0), {"gpu": 1.6}, LoadView(gpu_load=0.6)),
            Phase("tight-budget", n(400), Budget(50.0)),
            Phase("cpu-contention", n(300), Budget(50.0), {"cpu": 2.0}, LoadView(other_util={"cpu": 0.9})),
            Phase("heavy-gpu-contention", n(300), Budget(250.0), {"gpu": 3.0}, LoadView(gpu_load=1.0)),
            Phase("quiet-loose", n(300), Budget(150.0)),
        ]
    if board == "odroid-xu3":
        return [
            Phase("quiet", n(400), Budget(200.0)),
            Phase("big-contention", n(400), Budget(200.0), {"cpu-big": 2.0}, LoadView(other_util={"cpu-big": 1.0})),
            Phase("tight-budget", n(400), Budget(60.0)),
            Phase("little-contention", n(300), Budget(60.0), {"cpu-little": 2.0},
                  LoadView(other_util={"cpu-little": 1.0})),
            Phase("loose", n(300), Budget(400.0)),
            Phase("tight-and-contended", n(300), Budget(100.0), {"cpu-big": 1.5},
                  LoadView(other_util={"cpu-big": 0.6})),
        ]
    raise SystemExit(f"unknown board {board!r}: choose xavier-nx or odroid-xu3")


def two_app_trace(board: str, scale: float, priorities: bool = True) -> tuple[list[SimApp], list[Phase]]:
    """Two concurrent apps, each at home on its own PE, with contention moving from one PE to the other.

    Each app may run on every PE of the board (the daemon maps it; the baselines pin it
    home). The app with the shorter period gets the higher priority (rate-monotonic, the
    classic fixed-priority rule): on a PE they share, its forward is served first.
    ``priorities=False`` gives both priority 0 (served by name).
    """
    def n(frames: int) -> int:
        return max(20, int(frames * scale))

    homes = ("gpu", "cpu") if board == "xavier-nx" else ("cpu-big", "cpu-little")
    apps = board_apps(sim_board(board), homes)
    fast, slow = (a.name for a in apps)
    prio = {fast: int(priorities), slow: 0}

    def budgets(fast_ms: float, slow_ms: float) -> dict[str, Budget]:
        return {fast: Budget(fast_ms, priority=prio[fast]), slow: Budget(slow_ms, priority=prio[slow])}

    first, second = homes
    if board == "xavier-nx":
        onset = Phase("gpu-contention", n(300), budgets(100.0, 300.0), {first: 1.6}, LoadView(gpu_load=0.6))
    else:
        onset = Phase("big-contention", n(300), budgets(100.0, 300.0), {first: 2.0}, LoadView(other_util={first: 1.0}))
    return apps, [
        Phase("quiet", n(300), budgets(100.0, 300.0)),
        onset,
        Phase(f"{second.removeprefix('cpu-')}-contention", n(300), budgets(100.0, 300.0), {second: 1.5},
              LoadView(other_util={second: 0.5})),
        Phase("tight", n(300), budgets(60.0, 220.0)),
    ]


def fixed_subnet(soc: SimulatedSoC, phases: Sequence[Phase], pe: PeInfo, app: str = "app",
                 contended: bool = False) -> str:
    """Most accurate subnet meeting every phase's budget at the top clock (p99 jitter), without contention
    or (``contended``) with each phase's slowdown: a fixed subnet that a Linux governor can run throughout."""
    def meets(e: Any) -> bool:
        return all((soc.expected_ms(e, pe, pe.top, p if contended else None) or 1e18) * soc.p99_ratio(pe.name)
                   <= p.budget_of(app).latency_ms for p in phases)
    ok = [e for e in soc.board.entries if meets(e)]
    pool = ok or [min(soc.board.entries, key=lambda e: e.latency[pe.name].ms)]
    return max(pool, key=lambda e: e.accuracy.top1 if e.accuracy else 0.0).id


def _accuracy(soc: SimulatedSoC, subnet: str) -> float:
    entry = next(e for e in soc.board.entries if e.id == subnet)
    return entry.accuracy.top1 if entry.accuracy else 0.0


def dynamic_range(soc: SimulatedSoC) -> dict[str, Any]:
    """max/min over subnets x DVFS x mapping of latency and of energy per inference (busy energy)."""
    times, energies = [], []
    for pe in soc.board.pes:
        for entry in soc.board.entries:
            for f in pe.freqs or (None,):
                t = soc.expected_ms(entry, pe, f)
                if t is None:
                    continue
                times.append(t)
                energies.append(soc.truth_power.active_w(pe.name, pe.khz(f)) * t / 1e3)
    return {"time": max(times) / min(times), "energy": max(energies) / min(energies),
            "time_ms": [min(times), max(times)], "energy_j": [min(energies), max(energies)]}


def run(board: str, scale: float, seed: int) -> dict[str, Any]:
    phases = trace(board, scale)
    soc_for_fit = SimulatedSoC(sim_board(board), seed=seed + 1000)
    latency_model = fitted_latency_model(soc_for_fit)
    model_pe = soc_for_fit.board.pe("gpu") if any(p.kind == "gpu" for p in soc_for_fit.board.pes) else \
        soc_for_fit.board.pe("cpu-big")
    fixed = fixed_subnet(soc_for_fit, phases, model_pe)
    floor = _accuracy(soc_for_fit, fixed)
    largest = max(soc_for_fit.board.entries, key=lambda e: e.accuracy.top1 if e.accuracy else 0.0).id
    accuracy_phases = retarget(phases, objective="accuracy")
    energy_phases = retarget(phases, objective="energy", min_accuracy=floor)

    runs: dict[str, tuple[Policy, list[Phase]]] = {
        "model-based": (make_policy("model-based", latency_model=latency_model), accuracy_phases),
        "model-based-energy": (make_policy("model-based", latency_model=latency_model), energy_phases),
        "dynamic-ofa": (make_policy("dynamic-ofa", pe=model_pe.name), accuracy_phases),
        "bandit": (make_policy("bandit", latency_model=latency_model), accuracy_phases),
        "performance": (make_policy("model-based", latency_model=latency_model, dvfs=False), accuracy_phases),
        "performance-fixed": (make_policy("static", subnet=fixed, pe=model_pe.name, freq="max"), accuracy_phases),
        "performance-largest": (make_policy("static", subnet=largest, pe=model_pe.name, freq="max"),
                                accuracy_phases),
        "schedutil": (SchedutilLikePolicy(make_policy("static", subnet=fixed, pe=model_pe.name, freq="max")),
                      accuracy_phases),
    }
    results: dict[str, RunResult] = {}
    for name, (policy, trace_phases) in runs.items():
        results[name] = run_trace(SimulatedSoC(sim_board(board), seed=seed), policy, trace_phases)
    soc = SimulatedSoC(sim_board(board), seed=seed)
    results["oracle"] = objective_run(soc, accuracy_phases)
    results["oracle-energy"] = objective_run(soc, energy_phases)
    bound = {name: dominating_run(soc, runs[name][1], r) for name, r in results.items()
             if not name.startswith("oracle")}
    two = two_apps(board, scale, seed, latency_model)

    mb, mbe, orc, perf = results["model-based"], results["model-based-energy"], results["oracle"], \
        results["performance"]
    sched = results["schedutil"]
    dr = dynamic_range(soc)
    energy_vs_perf = mb.energy_j / perf.energy_j
    energy_vs_sched = mbe.energy_j / sched.energy_j
    vs_oracle = {name: round(results[name].energy_j / b.energy_j, 4) for name, b in bound.items()}
    out: dict[str, Any] = {
        "benchmark": "simulated_soc",
        "SIMULATION": f"simulated {board}: not a hardware measurement (see benchmarks/sim/soc.py for sources)",
        "board": board,
        "frames": mb.frames,
        "phases": [{"name": p.name, "frames": p.frames, "budget_ms": p.latency_ms,
                    "slowdown": dict(p.slowdown)} for p in phases],
        "miss_rate": round(mb.miss_rate, 5),
        "miss_rate_energy_objective": round(mbe.miss_rate, 5),
        "energy_vs_schedutil_same_accuracy": round(energy_vs_sched, 4),
        "energy_vs_performance_governor": round(energy_vs_perf, 4),
        "energy_saving_vs_performance_governor": round(1 - energy_vs_perf, 4),
        "two_apps_energy_vs_schedutil": two["energy_vs_schedutil"],
        "two_apps_oracle_energy_vs_schedutil": two["oracle_energy_vs_schedutil"],
        "energy_vs_oracle": vs_oracle,
        # How far below each goal any policy could go on this trace: the per-frame clairvoyant
        # oracle (it knows each frame's jitter) at the fixed subnet's accuracy against schedutil,
        # and at the performance governor's accuracy frame by frame against it (its dominating run).
        # A causal policy with a margin for the jitter stays above these.
        "oracle_energy_vs_schedutil_same_accuracy": round(results["oracle-energy"].energy_j / sched.energy_j, 4),
        "oracle_energy_vs_performance_governor": round(bound["performance"].energy_j / perf.energy_j, 4),
        "misses": {name: results[name].misses for name in ("model-based", "model-based-energy", "performance",
                                                            "schedutil")},
        "energy_vs_objective_oracle": {"accuracy": round(mb.energy_j / orc.energy_j, 4),
                                       "energy": round(mbe.energy_j / results["oracle-energy"].energy_j, 4)},
        "energy_vs_performance_fixed_subnet": round(mbe.energy_j / results["performance-fixed"].energy_j, 4),
        "energy_vs_schedutil_accuracy_objective": round(mb.energy_j / sched.energy_j, 4),
        "energy_vs_dynamic_ofa": round(mb.energy_j / results["dynamic-ofa"].energy_j, 4),
        "accuracy_gap_vs_oracle_pp": round((orc.mean_accuracy - mb.mean_accuracy) * 100, 3),
        "dynamic_range_time": round(dr["time"], 2),
        "dynamic_range_energy": round(dr["energy"], 2),
        "dynamic_range_detail": {"time_ms": [round(x, 2) for x in dr["time_ms"]],
                                 "energy_j": [round(x, 5) for x in dr["energy_j"]]},
        "fixed_subnet_for_linux_governors": fixed,
        "fixed_subnet_accuracy": floor,
        "frequency_regression": latency_model.to_dict(),
        "policies": {name: r.summary() for name, r in results.items()},
        "per_phase_miss_rate": {name: _per_phase(r, phases) for name, r in results.items()},
        "two_apps": two,
    }
    two_misses, two_rates = two["misses"], {k: v["miss_rate"] for k, v in two["policies"].items()}
    out["goals"] = {
        "energy_vs_schedutil_same_accuracy_le_0.81": energy_vs_sched <= 0.81,
        "energy_vs_performance_governor_le_0.70": energy_vs_perf <= 0.70,
        "two_apps_energy_vs_schedutil_le_0.70": two["energy_vs_schedutil"] <= 0.70,
        "energy_vs_oracle_ge_1_every_policy": all(v >= 1.0 for v in [*vs_oracle.values(),
                                                                    *two["energy_vs_oracle"].values()]),
        "miss_rate_le_1pct": max(mb.miss_rate, mbe.miss_rate, two_rates["model-based"],
                                 two_rates["model-based-energy"]) <= 0.01,
        "no_more_misses_than_performance": max(mb.misses, mbe.misses) <= perf.misses and max(
            two_misses["model-based"], two_misses["model-based-energy"]) <= two_misses["performance"],
    }
    return out


def two_apps(board: str, scale: float, seed: int, latency_model: Any) -> dict[str, Any]:
    """Two concurrent apps at each one's fixed-subnet accuracy: model-based (energy) against schedutil.

    The apps have the whole board's catalog (model-based maps them, both on one PE
    included); the Linux governors' baselines keep each app's fixed subnet pinned to its
    home PE. Every PE of the board counts (one left without an app idles at its lowest clock).
    """
    apps, phases = two_app_trace(board, scale)
    soc = SimulatedSoC(sim_board(board), seed=seed)
    pe_of = {a.name: a.home_pe() for a in apps}
    fixed = {a.name: fixed_subnet(soc, phases, soc.board.pe(pe_of[a.name]), a.name, contended=True) for a in apps}
    energy_phases = retarget(phases, objective="energy",
                             per_app={a: {"min_accuracy": _accuracy(soc, s)} for a, s in fixed.items()})
    counted = [p.name for p in soc.board.pes]
    runs = _two_app_runs(apps, phases, energy_phases, fixed, latency_model)
    results = {name: run_trace(SimulatedSoC(sim_board(board), seed=seed), policy, ph, apps, counted_pes=counted)
               for name, (policy, ph) in runs.items()}
    bound = {name: dominating_run(soc, runs[name][1], r, apps) for name, r in results.items()}
    mbe, sched = results["model-based-energy"], results["schedutil"]
    oracle_energy = objective_run(soc, energy_phases, apps, counted)
    # without task mapping: each app's catalog restricted to its home PE (what the trace was before)
    pinned = [replace(a, entries=tuple(replace(e, latency={a.home_pe(): e.latency[a.home_pe()]}) for e in a.entries))
              for a in apps]
    pinned_run = run_trace(SimulatedSoC(sim_board(board), seed=seed),
                           make_policy("model-based", latency_model=latency_model), energy_phases, pinned,
                           counted_pes=counted)
    pinned_oracle = objective_run(soc, energy_phases, pinned, counted)
    return {
        "apps": {a.name: {"pe": pe_of[a.name], "fixed_subnet": fixed[a.name],
                          "priority": phases[0].budget_of(a.name).priority} for a in apps},
        "phases": [{"name": p.name, "frames": p.frames, "budget_ms": {a.name: p.budget_of(a.name).latency_ms
                                                                      for a in apps},
                    "slowdown": dict(p.slowdown)} for p in phases],
        "energy_vs_schedutil": round(mbe.energy_j / sched.energy_j, 4),
        "oracle_energy_vs_schedutil": round(oracle_energy.energy_j / sched.energy_j, 4),
        # model-based (energy) and the clairvoyant bound with each app kept on its home PE (no task mapping)
        "pinned_energy_vs_schedutil": round(pinned_run.energy_j / sched.energy_j, 4),
        "pinned_oracle_energy_vs_schedutil": round(pinned_oracle.energy_j / sched.energy_j, 4),
        "energy_vs_oracle": {name: round(r.energy_j / bound[name].energy_j, 4) for name, r in results.items()},
        "misses": {name: r.misses for name, r in results.items()},
        "policies": {name: r.summary() for name, r in results.items()},
        "mean_accuracy_per_app": {name: {a.name: round(_mean_accuracy(r, a.name), 5) for a in apps}
                                  for name, r in results.items()},
        "energy_vs_schedutil_per_phase": {name: _per_phase_energy(r, sched, phases) for name, r in (
            ("model-based-energy", mbe), ("oracle-energy", oracle_energy), ("pinned-model-based-energy", pinned_run),
            ("pinned-oracle-energy", pinned_oracle))},
        "mapping_per_phase": {name: _mapping_per_phase(r, phases, soc.board)
                              for name, r in (("model-based-energy", mbe), ("oracle-energy", oracle_energy))},
    }


def _two_app_runs(apps: Sequence[SimApp], phases: list[Phase], energy_phases: list[Phase], fixed: dict[str, str],
                  latency_model: Any) -> dict[str, tuple[Policy, list[Phase]]]:
    """The policies of the two-app trace, each with the budgets it runs under."""
    def static(app: SimApp) -> Policy:
        return make_policy("static", subnet=fixed[app.name], pe=app.home_pe(), freq="max")

    accuracy_phases = retarget(phases, objective="accuracy")
    return {
        "model-based-energy": (make_policy("model-based", latency_model=latency_model), energy_phases),
        "model-based": (make_policy("model-based", latency_model=latency_model), accuracy_phases),
        "performance": (make_policy("model-based", latency_model=latency_model, dvfs=False), accuracy_phases),
        "schedutil": (SchedutilLikePolicy(PerAppPolicy({a.name: static(a) for a in apps})), phases),
        "performance-fixed": (PerAppPolicy({a.name: static(a) for a in apps}), phases),
    }


def _mapping_per_phase(r: RunResult, phases: Sequence[Phase], board: SimBoard) -> dict[str, dict[str, Any]]:
    """Per phase and app: its most frequent (PE, subnet), that one's share of the frames and the share of the
    frames it shared its PE; per PE used, its mean clock (MHz)."""
    out: dict[str, dict[str, Any]] = {}
    for p in phases:
        recs = [x for x in r.records if x.phase == p.name]
        on_pe = Counter((x.frame, x.pe) for x in recs)
        row: dict[str, Any] = {}
        for app in sorted({x.app for x in recs}):
            mine = [x for x in recs if x.app == app]
            (pe, subnet), n = Counter((x.pe, x.subnet) for x in mine).most_common(1)[0]
            shared = sum(1 for x in mine if on_pe[(x.frame, x.pe)] > 1)
            row[app] = {"pe": pe, "subnet": subnet, "share": round(n / len(mine), 3),
                        "shared_pe_share": round(shared / len(mine), 3)}
        for name in sorted({x.pe for x in recs}):
            khz = [board.pe(name).khz(x.freq) or 0 for x in recs if x.pe == name]
            row[f"{name}_mean_mhz"] = round(sum(khz) / len(khz) / 1e3, 1)
        out[p.name] = row
    return out


def _mean_accuracy(r: RunResult, app: str) -> float:
    accs = [x.accuracy for x in r.records if x.app == app]
    return sum(accs) / len(accs)


def _per_phase_energy(r: RunResult, base: RunResult, phases: Sequence[Phase]) -> dict[str, float]:
    """Per phase: ``r``'s energy over ``base``'s (the counted PEs left idle included)."""
    def energy(run: RunResult, phase: str) -> float:
        frames = {x.frame for x in run.records if x.phase == phase}
        return sum(x.energy_j for x in run.records if x.phase == phase) + sum(run.unused_j.get(f, 0.0) for f in frames)

    return {p.name: round(energy(r, p.name) / energy(base, p.name), 4) for p in phases}


def _per_phase(r: RunResult, phases: Sequence[Phase]) -> dict[str, float]:
    out = {}
    for p in phases:
        recs = [x for x in r.records if x.phase == p.name]
        out[p.name] = round(sum(1 for x in recs if x.latency_ms > x.budget_ms) / max(1, len(recs)), 4)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--board", default="xavier-nx", choices=["xavier-nx", "odroid-xu3"])
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply every phase's length (e.g. 0.2 for a quick run)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not args.scale > 0:
        parser.error("--scale must be positive")
    json.dump(run(args.board, args.scale, args.seed), sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
