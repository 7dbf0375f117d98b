from __future__ import annotations

import json
import math
import random

import pytest

from dynofa.errors import CatalogBuildError
from subnets.offline.regression import RegressionModel, error_report, fit, fit_accuracy, fit_latency, fit_with_holdout


def _rows(n: int, seed: int = 0) -> list[dict[str, float]]:
    rng = random.Random(seed)
    return [{"a": rng.uniform(0, 10), "b": rng.uniform(-5, 5), "c": 3.0} for _ in range(n)]


def _poly(row: dict[str, float]) -> float:
    return 2.0 + 3.0 * row["a"] + 0.5 * row["a"] ** 2 - 1.5 * row["b"] + 0.25 * row["a"] * row["b"]


def test_recovers_a_known_quadratic() -> None:
    rows = _rows(30)
    model = fit(rows, [_poly(r) for r in rows])
    assert model.degree == 2
    assert not model.log_target
    test = _rows(10, seed=1)
    for row, pred in zip(test, model.predict(test), strict=True):
        assert pred == pytest.approx(_poly(row), rel=1e-3, abs=1e-3)
    assert model.error["loo"]["mae"] < 1e-2


def test_linear_data_prefers_degree_one() -> None:
    rows = _rows(12)
    rng = random.Random(3)
    model = fit(rows, [1.0 + 2.0 * r["a"] + rng.gauss(0, 0.05) for r in rows])
    assert model.degree == 1
    assert model.predict_one({"a": 5.0, "b": 0.0, "c": 3.0}) == pytest.approx(11.0, abs=0.2)


def test_held_out_error_is_reported_and_honest() -> None:
    rows = _rows(20)
    rng = random.Random(5)
    targets = [_poly(r) + rng.gauss(0, 1.0) for r in rows]
    model = fit_with_holdout(rows, targets, holdout=0.25, seed=2)
    held = model.error["held_out"]
    assert held["method"] == "held-out"
    assert held["n"] == 5
    assert 0 < held["mae"] < 5  # noise sigma 1: the error is real, but the fit is good
    assert held["mape_pct"] > 0
    assert model.n_train == 20  # the returned model is refitted on everything
    # too few points: no held-out set, but a leave-one-out estimate
    small = fit_with_holdout(rows[:3], targets[:3])
    assert small.error["held_out"]["method"] == "none"
    assert small.error["loo"]["n"] == 3


def test_latency_model_uses_log_for_multiplicative_data_and_stays_positive() -> None:
    rows = [{"macs": float(m)} for m in (1e6, 2e6, 5e6, 1e7, 2e7, 5e7, 1e8)]
    ms = [0.5 * math.exp(r["macs"] / 3e7) for r in rows]
    model = fit_latency(rows, ms)
    assert model.log_target
    assert all(p > 0 for p in model.predict([{"macs": 0.0}, {"macs": -1e9}]))


def test_accuracy_predictions_are_clipped_to_fractions() -> None:
    rows = [{"macs": float(m)} for m in range(1, 9)]
    model = fit_accuracy(rows, [0.1 * m for m in range(1, 9)])
    low, high = model.predict([{"macs": -100.0}, {"macs": 100.0}])
    assert low == 0.0
    assert high == 1.0


def test_round_trips_through_json() -> None:
    rows = _rows(15)
    model = fit_latency(rows, [abs(_poly(r)) + 1 for r in rows])
    back = RegressionModel.from_dict(json.loads(json.dumps(model.to_dict())))
    assert back.predict(rows) == pytest.approx(model.predict(rows))
    assert back.error == model.error


@pytest.mark.parametrize(
    "data, message",
    [
        ({"kind": "magic/9"}, "unknown regression model kind"),
        ({"kind": "ridge-poly/1", "target": "x"}, "malformed"),
    ],
)
def test_rejects_unknown_or_malformed_models(data: dict, message: str) -> None:
    with pytest.raises(CatalogBuildError, match=message):
        RegressionModel.from_dict(data)


def test_rejects_coefficient_mismatch() -> None:
    model = fit(_rows(6), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).to_dict()
    model["coef"] = model["coef"][:-1]
    with pytest.raises(CatalogBuildError, match="coefficient count"):
        RegressionModel.from_dict(model)


def test_too_few_points_and_missing_features() -> None:
    with pytest.raises(CatalogBuildError, match="at least 2"):
        fit([{"a": 1.0}], [1.0])
    model = fit([{"a": 1.0}, {"a": 2.0}, {"a": 3.0}], [1.0, 2.0, 3.0])
    with pytest.raises(CatalogBuildError, match="'a' is missing"):
        model.predict([{"b": 1.0}])


def test_error_report() -> None:
    report = error_report("held-out", [10.0, 20.0], [11.0, 18.0])
    assert report.mae == pytest.approx(1.5)
    assert report.mape_pct == pytest.approx(10.0)
    assert report.max_abs == pytest.approx(2.0)


def test_few_noisy_points_do_not_buy_an_overfitted_model() -> None:
    rng = random.Random(7)
    rows = [{"macs": rng.uniform(1, 10), **{f"noise{j}": rng.uniform(0, 1) for j in range(8)}} for _ in range(6)]
    model = fit_latency(rows, [2.0 * r["macs"] * rng.uniform(0.92, 1.08) for r in rows])
    assert model.features == ["macs"] and model.degree == 1  # 6 points buy one term
    # enough points and a real second cause: it is found
    many = [{"macs": rng.uniform(1, 10), "res": rng.uniform(1, 10), "junk": rng.uniform(0, 1)} for _ in range(30)]
    model = fit_latency(many, [2.0 * r["macs"] + 3.0 * r["res"] for r in many])
    assert set(model.features) == {"macs", "res"}


def _cost_rows(n: int, seed: int = 0) -> list[dict[str, float]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        blocks = float(rng.randint(5, 20))
        pw, dw = rng.uniform(0.5, 20.0), rng.uniform(0.05, 2.0)
        rows.append({"active_blocks": blocks, "pointwise_macs_m": pw, "depthwise_macs_m": dw,
                     "macs_m": pw + dw, "se_blocks": float(rng.randint(0, 8)), "resolution": rng.choice([16.0, 32.0])})
    return rows


def _cost(row: dict[str, float]) -> float:
    # a constant, a per-block overhead, point-wise MACs, and depthwise MACs 8x dearer than point-wise ones
    return 0.4 + 0.25 * row["active_blocks"] + 0.05 * row["pointwise_macs_m"] + 0.4 * row["depthwise_macs_m"]


def test_cost_terms_recover_an_additive_latency_and_beat_macs() -> None:
    from subnets.offline.regression import choose_latency_model, fit_cost_terms

    rows = _cost_rows(12)
    model = fit_cost_terms(rows, [_cost(r) for r in rows])
    assert model is not None and model.fitter == "cost-terms"
    used = {name for name, c in zip(model.features, model.coef[1:], strict=True) if c > 1e-9}
    # macs_m is point-wise + depthwise MACs here, so either may carry their cost; SE blocks cost nothing
    assert "active_blocks" in used and used <= {"active_blocks", "pointwise_macs_m", "depthwise_macs_m", "macs_m"}
    test = _cost_rows(20, seed=1)
    for row, pred in zip(test, model.predict(test), strict=True):
        assert pred == pytest.approx(_cost(row), rel=1e-3)
    chosen = fit_latency(rows, [_cost(r) for r in rows])
    assert chosen.fitter == "cost-terms" and chosen.error["held_out"]["mape_pct"] < 1.0
    macs_only = fit([{"macs_m": r["macs_m"]} for r in rows], [_cost(r) for r in rows], degrees=(1,))
    assert macs_only.error["loo"]["mape_pct"] > 5 * chosen.error["loo"]["mape_pct"]
    # round trip keeps the fitter
    assert RegressionModel.from_dict(json.loads(json.dumps(chosen.to_dict()))).fitter == "cost-terms"
    # rows without cost terms: the ridge polynomial
    assert fit_cost_terms(_rows(10), [_poly(r) for r in _rows(10)]) is None
    assert choose_latency_model(_rows(12), [abs(_poly(r)) + 1 for r in _rows(12)]).fitter == "ridge-poly"


def test_a_cost_term_is_never_given_a_negative_cost() -> None:
    from subnets.offline.regression import fit_cost_terms

    rows = _cost_rows(16, seed=4)
    # latency *falls* with SE blocks here: no physical cost model may use them
    targets = [_cost(r) + 2.0 - 0.2 * r["se_blocks"] for r in rows]
    model = fit_cost_terms(rows, targets)
    assert model is not None and all(c >= 0 for c in model.coef[1:])
    assert model.coef[1 + model.features.index("se_blocks")] == 0
