"""SIMULATION of a board driven by dynofa's policies: miss rate and energy against baselines.

    python -m benchmarks.simulated_soc --board xavier-nx|odroid-xu3 [--scale 0.5] [--seed 0]

This is **not a measurement on hardware**: the board is :mod:`benchmarks.sim.soc`
(frequency ladders of the real board; latency and power calibrated from published
figures, each cited there and in :mod:`governors.power_model`; GUESSes marked). The
policies run unchanged through the same ``DecisionInput``/``observe`` path as in the
daemon. One trace per board with quiet phases, contention on the GPU or a CPU cluster
(with monitor readings consistent with it), and budget changes. Compared in the same run:

* ``model-based`` (dynofa's default), ``bandit``, ``dynamic-ofa`` (published rule, no DVFS);
* ``performance``: the Linux ``performance`` governor (every clock at the top) under the
  same subnet and mapping selection as model-based (``model-based`` with ``dvfs=False``):
  ``energy_vs_performance_governor`` is therefore what DVFS saves at equal accuracy;
* ``performance-fixed``: the ``performance`` governor with a fixed subnet (the most accurate
  one that meets the tightest budget of the trace without contention);
* ``performance-largest``: the same governor with the most accurate subnet;
* ``schedutil``: a schedutil-like DVFS governor with the same fixed subnet as ``performance-fixed``;
* ``oracle``: knows each phase's true latencies (planner of model-based on the truth, with a
  margin equal to the 99th percentile of the jitter).

Prints one JSON object. Energy counts the PE running the app (busy and idle until the
next frame); the other PEs are outside the comparison.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from benchmarks.sim.oracle import OraclePolicy
from benchmarks.sim.soc import (
    Phase,
    RunResult,
    SchedutilLikePolicy,
    SimulatedSoC,
    fitted_latency_model,
    run_trace,
    sim_board,
)
from dynofa.budget import Budget
from governors.contention import LoadView
from governors.policies import make_policy
from governors.policies.base import AppRequest, PeInfo, Policy
from governors.power_model import PowerModel


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


def fixed_subnet(soc: SimulatedSoC, phases: Sequence[Phase], pe: PeInfo) -> str:
    """Most accurate subnet meeting the tightest budget at the top clock without contention (p99 jitter)."""
    tightest = min(p.budget.latency_ms for p in phases)
    ok = [e for e in soc.board.entries
          if (soc.expected_ms(e, pe, pe.top) or 1e18) * soc.p99_ratio(pe.name) <= tightest]
    pool = ok or [min(soc.board.entries, key=lambda e: e.latency[pe.name].ms)]
    return max(pool, key=lambda e: e.accuracy.top1 if e.accuracy else 0.0).id


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
    largest = max(soc_for_fit.board.entries, key=lambda e: e.accuracy.top1 if e.accuracy else 0.0).id

    policies: dict[str, Policy] = {
        "model-based": make_policy("model-based", latency_model=latency_model),
        "dynamic-ofa": make_policy("dynamic-ofa", pe=model_pe.name),
        "bandit": make_policy("bandit", latency_model=latency_model),
        "performance": make_policy("model-based", latency_model=latency_model, dvfs=False),
        "performance-fixed": make_policy("static", subnet=fixed, pe=model_pe.name, freq="max"),
        "performance-largest": make_policy("static", subnet=largest, pe=model_pe.name, freq="max"),
        "schedutil": SchedutilLikePolicy(make_policy("static", subnet=fixed, pe=model_pe.name, freq="max")),
    }
    results: dict[str, RunResult] = {}
    for name, policy in policies.items():
        results[name] = run_trace(SimulatedSoC(sim_board(board), seed=seed), policy, phases)

    soc = SimulatedSoC(sim_board(board), seed=seed)
    oracle = OraclePolicy(power_model=PowerModel.for_board(soc.board.name))

    def on_phase(phase: Phase) -> None:
        def truth(app: AppRequest, entry: Any, pe: PeInfo, freq: int | None) -> float | None:
            t = soc.expected_ms(entry, pe, freq, phase)
            return None if t is None else t * soc.p99_ratio(pe.name)
        oracle.set_truth(truth)
    results["oracle"] = run_trace(soc, oracle, phases, on_phase=on_phase)

    mb, orc, perf = results["model-based"], results["oracle"], results["performance"]
    dr = dynamic_range(soc)
    energy_vs_perf = mb.energy_j / perf.energy_j
    out: dict[str, Any] = {
        "benchmark": "simulated_soc",
        "SIMULATION": f"simulated {board}: not a hardware measurement (see benchmarks/sim/soc.py for sources)",
        "board": board,
        "frames": mb.frames,
        "phases": [{"name": p.name, "frames": p.frames, "budget_ms": p.budget.latency_ms,
                    "slowdown": dict(p.slowdown)} for p in phases],
        "miss_rate": round(mb.miss_rate, 5),
        "energy_vs_oracle": round(mb.energy_j / orc.energy_j, 4),
        "energy_vs_performance_governor": round(energy_vs_perf, 4),
        "energy_saving_vs_performance_governor": round(1 - energy_vs_perf, 4),
        "energy_vs_performance_fixed_subnet": round(mb.energy_j / results["performance-fixed"].energy_j, 4),
        "energy_vs_schedutil": round(mb.energy_j / results["schedutil"].energy_j, 4),
        "energy_vs_dynamic_ofa": round(mb.energy_j / results["dynamic-ofa"].energy_j, 4),
        "accuracy_gap_vs_oracle_pp": round((orc.mean_accuracy - mb.mean_accuracy) * 100, 3),
        "dynamic_range_time": round(dr["time"], 2),
        "dynamic_range_energy": round(dr["energy"], 2),
        "dynamic_range_detail": {"time_ms": [round(x, 2) for x in dr["time_ms"]],
                                 "energy_j": [round(x, 5) for x in dr["energy_j"]]},
        "fixed_subnet_for_linux_governors": fixed,
        "frequency_regression": latency_model.to_dict(),
        "policies": {name: r.summary() for name, r in results.items()},
        "per_phase_miss_rate": {name: _per_phase(r, phases) for name, r in results.items()},
    }
    out["goals"] = {
        "miss_rate_le_1pct": mb.miss_rate <= 0.01,
        "energy_within_5pct_of_oracle": mb.energy_j <= 1.05 * orc.energy_j,
        "energy_30pct_below_performance": energy_vs_perf <= 0.70,
        "no_more_misses_than_performance": mb.misses <= perf.misses,
    }
    return out


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
