"""``oracle``: the offline best choice, for evaluation only.

It is given the true latency of every subnet on every PE at every frequency for the
current phase of an experiment (``truth``), and plans exactly like ``model-based``
(:mod:`governors.policies.search`) but from the truth, with no hysteresis. A benchmark
changes ``truth`` when the phase changes (:meth:`OraclePolicy.set_truth`). ``margin``
covers the jitter of one inference around the truth (e.g. its 99th percentile ratio).
"""

from __future__ import annotations

from collections.abc import Callable

from dynofa.catalog import CatalogEntry
from governors.policies.base import AppRequest, Decision, DecisionInput, PeInfo, Policy, PolicyError
from governors.policies.search import plan, to_decision
from governors.power_model import PowerModel

Truth = Callable[[AppRequest, CatalogEntry, PeInfo, "int | None"], "float | None"]


class OraclePolicy(Policy):
    name = "oracle"

    def __init__(self, truth: Truth | None = None, margin: float = 1.0, power_model: PowerModel | None = None) -> None:
        if margin < 1.0:
            raise PolicyError(f"oracle margin must be >= 1, got {margin}")
        self.truth = truth
        self.margin = margin
        self.power_model = power_model

    def set_truth(self, truth: Truth, margin: float | None = None) -> None:
        self.truth = truth
        if margin is not None:
            self.margin = margin

    def decide(self, inp: DecisionInput) -> Decision:
        if self.truth is None:
            raise PolicyError("the oracle needs the true latencies: pass truth= (benchmarks only)")
        power = self.power_model
        if power is None or power.board != inp.board:
            power = PowerModel.for_board(inp.board, [(p.name, p.kind, p.top_khz) for p in inp.pes])
            self.power_model = power
        best = plan(inp, self.truth, {a.name: self.margin for a in inp.apps}, power)
        if best is None:
            raise PolicyError("oracle: some app has no latency on any PE")
        return to_decision(best, inp, power, ["oracle (true latencies)"])
