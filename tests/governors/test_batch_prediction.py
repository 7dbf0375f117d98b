"""Latency is predicted for the batch size an app sends, so contention estimates measure contention."""

from __future__ import annotations

from dataclasses import replace

from dynofa.budget import Budget
from dynofa.catalog import Accuracy, CatalogEntry, Latency
from governors.policies import AppRequest, DecisionInput, ModelBasedPolicy, PeInfo

CPU = PeInfo("cpu", "cpu", (), cpus=2)


def entry(sid: str, acc: float, ms: float, ms32: float) -> CatalogEntry:
    lat = Latency(ms=ms, source="measured", batch={32: Latency(ms=ms32, source="measured")})
    return CatalogEntry(id=sid, config={}, resolution=32, macs=1, params=0, latency={"cpu": lat},
                        accuracy=Accuracy(top1=acc, source="measured"))


ENTRIES = (entry("small", 0.6, 2.0, 20.0), entry("large", 0.8, 7.0, 65.0))


def test_prediction_and_contention_estimate_at_batch_32() -> None:
    policy = ModelBasedPolicy()
    app = AppRequest("app", Budget(latency_ms=80.0), ENTRIES, batch=32)
    inp = DecisionInput(apps=(app,), pes=(CPU,))
    d = policy.decide(inp)
    outcome = d.outcomes["app"]
    # 65 ms x margin fits 80 ms at batch 32 (a batch-1 reading would say 7 ms)
    assert d.points["app"].subnet == "large" and outcome.nominal_ms == 65.0
    for _ in range(30):  # a quiet machine: the batch takes what the catalog says
        policy.observe("app", 65.0)
        d = policy.decide(inp)
    assert policy.state()["contention"]["cpu"]["slowdown"] == 1.0
    assert d.points["app"].subnet == "large" and d.feasible


def test_a_tighter_batch_budget_steps_down_by_the_batch_figures() -> None:
    app = AppRequest("app", Budget(latency_ms=40.0), ENTRIES, batch=32)
    d = ModelBasedPolicy().decide(DecisionInput(apps=(app,), pes=(CPU,)))
    assert d.points["app"].subnet == "small"  # 65 ms > 40 ms at batch 32, though 7 ms at batch 1
    one = ModelBasedPolicy().decide(DecisionInput(apps=(replace(app, batch=1),), pes=(CPU,)))
    assert one.points["app"].subnet == "large"
