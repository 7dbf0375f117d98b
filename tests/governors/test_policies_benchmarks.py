"""The benchmark harnesses drive the policies correctly (tiny runs; no timing assertions)."""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import pytest

from benchmarks import contention, simulated_soc
from dynofa.catalog import Accuracy, CatalogEntry, Latency


def _fake_workload(slow: dict[str, float]) -> contention.Workload:
    """Latency = nominal x a factor the test controls (no real compute, no sleeping)."""
    rng = random.Random(0)
    nominal = {"s": 2.0, "m": 4.0, "l": 8.0}
    entries = [CatalogEntry(id=k, config={}, resolution=1, macs=1, params=0,
                            latency={"cpu": Latency(ms=v, source="measured")},
                            accuracy=Accuracy(top1=acc, source="measured"))
               for (k, v), acc in zip(nominal.items(), (0.6, 0.7, 0.8), strict=True)]

    def run(subnet: str) -> float:
        return nominal[subnet] * slow["x"] * (1 + rng.uniform(-0.02, 0.02))

    return contention.Workload(entries, run, "stand-in", "test")


def test_summarise_counts_reaction_and_oracle() -> None:
    phases = [contention.PhasePlan("quiet", 1, 10.0, False, False), contention.PhasePlan("load", 1, 10.0, True, True)]
    entries = _fake_workload({"x": 1.0}).entries
    recs = []
    for _ in range(10):
        recs.append({"phase": "quiet", "phase_index": 0, "policy": "model-based", "subnet": "l", "accuracy": 0.8,
                     "latency_ms": 8.0, "hit": True, "budget_ms": 10.0})
    for i in range(10):
        hit = i >= 2  # two misses right after the event, then fine
        recs.append({"phase": "load", "phase_index": 1, "policy": "model-based", "subnet": "l" if i < 2 else "m",
                     "accuracy": 0.8 if i < 2 else 0.7, "latency_ms": 16.0 if not hit else 8.0, "hit": hit,
                     "budget_ms": 10.0})
    for sid, ms_quiet, ms_load in (("s", 2, 4), ("m", 4, 8), ("l", 8, 16)):
        for ph, ms in (("quiet", ms_quiet), ("load", ms_load)):
            recs.append({"phase": ph, "phase_index": 0 if ph == "quiet" else 1, "policy": "probe", "subnet": sid,
                         "accuracy": 0.0, "latency_ms": ms, "hit": ms <= 10.0, "budget_ms": 10.0})
    out = contention.summarise(recs, phases, entries, window=3)
    assert out["reaction_inferences"] == 2
    assert out["hit_rate"] == 1.0 and out["hit_rate_all"] == 0.9
    assert out["oracle_per_phase"] == {"quiet": "l", "load": "m"}
    assert out["accuracy_gap_vs_oracle_pp"] == pytest.approx(-1.0)  # two lucky large inferences
    assert out["goals"]["reaction_le_3"]


def test_contention_harness_runs_policies_and_plots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    slow = {"x": 1.0}
    monkeypatch.setattr(contention, "start_background", lambda n, a, b, hog="spin": slow.update(x=2.5) or [])
    monkeypatch.setattr(contention, "stop_background", lambda procs: slow.update(x=1.0))
    args = argparse.Namespace(scale=0.002, workers=0, budget_ms=10.0, tight_budget_ms=7.0, reaction_window=3,
                              calibration_repeats=3, monitor=False, quiet=True, trace=str(tmp_path / "t.jsonl"))
    result = contention._run(args, _fake_workload(slow))
    assert set(result["policies"]) == {"model-based", "dynamic-ofa"}
    assert 0.0 <= result["hit_rate_static_largest"] < result["hit_rate_static_smallest"] == 1.0  # from the probe
    assert [p["name"] for p in result["phases"]] == ["quiet", "busy-1", "busy-2", "busy-3", "membw", "loose", "floor",
                                                    "tight", "two-apps"]
    assert result["levels"] == {"low": "s", "mid": "m", "top": "l"} and result["levels_separated"]
    # two apps on one core: the higher priority keeps the middle subnet, app-b (served after it) yields
    assert set(result["apps"]) == {"app", "app-b"}
    assert result["policy_sequence"]["model-based"][-1] == "m"
    assert result["oracle_per_phase_app_b"] == {"two-apps": "s"}
    b = [json.loads(line) for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    b = [r for r in b if r["policy"] == "model-based" and r["app"] == "app-b"]
    assert b and max(set(r["subnet"] for r in b), key=[r["subnet"] for r in b].count) == "s"
    assert all(r["latency_ms"] > r["forward_ms"] for r in b)  # it waited for the first app's forward
    for key in ("hit_rate", "hit_rate_dynamic_ofa", "hit_rate_static_largest", "mean_accuracy",
                "accuracy_gap_vs_oracle_pp", "reaction_inferences"):
        assert key in result
    lines = (tmp_path / "t.jsonl").read_text().splitlines()
    assert lines and {"t", "policy", "subnet", "latency_ms", "budget_ms"} <= set(json.loads(lines[0]))
    contention.plot(str(tmp_path / "t.jsonl"), str(tmp_path / "t.png"))
    assert (tmp_path / "t.png").stat().st_size > 1000


def test_simulated_soc_quick_run_has_the_keys() -> None:
    out = simulated_soc.run("odroid-xu3", scale=0.05, seed=0)
    assert out["SIMULATION"].startswith("simulated odroid-xu3")
    for key in ("miss_rate", "energy_vs_schedutil_same_accuracy", "energy_vs_performance_governor",
                "two_apps_energy_vs_schedutil", "dynamic_range_time", "dynamic_range_energy"):
        assert isinstance(out[key], float)
    assert out["dynamic_range_time"] > 10 and out["dynamic_range_energy"] > 2
    assert set(out["policies"]) >= {"model-based", "model-based-energy", "dynamic-ofa", "performance", "schedutil",
                                    "oracle", "oracle-energy"}
    # the clairvoyant bounds are printed beside the goals they bound
    assert 0 < out["oracle_energy_vs_schedutil_same_accuracy"] <= out["energy_vs_schedutil_same_accuracy"]
    assert 0 < out["oracle_energy_vs_performance_governor"] <= out["energy_vs_performance_governor"]
    assert 0 < out["two_apps_oracle_energy_vs_schedutil"] <= out["two_apps_energy_vs_schedutil"]
    # the oracle is a lower bound for every policy, one or two apps
    assert all(v >= 1.0 for v in out["energy_vs_oracle"].values()), out["energy_vs_oracle"]
    assert all(v >= 1.0 for v in out["two_apps"]["energy_vs_oracle"].values())
    # equal accuracy: the energy objective never runs below the fixed subnet's accuracy
    assert out["policies"]["model-based-energy"]["mean_accuracy"] >= out["fixed_subnet_accuracy"]


def test_model_based_beats_the_baselines_on_the_simulated_xavier_nx() -> None:
    out = simulated_soc.run("xavier-nx", scale=0.15, seed=0)  # deterministic: seeded simulation
    mb, dofa = out["policies"]["model-based"], out["policies"]["dynamic-ofa"]
    assert out["miss_rate"] <= 0.02 and mb["misses"] < dofa["misses"]
    assert out["energy_vs_performance_governor"] < 0.85  # DVFS saves energy at equal subnet choice
    assert out["energy_vs_schedutil_same_accuracy"] < 1.0  # and beats schedutil at the same accuracy
    assert out["energy_vs_objective_oracle"]["accuracy"] < 1.10 and out["accuracy_gap_vs_oracle_pp"] < 1.5
    # no more misses than top clocks with the same choices, in either objective (the margin covers the
    # jitter's tail; the onset of GPU contention runs at the top clock until one inference measured it)
    perf = out["policies"]["performance"]["misses"]
    assert mb["misses"] <= perf and out["policies"]["model-based-energy"]["misses"] <= perf


def test_summarise_oracle_sequence_step_up_and_energy_floor() -> None:
    entries = _fake_workload({"x": 1.0}).entries  # s 2 ms 0.6, m 4 ms 0.7, l 8 ms 0.8
    phases = [contention.PhasePlan("busy", 1, 10.0, 1, True),
              contention.PhasePlan("loose", 1, 20.0, False, True),
              contention.PhasePlan("floor", 1, 20.0, False, True, objective="energy", min_accuracy=0.65)]
    recs = []
    for idx, (phase, slow) in enumerate((("busy", 2.0), ("loose", 1.0), ("floor", 1.0))):
        budget = phases[idx].budget_ms
        for sid, ms in (("s", 2.0), ("m", 4.0), ("l", 8.0)):
            for _ in range(3):
                recs.append({"phase": phase, "phase_index": idx, "policy": "probe", "subnet": sid, "accuracy": 0.0,
                             "latency_ms": ms * slow, "hit": ms * slow <= budget, "budget_ms": budget,
                             "objective": phases[idx].objective, "min_accuracy": phases[idx].min_accuracy})
    for i in range(10):  # the policy reaches "l" at its 4th inference of the loosened phase
        sid = "m" if i < 3 else "l"
        recs.append({"phase": "loose", "phase_index": 1, "policy": "model-based", "subnet": sid,
                     "accuracy": {"m": 0.7, "l": 0.8}[sid], "latency_ms": 4.0, "hit": True})
    out = contention.summarise(recs, phases, entries, window=3)
    # busy: l needs 16 ms > 10 -> m; loose: l; floor (energy, >= 0.65): the cheapest over the floor is m
    assert out["oracle_sequence"] == ["m", "l", "m"] and out["oracle_distinct"] == 2
    assert out["step_up_inferences"] == 4


def _probes(phase: contention.PhasePlan, idx: int, ms: dict[str, float], n: int = 20) -> list[dict[str, object]]:
    """Probe records of one phase: each subnet at its latency, +-3 % (within the calibration's 95th percentile)."""
    rng = random.Random(idx)
    out: list[dict[str, object]] = []
    for _ in range(n):
        for sid, v in ms.items():
            lat = v * (1 + rng.uniform(-0.03, 0.03))
            out.append({"phase": phase.name, "phase_index": idx, "policy": "probe", "app": "app", "subnet": sid,
                        "accuracy": 0.0, "latency_ms": lat, "hit": lat <= phase.budget_ms,
                        "budget_ms": phase.budget_ms, "objective": phase.objective,
                        "min_accuracy": phase.min_accuracy})
    return out


def test_budgets_make_the_oracle_differ_by_construction() -> None:
    """From the calibrated front alone, quiet/loose/floor/tight/two-apps have the choices the module doc names,
    so oracle_distinct >= 3 does not depend on the run's luck (only on the machine staying as calibrated)."""
    entries = _fake_workload({"x": 1.0}).entries  # s 0.6, m 0.7, l 0.8
    quiet = {"s": 17.6, "m": 41.9, "l": 233.0}
    p95 = {k: 1.1 * v for k, v in quiet.items()}
    front = contention.pareto_front(entries, quiet)
    args = argparse.Namespace(scale=1.0, workers=1, budget_ms=None, tight_budget_ms=None)
    phases, design = contention.plan_phases(args, front, quiet, p95)
    assert design["levels"] == {"low": "s", "mid": "m", "top": "l"} and design["levels_separated"]
    recs = [r for i, p in enumerate(phases) if p.load is False for r in _probes(p, i, quiet)]
    oracles = contention.phase_oracles(recs, {"s": 0.6, "m": 0.7, "l": 0.8})
    assert {p: v[0] for (p, a), v in oracles.items() if a == "app"} == {
        "quiet": "m", "loose": "l", "floor": "m", "tight": "s", "two-apps": "m"}
    # app-b waits for app's forward: m + m misses B2, m + s meets it
    b2 = next(p for p in phases if p.two_apps)
    recs += [{**r, "policy": "model-based", "app": "app-b"} for r in recs if r["phase"] == "two-apps"]
    assert contention.phase_oracles(recs, {"s": 0.6, "m": 0.7, "l": 0.8})[("two-apps", "app-b")][0] == "s"
    assert 2 * quiet["m"] > b2.budget_ms > 1.1 * (quiet["m"] + quiet["s"])


def test_levels_skip_front_subnets_too_close_to_separate() -> None:
    """A front of five where neighbours are within noise of each other: the levels are SEPARATION apart."""
    entries = [CatalogEntry(id=k, config={}, resolution=1, macs=1, params=0,
                            latency={"cpu": Latency(ms=1.0, source="measured")},
                            accuracy=Accuracy(top1=a, source="measured"))
               for k, a in (("a", 0.5), ("b", 0.6), ("c", 0.7), ("d", 0.8), ("e", 0.9))]
    quiet = {"a": 10.0, "b": 12.0, "c": 20.0, "d": 24.0, "e": 40.0}
    low, mid, top, separated = contention.levels(contention.pareto_front(entries, quiet), quiet,
                                                 {k: 1.05 * v for k, v in quiet.items()})
    assert (low.id, mid.id, top.id, separated) == ("b", "d", "e", True)


def test_app_b_is_also_judged_after_what_the_first_app_really_ran() -> None:
    """The per-phase oracle judges app-b after the first app's oracle choice; the given-first-app figure after the
    subnet the first app ran in the same tick, so a first app below its oracle does not hide app-b's shortfall."""
    entries = _fake_workload({"x": 1.0}).entries  # s 2 ms 0.6, m 4 ms 0.7, l 8 ms 0.8
    phase = contention.PhasePlan("two-apps", 1, 10.0, False, True, two_apps=True)
    recs: list[dict[str, object]] = []
    for sid, ms in (("s", 2.0), ("m", 4.0), ("l", 8.0)):
        recs += [{"phase": "two-apps", "phase_index": 0, "policy": "probe", "subnet": sid, "accuracy": 0.0,
                  "latency_ms": ms, "hit": True, "budget_ms": 10.0} for _ in range(5)]
    for tick in range(10):  # the first app runs m, below its oracle's l (8 ms); app-b then runs s, though
        # after m (4 ms) it could run m (8 ms <= 10); after the oracle's l only s fits (10 ms)
        recs.append({"tick": tick, "phase": "two-apps", "phase_index": 0, "policy": "model-based", "app": "app",
                     "subnet": "m", "accuracy": 0.7, "latency_ms": 4.0, "hit": True, "budget_ms": 10.0})
        recs.append({"tick": tick, "phase": "two-apps", "phase_index": 0, "policy": "model-based", "app": "app-b",
                     "subnet": "s", "accuracy": 0.6, "latency_ms": 6.0, "hit": True, "budget_ms": 10.0})
    out = contention.summarise(recs, [phase], entries, window=0)
    assert out["oracle_per_phase"] == {"two-apps": "l"} and out["oracle_per_phase_app_b"] == {"two-apps": "s"}
    b = out["apps"]["app-b"]
    assert b["accuracy_gap_vs_oracle_pp"] == pytest.approx(0.0)  # s after the oracle's l: no gap seen there
    assert b["oracle_accuracy_given_first_app"] == pytest.approx(0.7)  # m after the m app really ran
    assert b["accuracy_gap_given_first_app_pp"] == pytest.approx(10.0)
    assert "oracle_accuracy_given_first_app" not in out["apps"]["app"]  # the first app waits for nobody


def test_two_apps_task_mapping_beats_every_policy_that_keeps_each_app_home() -> None:
    """Both apps may run on every PE: model-based (energy objective, each app at its fixed subnet's accuracy) moves
    the 300 ms app onto the GPU beside the 100 ms one where that fits, and there spends less than the clairvoyant
    oracle of any policy that keeps each app on its home PE can. Fails when the apps are pinned home again (or
    the simulator stops sharing a PE)."""
    lm = simulated_soc.fitted_latency_model(simulated_soc.SimulatedSoC(simulated_soc.sim_board("xavier-nx"),
                                                                        seed=1000))
    out = simulated_soc.two_apps("xavier-nx", scale=0.15, seed=0, latency_model=lm)
    per_phase = out["energy_vs_schedutil_per_phase"]
    for phase in ("quiet", "cpu-contention"):
        mapping = out["mapping_per_phase"]["model-based-energy"][phase]
        assert mapping["cpu-app"]["pe"] == "gpu" and mapping["cpu-app"]["shared_pe_share"] > 0.9
        assert per_phase["model-based-energy"][phase] < per_phase["pinned-oracle-energy"][phase]
    assert out["energy_vs_schedutil"] < 0.9 * out["pinned_energy_vs_schedutil"]
    assert out["oracle_energy_vs_schedutil"] <= out["energy_vs_schedutil"]
    # at equal accuracy, without more misses than top clocks with the same choices, and the oracle a lower bound
    for app, fixed in out["apps"].items():
        soc = simulated_soc.SimulatedSoC(simulated_soc.sim_board("xavier-nx"))
        acc = simulated_soc._accuracy(soc, fixed["fixed_subnet"])
        assert out["mean_accuracy_per_app"]["model-based-energy"][app] >= acc - 1e-9
    assert out["misses"]["model-based-energy"] <= out["misses"]["performance"]
    assert out["policies"]["model-based-energy"]["miss_rate"] <= 0.01
    assert all(v >= 1.0 for v in out["energy_vs_oracle"].values())
