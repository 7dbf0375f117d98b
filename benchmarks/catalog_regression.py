"""How well does the catalog's latency regression stand in for profiling every subnet?

For each family (the demo supernet as ``dynofa train demo`` builds it, and OFA MobileNetV3 w1.0;
random initialisation: latency does not depend on weight values), N subnets are sampled and all
timed on the CPU. A fixed random set of them is held out (never used to fit or choose anything);
from the others, M = 5, 10, 20, 40 subnets spread over MACs (as the catalog builder picks them)
are given to :func:`subnets.offline.regression.fit_latency`, the same function the builder uses,
and its predictions for the held-out subnets are compared with their measured latency. Baseline,
in the same run and on the same points: a linear fit of latency on MACs alone.

Measuring on a shared machine: every subnet is timed in interleaved rounds (one run of each per
round, shuffled) after a warm-up, in several passes; a subnet's figure is the 10th percentile of all
its runs pooled (:func:`subnets.timing.measure_figures`, as the catalog builder measures:
interference only ever adds time, and whole passes run slower than others). By default the clock is
the measuring thread's CPU time (one torch thread; ``--clock wall`` on a quiet machine), because on a
loaded 2-core box the wall clock mostly measures the other jobs. The measurement's own repeatability
is reported (median over subnets of the difference between the figures of the even and the odd
passes): a prediction cannot match figures more closely than they match themselves.

    python -m benchmarks.catalog_regression [--subnets 60] [--held-out 20] [--plot FILE.png]

Prints one JSON object (``families``: one report per family).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from collections.abc import Sequence
from typing import Any

from subnets.family import ModelFamily
from subnets.offline.candidates import Candidate, candidate, spread_by_macs
from subnets.offline.regression import error_report, fit, fit_latency
from subnets.timing import measure_figures

MEASURED = (5, 10, 20, 40)
#: interleaved rounds per pass by default: the demo's subnets run ~5x faster than MobileNetV3's at
#: 128-192 px, so more of their rounds fit in the same time (and their figures need them: at 1-6 ms the
#: same interference is a larger share)
DEFAULT_REPEATS = {"demo": 40, "mbv3": 15}
#: the builder's default number of measured subnets (``BuildOptions.measure``): the headline
HEADLINE = 20


def demo_family() -> ModelFamily:
    from subnets.offline.train_demo import DemoTrainConfig

    return DemoTrainConfig().family()


def mbv3_family() -> ModelFamily:
    from subnets.ofa_family import OFAMobileNetV3Family

    return OFAMobileNetV3Family(resolutions=(128, 160, 192))


def sample(family: ModelFamily, n: int, seed: int) -> list[Candidate]:
    rng = random.Random(seed)
    specs = {s.key: s for s in (family.largest(), family.smallest())}
    while len(specs) < n:
        spec = family.sample(rng)
        specs.setdefault(spec.key, spec)
    return [candidate(family, s) for s in specs.values()]


def time_all(
    family: ModelFamily, pool: Sequence[Candidate], passes: int, repeats: int, clock: str
) -> tuple[dict[str, float], float]:
    """Each subnet's figure (:func:`subnets.timing.measure_figures`) and the median repeatability."""
    modules = {c.id: (family.materialize(c.spec), family.input_shape(c.spec)) for c in pool}
    figures = measure_figures(modules, warmup=2, repeats=repeats, passes=passes, threads=1, clock=clock)
    return {cid: f.ms for cid, f in figures.items()}, statistics.median(f.repeatability for f in figures.values())


def evaluate(pool: list[Candidate], ms: dict[str, float], held_out: int, seed: int) -> list[dict[str, Any]]:
    """Fit on M = 5, 10, 20, 40 of the non-held-out subnets; errors on the held-out ones."""
    order = list(pool)
    random.Random(seed).shuffle(order)
    test, train_pool = order[:held_out], order[held_out:]
    actual = [ms[c.id] for c in test]
    rows = []
    for m in MEASURED:
        if m > len(train_pool):
            continue
        train = spread_by_macs(train_pool, m)
        y = [ms[c.id] for c in train]
        model = fit_latency([c.features for c in train], y, seed=seed)
        reg = error_report("held-out", actual, model.predict([c.features for c in test]))
        line = fit([{"macs": float(c.macs)} for c in train], y, degrees=(1,), ridges=(1e-6,), select_features=False)
        base = error_report("held-out", actual, line.predict([{"macs": float(c.macs)} for c in test]))
        rows.append(
            {
                "measured": m,
                "regression_mape_pct": round(reg.mape_pct, 2),
                "regression_max_abs_ms": round(reg.max_abs, 3),
                "macs_linear_mape_pct": round(base.mape_pct, 2),
                "mape_ratio_regression_vs_macs_linear": round(reg.mape_pct / base.mape_pct, 3),
                "model": {
                    "fitter": model.fitter,
                    "features": [f for f, c in zip(model.features, model.coef[1:], strict=True) if c != 0],
                    "ridge": model.ridge,
                    "log_target": model.log_target,
                    "choice_nested_loo_mape_pct": model.error.get("choice"),
                },
                "build_reported_held_out_mape_pct": (model.error.get("held_out") or {}).get("mape_pct"),
            }
        )
    return rows


def report(name: str, family: ModelFamily, args: argparse.Namespace, raw: dict[str, Any]) -> dict[str, Any]:
    """One family's report; its measurements are read from / written to ``raw`` (``--from-raw``)."""
    pool = sample(family, args.subnets, args.seed)
    if name in raw:
        saved = raw[name]
        ms, noise = {str(k): float(v) for k, v in saved["ms"].items()}, float(saved["noise"])
        missing = [c.id for c in pool if c.id not in ms]
        if missing:
            raise SystemExit(f"--from-raw has no measurement of {len(missing)} sampled {name} subnets")
    else:
        family.supernet()
        print(f"{name}: timing {len(pool)} subnets ({args.passes} passes x {args.repeats or DEFAULT_REPEATS[name]} "
              "interleaved rounds)...",
              file=sys.stderr, flush=True)  # fmt: skip
        repeats = args.repeats or DEFAULT_REPEATS[name]
        ms, noise = time_all(family, pool, args.passes, repeats, args.clock)
        raw[name] = {"ms": ms, "noise": noise}
    by_m = evaluate(pool, ms, args.held_out, args.seed)
    head = next((r for r in by_m if r["measured"] == HEADLINE), by_m[-1])
    return {
        "family": family.name,
        "resolutions": family.resolutions(),
        "subnets": len(pool),
        "held_out": args.held_out,
        "latency_ms_range": [round(min(ms.values()), 3), round(max(ms.values()), 3)],
        "measurement_repeatability_pct": round(100 * noise, 2),
        "headline_measured": head["measured"],
        "regression_mape_pct": head["regression_mape_pct"],
        "macs_linear_mape_pct": head["macs_linear_mape_pct"],
        "mape_ratio_regression_vs_macs_linear": head["mape_ratio_regression_vs_macs_linear"],
        "by_measured": by_m,
    }


def table(result: dict[str, Any]) -> str:
    """The error against the number of measured subnets, as a markdown table (printed to stderr)."""
    lines = ["| family | measured | regression MAPE | MACs-line MAPE | ratio | model | repeatability |",
             "|---|---|---|---|---|---|---|"]
    for fam in result["families"]:
        for r in fam["by_measured"]:
            lines.append(
                f"| {fam['family']} | {r['measured']} | {r['regression_mape_pct']:.2f} % | "
                f"{r['macs_linear_mape_pct']:.2f} % | {r['mape_ratio_regression_vs_macs_linear']:.2f} | "
                f"{r['model']['fitter']} | {fam['measurement_repeatability_pct']:.1f} % |"
            )
    return "\n".join(lines)


def plot(result: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for fam, marker in zip(result["families"], ("o", "s"), strict=False):
        ms = [r["measured"] for r in fam["by_measured"]]
        reg = [r["regression_mape_pct"] for r in fam["by_measured"]]
        line = [r["macs_linear_mape_pct"] for r in fam["by_measured"]]
        ax.plot(ms, reg, marker=marker, label=f"{fam['family']}: regression")
        ax.plot(ms, line, marker=marker, linestyle="--", label=f"{fam['family']}: MACs line")
    ax.set_xscale("log")
    ax.set_xticks(list(MEASURED), [str(m) for m in MEASURED])
    ax.set_xlabel("measured subnets the model is fitted on")
    ax.set_ylabel("held-out MAPE (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--subnets", type=int, default=60, help="subnets sampled and timed per family")
    parser.add_argument("--held-out", type=int, default=20, help="of those, held out for the error")
    parser.add_argument("--passes", type=int, default=6, help="passes of interleaved rounds (even/odd: repeatability)")
    parser.add_argument("--repeats", type=int, default=None,
                        help=f"interleaved rounds per pass (default per family: {DEFAULT_REPEATS})")
    parser.add_argument("--clock", choices=("thread", "wall"), default="thread")
    parser.add_argument("--families", default="demo,mbv3", help="comma-separated: demo, mbv3")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", metavar="PNG", help="also draw the error against the number measured")
    parser.add_argument("--save-raw", metavar="JSON", help="write the measured latencies (to re-evaluate later)")
    parser.add_argument("--from-raw", metavar="JSON", help="evaluate measurements saved by --save-raw (no timing)")
    args = parser.parse_args(argv)
    if args.held_out < 1 or args.subnets < args.held_out + min(MEASURED):
        parser.error(f"--subnets must leave at least {min(MEASURED)} subnets beside --held-out")
    makers = {"demo": demo_family, "mbv3": mbv3_family}
    names = [n.strip() for n in args.families.split(",") if n.strip()]
    unknown = [n for n in names if n not in makers]
    if unknown:
        parser.error(f"unknown families {unknown}; choose from {sorted(makers)}")
    raw: dict[str, Any] = {}
    if args.from_raw:
        with open(args.from_raw, encoding="utf-8") as fh:
            raw = json.load(fh)
    result = {
        "clock": args.clock,
        "passes": args.passes,
        "repeats": {n: args.repeats or DEFAULT_REPEATS[n] for n in names},
        "estimator": "10th percentile of every interleaved run of every pass (subnets.timing.measure_figures)",
        "repeatability": "median over subnets of |even passes - odd passes| / mean",
        "families": [report(n, makers[n](), args, raw) for n in names],
    }
    print(json.dumps(result))
    print(table(result), file=sys.stderr)
    if args.save_raw:
        with open(args.save_raw, "w", encoding="utf-8") as fh:
            json.dump(raw, fh)
    if args.plot:
        plot(result, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
