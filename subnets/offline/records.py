"""What a catalog build writes: catalog entries, provenance, and the BN statistics sidecar files."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from dynofa.catalog import Accuracy, Catalog, CatalogEntry, Latency
from subnets.offline.candidates import Candidate
from subnets.offline.measuring import BuildRun, repeatability_report
from subnets.offline.regression import RegressionModel
from subnets.timing import pe_device, provenance


def entry(
    cand: Candidate,
    predicted: Mapping[str, float],
    run: BuildRun,
    acc_model: RegressionModel | None,
    out: str | os.PathLike[str] | None,
) -> CatalogEntry:
    latency = {}
    for pe in run.pes:
        lat = cand.latency.get(pe)
        if lat is None or lat.source != "measured":
            # predicted from figures taken at the frequency the measured ones were taken at
            freq = run.freq_khz.get(pe)
            lat = Latency(
                ms=max(float(predicted[pe]), 1e-6), source="predicted", threads=run.options.threads, freq_khz=freq
            )
        latency[pe] = replace(lat, batch=dict(cand.batch_latency.get(pe, {})))
    accuracy = cand.accuracy if cand.accuracy_measured() else None
    if accuracy is None and acc_model is not None and "top1" in predicted:
        accuracy = Accuracy(top1=float(predicted["top1"]), source="predicted", dataset=run.val_name, samples=0)
    bn_rel = None
    if cand.bn is not None and out is not None:
        bn_rel = f"{Path(out).name}.bn/{cand.id}.pt"
    return CatalogEntry(
        id=cand.id,
        config=cand.spec.to_dict()["config"],
        resolution=cand.spec.resolution,
        macs=cand.macs,
        params=cand.params,
        latency=latency,
        accuracy=accuracy,
        bn_stats=bn_rel,
    )


def write_bn_sidecars(kept: list[Candidate], out: Path, catalog: Catalog) -> None:
    from subnets.checkpoint import save_bn_stats

    written = set()
    for cand in kept:
        found = catalog.get(cand.id)
        if cand.bn is not None and found.bn_stats is not None:
            save_bn_stats(out.parent / found.bn_stats, cand.bn)
            written.add(out.parent / found.bn_stats)
    # a rebuild into the same place must not leave the previous build's statistics behind
    for directory in {path.parent for path in written}:
        for stale in directory.glob("*.pt"):
            if stale not in written:
                stale.unlink()


def build_provenance(
    pool: list[Candidate], kept: list[Candidate], run: BuildRun, batch: Mapping[str, Any]
) -> dict[str, Any]:
    opts = run.options
    with_val = run.val is not None
    prov = provenance(run.eval_device, opts.threads)
    prov["pes"] = {pe: {"device": pe_device(pe), "cpus": list(opts.affinity.get(pe, []))} for pe in run.pes}
    measured = {pe: sum(1 for c in pool if pe in c.latency) for pe in run.pes}
    prov["build"] = {
        "candidates": opts.candidates,
        "distinct_candidates": len(pool),
        "measure": opts.measure,
        "measured_latency": measured,
        "measured_accuracy": sum(1 for c in pool if c.accuracy is not None),
        "keep": opts.keep,
        "kept": len(kept),
        "seed": opts.seed,
        "threads": opts.threads,
        "warmup": opts.warmup,
        "repeats": opts.repeats,
        "clock": opts.clock,
        "timing": repeatability_report(run),
        "primary_pe": run.pes[0],
        "selection": "pareto accuracy vs latency" if with_val else "pareto MACs vs latency (no accuracy)",
        "accuracy": (
            f"measured on {run.val_name}" if with_val else "not claimed: no validation data given (--val DATA)"
        ),
        "bn_calibration": None if run.calib is None else {"images": min(opts.calib_limit, len(run.calib.y))},
        "batch": dict(batch) or {"sizes": [1]},
    }
    return prov
