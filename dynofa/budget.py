"""What an app asks for: a latency target, a minimum accuracy, an optional power cap, a priority, an objective."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from dynofa.errors import BudgetError

#: What a budget optimises within its constraints (see :class:`Budget`).
OBJECTIVES = ("accuracy", "energy")
DEFAULT_OBJECTIVE = "accuracy"


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
        _positive_finite("latency_ms", self.latency_ms)
        if not isinstance(self.min_accuracy, (int, float)) or not 0.0 <= self.min_accuracy <= 1.0:
            raise BudgetError(f"min_accuracy must be a fraction in [0, 1], got {self.min_accuracy!r}")
        if self.power_cap_w is not None:
            _positive_finite("power_cap_w", self.power_cap_w)
        if not isinstance(self.priority, int) or isinstance(self.priority, bool):
            raise BudgetError(f"priority must be an integer, got {self.priority!r}")
        if self.objective is not None and self.objective not in OBJECTIVES:
            raise BudgetError(f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Budget:
        if not isinstance(data, dict):
            raise BudgetError(f"a budget must be an object, got {type(data).__name__}")
        unknown = set(data) - {"latency_ms", "min_accuracy", "power_cap_w", "priority", "objective"}
        if unknown:
            raise BudgetError(f"unknown budget field(s): {', '.join(sorted(unknown))}")
        if "latency_ms" not in data:
            raise BudgetError("a budget needs latency_ms (the per-inference deadline in ms)")
        return cls(**data)


def _positive_finite(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise BudgetError(f"{name} must be a positive finite number, got {value!r}")
