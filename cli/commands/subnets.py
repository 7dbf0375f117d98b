"""``dynofa subnets``: list a catalog's subnets with their figures and where each figure came from."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cli.args import integer
from cli.commands.status import add_connection_args, connect, table
from dynofa.errors import CatalogError

if TYPE_CHECKING:
    from dynofa.catalog import Catalog


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "subnets",
        help="list a catalog's subnets (accuracy, latency per processing element, measured or predicted)",
        description="List the subnets the running daemon serves (with the latency it re-profiled at start), "
        "or those of a catalog file with --catalog. Without a running daemon: the bundled demo catalog.",
    )
    p.add_argument("--catalog", metavar="FILE", help="a catalog file, read here (default: ask the running daemon)")
    p.add_argument("--model", default=None, help="the daemon's model to list (default: every one)")
    add_connection_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument(
        "--reprofile",
        action="store_true",
        default=None,
        help="re-time a few subnets on this machine and predict the others (does not write the file); "
        "default: only when the catalog's latency was measured on another machine",
    )
    p.add_argument("--no-reprofile", dest="reprofile", action="store_false", help="show the catalog's figures as is")
    p.add_argument("--pe", default=None, help="processing element to re-profile (default: the catalog's first)")
    p.add_argument("--measure", type=integer(1), default=3, help="subnets to re-time with --reprofile (default 3)")
    p.add_argument("--weights", metavar="CKPT", help="weights file, overriding the path recorded in the catalog")
    p.set_defaults(handler=run)


def default_catalog_path() -> Path:
    """The bundled demo catalog, or a CatalogError saying how to name one."""
    try:
        from subnets.demo import demo_catalog_path
    except ImportError:
        raise CatalogError(
            "this installation has no bundled demo catalog; pass --catalog FILE "
            "(build one with `dynofa catalog build`)"
        ) from None
    return Path(demo_catalog_path())


def run(args: argparse.Namespace) -> int:
    from dynofa.catalog import load_catalog
    from dynofa.errors import DaemonUnavailableError

    if not args.catalog:
        try:
            return _served(args)
        except DaemonUnavailableError as exc:
            print(f"dynofa: {exc}; showing the bundled demo catalog instead", file=sys.stderr)
    path = Path(args.catalog) if args.catalog else default_catalog_path()
    catalog = load_catalog(path)
    reprofiled = False
    auto = args.reprofile is None
    from subnets.reprofile import measured_elsewhere

    if args.reprofile or (auto and measured_elsewhere(catalog)):
        from dynofa.errors import DynofaError
        from subnets.registry import family_for_catalog
        from subnets.reprofile import reprofile

        pe = args.pe or (catalog.pes()[0] if catalog.pes() else "cpu")
        why = "" if args.reprofile else " (its latency was measured on another machine; --no-reprofile skips this)"
        print(f"re-profiling {min(args.measure, len(catalog))} subnet(s) on {pe}{why}...", file=sys.stderr)
        try:
            family = family_for_catalog(catalog, args.weights)
            catalog = reprofile(catalog, family, pe, args.measure, progress=lambda m: print(m, file=sys.stderr))
            reprofiled = True
        except DynofaError as exc:
            if not auto:
                raise
            print(f"dynofa: warning: cannot re-profile ({exc}); showing the catalog's own figures", file=sys.stderr)
    if args.json:
        print(json.dumps(catalog_summary(catalog, reprofiled=reprofiled), indent=1))
    else:
        print(format_table(catalog))
    return 0


def _served(args: argparse.Namespace) -> int:
    """What the running daemon serves: its catalogs' subnets as it holds them (re-profiled at start)."""
    with connect(args) as client:
        served = client.call("subnets", **({"model": args.model} if args.model else {}))["models"]
        models = client.state().get("models") or {}
    if args.json:
        print(json.dumps({name: {"catalog": (models.get(name) or {}).get("catalog"), "subnets": subnets}
                          for name, subnets in served.items()}, indent=1))  # fmt: skip
        return 0
    for name, subnets in served.items():
        pes = sorted({pe for s in subnets for pe in s["latency_ms"]})
        rows = [[s["id"], str(s["resolution"]), _millions(s["macs"], 1), _millions(s["params"], 2),
                 "-" if s["accuracy"] is None else f"{s['accuracy'] * 100:.1f}",
                 *["-" if pe not in s["latency_ms"] else f"{s['latency_ms'][pe]:.2f}" for pe in pes]]
                for s in subnets]  # fmt: skip
        print(f"model {name} served by the daemon from {(models.get(name) or {}).get('catalog') or '?'}: "
              f"{len(subnets)} subnet(s)")  # fmt: skip
        print(table(["id", "res", "MMACs", "Mparams", "top-1 %", *[f"{pe} ms" for pe in pes]], rows), end="")
    return 0


def catalog_summary(catalog: Catalog, reprofiled: bool = False) -> dict[str, Any]:
    """What ``dynofa subnets --json`` prints: the header and every subnet's figures with their sources."""
    return {
        "catalog": None if catalog.path is None else str(catalog.path),
        "family": catalog.family,
        "weights": catalog.weights,
        "pes": catalog.pes(),
        "reprofiled": reprofiled,
        "subnets": [e.to_dict() for e in catalog.entries],
    }


def format_table(catalog: Catalog) -> str:
    """A human-readable table: id, resolution, MMACs, params, top-1 (source), latency per PE (source)."""
    pes = catalog.pes()
    header = ["id", "res", "MMACs", "Mparams", "top-1 %", *[f"{pe} ms" for pe in pes]]
    rows = [header]
    for e in catalog.entries:
        acc = "-" if e.accuracy is None else f"{e.accuracy.top1 * 100:.1f} ({e.accuracy.source})"
        lats = []
        for pe in pes:
            lat = e.latency.get(pe)
            lats.append("-" if lat is None else f"{lat.ms:.2f} ({lat.source})")
        rows.append([e.id, str(e.resolution), _millions(e.macs, 1), _millions(e.params, 2), acc, *lats])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    family = catalog.family.get("name", "?")
    title = f"catalog {catalog.path or '(unsaved)'}: family {family}, {len(catalog)} subnet(s)"
    sha = catalog.weights.get("sha256")
    if sha:
        title += f", weights sha256 {str(sha)[:12]}..."
    elif catalog.weights.get("init") == "random":
        title += ", RANDOM weights (structure only)"
    notes = []
    prov = catalog.provenance
    for pe, info in sorted((prov.get("reprofiled") or {}).items()):
        if isinstance(info, dict):
            where = f"{info.get('host')} ({info.get('cpu_model')})"
            notes.append(f"{pe} latency re-profiled on {where} at {info.get('date')}")
    if prov.get("host") and not prov.get("reprofiled"):
        notes.append(f"latency measured on {prov.get('host')} ({prov.get('cpu_model')}) at {prov.get('date')}")
    if all(e.accuracy is None for e in catalog.entries):
        notes.append("no accuracy: the catalog was built without validation data (dynofa catalog build --val DATA)")
    return "\n".join([title, *lines, *notes])


def _millions(value: int, decimals: int) -> str:
    """``value`` in millions; small nets keep three significant digits instead of showing 0.0."""
    m = value / 1e6
    return f"{m:.{decimals}f}" if m >= 10 ** (1 - decimals) or m == 0 else f"{m:.3g}"
