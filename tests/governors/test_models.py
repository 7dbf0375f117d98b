"""Latency regression, contention estimate and power model."""

from __future__ import annotations

import math
import random

import pytest

from benchmarks.sim.soc import SimulatedSoC, make_entry, sim_board
from governors.contention import ContentionEstimator, LoadView, ScalarKalman, load_from_snapshot, prior_slowdown
from governors.latency_model import (
    FrequencyScaling,
    LatencyModel,
    LatencyModelError,
    ScalingPoint,
    fit_frequency_scaling,
)
from governors.power_model import PePower, PowerModel, PowerModelError


def test_frequency_regression_recovers_a_plus_b_over_f() -> None:
    # t(f) = 2 + 36000/f  (ms, kHz): at 2 GHz 20 ms, non-scaling fraction 2/20 = 0.1
    points = [ScalingPoint(s, f, k * (2 + 36000 / (f / 1000))) for s, k in (("a", 1.0), ("b", 2.0))
              for f in (500000, 1000000, 1500000, 2000000)]
    fit = fit_frequency_scaling(points, ref_khz=2000000)
    assert fit.nonscaling == pytest.approx(0.1, abs=1e-6)
    assert fit.mean_abs_error_pct == pytest.approx(0.0, abs=1e-6)
    assert fit.loo_mean_abs_error_pct is not None and fit.loo_mean_abs_error_pct < 1e-6
    assert fit.factor(1000000, 2000000) == pytest.approx(1.9)
    model = LatencyModel(scalings={"cpu-big": fit})
    entry = make_entry("x", 0.7, {"cpu-big": 20.0}, freq_khz={"cpu-big": 2000000})
    assert model.predict_ms(entry, "cpu-big", "cpu", 1000000, 2000000) == pytest.approx(38.0)
    assert model.predict_ms(entry, "gpu", "gpu", None, None) is None


def test_frequency_regression_reports_its_error_on_noisy_points() -> None:
    rng = random.Random(1)
    points = [ScalingPoint("a", f, (2 + 36000 / (f / 1000)) * (1 + rng.uniform(-0.05, 0.05)))
              for f in (500000, 800000, 1100000, 1400000, 1700000, 2000000)]
    fit = fit_frequency_scaling(points)
    assert 0.0 < fit.mean_abs_error_pct < 5.0
    assert fit.max_abs_error_pct >= fit.mean_abs_error_pct
    assert fit.loo_mean_abs_error_pct is not None and fit.loo_mean_abs_error_pct >= fit.mean_abs_error_pct
    assert fit.to_dict()["model"] == "t(f) = a + b/f"


def test_frequency_regression_on_the_simulated_board_has_small_error() -> None:
    soc = SimulatedSoC(sim_board("xavier-nx"), seed=3)
    gpu = soc.board.pe("gpu")
    fit = soc.measure_scaling([soc.board.entries[0], soc.board.entries[-1]], gpu)
    assert fit.fitted and fit.points == 8
    assert fit.mean_abs_error_pct is not None and fit.mean_abs_error_pct < 5.0


def test_frequency_regression_rejects_bad_input() -> None:
    with pytest.raises(LatencyModelError, match="at least 2"):
        fit_frequency_scaling([ScalingPoint("a", 1000, 1.0)])
    with pytest.raises(LatencyModelError, match="distinct frequencies"):
        fit_frequency_scaling([ScalingPoint("a", 1000, 1.0), ScalingPoint("a", 1000, 1.1)])
    with pytest.raises(LatencyModelError, match="positive"):
        fit_frequency_scaling([ScalingPoint("a", 1000, -1.0), ScalingPoint("a", 2000, 1.0)])


def test_latency_model_reads_catalog_latency_models() -> None:
    model = LatencyModel.from_catalog_models({"gpu": {"nonscaling_fraction": 0.3}, "cpu": {"kind": "poly"}})
    assert model.scaling("gpu", "gpu").nonscaling == 0.3
    assert model.scaling("cpu", "cpu").nonscaling == FrequencyScaling(nonscaling=0.1).nonscaling


def test_kalman_converges_to_a_constant_slowdown() -> None:
    rng = random.Random(0)
    k = ScalarKalman(x0=1.0, p0=1.0, q=1e-4, r=1e-2)
    for _ in range(300):
        k.update(1.6 + rng.gauss(0, 0.1))
    assert k.x == pytest.approx(1.6, abs=0.05)
    assert k.p < 0.01


def test_estimator_jumps_on_a_miss_and_smooths_noise() -> None:
    est = ContentionEstimator()
    for i in range(50):
        est.observe("cpu", 10.0 * (1.05 if i % 2 else 0.95), 10.0)
    assert est.slowdown("cpu") == pytest.approx(1.0, abs=0.03)
    assert 0.02 < est.relative_sd("cpu") < 0.1
    est.observe("cpu", 13.0, 10.0, missed=True)
    assert est.slowdown("cpu") == pytest.approx(1.3)  # no filtering on a miss
    est.observe("cpu", 21.0, 10.0)  # far above but no miss: may be a spike, held
    assert est.slowdown("cpu") == pytest.approx(1.3)
    est.observe("cpu", 21.0, 10.0)  # twice in a row: onset of contention, taken at once
    assert est.slowdown("cpu") == pytest.approx(2.1)
    est.observe("cpu", 10.0, 10.0)
    est.observe("cpu", 10.0, 10.0)
    assert est.slowdown("cpu") > 1.5  # two fast frames are not enough to drop
    est.observe("cpu", 10.0, 10.0)
    assert est.slowdown("cpu") == pytest.approx(1.0)  # third: contention gone


def test_ratio_quantile_sizes_the_margin() -> None:
    est = ContentionEstimator()
    assert est.ratio_quantile("cpu", 0.98) is None
    for i in range(50):
        est.observe("cpu", 10.0 * (1.0 + 0.1 * ((i % 10) / 10 - 0.45)), 10.0)  # ratios 0.955 .. 1.045
    q = est.ratio_quantile("cpu", 0.98)
    assert q is not None and 1.03 < q < 1.07


def test_estimator_uses_monitor_prior_for_unobserved_pes_and_on_a_load_jump() -> None:
    est = ContentionEstimator()
    assert est.slowdown("gpu", prior=1.8) == 1.8
    for _ in range(10):
        est.observe("cpu", 10.0, 10.0)
    assert est.slowdown("cpu", prior=1.0) == pytest.approx(1.0)
    assert est.slowdown("cpu", prior=1.5) == pytest.approx(1.5)  # monitors see new load: raised before a miss


def test_prior_slowdown_from_monitors() -> None:
    load = LoadView(other_util={"cpu": 1.0}, gpu_load=0.5, throttled=frozenset({"cpu-big"}))
    assert prior_slowdown("cpu", "cpu", 2, 1, load) == pytest.approx(1.5)  # 3 runnable threads on 2 cores
    assert prior_slowdown("cpu", "cpu", 2, 1, LoadView(other_util={"cpu": 0.5})) == pytest.approx(1.0)
    assert prior_slowdown("gpu", "gpu", 1, 1, load) == pytest.approx(1.5)
    assert prior_slowdown("cpu-big", "cpu", 4, 1, load) == pytest.approx(1.2)
    assert prior_slowdown("cpu", "cpu", 2, 1, None) == 1.0


def test_load_from_snapshot_converts_units() -> None:
    from governors.monitors import Snapshot  # gpu_load in percent, cpu_util in fractions

    snap = Snapshot(t=0.0, interval_s=1.0, cpu_util={"cpu": 0.25, "gpu-x": None}, gpu_load=50.0, power_w=3.0,
                    energy_j=12.0, throttled=["cpu"])  # fmt: skip
    view = load_from_snapshot(snap)
    assert view.other_util == {"cpu": 0.25} and view.gpu_load == pytest.approx(0.5)
    assert view.power_w == 3.0 and view.energy_j == 12.0 and view.throttled == frozenset({"cpu"})
    assert load_from_snapshot(None) == LoadView()


def test_power_model_energy_and_voltage() -> None:
    model = PowerModel.for_board("odroid-xu3")
    big = model.pe("cpu-big")
    assert big.voltage(2000000) == pytest.approx(1.3625)
    assert big.voltage(100000) == pytest.approx(0.9)
    assert model.active_w("cpu-big", 2000000) == pytest.approx(5.0, abs=0.1)  # Walker et al.: ~5 W
    # the same work at a lower clock takes longer but costs less energy (V^2)
    fast = model.frame_energy("cpu-big", 2000000, 20.0, 100.0)
    slow = model.frame_energy("cpu-big", 1000000, 38.0, 100.0)
    assert slow.joules < fast.joules and fast.source == "model"
    model.calibrate(measured_w=6.0, modelled_w=model.active_w("cpu-big", 2000000))
    assert model.source == "measured-calibrated"
    assert model.active_w("cpu-big", 2000000) == pytest.approx(6.0)
    generic = PowerModel.for_board("generic-linux", [("cpu", "cpu", 3000000)])
    assert generic.active_w("cpu", 3000000) > generic.active_w("cpu", 1000000) > 0
    with pytest.raises(PowerModelError, match="voltage table"):
        PePower("x", 0.1, 1e-9, ())
    assert math.isfinite(model.idle_w("cpu-little", None))


def test_a_monitored_load_change_makes_the_estimate_provisional_until_one_inference() -> None:
    est = ContentionEstimator()
    for _ in range(20):
        est.observe("gpu", 10.0, 10.0)
    assert est.slowdown("gpu", prior=1.0) == pytest.approx(1.0) and est.provisional("gpu") is None
    assert est.slowdown("gpu", prior=2.0) == pytest.approx(2.0)  # raised to the monitors' guess
    assert est.provisional("gpu") == "rise"
    est.observe("gpu", 30.0, 10.0)  # the first inference under the load measures 3x: it replaces the guess
    assert est.slowdown("gpu", prior=2.0) == pytest.approx(3.0) and est.provisional("gpu") is None
    for _ in range(20):
        est.observe("gpu", 30.0, 10.0)
    assert est.slowdown("gpu", prior=1.0) == pytest.approx(3.0)  # load gone: kept until measured ...
    assert est.provisional("gpu") == "fall"
    est.observe("gpu", 10.0, 10.0)  # ... by one inference, not drop_run filtered ones
    assert est.slowdown("gpu", prior=1.0) == pytest.approx(1.0) and est.provisional("gpu") is None


def test_a_rise_the_next_inference_does_not_confirm_makes_the_next_rise_need_twice_the_jump() -> None:
    est = ContentionEstimator()
    for _ in range(20):
        est.observe("gpu", 10.0, 10.0)
    est.slowdown("gpu", prior=1.0)
    assert est.slowdown("gpu", prior=1.3) == pytest.approx(1.3) and est.provisional("gpu") == "rise"
    est.observe("gpu", 10.0, 10.0)  # no slowdown after all: the monitors' reading was noise
    assert est.slowdown("gpu", prior=1.0) == pytest.approx(1.0)
    assert est.slowdown("gpu", prior=1.3) == pytest.approx(1.0) and est.provisional("gpu") is None  # not again
    est.slowdown("gpu", prior=1.0)
    assert est.slowdown("gpu", prior=1.5) == pytest.approx(1.5) and est.provisional("gpu") == "rise"  # > 2 x 20 %
    est.observe("gpu", 15.0, 10.0)  # confirmed: rises count at 20 % again
    for _ in range(5):
        est.observe("gpu", 15.0, 10.0)
    est.slowdown("gpu", prior=1.5)
    assert est.slowdown("gpu", prior=1.9) == pytest.approx(1.9) and est.provisional("gpu") == "rise"
