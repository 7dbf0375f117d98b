"""``dynofa check``: run every start-up step of the daemon without serving; report every problem."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from cli.commands.status import table


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "check",
        help="check a configuration the way `dynofa serve` would use it, without serving",
        description="Parse and validate the config, detect the platform and compare the configured processing "
        "elements, build the policy with its options, load every catalog with its weights and BatchNorm "
        "statistics, and check directories and endpoints. Prints every problem and exits 1, or a summary and "
        "exits 0. Never changes the board. The systemd unit runs it as ExecStartPre.",
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="YAML configuration file; default as for `dynofa serve` ($DYNOFA_CONFIG, /etc/dynofa/config.yaml, "
        "else the embedded defaults)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    parser.set_defaults(handler=_check)


def _check(args: argparse.Namespace) -> int:
    import logging

    from dynofa.config import default_config_path
    from service.check import check

    logging.disable(logging.INFO)  # the loaders' progress lines are the daemon's log, not this report
    report = check(args.config or default_config_path())
    if args.json:
        json.dump(report.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render(report))
    return 0 if report.ok else 1


def render(report: Any) -> str:
    out = [f"config {report.source}: "]
    if report.ok:
        out.append("ok, `dynofa serve` would start\n\n")
        out.append(table(["WHAT", "DETAIL"], [[label, text] for label, text in report.summary]))
    else:
        out.append(f"{len(report.problems)} problem(s); `dynofa serve` would not start\n")
        out += [f"  problem  {p}\n" for p in report.problems]
    if report.notes:
        out.append("\n" if report.ok else "")
        out += [f"  note     {n}\n" for n in report.notes]
    return "".join(out)
