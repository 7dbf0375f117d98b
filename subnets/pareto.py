"""Pareto fronts of (value to maximise, cost to minimise) and spreading K picks across one.

The catalog keeps subnets on the accuracy/latency Pareto front (Dynamic-OFA): a point is kept
only if no other point is at least as accurate and at least as fast, and strictly better in one.
When no accuracy is known, MACs stand in for it (more computation, more capacity), so that a
structure-only catalog still spans the latency range instead of collapsing to the fastest net.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """``a`` dominates ``b`` (each is ``(value, cost)``): no worse in both, strictly better in one."""
    return a[0] >= b[0] and a[1] <= b[1] and (a[0] > b[0] or a[1] < b[1])


def pareto_front(items: Sequence[T], value: Callable[[T], float], cost: Callable[[T], float]) -> list[T]:
    """The non-dominated items, sorted by increasing cost. Exact duplicates are all kept."""
    scored = sorted(((cost(it), -value(it), i) for i, it in enumerate(items)))
    front: list[T] = []
    best_value = float("-inf")
    best_at_cost: tuple[float, float] | None = None  # (cost, value) of the last kept point
    for c, neg_v, i in scored:
        v = -neg_v
        if v > best_value or (best_at_cost is not None and (c, v) == best_at_cost):
            front.append(items[i])
            if v > best_value:
                best_value = v
            best_at_cost = (c, v)
    return front


def pareto_layers(items: Sequence[T], value: Callable[[T], float], cost: Callable[[T], float]) -> list[list[T]]:
    """Successive fronts: layer 0 is the Pareto front, layer 1 the front of what remains, ..."""
    remaining = list(items)
    layers: list[list[T]] = []
    while remaining:
        front = pareto_front(remaining, value, cost)
        ids = {id(it) for it in front}
        layers.append(front)
        remaining = [it for it in remaining if id(it) not in ids]
    return layers


def spread(items: Sequence[T], k: int, cost: Callable[[T], float]) -> list[T]:
    """Pick ``k`` items spread evenly in cost: both extremes, then the nearest to evenly spaced targets."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    ordered = sorted(items, key=cost)
    if len(ordered) <= k:
        return ordered
    if k == 1:
        return [ordered[0]]
    low, high = cost(ordered[0]), cost(ordered[-1])
    chosen: list[int] = []
    for j in range(k):
        target = low + (high - low) * j / (k - 1)
        free = [i for i in range(len(ordered)) if i not in chosen]
        chosen.append(min(free, key=lambda i: (abs(cost(ordered[i]) - target), i)))
    return [ordered[i] for i in sorted(chosen)]


def select(
    items: Sequence[T], k: int, value: Callable[[T], float], cost: Callable[[T], float], fill: bool = True
) -> list[T]:
    """Keep ``k`` items spread across the Pareto front, sorted by cost.

    When the front holds fewer than ``k`` items and ``fill`` is set, the next layers fill in (the
    best of what is dominated), each layer spread in cost too, so the caller gets
    ``min(k, len(items))`` items and every item of a layer is taken before any of the next.
    Without ``fill`` only the front is kept (Dynamic-OFA's rule), possibly fewer than ``k``.
    """
    kept: list[T] = []
    layers = pareto_layers(items, value, cost)
    for layer in layers if fill else layers[:1]:
        room = k - len(kept)
        if room <= 0:
            break
        kept.extend(spread(layer, room, cost))
    return sorted(kept, key=cost)


def select_across(
    items: Sequence[T], k: int, value: Callable[[T], float], costs: Sequence[Callable[[T], float]], fill: bool = True
) -> list[T]:
    """Keep ``k`` items spread over the Pareto fronts of several costs (``costs[0]`` is the primary).

    One cost: :func:`select`. Several (latency on several processing elements): the union of every
    cost's front (an item worth keeping for some PE), spread evenly in the primary cost; when the
    union holds fewer than ``k`` and ``fill`` is set, the primary's next layers fill in. Sorted by
    the primary cost.
    """
    if not costs:
        raise ValueError("select_across needs at least one cost")
    primary = costs[0]
    if len(costs) == 1:
        return select(items, k, value, primary, fill)
    union: list[T] = []
    seen: set[int] = set()
    for cost in costs:
        for item in pareto_front(items, value, cost):
            if id(item) not in seen:
                seen.add(id(item))
                union.append(item)
    if len(union) >= k:
        return spread(union, k, primary)
    if not fill:
        return sorted(union, key=primary)
    extra = [it for it in select(items, len(items), value, primary) if id(it) not in seen]
    return sorted(union + extra[: k - len(union)], key=primary)
