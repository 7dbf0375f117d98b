"""Measuring candidates during a catalog build: latency per PE (interleaved), BN statistics, accuracy."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dynofa.catalog import Accuracy, Latency
from subnets.family import ModelFamily
from subnets.offline.accuracy import evaluate, image_batches
from subnets.offline.candidates import Candidate, Progress
from subnets.offline.options import BuildOptions
from subnets.timing import cpu_freq_khz, measure_interleaved, on_device, pe_device, pinned

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
        device = pe_device(pe)
        todo = [c for c in cands if not c.measured_on(pe)]
        for start in range(0, len(todo), INTERLEAVE_CHUNK):
            chunk = todo[start : start + INTERLEAVE_CHUNK]
            rounds = f"{opts.warmup} warm-up + {opts.repeats} rounds"
            run.say(f"  timing {len(chunk)} subnet(s) on {pe}, interleaved ({rounds})")
            modules = {
                c.id: (on_device(family.materialize(c.spec, c.bn), device), family.input_shape(c.spec)) for c in chunk
            }
            with pinned(opts.affinity.get(pe)):
                records = measure_interleaved(modules, device, opts.warmup, opts.repeats, opts.threads)
            freq = cpu_freq_khz(opts.affinity.get(pe)) if device == "cpu" else None
            run.freq_khz[pe] = freq
            del modules
            for cand in chunk:
                rec = records[cand.id]
                cand.latency[pe] = Latency(ms=rec.median_ms, source="measured", threads=rec.threads, freq_khz=freq)
    for i, cand in enumerate(cands, 1):
        if with_accuracy and run.val is not None and not cand.accuracy_measured():
            module = on_device(family.materialize(cand.spec, cand.bn), run.eval_device)
            res = evaluate(module, run.val, opts.batch_size, run.eval_device, cand.spec.resolution, opts.val_limit)
            cand.accuracy = Accuracy(top1=res.top1, source="measured", dataset=run.val_name, samples=res.count)
        run.say(f"  [{i}/{len(cands)}] {describe(cand)}")


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
