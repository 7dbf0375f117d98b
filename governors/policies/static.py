"""``static``: one fixed operating point (the Linux ``performance`` governor with a fixed subnet, by default).

Options: ``subnet`` (``largest``, ``smallest`` or a subnet id), ``pe`` (default: the GPU
when there is one, else the CPU cluster with the highest top frequency) and ``freq``
(``max``, ``min``, ``none`` = leave as found, or a ladder value in the PE's unit).
"""

from __future__ import annotations

from dynofa.operating_point import OperatingPoint
from governors.latency_model import LatencyModel
from governors.policies.base import (
    AppOutcome,
    AppRequest,
    Decision,
    DecisionInput,
    PeInfo,
    Policy,
    PolicyError,
    accuracy_of,
    choose_entry,
)


def default_pe(app: AppRequest, pes: tuple[PeInfo, ...]) -> PeInfo:
    usable = [p for p in pes if any(p.name in e.latency for e in app.entries)]
    if not usable:
        raise PolicyError(f"app {app.name!r} has no catalog latency on any PE ({', '.join(p.name for p in pes)})")
    gpus = [p for p in usable if p.kind == "gpu"]
    if gpus:
        return gpus[0]
    return max(usable, key=lambda p: (p.top_khz or 0, p.cpus))


class StaticPolicy(Policy):
    name = "static"

    def __init__(self, subnet: str = "largest", pe: str | None = None, freq: str | int = "max",
                 latency_model: LatencyModel | None = None) -> None:
        if isinstance(freq, str) and freq not in ("max", "min", "none"):
            raise PolicyError(f"static: freq must be 'max', 'min', 'none' or a ladder value, got {freq!r}")
        self.subnet = subnet
        self.pe_option = pe
        self.freq = freq
        self.latency_model = latency_model or LatencyModel()

    def _freq(self, pe: PeInfo) -> int | None:
        if not pe.freqs or self.freq == "none":
            return None
        if self.freq == "max":
            return pe.freqs[-1]
        if self.freq == "min":
            return pe.freqs[0]
        if int(self.freq) not in pe.freqs:
            raise PolicyError(f"static: {self.freq} is not on {pe.name}'s ladder ({', '.join(map(str, pe.freqs))})")
        return int(self.freq)

    def decide(self, inp: DecisionInput) -> Decision:
        points: dict[str, OperatingPoint] = {}
        outcomes: dict[str, AppOutcome] = {}
        chosen: dict[str, tuple[AppRequest, PeInfo]] = {}
        for app in inp.apps:
            pe = inp.pe(self.pe_option) if self.pe_option is not None else default_pe(app, inp.pes)
            chosen[app.name] = (app, pe)
        cpu_freqs = {pe.name: f for _, pe in chosen.values() if pe.kind == "cpu" and (f := self._freq(pe)) is not None}
        gpu_hz = next((self._freq(pe) for _, pe in chosen.values() if pe.kind == "gpu"), None)
        for app, pe in chosen.values():
            candidates = [e for e in app.entries if pe.name in e.latency]
            if not candidates:
                raise PolicyError(f"static: app {app.name!r} has no catalog latency on {pe.name}")
            entry = choose_entry(candidates, self.subnet, pe.name)
            f = self._freq(pe)
            t = self.latency_model.predict_ms(entry, pe.name, pe.kind, pe.khz(f), pe.top_khz, app.batch) or 0.0
            points[app.name] = OperatingPoint(subnet=entry.id, pe=pe.name, cpu_freq_khz=dict(cpu_freqs),
                                              gpu_freq_hz=gpu_hz, threads=entry.latency[pe.name].threads)
            outcomes[app.name] = AppOutcome(
                app=app.name, subnet=entry.id, pe=pe.name, predicted_ms=t,
                accuracy=entry.accuracy.top1 if entry.accuracy is not None else None, energy_j=None,
                meets_latency=t <= app.budget.latency_ms, meets_accuracy=accuracy_of(entry) >= app.budget.min_accuracy,
                reason="fixed operating point",
            )
        return Decision(points=points, outcomes=outcomes, energy_source="none")
