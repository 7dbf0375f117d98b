"""Policies' decisions on constructed situations."""

from __future__ import annotations

from dataclasses import replace

import pytest

from benchmarks.sim.soc import make_entry
from dynofa.budget import Budget
from governors.contention import LoadView
from governors.policies import (
    AppRequest,
    DecisionInput,
    DynamicOfaPolicy,
    ModelBasedPolicy,
    PeInfo,
    PolicyError,
    configured_policy,
    make_policy,
)

CPU = PeInfo("cpu-big", "cpu", (500000, 1000000, 1500000, 2000000), cpus=4)
LITTLE = PeInfo("cpu-little", "cpu", (500000, 1000000, 1400000), cpus=4)
GPU = PeInfo("gpu", "gpu", (300_000_000, 600_000_000, 900_000_000))

# three subnets: accuracy rises with latency; figures at the top of each ladder
SMALL = make_entry("small", 0.70, {"cpu-big": 10.0, "gpu": 5.0, "cpu-little": 30.0})
MEDIUM = make_entry("medium", 0.75, {"cpu-big": 20.0, "gpu": 10.0, "cpu-little": 60.0})
LARGE = make_entry("large", 0.80, {"cpu-big": 40.0, "gpu": 20.0, "cpu-little": 120.0})
ENTRIES = (SMALL, MEDIUM, LARGE)


def request(name: str = "app", latency_ms: float = 100.0, min_accuracy: float = 0.0, priority: int = 0,
            entries: tuple = ENTRIES, power_cap_w: float | None = None) -> AppRequest:
    return AppRequest(name, Budget(latency_ms=latency_ms, min_accuracy=min_accuracy, priority=priority,
                                   power_cap_w=power_cap_w), entries)


def inp(*apps: AppRequest, pes: tuple = (CPU, GPU), load: LoadView | None = None,
        board: str = "generic-linux") -> DecisionInput:
    return DecisionInput(apps=apps, pes=pes, board=board, load=load)


def test_make_policy_names_and_errors() -> None:
    for name in ("model-based", "dynamic-ofa", "bandit", "static"):
        assert make_policy(name).name == name
    with pytest.raises(PolicyError, match="unknown policy"):
        make_policy("nope")
    with pytest.raises(PolicyError, match=r"unknown option colour for policy 'static'; it takes: subnet \(str"):
        make_policy("static", colour="red")


def test_configured_policy_takes_only_scalar_options_of_their_type() -> None:
    assert configured_policy("model-based", {"min_margin": 1.2, "hold": 3}).name == "model-based"
    with pytest.raises(PolicyError, match="unknown option latency_model"):  # an object: code only, not YAML
        configured_policy("model-based", {"latency_model": "x"})
    with pytest.raises(PolicyError, match="option hold must be int, got 1.5"):
        configured_policy("model-based", {"hold": 1.5})
    with pytest.raises(PolicyError, match="option dvfs must be bool, got 1"):
        configured_policy("model-based", {"dvfs": 1})
    with pytest.raises(PolicyError, match="must be float, got nan"):
        configured_policy("bandit", {"alpha": float("nan")})
    assert configured_policy("static", {"pe": None, "freq": 5}).name == "static"


def test_budget_only_smallest_meets() -> None:
    policy = ModelBasedPolicy()
    d = policy.decide(inp(request(latency_ms=12.0), pes=(CPU,)))
    assert d.points["app"].subnet == "small"
    assert d.points["app"].cpu_freq_khz == {"cpu-big": 2000000}  # only the top clock meets 12 ms
    assert d.feasible
    # nothing meets 9 ms: reported, and the best effort is the fastest point
    d = ModelBasedPolicy().decide(inp(request(latency_ms=9.0), pes=(CPU,)))
    assert not d.feasible
    assert d.points["app"].subnet == "small" and d.points["app"].cpu_freq_khz == {"cpu-big": 2000000}


def test_most_accurate_then_lowest_frequency() -> None:
    d = ModelBasedPolicy().decide(inp(request(latency_ms=100.0), pes=(CPU,)))
    point = d.points["app"]
    assert point.subnet == "large"
    # large needs 40 ms at 2 GHz; at 1 GHz ~ 40*(0.1+0.9*2)=76 ms x margin < 100; 500 MHz too slow
    assert point.cpu_freq_khz["cpu-big"] == 1000000
    assert d.outcomes["app"].predicted_ms * 1.05 <= 100.0


def test_gpu_taken_by_another_process_moves_to_cpu() -> None:
    policy = ModelBasedPolicy()
    free = policy.decide(inp(request(latency_ms=25.0)))
    assert free.points["app"].pe == "gpu" and free.points["app"].subnet == "large"
    busy = ModelBasedPolicy().decide(inp(request(latency_ms=25.0), load=LoadView(gpu_load=0.95)))
    # GPU ~2x slower: large 39 ms misses, medium 19.5 ms fits on the GPU; the CPU gives medium at 20 ms
    # too but needs its top clock: what matters is that the large subnet is not planned on a busy GPU
    assert busy.points["app"].subnet != "large" or busy.points["app"].pe != "gpu"
    # a budget only the CPU can give at full accuracy once the GPU is taken:
    cpu_ok = ModelBasedPolicy().decide(inp(request(latency_ms=45.0), load=LoadView(gpu_load=1.0)))
    assert cpu_ok.points["app"].pe == "cpu-big" and cpu_ok.points["app"].subnet == "large"


def test_infeasible_budget_is_reported_with_best_effort_by_priority() -> None:
    policy = ModelBasedPolicy()
    d = policy.decide(inp(request("vip", latency_ms=6.0, priority=5), request("bulk", latency_ms=6.0, priority=0),
                          pes=(GPU,)))
    # both need the GPU (5 ms small subnet); it has time for one: the high-priority app gets it
    assert d.outcomes["vip"].feasible
    assert not d.outcomes["bulk"].feasible
    assert not d.feasible and d.infeasible_apps() == ["bulk"]
    assert "best effort" in d.outcomes["bulk"].reason
    assert d.points["bulk"].subnet == "small"  # best effort = the fastest subnet


def test_accuracy_floor_unreachable_is_reported() -> None:
    d = ModelBasedPolicy().decide(inp(request(latency_ms=12.0, min_accuracy=0.79), pes=(CPU,)))
    assert not d.outcomes["app"].meets_accuracy and d.outcomes["app"].meets_latency
    assert "below the minimum" in d.outcomes["app"].reason


def test_two_apps_on_one_cluster_frequency_satisfies_both() -> None:
    a = request("a", latency_ms=45.0, entries=(LARGE,))  # needs ~2 GHz
    b = request("b", latency_ms=200.0, entries=(SMALL,))  # fine at 500 MHz alone
    d = ModelBasedPolicy().decide(inp(a, b, pes=(CPU,)))
    fa, fb = d.points["a"].cpu_freq_khz["cpu-big"], d.points["b"].cpu_freq_khz["cpu-big"]
    assert fa == fb == 2000000
    assert d.feasible


def test_mapping_moves_app_when_cheaper() -> None:
    # Odroid XU3 power constants: for a loose budget the A7 cluster is far cheaper than the A15
    small_only = (SMALL,)
    loose = ModelBasedPolicy().decide(inp(request(latency_ms=200.0, entries=small_only), pes=(CPU, LITTLE),
                                          board="odroid-xu3"))
    assert loose.points["app"].pe == "cpu-little"
    assert loose.points["app"].cpu_freq_khz == {"cpu-little": 500000}  # 30 ms x 2.7 at 500 MHz fits 200 ms
    tight = ModelBasedPolicy().decide(inp(request(latency_ms=20.0, entries=small_only), pes=(CPU, LITTLE),
                                          board="odroid-xu3"))
    assert tight.points["app"].pe == "cpu-big"


def test_power_cap_limits_frequency() -> None:
    uncapped = ModelBasedPolicy().decide(inp(request(latency_ms=45.0), pes=(CPU,)))
    assert uncapped.points["app"].subnet == "large"
    capped = ModelBasedPolicy().decide(inp(request(latency_ms=45.0, power_cap_w=1.0), pes=(CPU,)))
    assert capped.power_w is not None and capped.power_w <= 1.0
    assert capped.points["app"].subnet != "large"


def test_reacts_to_a_miss_within_one_inference() -> None:
    policy = ModelBasedPolicy()
    i = inp(request(latency_ms=50.0), pes=(CPU,))
    d = policy.decide(i)
    assert d.points["app"].subnet == "large"
    for _ in range(10):
        policy.observe("app", 40.0 * 1.0)
        policy.decide(i)
    policy.observe("app", 80.0)  # contention: twice as slow, a miss
    after = policy.decide(i)
    assert after.points["app"].subnet == "medium"  # 2x20 ms = 40 ms x margin fits 50 ms
    assert after.feasible


def test_hysteresis_no_flapping_on_noise() -> None:
    policy = ModelBasedPolicy()
    # budget right at the boundary of the large subnet at the top clock (40 ms x margin)
    i = inp(request(latency_ms=43.0), pes=(CPU,))
    points = []
    for k in range(200):
        d = policy.decide(i)
        points.append(d.points["app"].subnet)
        point = d.points["app"]
        base = {"small": 10.0, "medium": 20.0, "large": 40.0}[point.subnet]
        scale = 2000000 / point.cpu_freq_khz["cpu-big"]
        noise = 1.06 if k % 2 else 0.94  # oscillating +-6 % noise, never a miss of the medium subnet
        policy.observe("app", base * (0.1 + 0.9 * scale) * noise)
    changes = sum(1 for a, b in zip(points, points[1:], strict=False) if a != b)
    assert changes <= 2, points


def test_steps_back_up_after_contention_ends() -> None:
    policy = ModelBasedPolicy(hold=3)
    i = inp(request(latency_ms=50.0), pes=(CPU,))
    policy.decide(i)
    policy.observe("app", 80.0)  # miss -> medium
    assert policy.decide(i).points["app"].subnet == "medium"
    subnets = []
    for _ in range(30):
        d = policy.decide(i)
        point = d.points["app"]
        base = {"small": 10.0, "medium": 20.0, "large": 40.0}[point.subnet]
        policy.observe("app", base * (0.1 + 0.9 * 2000000 / point.cpu_freq_khz["cpu-big"]))
        subnets.append(point.subnet)
    assert subnets[-1] == "large"
    # not before the hold, nor before the spread of the new regime is known (a dozen ratios)
    assert subnets.index("large") >= 10


def test_no_catalog_latency_for_platform_is_an_error() -> None:
    with pytest.raises(PolicyError, match="no catalog latency"):
        ModelBasedPolicy().decide(inp(request(), pes=(PeInfo("cpu", "cpu"),)))


def test_decision_report_serialises() -> None:
    d = ModelBasedPolicy().decide(inp(request()))
    data = d.to_dict()
    assert data["feasible"] is True and data["energy_source"] == "model"
    assert set(data["points"]["app"]) == {"subnet", "pe", "cpu_freq_khz", "gpu_freq_hz", "threads"}


# ---- dynamic-ofa: the published rule ----------------------------------------------------

def _dofa(budget: float = 30.0, min_accuracy: float = 0.0) -> tuple[DynamicOfaPolicy, DecisionInput]:
    policy = DynamicOfaPolicy()
    return policy, inp(request(latency_ms=budget, min_accuracy=min_accuracy), pes=(CPU,))


def test_dynamic_ofa_steps_down_after_a_full_window_over_budget() -> None:
    policy, i = _dofa(budget=30.0)
    assert policy.decide(i).points["app"].subnet == "large"
    for _ in range(19):
        policy.observe("app", 40.0)
    assert policy.decide(i).points["app"].subnet == "large"  # 19 frames: window not full
    policy.observe("app", 40.0)
    assert policy.decide(i).points["app"].subnet == "medium"  # 20th frame: mean 40 > 30
    # the window restarts after a switch: 19 more slow frames do not step again
    for _ in range(19):
        policy.observe("app", 35.0)
    assert policy.decide(i).points["app"].subnet == "medium"
    policy.observe("app", 35.0)
    assert policy.decide(i).points["app"].subnet == "small"
    for _ in range(40):
        policy.observe("app", 100.0)
    assert policy.decide(i).points["app"].subnet == "small"  # no level below the bottom


def test_dynamic_ofa_mean_not_single_frames() -> None:
    policy, i = _dofa(budget=30.0)
    policy.decide(i)
    for k in range(60):
        policy.observe("app", 45.0 if k % 4 == 0 else 25.0)  # spikes over budget, mean 30 not > 30
    assert policy.decide(i).points["app"].subnet == "large"


def test_dynamic_ofa_steps_up_only_for_the_accuracy_target() -> None:
    policy = DynamicOfaPolicy(start="bottom")
    i = inp(request(latency_ms=100.0, min_accuracy=0.0), pes=(CPU,))
    policy.decide(i)
    for _ in range(100):
        policy.observe("app", 5.0)  # lots of slack, but no accuracy target: stays
    assert policy.decide(i).points["app"].subnet == "small"
    policy = DynamicOfaPolicy(start="bottom")
    i = inp(request(latency_ms=100.0, min_accuracy=0.74), pes=(CPU,))
    policy.decide(i)
    for _ in range(19):
        policy.observe("app", 5.0)
    assert policy.decide(i).points["app"].subnet == "small"
    policy.observe("app", 5.0)
    assert policy.decide(i).points["app"].subnet == "medium"  # 0.75 >= 0.74: stops here
    for _ in range(100):
        policy.observe("app", 5.0)
    assert policy.decide(i).points["app"].subnet == "medium"


def test_dynamic_ofa_has_no_dvfs_and_fixed_pe() -> None:
    policy = DynamicOfaPolicy()
    d = policy.decide(inp(request()))
    assert d.points["app"].pe == "gpu"
    assert d.points["app"].cpu_freq_khz == {} and d.points["app"].gpu_freq_hz is None


# ---- static, bandit ---------------------------------------------------------

def test_static_largest_smallest_and_freq() -> None:
    d = make_policy("static", subnet="largest", pe="cpu-big").decide(inp(request()))
    assert d.points["app"].subnet == "large" and d.points["app"].cpu_freq_khz == {"cpu-big": 2000000}
    d = make_policy("static", subnet="smallest", pe="cpu-big", freq="min").decide(inp(request()))
    assert d.points["app"].subnet == "small" and d.points["app"].cpu_freq_khz == {"cpu-big": 500000}
    with pytest.raises(PolicyError, match="not on"):
        make_policy("static", freq=123).decide(inp(request(), pes=(CPU,)))


def test_oracle_is_not_a_daemon_policy() -> None:
    with pytest.raises(PolicyError, match="unknown policy"):
        make_policy("oracle")


def test_bandit_learns_from_qoe_feedback() -> None:
    policy = make_policy("bandit", alpha=0.1)
    i = inp(request(latency_ms=100.0), pes=(GPU,))
    first = policy.decide(i).points["app"].subnet
    assert first == "large"  # catalog prior: the most accurate subnet fits
    # the app reports poor QoE for "large" (say its output is useless), good QoE otherwise
    chosen = []
    for _ in range(60):
        s = policy.decide(i).points["app"].subnet
        chosen.append(s)
        policy.feedback("app", 0.0 if s == "large" else 0.9)
    assert chosen[-10:].count("large") == 0


def test_a_forgotten_app_starts_fresh() -> None:
    policy = make_policy("bandit", alpha=0.1)
    i = inp(request(latency_ms=100.0), pes=(GPU,))
    for _ in range(60):
        s = policy.decide(i).points["app"].subnet
        policy.feedback("app", 0.0 if s == "large" else 0.9)
    assert policy.decide(i).points["app"].subnet != "large"  # learned
    policy.forget("app")  # it unregistered; a new app of that name knows nothing of the old one
    assert policy.decide(i).points["app"].subnet == "large"  # the catalog prior again
    for name in ("model-based", "dynamic-ofa", "static"):
        other = make_policy(name)
        other.decide(i)
        other.forget("app")
        other.forget("never-registered")  # harmless
        assert "app" in other.decide(i).points


def test_bandit_learns_misses_without_explicit_qoe() -> None:
    policy = make_policy("bandit", alpha=0.1)
    i = inp(request(latency_ms=25.0), pes=(GPU,))
    chosen = []
    for _ in range(80):
        d = policy.decide(i)
        s = d.points["app"].subnet
        chosen.append(s)
        base = {"small": 5.0, "medium": 10.0, "large": 20.0}[s]
        hz = d.points["app"].gpu_freq_hz or 900_000_000
        policy.observe("app", base * 900_000_000 / hz * 1.8)  # contention: 1.8x slower than the catalog
    tail = chosen[-20:]
    assert tail.count("large") <= 2


def test_decision_input_from_a_detected_platform() -> None:
    from types import SimpleNamespace

    platform = SimpleNamespace(
        board="jetson-xavier-nx",
        clusters=[SimpleNamespace(name="cpu0", cpus=[0, 1], available_khz=[1190400, 1907200])],
        gpu=SimpleNamespace(cuda=True, available_hz=[510000000, 1109250000]),
    )
    from governors.monitors import Snapshot

    snap = Snapshot(t=0.0, interval_s=1.0, cpu_util={"cpu0": 0.5}, gpu_load=80.0, power_w=7.0)
    i = DecisionInput.from_platform(platform, [request(entries=(make_entry("x", 0.7, {"gpu": 10.0, "cpu0": 50.0}),))],
                                    snapshot=snap)
    assert [p.name for p in i.pes] == ["cpu0", "gpu"] and i.pes[1].freqs == (510000000, 1109250000)
    assert i.load is not None and i.load.gpu_load == pytest.approx(0.8) and i.load.other_util == {"cpu0": 0.5}
    d = ModelBasedPolicy().decide(i)
    assert d.points["app"].pe in ("gpu", "cpu0") and d.energy_source == "measured-calibrated"


def test_failed_step_up_backs_off() -> None:
    policy = ModelBasedPolicy(hold=2)
    i = inp(request(latency_ms=50.0), pes=(CPU,))
    base = {"small": 10.0, "medium": 20.0, "large": 40.0}

    def run(steps: int, slow_large: float) -> list[str]:
        out = []
        for _ in range(steps):
            point = policy.decide(i).points["app"]
            out.append(point.subnet)
            f = 0.1 + 0.9 * 2000000 / point.cpu_freq_khz["cpu-big"]
            policy.observe("app", base[point.subnet] * f * (slow_large if point.subnet == "large" else 1.0))
        return out

    policy.decide(i)
    policy.observe("app", 80.0)  # a miss on "large": step down
    first = run(150, slow_large=1.5)  # "large" keeps missing whenever it is tried
    ups = [k for k, (a, b) in enumerate(zip(first, first[1:], strict=False)) if b == "large" and a != "large"]
    assert len(ups) >= 3, first
    gaps = [b - a for a, b in zip(ups, ups[1:], strict=False)]
    assert gaps == sorted(gaps) and gaps[-1] > gaps[0]  # each retry waits longer


def _run_at(policy: ModelBasedPolicy, i: DecisionInput, slow: float, n: int = 1) -> list[tuple[str, int]]:
    """``n`` decide/observe rounds on the CPU with a true latency of catalog x (0.1 + 0.9 f_top/f) x ``slow``."""
    out = []
    for _ in range(n):
        point = policy.decide(i).points["app"]
        f = point.cpu_freq_khz["cpu-big"]
        base = {"small": 10.0, "medium": 20.0, "large": 40.0}[point.subnet]
        policy.observe("app", base * (0.1 + 0.9 * 2000000 / f) * slow)
        out.append((point.subnet, f))
    return out


def _energy_app(latency_ms: float) -> AppRequest:
    return AppRequest("app", Budget(latency_ms=latency_ms, min_accuracy=0.75, objective="energy"), ENTRIES)


def test_load_seen_by_the_monitors_runs_its_first_inference_at_the_top_clock_then_down_clocks() -> None:
    # medium (the floor's subnet) on the CPU: 20 ms at 2 GHz, 38 ms at 1 GHz, 74 ms at 0.5 GHz
    policy = ModelBasedPolicy()
    quiet = DecisionInput(apps=(_energy_app(100.0),), pes=(CPU,), load=LoadView(other_util={"cpu-big": 0.0}))
    assert _run_at(policy, quiet, 1.0, 40)[-1] == ("medium", 500000)
    # Other processes load the whole cluster: the monitors see it before our inference slows down.
    # Their prior (fair share: 1.25x) is a guess, the truth here is 3x: planned on the guess even
    # with the widest margin, 1 GHz (38 x 1.25 x 1.5 = 71 ms) would run 114 ms and miss.
    busy = replace(quiet, load=LoadView(other_util={"cpu-big": 1.0}))
    first, second = _run_at(policy, busy, 3.0, 2)
    assert first == ("medium", 2000000)  # the top clock until one inference has measured the load (60 ms)
    assert second == ("medium", 1500000)  # planned on that measurement: 26 x 3 = 78 ms, down-clocked at once


def test_an_upgrade_without_headroom_takes_the_step_that_has_it() -> None:
    # medium: 20 ms at 2 GHz, 26 ms at 1.5 GHz, 38 ms at 1 GHz; budget 42 ms
    policy = ModelBasedPolicy(hold=2, max_margin=1.2)
    i = DecisionInput(apps=(_energy_app(42.0),), pes=(CPU,))
    assert _run_at(policy, i, 1.0, 20)[-1] == ("medium", 1000000)
    assert _run_at(policy, i, 1.9, 20)[-1] == ("medium", 2000000)  # contention: only the top clock fits
    freqs = [f for _, f in _run_at(policy, i, 1.0, 30)]
    # Contention gone: 1 GHz fits the planning margin (38 x 1.05 = 39.9 ms) but not an upgrade's headroom
    # while the new regime's spread is unknown (x 1.2 x 1.02 = 46.5 ms); 1.5 GHz has it (31.8 ms): the
    # policy leaves the top clock for it instead of staying at the top until 1 GHz qualifies.
    first_down = next(f for f in freqs if f != 2000000)
    assert first_down == 1500000, freqs
    assert freqs[-1] == 1000000, freqs


def test_noisy_monitors_do_not_make_it_flap() -> None:
    # the GPU's load reading alternates 0 / 0.3 (noise: the inference never slows down)
    policy = ModelBasedPolicy()
    app = AppRequest("app", Budget(latency_ms=40.0, min_accuracy=0.75, objective="energy"), ENTRIES)
    points = []
    for k in range(100):
        i = DecisionInput(apps=(app,), pes=(GPU,), load=LoadView(gpu_load=0.3 if k % 2 else 0.0))
        point = policy.decide(i).points["app"]
        f = point.gpu_freq_hz
        assert f is not None
        base = {"small": 5.0, "medium": 10.0, "large": 20.0}[point.subnet]
        policy.observe("app", base * (0.25 + 0.75 * 900_000_000 / f))
        points.append((point.subnet, f))
    changes = sum(1 for a, b in zip(points, points[1:], strict=False) if a != b)
    # one false alarm costs a top-clock inference and the way back; then rises must be twice as large
    assert changes <= 4, points
