"""Measuring candidates during a catalog build: latency per PE (interleaved), BN statistics, accuracy."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dynofa.catalog import Accuracy, Latency
from subnets import pareto
from subnets.family import ModelFamily
from subnets.offline.accuracy import evaluate, image_batches
from subnets.offline.candidates import Candidate, Progress
from subnets.offline.options import BuildOptions
from subnets.timing import FIGURE_PERCENTILE, cpu_freq_khz, measure_figures, on_device, pe_device, pinned

if TYPE_CHECKING:
    import torch

    from subnets.offline.accuracy import LabelledArrays

#: subnets timed together in interleaved rounds (all materialised at once)
INTERLEAVE_CHUNK = 12


@dataclass
class BuildRun:
    """One build's options and data, and what its measurements found out about the machine."""

    options: BuildOptions
    val: LabelledArrays | None
    calib: LabelledArrays | None
    say: Progress
    val_name: str = "validation"
    freq_khz: dict[str, int | None] = field(default_factory=dict)  # per PE, at the last measurement
    #: per PE and batch size, the repeatability of every figure timed (see TimedFigure.repeatability)
    repeatability: dict[str, dict[int, list[float]]] = field(default_factory=dict)

    @property
    def pes(self) -> list[str]:
        return list(self.options.pes)

    @property
    def eval_device(self) -> str:
        return pe_device(self.options.pes[0])


def measure(family: ModelFamily, cands: list[Candidate], run: BuildRun, *, with_accuracy: bool) -> None:
    """Time ``cands`` on every PE (interleaved, in chunks) and, with validation data, evaluate them."""
    opts = run.options
    if with_accuracy and run.calib is not None:
        for cand in cands:
            if cand.bn is None:
                cand.bn = calibrate(family, cand, run)
    for pe in run.pes:
        todo = [c for c in cands if not c.measured_on(pe)]
        for start in range(0, len(todo), INTERLEAVE_CHUNK):
            chunk = todo[start : start + INTERLEAVE_CHUNK]
            rounds = f"{opts.passes} x ({opts.warmup} warm-up + {opts.repeats} rounds)"
            run.say(f"  timing {len(chunk)} subnet(s) on {pe}, interleaved ({rounds})")
            for cid, lat in _time_chunk(family, chunk, run, pe, 1).items():
                next(c for c in chunk if c.id == cid).latency[pe] = lat
    for i, cand in enumerate(cands, 1):
        if with_accuracy and run.val is not None and not cand.accuracy_measured():
            module = on_device(family.materialize(cand.spec, cand.bn), run.eval_device)
            res = evaluate(module, run.val, opts.batch_size, run.eval_device, cand.spec.resolution, opts.val_limit)
            cand.accuracy = Accuracy(top1=res.top1, source="measured", dataset=run.val_name, samples=res.count)
        run.say(f"  [{i}/{len(cands)}] {describe(cand)}")


def time_at_batch(
    family: ModelFamily, cands: list[Candidate], run: BuildRun, pe: str, batch: int
) -> dict[str, Latency]:
    """Measured latency of one forward of ``batch`` images of each candidate on ``pe`` (interleaved)."""
    out: dict[str, Latency] = {}
    for start in range(0, len(cands), INTERLEAVE_CHUNK):
        out.update(_time_chunk(family, cands[start : start + INTERLEAVE_CHUNK], run, pe, batch))
    return out


def _time_chunk(
    family: ModelFamily, chunk: list[Candidate], run: BuildRun, pe: str, batch: int
) -> dict[str, Latency]:
    """Time ``chunk`` together (all materialised at once); the figure is
    :data:`~subnets.timing.FIGURE_PERCENTILE` of the pooled interleaved runs, and each figure's
    repeatability goes to ``run.repeatability``."""
    opts = run.options
    device = pe_device(pe)
    modules = {
        c.id: (on_device(family.materialize(c.spec, c.bn), device), family.input_shape(c.spec, batch)) for c in chunk
    }
    with pinned(opts.affinity.get(pe)):
        figures = measure_figures(
            modules, device, opts.warmup, opts.repeats, opts.passes, opts.threads, opts.clock, opts.seed
        )
    freq = cpu_freq_khz(opts.affinity.get(pe)) if device == "cpu" else None
    run.freq_khz[pe] = freq
    del modules
    for fig in figures.values():
        run.repeatability.setdefault(pe, {}).setdefault(batch, []).append(fig.repeatability)
    return {
        cid: Latency(ms=fig.ms, source="measured", threads=fig.threads, freq_khz=freq) for cid, fig in figures.items()
    }


def repeatability_report(run: BuildRun) -> dict[str, Any]:
    """``provenance.build.timing``: the estimator and, per PE and batch size, the median repeatability."""
    per_pe: dict[str, Any] = {}
    for pe, by_batch in run.repeatability.items():
        per_pe[pe] = {}
        for batch, values in sorted(by_batch.items()):
            finite = sorted(v for v in values if v == v)  # NaN: a figure of a single run
            per_pe[pe][str(batch)] = round(100 * finite[len(finite) // 2], 2) if finite else None
    return {
        "figure": f"{FIGURE_PERCENTILE:g}th percentile of every interleaved run of every pass",
        "passes": run.options.passes,
        "repeatability_pct": per_pe,
        "repeatability": "median over timed subnets of |even passes - odd passes| / mean (one pass: even/odd rounds)",
    }


#: kept subnets the batch-scaling rule is checked on (at a batch size the build did not time)
BATCH_CHECK_SUBNETS = 3


def measure_batches(family: ModelFamily, kept: list[Candidate], run: BuildRun) -> dict[str, Any]:
    """Time the kept subnets at every extra batch size, then check the batch rule where it interpolates.

    Returns the record stored as ``provenance.build.batch``: the sizes, the rule, and per PE the
    error of :meth:`dynofa.catalog.Latency.at_batch` against a measurement at a batch size that
    was not timed (empty without extra batch sizes).
    """
    sizes = run.options.extra_batch_sizes()
    if not sizes or not kept:
        return {}
    probe_batch = check_batch([1, *sizes])
    report: dict[str, Any] = {
        "sizes": [1, *sizes],
        "rule": "measured per batch size; linear in the batch size between them (Latency.at_batch)",
        "check": {},
    }
    for pe in run.pes:
        for batch in sizes:
            run.say(f"  timing {len(kept)} kept subnet(s) on {pe} at batch {batch}")
            for cid, lat in time_at_batch(family, kept, run, pe, batch).items():
                next(c for c in kept if c.id == cid).batch_latency.setdefault(pe, {})[batch] = lat
        probe = pareto.spread(kept, min(BATCH_CHECK_SUBNETS, len(kept)), cost=functools.partial(_ms, pe=pe))
        measured = time_at_batch(family, probe, run, pe, probe_batch)
        errors = []
        for cand in probe:
            rule = Latency(ms=cand.latency[pe].ms, source="measured", batch=cand.batch_latency.get(pe, {}))
            errors.append(abs(rule.at_batch(probe_batch) / measured[cand.id].ms - 1.0) * 100.0)
        report["check"][pe] = {
            "batch": probe_batch,
            "subnets": [c.id for c in probe],
            "mape_pct": round(sum(errors) / len(errors), 2),
            "max_pct": round(max(errors), 2),
        }
        run.say(f"  batch rule [{pe}] at batch {probe_batch}: mean error {report['check'][pe]['mape_pct']:.1f} %")
    return report


def _ms(cand: Candidate, pe: str) -> float:
    return cand.latency[pe].ms


def check_batch(sizes: list[int]) -> int:
    """A batch size the rule has to interpolate: the middle of the widest gap between ``sizes``."""
    ordered = sorted(set(sizes))
    low, high = max(zip(ordered, ordered[1:], strict=False), key=lambda pair: pair[1] - pair[0])
    return (low + high) // 2 if high - low > 1 else ordered[-1] + 1


def calibrate(family: ModelFamily, cand: Candidate, run: BuildRun) -> dict[str, torch.Tensor]:
    """The candidate's own BN statistics on the calibration images."""
    assert run.calib is not None
    batches = image_batches(run.calib, cand.spec.resolution, run.options.batch_size, run.options.calib_limit)
    return family.calibrate_bn(cand.spec, batches)


def needs_measuring(cand: Candidate, pes: list[str], with_accuracy: bool) -> bool:
    if any(not cand.measured_on(pe) for pe in pes):
        return True
    return with_accuracy and not cand.accuracy_measured()


def describe(cand: Candidate) -> str:
    parts = [f"{pe} {lat.ms:.2f} ms" for pe, lat in sorted(cand.latency.items())]
    if cand.accuracy is not None:
        parts.append(f"top-1 {cand.accuracy.top1 * 100:.1f} %")
    return f"{cand.id} (r{cand.spec.resolution}, {cand.macs / 1e6:.1f} MMACs): {', '.join(parts)}"


def weights_of(family: ModelFamily) -> dict[str, Any]:
    """The catalog's ``weights`` object from a family that can describe its weights, else empty."""
    info = getattr(family, "weights_info", None)
    return dict(info()) if callable(info) else {}
