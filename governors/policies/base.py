"""What every policy gets and returns, independent of the daemon.

The daemon, the benchmarks and the tests all drive a policy the same way::

    decision = policy.decide(DecisionInput(apps=..., pes=..., board=..., load=...))
    ... run one inference per app at decision.points[app] ...
    policy.observe(app, latency_ms)          # after every inference
    policy.feedback(app, qoe)                # optional, when an app reports QoE

``decide`` returns a :class:`Decision`: an :class:`~dynofa.operating_point.OperatingPoint`
per app plus a feasibility report (predicted latency, accuracy, energy, and why an app
could not be satisfied).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dynofa.budget import DEFAULT_OBJECTIVE, Budget
from dynofa.catalog import CatalogEntry
from dynofa.errors import DynofaError
from dynofa.operating_point import OperatingPoint
from governors.contention import LoadView, load_from_snapshot


class PolicyError(DynofaError):
    """A policy was asked for something it cannot do (unknown name or option, no usable PE)."""


@dataclass(frozen=True)
class PeInfo:
    """A processing element: a CPU cluster (``kind="cpu"``) or the GPU (``kind="gpu"``).

    ``freqs``: the DVFS ladder, ascending, in kHz for a CPU cluster and in Hz for the GPU
    (the units sysfs uses); empty when the frequency cannot be controlled.
    """

    name: str
    kind: str
    freqs: tuple[int, ...] = ()
    cpus: int = 1

    def __post_init__(self) -> None:
        if self.kind not in ("cpu", "gpu"):
            raise PolicyError(f"PE {self.name!r}: kind must be 'cpu' or 'gpu', got {self.kind!r}")
        object.__setattr__(self, "freqs", tuple(sorted(set(int(f) for f in self.freqs))))

    def khz(self, freq: int | None) -> int | None:
        """A ladder value in kHz (the GPU's ladder is in Hz)."""
        if freq is None:
            return None
        return freq // 1000 if self.kind == "gpu" else freq

    @property
    def top_khz(self) -> int | None:
        return self.khz(self.freqs[-1]) if self.freqs else None

    @property
    def top(self) -> int | None:
        return self.freqs[-1] if self.freqs else None


@dataclass(frozen=True)
class AppRequest:
    """One app: its budget and the catalog entries it may run.

    ``period_ms`` is the time between its frames (defaults to the latency budget: a
    stream that must finish each frame before the next arrives); it sets how long a PE
    idles between inferences, which matters for energy.
    """

    name: str
    budget: Budget
    entries: tuple[CatalogEntry, ...]
    period_ms: float | None = None
    batch: int = 1  # images per inference the app sends (latency is predicted for that batch size)

    def __post_init__(self) -> None:
        if not self.entries:
            raise PolicyError(f"app {self.name!r} has no catalog entries to choose from")

    @property
    def period(self) -> float:
        return self.period_ms if self.period_ms is not None else self.budget.latency_ms

    @property
    def objective(self) -> str:
        """``accuracy`` or ``energy``: the budget's, else the default (the daemon fills in its configured one)."""
        return self.budget.objective or DEFAULT_OBJECTIVE


@dataclass(frozen=True)
class DecisionInput:
    """Everything a policy decides from: apps, PEs with their ladders, board, and the monitors' view."""

    apps: tuple[AppRequest, ...]
    pes: tuple[PeInfo, ...]
    board: str = "generic-linux"
    load: LoadView | None = None

    def __post_init__(self) -> None:
        names = [a.name for a in self.apps]
        if len(set(names)) != len(names):
            raise PolicyError(f"app names must be unique, got {names}")
        if not self.pes:
            raise PolicyError("no processing element to run on")

    def pe(self, name: str) -> PeInfo:
        for pe in self.pes:
            if pe.name == name:
                return pe
        raise PolicyError(f"unknown PE {name!r}; PEs: {', '.join(p.name for p in self.pes)}")

    @classmethod
    def from_platform(cls, platform: Any, apps: Iterable[AppRequest], snapshot: Any = None) -> DecisionInput:
        """Build from a ``governors.platform.Platform`` and a ``governors.monitors.Snapshot``."""
        return cls(apps=tuple(apps), pes=tuple(pes_from_platform(platform)), board=str(platform.board),
                   load=None if snapshot is None else load_from_snapshot(snapshot))


def pes_from_platform(platform: Any) -> list[PeInfo]:
    """PEs of a detected platform: its CPU clusters plus ``gpu`` when it runs CUDA."""
    pes = [PeInfo(name=c.name, kind="cpu", freqs=tuple(c.available_khz or ()), cpus=max(1, len(c.cpus)))
           for c in platform.clusters]
    gpu = getattr(platform, "gpu", None)
    if gpu is not None and getattr(gpu, "cuda", False):
        pes.append(PeInfo(name="gpu", kind="gpu", freqs=tuple(gpu.available_hz or ())))
    return pes


@dataclass(frozen=True)
class AppOutcome:
    """What a decision predicts for one app, and whether that meets its budget."""

    app: str
    subnet: str
    pe: str
    predicted_ms: float
    accuracy: float | None
    energy_j: float | None
    meets_latency: bool
    meets_accuracy: bool
    reason: str = ""
    meets_power: bool = True
    objective: str = DEFAULT_OBJECTIVE  # the one that ruled this app's choice
    nominal_ms: float | None = None  # the prediction without any contention estimate (catalog x frequency x batch)

    @property
    def feasible(self) -> bool:
        return self.meets_latency and self.meets_accuracy and self.meets_power

    def to_dict(self) -> dict[str, Any]:
        return {
            "app": self.app, "subnet": self.subnet, "pe": self.pe,
            "predicted_ms": round(self.predicted_ms, 3),
            "accuracy": self.accuracy,
            "energy_j": None if self.energy_j is None else round(self.energy_j, 6),
            "meets_latency": self.meets_latency, "meets_accuracy": self.meets_accuracy,
            "meets_power": self.meets_power, "feasible": self.feasible, "reason": self.reason,
            "objective": self.objective,
            "nominal_ms": None if self.nominal_ms is None else round(self.nominal_ms, 3),
        }


@dataclass
class Decision:
    """Operating points per app plus the feasibility report."""

    points: dict[str, OperatingPoint]
    outcomes: dict[str, AppOutcome]
    power_w: float | None = None
    energy_source: str = "model"
    notes: list[str] = field(default_factory=list)

    @property
    def feasible(self) -> bool:
        return all(o.feasible for o in self.outcomes.values())

    def infeasible_apps(self) -> list[str]:
        return [a for a, o in self.outcomes.items() if not o.feasible]

    def to_dict(self) -> dict[str, Any]:
        return {
            "feasible": self.feasible,
            "points": {a: p.to_dict() for a, p in self.points.items()},
            "outcomes": {a: o.to_dict() for a, o in self.outcomes.items()},
            "power_w": None if self.power_w is None else round(self.power_w, 4),
            "energy_source": self.energy_source,
            "notes": list(self.notes),
        }


class Policy(ABC):
    """Chooses operating points. Implementations keep their own state between calls."""

    name: str = "policy"

    @abstractmethod
    def decide(self, inp: DecisionInput) -> Decision:
        """Operating points for every app in ``inp``."""

    def observe(self, app: str, latency_ms: float, point: OperatingPoint | None = None) -> None:
        """One inference of ``app`` took ``latency_ms`` (at ``point``, default: the last decided one)."""
        return None

    def feedback(self, app: str, qoe: float) -> None:
        """The app's quality-of-experience score for its recent inferences (higher is better)."""
        return None

    def reset(self) -> None:
        """Forget all learned state."""
        return None

    def forget(self, app: str) -> None:
        """``app`` left (unregistered): drop what was learned about it, so a new app of that name starts fresh."""
        return None

    def needs_decision(self) -> bool:
        """True when an observation (a deadline miss) invalidated the last decision: decide now,
        before the app's next inference, instead of waiting for the next control tick."""
        return False

    def state(self) -> dict[str, Any]:
        """Internal estimates for status displays (JSON-serialisable)."""
        return {}


def accuracy_of(entry: CatalogEntry) -> float:
    return entry.accuracy.top1 if entry.accuracy is not None else 0.0


def choose_entry(entries: Sequence[CatalogEntry], which: str, pe: str | None = None) -> CatalogEntry:
    """``largest`` (most accurate), ``smallest`` (fastest on ``pe``, else fewest MACs) or a subnet id."""
    if which == "largest":
        return max(entries, key=lambda e: (accuracy_of(e), e.macs))
    if which == "smallest":
        def speed(e: CatalogEntry) -> tuple[float, int]:
            lat = e.latency.get(pe) if pe is not None else None
            return (lat.ms if lat is not None else float(e.macs), e.macs)
        return min(entries, key=speed)
    for e in entries:
        if e.id == which:
            return e
    raise PolicyError(f"unknown subnet {which!r}; choose 'largest', 'smallest' or one of: "
                      + ", ".join(e.id for e in entries))
