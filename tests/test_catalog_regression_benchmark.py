"""benchmarks.catalog_regression's evaluation: on latencies made of the cost terms the OFA features
describe, the builder's regression recovers them and beats the MACs line it is compared with."""

from __future__ import annotations

from benchmarks.catalog_regression import demo_family, evaluate, sample, table


def test_regression_recovers_additive_costs_and_beats_the_macs_line() -> None:
    family = demo_family()
    pool = sample(family, 40, seed=0)
    # per-call overhead per layer, a per-block cost and MAC costs: what a CPU forward at these sizes is made of
    ms = {
        c.id: 0.3 + 0.02 * c.features["layers"] + 0.05 * c.features["active_blocks"]
        + 0.8 * c.features["pointwise_macs_m"] + 3.0 * c.features["depthwise_macs_m"]
        for c in pool
    }
    rows = evaluate(pool, ms, held_out=15, seed=0)
    assert [r["measured"] for r in rows] == [5, 10, 20]
    at20 = rows[-1]
    assert at20["regression_mape_pct"] < 1.0 and at20["mape_ratio_regression_vs_macs_linear"] < 0.3
    assert at20["model"]["fitter"] == "cost-terms"  # (layers ~ blocks and SE blocks: either may carry it)
    text = table({"families": [{"family": family.name, "by_measured": rows, "measurement_repeatability_pct": 0.0}]})
    assert text.count("\n") == 1 + len(rows) and "| 20 |" in text
