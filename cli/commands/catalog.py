"""``dynofa catalog build`` / ``dynofa catalog show``: pre-sample, profile and select subnets into a catalog."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from cli.args import integer, number, writable_file
from dynofa.errors import CatalogBuildError

#: ``--family`` names and the registry descriptions they stand for (the constructor arguments of
#: the official OFA supernets; ``--family-args`` adds or overrides arguments)
FAMILY_PRESETS: dict[str, dict[str, Any]] = {
    "ofa-mbv3-w1.0": {"kind": "ofa-mbv3", "width_mult": 1.0},
    "ofa-mbv3-w1.2": {"kind": "ofa-mbv3", "width_mult": 1.2},
    "ofa-proxyless": {"kind": "ofa-proxyless", "width_mult": 1.3},
    "ofa-resnet50": {"kind": "ofa-resnet50"},
}


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("catalog", help="build or show a subnet catalog")
    sub = p.add_subparsers(dest="catalog_command", metavar="ACTION")
    p.set_defaults(handler=lambda _args: _usage(p))

    b = sub.add_parser(
        "build",
        help="sample, profile and select subnets of a model family into a catalog file",
        description=(
            "Sample N candidate subnets, time M of them on each processing element, predict the rest "
            "with a regression model, measure accuracy on validation data, and keep K subnets spread "
            "across the accuracy/latency Pareto front. Progress goes to stderr."
        ),
    )
    b.add_argument(
        "--family",
        required=True,
        help=f"model family: {', '.join(FAMILY_PRESETS)}, or a registry kind (with --family-args)",
    )
    b.add_argument("--family-args", metavar="JSON", help='extra constructor arguments, e.g. \'{"n_classes": 10}\'')
    b.add_argument("--weights", metavar="CKPT", help="local supernet checkpoint (official OFA format)")
    b.add_argument(
        "--random-init",
        action="store_true",
        help="no weights: random initialisation (a structure-only catalog: latency is real, accuracy is not)",
    )
    b.add_argument("--val", metavar="DATA", help="validation set (.npz x/y, pickle, CIFAR-10 dir, ImageFolder dir)")
    b.add_argument("--val-limit", type=integer(1), default=None, metavar="N",
                   help="use only the first N validation images")
    b.add_argument("--calib", metavar="DATA", help="calibration set for per-subnet BatchNorm statistics")
    b.add_argument("--calib-limit", type=integer(1), default=2000, metavar="N",
                   help="calibration images (default 2000)")
    b.add_argument(
        "--normalize",
        default="imagenet",
        help="input normalisation of --val/--calib images: imagenet (default), cifar10, digits, none",
    )
    b.add_argument(
        "--pe",
        action="append",
        dest="pes",
        metavar="PE",
        help="processing element to profile on (repeatable): cpu (unpinned), a CPU cluster of this board "
        "(cpu-big, cpu-little: pinned to its CPUs), or gpu (CUDA). Default: every PE of this machine",
    )
    b.add_argument("--candidates", type=integer(1), default=100, metavar="N",
                   help="candidate subnets sampled (default 100)")
    b.add_argument("--measure", type=integer(1), default=20, metavar="M", help="candidates timed per PE (default 20)")
    b.add_argument(
        "--keep", type=integer(1), default=10, metavar="K",
                               help="most subnets kept: the Pareto front, spread (default 10)"
    )
    b.add_argument(
        "--fill-dominated",
        action="store_true",
        help="when the Pareto front has fewer than K subnets, top it up with the best dominated ones",
    )
    b.add_argument(
        "--seed",
        type=int,
        default=0,
        help="candidate sampling seed (default 0); random weights follow the family's own seed argument",
    )
    b.add_argument("--threads", type=integer(1), default=1, help="torch threads while timing (default 1)")
    b.add_argument("--repeats", type=integer(1), default=10,
                   help="interleaved timed rounds per subnet and pass (default 10)")
    b.add_argument("--blend", type=number(0.0, 1.0), default=0.0, metavar="FRACTION",
                   help="fraction of candidates blended towards the largest or smallest subnet (default 0: uniform)")
    b.add_argument("--passes", type=integer(1), default=1,
                   help="passes of interleaved rounds; the figure is the 10th percentile of all runs (default 1)")
    b.add_argument("--warmup", type=integer(0), default=3, help="untimed warm-up runs per subnet (default 3)")
    b.add_argument(
        "--no-refine",
        action="store_true",
        help="keep predicted figures of selected subnets instead of measuring them",
    )
    b.add_argument(
        "--batch-sizes",
        default="1",
        metavar="B,B",
        help="batch sizes the kept subnets are timed at, e.g. 1,8,32 (default 1; others are interpolated)",
    )
    b.add_argument(
        "--clock",
        choices=("wall", "thread"),
        default="wall",
        help="wall (default) or thread: CPU time of the timing thread (one thread; for a shared machine)",
    )
    b.add_argument("--out", type=writable_file, required=True, metavar="FILE", help="catalog file to write (JSON)")
    b.set_defaults(handler=run_build)

    s = sub.add_parser("show", help="print a catalog: provenance, regression errors and subnets")
    s.add_argument("file", metavar="FILE")
    s.add_argument("--json", action="store_true", help="print the catalog's JSON")
    s.add_argument("--plot", metavar="PNG", help="also draw the accuracy/latency front per batch size")
    s.add_argument("--pe", default=None, help="PE whose latency the plot shows (default: the first)")
    s.set_defaults(handler=run_show)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def family_description(name: str, extra: str | None) -> dict[str, Any]:
    desc = dict(FAMILY_PRESETS.get(name, {"kind": name}))
    if extra:
        try:
            more = json.loads(extra)
        except json.JSONDecodeError as exc:
            raise CatalogBuildError(f"--family-args is not valid JSON: {exc.msg}") from None
        if not isinstance(more, dict):
            raise CatalogBuildError("--family-args must be a JSON object, e.g. '{\"width_mult\": 1.0}'")
        desc.update(more)
    return desc


def run_build(args: argparse.Namespace) -> int:
    from dynofa.catalog import sha256_file
    from dynofa.errors import WeightsNotFoundError

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    if args.weights and args.random_init:
        raise CatalogBuildError("give either --weights CKPT or --random-init, not both")
    if not args.weights and not args.random_init:
        raise CatalogBuildError(
            "no weights given: pass --weights CKPT (a local checkpoint in the official OFA format), or "
            "--random-init for a structure-only catalog (real latency, no meaningful accuracy)"
        )
    desc = family_description(args.family, args.family_args)
    weights_info: dict[str, Any]
    weights_path: str | None = None
    if args.weights:
        path = Path(args.weights).expanduser()
        if not path.is_file():
            raise WeightsNotFoundError(f"family {args.family}", [str(path.absolute())])
        weights_path = str(path.resolve())
        say(f"hashing weights {weights_path}...")
        weights_info = {"path": weights_path, "sha256": sha256_file(path)}
    else:
        weights_info = {"init": "random"}

    import torch

    from subnets.offline.build import BuildOptions, build_catalog
    from subnets.registry import family_from_description

    torch.manual_seed(args.seed)
    say(f"building family {desc}...")
    family = family_from_description(desc, weights_path)
    if "init" in weights_info:
        # the family seeds its own random initialisation when it takes a seed; record which
        weights_info["seed"] = family.describe().get("seed", args.seed)
    resolution = max(family.resolutions())
    val = _load(args.val, args.normalize, resolution, args.val_limit, "validation") if args.val else None
    calib = _load(args.calib, args.normalize, resolution, args.calib_limit, "calibration") if args.calib else None
    if val is None:
        say(
            "no validation data: this catalog will claim no accuracy. To measure it, pass --val DATA "
            "(an .npz with arrays x/y, a pickle, a CIFAR-10 python directory or an ImageFolder directory "
            "of held-out images the model never trained on)"
        )
    elif args.random_init:
        say("warning: --random-init with --val measures the accuracy of untrained weights (near chance)")
    pes, affinity = processing_elements(args.pes)
    say(f"profiling on {', '.join(pes)}" + (f" (pinned: {affinity})" if affinity else ""))
    options = BuildOptions(
        pes=pes,
        affinity=affinity,
        candidates=args.candidates,
        blend=args.blend,
        measure=args.measure,
        keep=args.keep,
        fill_dominated=args.fill_dominated,
        seed=args.seed,
        out=args.out,
        weights=weights_info,
        threads=args.threads,
        warmup=args.warmup,
        repeats=args.repeats,
        passes=args.passes,
        refine=not args.no_refine,
        val_name=Path(args.val).name if args.val else "",
        batch_sizes=_batch_sizes(args.batch_sizes),
        clock=args.clock,
    )
    catalog = build_catalog(family, options, val=val, calib=calib, progress=say)
    target = catalog.save(args.out)
    say(f"wrote {target}")
    from cli.commands.subnets import format_table

    print(format_table(catalog))
    return 0


def _batch_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise CatalogBuildError(f"--batch-sizes must be comma-separated integers, e.g. 1,8,32; got {text!r}") from None
    return sizes or (1,)


def processing_elements(asked: list[str] | None) -> tuple[list[str], dict[str, list[int]]]:
    """The PEs to profile on (default: this machine's) and the CPUs each CPU cluster is pinned to."""
    import torch

    from governors.platform import detect_platform

    platform = detect_platform("/")
    known = platform.pe_names()
    cuda = torch.cuda.is_available()
    pes = list(dict.fromkeys(asked)) if asked else [pe for pe in known if pe != "gpu" or cuda]
    affinity: dict[str, list[int]] = {}
    for pe in pes:
        if pe == "gpu":
            if not cuda:
                raise CatalogBuildError("--pe gpu needs CUDA, which this machine's torch does not have")
        elif pe == "cpu":
            continue  # all CPUs, unpinned
        elif pe not in known:
            raise CatalogBuildError(f"unknown processing element {pe!r}; this machine has: {', '.join(known)}")
        elif len(platform.clusters) > 1:
            affinity[pe] = platform.pe_cpus(pe)
    return pes, affinity


def _load(path: str, normalize: str, resolution: int, limit: int | None, what: str) -> Any:
    from subnets.offline.datasets import load_dataset

    print(f"loading {what} data {path}...", file=sys.stderr, flush=True)
    norm: Any = None if normalize == "none" else normalize
    source = Path(path)
    # arrays keep their native size (each subnet's batches are resized once, to its resolution);
    # only an ImageFolder's images of mixed sizes need a common size: the family's largest
    image_folder = source.is_dir() and not (source / "batches.meta").exists()
    return load_dataset(path, normalize=norm, resolution=resolution if image_folder else None, limit=limit)


def _counts(measured: Any) -> str:
    """``43 on cpu, 20 on gpu`` from the build record's per-PE counts."""
    if isinstance(measured, dict):
        return ", ".join(f"{n} on {pe}" for pe, n in sorted(measured.items())) or "none"
    return "?" if measured is None else str(measured)


def run_show(args: argparse.Namespace) -> int:
    from cli.commands.subnets import format_table
    from dynofa.catalog import load_catalog

    catalog = load_catalog(args.file)
    if args.plot:
        plot_front(catalog, args.plot, args.pe)
    if args.json:
        print(json.dumps(catalog.to_dict(), indent=1))
        return 0
    print(format_table(catalog))
    print()
    prov = catalog.provenance
    for key in ("host", "cpu_model", "device", "torch", "dynofa", "date", "threads"):
        if key in prov:
            print(f"{key}: {prov[key]}")
    build = prov.get("build") or {}
    if build:
        print(
            f"build: {build.get('distinct_candidates', '?')} candidates, latency measured for "
            f"{_counts(build.get('measured_latency'))}, kept {build.get('kept', '?')}; {build.get('accuracy', '')}"
        )
    for pe, model in sorted(catalog.latency_models.items()):
        print(f"latency model [{pe}]: {_model_line(model)}")
    for pe, info in sorted((prov.get("reprofiled") or {}).items()):
        print(f"re-profiled [{pe}] on {info.get('host')} ({info.get('cpu_model')}) at {info.get('date')}")
    return 0


def plot_front(catalog: Any, path: str, pe: str | None = None) -> None:
    """Top-1 against latency of every subnet, one panel per batch size the catalog has figures for."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pe = pe or (catalog.pes() or ["cpu"])[0]
    rows = [e for e in catalog if e.accuracy is not None and pe in e.latency]
    if not rows:
        raise CatalogBuildError(f"nothing to plot: no subnet has both accuracy and a latency on {pe}")
    sizes = catalog.batch_sizes(pe)
    fig, axes = plt.subplots(1, len(sizes), figsize=(3.6 * len(sizes), 3.2), squeeze=False)
    for ax, batch in zip(axes[0], sizes, strict=True):
        points = sorted((e.latency_ms(pe, batch), 100 * e.accuracy.top1) for e in rows)
        ax.plot([p[0] for p in points], [p[1] for p in points], "o-")
        ax.set_xscale("log")
        ax.set_xlabel(f"{pe} latency (ms), batch {batch}")
        ax.set_ylabel("top-1 (%)")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{catalog.family.get('name')}: {len(rows)} subnets", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _model_line(model: Any) -> str:
    if not isinstance(model, dict):
        return "(unreadable)"
    if "reprofile" in model:
        info = model["reprofile"]
        count = len(info.get("measured", []))
        head = f"re-profiled ({info.get('method')}) from {info.get('reference')}, measured {count}"
        return f"{head}; " + _errors({"loo": info.get("loo") or {}})
    form = model.get("fitter", "ridge-poly")
    if form == "cost-terms":
        used = [f for f, c in zip(model.get("features", []), model.get("coef", [])[1:], strict=False) if c]
        form += f" ({', '.join(used)})"
    else:
        form += f" degree {model.get('degree')}"
    return f"{form}, fitted on {model.get('n_train')}; " + _errors(model.get("error") or {})


def _errors(error: dict[str, Any]) -> str:
    parts = []
    for key in ("held_out", "loo"):
        e = error.get(key) or {}
        if e.get("mae") is not None:
            parts.append(f"{e.get('method')} MAE {e['mae']:.3g} ({e.get('mape_pct', 0):.1f} %, n={e.get('n')})")
    return "; ".join(parts) or "no error estimate (too few measured points)"
