"""The budget's objective (accuracy | energy), the infeasible rule, and the one utilisation test."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.sim.soc import make_entry
from dynofa.budget import Budget
from dynofa.errors import BudgetError
from governors.policies import AppRequest, DecisionInput, ModelBasedPolicy, PeInfo
from governors.policies.search import evaluate, plan
from governors.power_model import PowerModel

CPU = PeInfo("cpu-big", "cpu", (500000, 1000000, 1500000, 2000000), cpus=4)
GPU = PeInfo("gpu", "gpu", (300_000_000, 600_000_000, 900_000_000))
SMALL = make_entry("small", 0.70, {"cpu-big": 10.0, "gpu": 5.0})
MEDIUM = make_entry("medium", 0.75, {"cpu-big": 20.0, "gpu": 10.0})
LARGE = make_entry("large", 0.80, {"cpu-big": 40.0, "gpu": 20.0})
ENTRIES = (SMALL, MEDIUM, LARGE)


def app(name: str = "app", latency_ms: float = 100.0, min_accuracy: float = 0.0, objective: str | None = None,
        priority: int = 0, entries: tuple = ENTRIES) -> AppRequest:
    return AppRequest(name, Budget(latency_ms=latency_ms, min_accuracy=min_accuracy, objective=objective,
                                   priority=priority), entries)


def decide(*apps: AppRequest, pes: tuple = (CPU,)) -> dict:
    return ModelBasedPolicy().decide(DecisionInput(apps=apps, pes=pes)).to_dict()


def test_budget_objective_is_validated() -> None:
    assert Budget(10.0).objective is None
    assert Budget.from_dict({"latency_ms": 10, "objective": "energy"}).objective == "energy"
    with pytest.raises(BudgetError, match="objective must be one of accuracy, energy"):
        Budget.from_dict({"latency_ms": 10, "objective": "speed"})


def test_accuracy_objective_runs_the_most_accurate_energy_the_cheapest_over_the_floor() -> None:
    acc = decide(app(min_accuracy=0.74, objective="accuracy"))
    assert acc["points"]["app"]["subnet"] == "large"
    assert acc["outcomes"]["app"]["objective"] == "accuracy"
    energy = decide(app(min_accuracy=0.74, objective="energy"))
    assert energy["points"]["app"]["subnet"] == "medium"  # the cheapest subnet meeting the floor
    assert energy["outcomes"]["app"]["objective"] == "energy" and energy["feasible"]
    assert energy["outcomes"]["app"]["energy_j"] < acc["outcomes"]["app"]["energy_j"]
    # no floor: the smallest subnet, at the lowest frequency that meets the deadline
    lean = decide(app(objective="energy"))
    assert lean["points"]["app"]["subnet"] == "small"
    assert lean["points"]["app"]["cpu_freq_khz"] == {"cpu-big": 500000}


def test_infeasible_floor_rule_depends_on_the_objective() -> None:
    # 12 ms at most on the CPU: only "small" (10 ms at the top clock) fits; the floor 0.79 needs "large"
    acc = decide(app(latency_ms=12.0, min_accuracy=0.79, objective="accuracy"))["outcomes"]["app"]
    assert acc["subnet"] == "small" and acc["meets_latency"] and not acc["meets_accuracy"]
    assert "accuracy minimum yields" in acc["reason"]
    energy = decide(app(latency_ms=12.0, min_accuracy=0.79, objective="energy"))["outcomes"]["app"]
    assert energy["subnet"] == "large" and energy["meets_accuracy"] and not energy["meets_latency"]
    assert "latency yields" in energy["reason"]


def test_each_app_objective_applies_to_its_own_choice_on_a_shared_frequency() -> None:
    d = decide(app("a", latency_ms=60.0, objective="accuracy", entries=(SMALL, LARGE)),
               app("b", latency_ms=200.0, objective="energy", entries=(SMALL, LARGE)))
    assert d["points"]["a"]["subnet"] == "large" and d["points"]["b"]["subnet"] == "small"
    # one cluster clock serves both: high enough for the accuracy app's large subnet
    assert d["points"]["a"]["cpu_freq_khz"] == d["points"]["b"]["cpu_freq_khz"]
    assert d["feasible"]


def test_infeasible_floor_holds_one_point_without_oscillating() -> None:
    """The floor 0.80 needs "large", which runs 15 % slower than its prediction from the other subnets'
    observations: it seems to fit 43 ms from below and misses once run. The point is held below the
    floor; each failed step up doubles the wait before the next try (no flapping with every decision)."""
    for objective in ("accuracy", "energy"):
        policy = ModelBasedPolicy(hold=3)
        i = DecisionInput(apps=(app(latency_ms=43.0, min_accuracy=0.80, objective=objective),), pes=(CPU,))
        rng = random.Random(1)
        seen = []
        for _ in range(300):
            point = policy.decide(i).points["app"]
            seen.append((point.subnet, point.cpu_freq_khz["cpu-big"]))
            base = {"small": 10.0, "medium": 20.0, "large": 40.0 * 1.15}[point.subnet]
            scale = 2000000 / point.cpu_freq_khz["cpu-big"]
            policy.observe("app", base * (0.1 + 0.9 * scale) * rng.uniform(0.98, 1.02))
        changes = sum(1 for a, b in zip(seen, seen[1:], strict=False) if a != b)
        assert changes <= 12, (objective, changes)
        if objective == "energy":  # the floor holds: one point throughout
            assert {s for s, _ in seen} == {"large"}
        else:  # the latency holds: below the floor nearly all the time
            assert sum(1 for s, _ in seen if s != "large") >= 0.95 * len(seen)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(5.0, 200.0), st.integers(0, 2), st.integers(1, 6), st.sampled_from(
    ["accuracy", "energy"])), min_size=1, max_size=3), st.sampled_from([CPU, GPU]))
def test_the_recheck_of_a_plan_agrees_with_the_planner(apps: list, pe: PeInfo) -> None:
    """evaluate() of the planner's own plan reports the same outcome for every app (one utilisation test)."""
    requests = []
    for k, (budget, prio, threads, objective) in enumerate(apps):
        entries = tuple(make_entry(e.id, e.accuracy.top1 if e.accuracy else 0.0,
                                   {n: lat.ms for n, lat in e.latency.items()}, threads=threads) for e in ENTRIES)
        requests.append(AppRequest(f"a{k}", Budget(budget, priority=prio, objective=objective), entries))
    inp = DecisionInput(apps=tuple(requests), pes=(pe,))
    power = PowerModel.for_board("generic-linux", [(pe.name, pe.kind, pe.top_khz)])

    def predict(a: AppRequest, e, p: PeInfo, f: int | None) -> float | None:
        lat = e.latency.get(p.name)
        return None if lat is None else lat.ms * (p.freqs[-1] / f if f else 1.0)

    margins = {r.name: 1.05 for r in requests}
    best = plan(inp, predict, margins, power)
    assert best is not None
    again = evaluate(inp, best.assignment(), best.freqs, predict, margins, power)
    assert again is not None
    for name, c in best.choices.items():
        assert (again.choices[name].meets_latency, again.choices[name].meets_accuracy) == \
            (c.meets_latency, c.meets_accuracy)
    assert again.power_w == pytest.approx(best.power_w) and again.cap_ok == best.cap_ok
