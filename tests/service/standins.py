"""Stand-ins for the parts a test must hold or break on purpose (a model whose forward waits or raises)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SHAPE = [1, 3, 8, 8]
FAIL = 13.0  # an input whose first value is this makes the stand-in model raise like torch does


@dataclass
class _Outcome:
    output: np.ndarray
    subnet: str
    latency_ms: float


@dataclass
class HeldModel:
    """A ModelRuntime stand-in: one cpu PE, one subnet; ``gate`` holds every forward until set."""

    name: str = "held"
    pes: list[str] = field(default_factory=lambda: ["cpu"])
    ids: list[str] = field(default_factory=lambda: ["s0"])
    gate: threading.Event = field(default_factory=threading.Event)
    started: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))

    @property
    def catalog(self) -> Any:
        from types import SimpleNamespace

        from dynofa.catalog import Accuracy, CatalogEntry

        entry = CatalogEntry(id="s0", config={}, resolution=8, macs=1, params=1, latency={},
                             accuracy=Accuracy(top1=0.9, source="predicted", dataset="none"))  # fmt: skip
        return SimpleNamespace(entries=[entry])

    def most_accurate(self) -> str:
        return "s0"

    def select(self, app: str, point: Any) -> None:
        pass

    def release(self, app: str) -> None:
        pass

    def has(self, subnet: str) -> bool:
        return subnet == "s0"

    def device(self, pe: str) -> str:
        return "cpu"

    def accuracy(self, subnet: str) -> float:
        return 0.9

    def check_input(self, shape: Any) -> str | None:
        return None if list(shape) == SHAPE else f"takes {SHAPE}"

    def infer(self, app: str, pe: str, x: np.ndarray, subnet: str | None = None) -> _Outcome:
        self.started.release()
        self.gate.wait(30)
        if float(x.flat[0]) == FAIL:
            raise RuntimeError("Expected all tensors to be on the same device (stand-in failure)")
        return _Outcome(np.zeros((1, 10), np.float32), subnet or "s0", 0.1)

    def describe(self) -> list[dict[str, Any]]:
        return []

    def close(self) -> None:
        pass


