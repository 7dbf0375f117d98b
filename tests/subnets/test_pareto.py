from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from subnets.pareto import dominates, pareto_front, pareto_layers, select, select_across, spread

Point = tuple[float, float]  # (accuracy, latency)

points = st.lists(
    st.tuples(st.floats(0, 1, allow_nan=False), st.floats(0.1, 100, allow_nan=False)), min_size=1, max_size=40
)


def acc(p: Point) -> float:
    return p[0]


def lat(p: Point) -> float:
    return p[1]


@settings(max_examples=200, deadline=None)
@given(points)
def test_front_is_exactly_the_non_dominated_points(pts: list[Point]) -> None:
    front = pareto_front(pts, acc, lat)
    for p in front:
        assert not any(dominates(q, p) for q in pts)
    front_ids = {id(p) for p in front}
    for p in pts:
        if id(p) not in front_ids:
            assert any(dominates(q, p) for q in front)
    assert [lat(p) for p in front] == sorted(lat(p) for p in front)


@settings(max_examples=200, deadline=None)
@given(points, st.integers(1, 12))
def test_selection_keeps_no_dominated_point_when_the_front_is_big_enough(pts: list[Point], k: int) -> None:
    kept = select(pts, k, acc, lat)
    assert len(kept) == min(k, len(pts))
    front = pareto_front(pts, acc, lat)
    if len(front) >= k:
        for p in kept:
            assert not any(dominates(q, p) for q in pts)
    # otherwise the front is kept whole, and the rest comes from the next layers in order
    layers = pareto_layers(pts, acc, lat)
    kept_ids = {id(p) for p in kept}
    deepest = max(i for i, layer in enumerate(layers) if any(id(p) in kept_ids for p in layer))
    for layer in layers[:deepest]:
        assert all(id(p) in kept_ids for p in layer)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0, 100, allow_nan=False), min_size=2, max_size=50, unique=True), st.integers(2, 10))
def test_spread_includes_both_extremes(costs: list[float], k: int) -> None:
    picked = spread(costs, k, cost=lambda c: c)
    assert len(picked) == min(k, len(costs))
    assert min(costs) in picked
    assert max(costs) in picked
    assert len(set(picked)) == len(picked)


def test_spread_is_even_in_latency() -> None:
    costs = [float(c) for c in range(101)]
    assert spread(costs, 5, cost=lambda c: c) == [0.0, 25.0, 50.0, 75.0, 100.0]


def test_select_by_accuracy_and_latency() -> None:
    pts = [(0.70, 10.0), (0.72, 12.0), (0.71, 13.0), (0.80, 30.0), (0.60, 5.0), (0.60, 6.0)]
    assert pareto_front(pts, acc, lat) == [(0.60, 5.0), (0.70, 10.0), (0.72, 12.0), (0.80, 30.0)]
    assert select(pts, 2, acc, lat) == [(0.60, 5.0), (0.80, 30.0)]


Point3 = tuple[float, float, float]  # (accuracy, latency on PE a, latency on PE b)
two_pe_points = st.lists(
    st.tuples(
        st.floats(0, 1, allow_nan=False), st.floats(0.1, 100, allow_nan=False), st.floats(0.1, 100, allow_nan=False)
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=150, deadline=None)
@given(two_pe_points, st.integers(1, 10))
def test_selection_across_two_pes_keeps_subnets_worth_it_on_some_pe(pts: list[Point3], k: int) -> None:
    def on_a(p: tuple[float, float, float]) -> float:
        return p[1]

    def on_b(p: tuple[float, float, float]) -> float:
        return p[2]

    kept = select_across(pts, k, lambda p: p[0], [on_a, on_b])
    assert len(kept) == min(k, len(pts))
    assert len({id(p) for p in kept}) == len(kept)
    union = {id(p) for p in pareto_front(pts, lambda p: p[0], on_a)} | {
        id(p) for p in pareto_front(pts, lambda p: p[0], on_b)
    }
    if len(union) >= k:  # every kept subnet is on the front of at least one PE
        assert all(id(p) in union for p in kept)
    else:  # the whole union is kept
        assert union <= {id(p) for p in kept}
    assert [on_a(p) for p in kept] == sorted(on_a(p) for p in kept)


@settings(max_examples=100, deadline=None)
@given(points, st.integers(1, 12))
def test_selection_without_fill_keeps_only_the_front(pts: list[Point], k: int) -> None:
    kept = select(pts, k, acc, lat, fill=False)
    front = pareto_front(pts, acc, lat)
    assert len(kept) == min(k, len(front))
    for p in kept:
        assert not any(dominates(q, p) for q in pts)
