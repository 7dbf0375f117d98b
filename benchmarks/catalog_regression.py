"""How well does the Reg-Tune-style latency regression stand in for profiling every subnet?

Samples N OFA MobileNetV3 w1.0 subnets (random init: latency does not depend on weight values),
times all of them on the CPU, fits the catalog's latency regression on M of them (spread over MACs,
as ``build_catalog`` does) and compares its predictions for the other N - M with their measured
latency. Baseline, in the same run: a linear fit of latency on MACs alone. Prints one JSON object.

    python -m benchmarks.catalog_regression [--candidates 40] [--measure 10] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import random
import sys

from subnets.ofa_family import OFAMobileNetV3Family
from subnets.offline.candidates import Candidate, spread_by_macs
from subnets.offline.regression import error_report, fit, fit_latency
from subnets.timing import measure_interleaved


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=40)
    parser.add_argument("--measure", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    family = OFAMobileNetV3Family(resolutions=(128, 160, 192))
    family.supernet()
    rng = random.Random(args.seed)
    specs = {s.key: s for s in (family.largest(), family.smallest())}
    while len(specs) < args.candidates:
        spec = family.sample(rng)
        specs.setdefault(spec.key, spec)
    pool = [
        Candidate(s, s.short_id(family.id_prefix), family.macs(s), family.params(s), family.features(s))
        for s in specs.values()
    ]
    print(f"timing {len(pool)} subnets, interleaved...", file=sys.stderr)
    modules = {c.id: (family.materialize(c.spec), family.input_shape(c.spec)) for c in pool}
    records = measure_interleaved(modules, warmup=2, repeats=args.repeats, threads=1, seed=args.seed)
    measured = {name: rec.median_ms for name, rec in records.items()}
    seconds = {name: sum(rec.samples) / 1000.0 for name, rec in records.items()}

    train = spread_by_macs(pool, args.measure)
    train_ids = {c.id for c in train}
    test = [c for c in pool if c.id not in train_ids]
    model = fit_latency([c.features for c in train], [measured[c.id] for c in train], seed=args.seed)
    reg = error_report("held-out", [measured[c.id] for c in test], model.predict([c.features for c in test]))
    base_model = fit(
        [{"macs": float(c.macs)} for c in train], [measured[c.id] for c in train], degrees=(1,), ridges=(1e-6,)
    )
    base = error_report(
        "held-out", [measured[c.id] for c in test], base_model.predict([{"macs": float(c.macs)} for c in test])
    )
    reported = model.error.get("held_out", {})
    print(
        json.dumps(
            {
                "family": family.name,
                "resolutions": family.resolutions(),
                "candidates": len(pool),
                "measured_for_fit": len(train),
                "evaluated_on": len(test),
                "model": {"degree": model.degree, "log_target": model.log_target, "features": len(model.features)},
                "regression_mae_ms": round(reg.mae, 3),
                "regression_mape_pct": round(reg.mape_pct, 2),
                "regression_max_abs_ms": round(reg.max_abs, 3),
                "macs_linear_mape_pct": round(base.mape_pct, 2),
                "mape_ratio_regression_vs_macs_linear": round(reg.mape_pct / base.mape_pct, 3),
                "build_reported_held_out_mape_pct": reported.get("mape_pct"),
                "timing_ratio_fit_subset_vs_all": round(
                    sum(seconds[c.id] for c in train) / sum(seconds.values()), 3
                ),
                "median_latency_ms": round(sorted(measured.values())[len(measured) // 2], 2),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
