"""The simulated SoC's time sharing: apps mapped to one PE run one after the other, at one clock, priced as one PE."""

from __future__ import annotations

import math

import pytest

from benchmarks.sim.soc import (
    PerAppPolicy,
    Phase,
    SimulatedSoC,
    board_apps,
    pe_frame_energy_j,
    run_trace,
    sim_board,
    starved,
)
from dynofa.budget import Budget
from governors.policies import make_policy
from governors.power_model import PowerModel


def _both_on_gpu(freq_a: str = "max", freq_b: str = "max") -> PerAppPolicy:
    return PerAppPolicy({"gpu-app": make_policy("static", subnet="dofa-l0", pe="gpu", freq=freq_a),
                         "cpu-app": make_policy("static", subnet="dofa-l0", pe="gpu", freq=freq_b)})


def _phase(gpu_ms: float = 100.0, cpu_ms: float = 300.0, gpu_priority: int = 1) -> Phase:
    return Phase("p", 10, {"gpu-app": Budget(gpu_ms, priority=gpu_priority), "cpu-app": Budget(cpu_ms)})


def test_apps_on_one_pe_run_one_after_the_other_in_serving_order() -> None:
    soc = SimulatedSoC(sim_board("xavier-nx"), seed=1)
    apps = board_apps(soc.board, ["gpu", "cpu"])
    for gpu_priority, first in ((1, "gpu-app"), (0, "cpu-app")):  # by priority, then by name
        run = run_trace(soc, _both_on_gpu(), [_phase(gpu_priority=gpu_priority)], apps)
        for frame in range(10):
            recs = {r.app: r for r in run.records if r.frame == frame}
            second = next(a for a in recs if a != first)
            assert recs[first].latency_ms == recs[first].forward_ms
            assert recs[second].latency_ms == pytest.approx(recs[first].forward_ms + recs[second].forward_ms)
            assert recs[first].freq == recs[second].freq == soc.board.pe("gpu").top


def test_a_pe_given_two_clocks_for_one_frame_is_an_error() -> None:
    soc = SimulatedSoC(sim_board("xavier-nx"), seed=1)
    with pytest.raises(ValueError, match="2 clocks"):
        run_trace(soc, _both_on_gpu("max", "min"), [_phase()], board_apps(soc.board, ["gpu", "cpu"]))


def test_a_shared_pe_is_priced_as_its_power_over_the_frame() -> None:
    """One app whose period is the frame: PowerModel.frame_energy; several: the PE's average power x the frame,
    each app charged its share of the busy time."""
    power = PowerModel.for_board("jetson-xavier-nx")
    active, idle = power.active_w("gpu", 800000), power.idle_w("gpu", 800000)
    (alone,) = pe_frame_energy_j(active, idle, [40.0], [100.0], 100.0)
    assert alone == pytest.approx(power.frame_energy("gpu", 800000, 40.0, 100.0).joules)
    shared = pe_frame_energy_j(active, idle, [40.0, 60.0], [100.0, 300.0], 300.0)
    u = 0.4 + 0.2
    assert sum(shared) == pytest.approx((active * u + idle * (1 - u)) * 0.3)
    assert shared[0] / shared[1] == pytest.approx(0.4 / 0.2)


def test_an_app_whose_forwards_overbook_the_pe_is_late_and_those_before_it_are_not() -> None:
    assert starved([40.0, 60.0], [100.0, 300.0]) == [False, False]
    assert starved([80.0, 80.0], [100.0, 300.0]) == [False, True]  # 0.8 + 0.27 of the PE's time
    assert starved([150.0], [100.0]) == [False]  # alone: late by its own latency, not starved
    soc = SimulatedSoC(sim_board("xavier-nx"), seed=1)
    run = run_trace(soc, _both_on_gpu("min", "min"), [_phase()], board_apps(soc.board, ["gpu", "cpu"]))
    gpu_app = [r for r in run.records if r.app == "gpu-app"]
    cpu_app = [r for r in run.records if r.app == "cpu-app"]
    assert all(math.isfinite(r.latency_ms) for r in gpu_app)  # served first: its frames keep up (and miss 100 ms)
    assert all(math.isinf(r.latency_ms) for r in cpu_app) and run.misses == 20


def test_a_counted_pe_without_an_app_idles_at_its_lowest_clock() -> None:
    soc = SimulatedSoC(sim_board("xavier-nx"), seed=1)
    apps = board_apps(soc.board, ["gpu", "cpu"])
    run = run_trace(soc, _both_on_gpu(), [_phase()], apps, counted_pes=("gpu", "cpu"))
    cpu = soc.board.pe("cpu")
    idle_j = soc.truth_power.idle_w("cpu", cpu.khz(cpu.freqs[0])) * 0.3  # the frame: the longest period, 300 ms
    assert run.unused_j == {f: pytest.approx(idle_j) for f in range(10)}
    assert run.energy_j == pytest.approx(sum(r.energy_j for r in run.records) + 10 * idle_j)
    uncounted = run_trace(soc, _both_on_gpu(), [_phase()], apps)
    assert uncounted.unused_j == {} and uncounted.energy_j == pytest.approx(run.energy_j - 10 * idle_j)
