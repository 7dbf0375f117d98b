"""An inference is recorded after its reply left, and ``state`` waits for it: never a state without it."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from dynofa.operating_point import OperatingPoint
from service.engine import Engine
from service.inbox import NoControl
from service.store import BudgetStore
from tests.service.standins import SHAPE, HeldModel


class Model(HeldModel):
    @property
    def catalog(self) -> Any:
        catalog = super().catalog
        catalog.path = None
        return catalog


class Observed(NoControl):
    def __init__(self) -> None:
        self.latencies: list[float] = []

    def observe(self, app: str, point: OperatingPoint, latency_ms: float) -> None:
        self.latencies.append(latency_ms)


def test_state_after_a_reply_holds_its_inference(tmp_path: Path) -> None:
    model, control = Model(), Observed()
    model.gate.set()
    engine = Engine({"held": model}, "held", BudgetStore(tmp_path), 4, lambda *_: None, control)  # type: ignore[dict-item]
    engine.register("a")
    done = engine.run_inference(engine.prepare_inference("a", np.zeros(SHAPE, np.float32), None, time.monotonic()))
    recorder = threading.Timer(0.3, engine.book, (done,))  # the worker, still sending the reply
    recorder.start()
    try:
        started = time.monotonic()
        seen: dict[str, Any] = engine.state()["apps"]["a"]
        assert seen["inferences"] == 1 and control.latencies == [0.1]
        assert time.monotonic() - started > 0.2  # it waited for the record
        engine.book(done)  # a second book is a no-op
        assert engine.state()["apps"]["a"]["inferences"] == 1 and control.latencies == [0.1]
    finally:
        recorder.join()
        engine.close()
