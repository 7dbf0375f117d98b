"""``dynofa train grouped|demo|catalogs``: reproduce the bundled models and their catalogs.

* ``grouped``: incremental training of a group-pruned net (MLCAD 2019) on a local CIFAR-10
  python directory (``--cifar10 DIR``) or the bundled digits;
* ``demo``: the demo elastic OFA MobileNetV3 supernet on the digits (sandwich rule);
* ``catalogs``: measure the demo catalogs (held-out accuracy, latency on this machine).

All run on the CPU with one thread by default and print progress; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cli.args import integer, number, writable_dir, writable_file

#: defaults per grouped architecture (the shipped demo is "small" at width 0.5)
GROUPED_WIDTH_DEFAULTS = {"small": 0.5, "alexnet": 1.0}


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("train", help="train the bundled demo models (grouped net, demo supernet) and catalogs")
    sub = p.add_subparsers(dest="train_command", metavar="WHAT")
    p.set_defaults(handler=lambda _args: _usage(p))

    g = sub.add_parser(
        "grouped",
        help="incrementally train a group-pruned net (level 1, then each further group with earlier ones frozen)",
        description="Incremental training of a group-pruned CNN. Reads CIFAR-10 from a local python-pickle "
        "directory with --cifar10, otherwise the bundled scikit-learn digits. Progress goes to stdout.",
    )
    g.add_argument("--cifar10", metavar="DIR", help="local CIFAR-10 python directory (data_batch_1..5, test_batch)")
    g.add_argument("--arch", choices=sorted(GROUPED_WIDTH_DEFAULTS), default="small",
                   help="small (digits demo) or alexnet (AlexNet-style for 32x32 CIFAR-10, as in the paper)")
    g.add_argument("--groups", type=integer(1), default=4, help="channel groups per conv layer = levels (default 4)")
    g.add_argument("--width-mult", type=number(above=0), default=None,
                   help="channel multiplier (default 0.5 for small, 1.0 for alexnet)")
    g.add_argument("--epochs-per-level", type=integer(1), default=20, help="epochs per level (default 20)")
    g.add_argument("--batch-size", type=integer(1), default=64)
    g.add_argument("--lr", type=number(above=0), default=0.05)
    g.add_argument("--resolution", type=integer(8), default=32, help="digits resolution (CIFAR-10 is 32)")
    g.add_argument("--limit", type=integer(1), default=None, metavar="N",
                   help="use only the first N CIFAR-10 images per split")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--threads", type=integer(1), default=1, help="torch threads (default 1)")
    g.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    g.add_argument("--out", type=writable_file, default="grouped.pt", metavar="FILE",
                   help="weights file to write (default grouped.pt)")
    g.set_defaults(handler=run_grouped)

    d = sub.add_parser(
        "demo",
        help="train the demo elastic OFA MobileNetV3 supernet on the digits (sandwich rule)",
        description="Train the bundled demo supernet. --epochs fixes the schedule (what reproduces the shipped "
        "weights); --minutes caps the wall time. Progress goes to stdout.",
    )
    d.add_argument("--epochs", type=integer(1), default=None, help="epochs (default: the shipped weights' schedule)")
    d.add_argument("--minutes", type=number(above=0), default=None, help="stop after this many minutes")
    d.add_argument("--max-steps", type=integer(1), default=None, metavar="N",
                   help="stop after N steps (the lr schedule still follows --epochs; for quick checks)")
    d.add_argument("--width-mult", type=number(above=0), default=0.35)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--threads", type=integer(1), default=1)
    d.add_argument("--device", default="cpu")
    d.add_argument("--out", type=writable_file, default="demo-supernet.pt", metavar="FILE")
    d.set_defaults(handler=run_demo)

    c = sub.add_parser(
        "catalogs",
        help="measure the demo catalogs (held-out accuracy, latency here) for demo weights",
        description="Build catalog-ofa.json and catalog-grouped.json from the demo weights: accuracy measured on "
        "the digits test split, latency measured on this machine's CPU.",
    )
    c.add_argument("--out-dir", type=writable_dir, default=".", metavar="DIR",
                   help="where to write the catalogs (default .)")
    c.add_argument("--ofa-weights", metavar="FILE", help="demo supernet weights (default: the shipped ones)")
    c.add_argument("--grouped-weights", metavar="FILE", help="grouped weights (default: the shipped ones)")
    c.add_argument("--only", choices=("ofa", "grouped"), help="build just one of the two")
    c.add_argument("--candidates", type=integer(1), default=160, help="subnets sampled (default 160)")
    c.add_argument("--measure", type=integer(1), default=160,
                   help="of those, timed and evaluated (default 160: all; at most --candidates)")
    c.add_argument("--keep", type=integer(1), default=12, help="Pareto-optimal subnets kept, at most (default 12)")
    c.add_argument("--blend", type=number(0.0, 1.0), default=0.5, metavar="FRACTION",
                   help="fraction of candidates blended towards the largest or smallest subnet (default 0.5)")
    c.add_argument("--repeats", type=integer(1), default=10, help="interleaved rounds per pass (default 10)")
    c.add_argument("--passes", type=integer(1), default=3, help="passes of interleaved rounds (default 3)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--clock", choices=("thread", "wall"), default="thread",
                   help="timing clock (default thread: CPU time of the timing thread, robust on a shared machine)")
    c.set_defaults(handler=run_catalogs)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _say(msg: str) -> None:
    print(msg, flush=True)


def run_grouped(args: argparse.Namespace) -> int:
    from subnets.offline.train_grouped import GroupedTrainConfig, train_and_save

    if args.groups < 1:
        raise SystemExit("dynofa: error: --groups must be >= 1")
    width = args.width_mult if args.width_mult is not None else GROUPED_WIDTH_DEFAULTS[args.arch]
    config = GroupedTrainConfig(
        arch=args.arch,
        groups=args.groups,
        width_mult=width,
        resolution=args.resolution,
        epochs_per_level=args.epochs_per_level,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        threads=args.threads,
        device=args.device,
    )
    result = train_and_save(args.out, config, cifar10=args.cifar10, log=_say, limit=args.limit)
    for level, top1 in enumerate(result.test_top1, 1):
        _say(f"level {level}: held-out top-1 {top1:.4f}")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from subnets.offline.train_demo import DemoTrainConfig, save_demo_weights, train_demo

    config = DemoTrainConfig(
        epochs=args.epochs if args.epochs is not None else DemoTrainConfig.epochs, minutes=args.minutes,
        max_steps=args.max_steps, width_mult=args.width_mult, seed=args.seed, threads=args.threads,
        device=args.device,
    )
    result = train_demo(config, log=_say)
    save_demo_weights(result, args.out, config)
    _say(f"wrote {args.out} after {result.seconds:.1f} s ({result.steps} steps)")
    return 0


def run_catalogs(args: argparse.Namespace) -> int:
    from pathlib import Path

    from subnets.offline.demo_build import build_grouped_catalog, build_ofa_catalog

    out = Path(args.out_dir)
    common = {"candidates": args.candidates, "measure": args.measure, "keep": args.keep, "clock": args.clock,
              "repeats": args.repeats, "passes": args.passes, "blend": args.blend, "seed": args.seed,
              "progress": lambda m: print(m, file=sys.stderr, flush=True)}
    if args.only in (None, "ofa"):
        path = build_ofa_catalog(out / "catalog-ofa.json", weights=args.ofa_weights, **common)
        _say(f"wrote {path}")
    if args.only in (None, "grouped"):
        path = build_grouped_catalog(out / "catalog-grouped.json", weights=args.grouped_weights,
                                     repeats=args.repeats, clock=args.clock, progress=common["progress"])
        _say(f"wrote {path}")
    return 0
