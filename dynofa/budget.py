"""What an app asks for: a latency target, a minimum accuracy, an optional power cap, a priority, an objective."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from dynofa.errors import BudgetError

#: What a budget optimises within its constraints (see :class:`Budget`).
OBJECTIVES = ("accuracy", "energy")
DEFAULT_OBJECTIVE = "accuracy"
# The ranges a budget may take (docs/protocol.md, "A budget object"). A latency below 10 µs or above
# an hour, a power cap below 10 mW or above 10 kW, means nothing on any board dynofa drives; the
# priority is bounded so that it stays a small integer in every language and in the policies' sums.
LATENCY_MS_RANGE = (0.01, 3_600_000.0)
POWER_CAP_W_RANGE = (0.01, 10_000.0)
PRIORITY_RANGE = (-1000, 1000)
FIELDS = ("latency_ms", "min_accuracy", "power_cap_w", "priority", "objective")


@dataclass(frozen=True)
class Budget:
    """An app's budget.

    ``latency_ms`` is the per-inference deadline; ``min_accuracy`` a top-1 fraction in
    [0, 1] (0 = no constraint); ``power_cap_w`` caps the board power while the app runs
    (None = no cap); a higher ``priority`` wins when budgets conflict. ``objective`` says
    what to optimise within those constraints: ``accuracy`` (the most accurate point that
    meets the latency, then the lowest energy) or ``energy`` (the lowest energy per frame
    that meets the latency and ``min_accuracy``); None = the daemon's default
    (``policy.objective`` in the configuration).
    """

    latency_ms: float
    min_accuracy: float = 0.0
    power_cap_w: float | None = None
    priority: int = 0
    objective: str | None = None

    def __post_init__(self) -> None:
        _number_in("latency_ms", self.latency_ms, *LATENCY_MS_RANGE, unit=" ms")
        _number_in("min_accuracy", self.min_accuracy, 0.0, 1.0)
        if self.power_cap_w is not None:
            _number_in("power_cap_w", self.power_cap_w, *POWER_CAP_W_RANGE, unit=" W")
        low, high = PRIORITY_RANGE
        if not isinstance(self.priority, int) or isinstance(self.priority, bool) or not low <= self.priority <= high:
            raise BudgetError(f"priority must be an integer in [{low}, {high}], got {_shown(self.priority)}")
        if self.objective is not None and self.objective not in OBJECTIVES:
            raise BudgetError(f"objective must be one of {', '.join(OBJECTIVES)}, got {_shown(self.objective)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Budget:
        if not isinstance(data, dict):
            raise BudgetError(f"a budget must be an object, got {type(data).__name__}")
        unknown = set(data) - set(FIELDS)
        if unknown:
            shown = ", ".join(sorted(_shown(str(k)) for k in unknown)[:5])
            raise BudgetError(f"unknown budget field(s): {shown}; a budget takes {', '.join(FIELDS)}")
        if "latency_ms" not in data:
            raise BudgetError("a budget needs latency_ms (the per-inference deadline in ms)")
        return cls(**data)


def _number_in(name: str, value: Any, low: float, high: float, unit: str = "") -> None:
    # bool is an int in Python but never a number on the wire ("min_accuracy": true is refused)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high  # NaN fails too
    if not ok:
        raise BudgetError(f"{name} must be a number in [{low:g}, {high:g}]{unit}, got {_shown(value)}")


def _shown(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."
