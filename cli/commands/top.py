"""``dynofa top``: a live, refreshing view of the daemon (like jtop), built from ``state`` requests."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from cli.args import integer, number
from cli.commands.status import add_connection_args, connect, render_status

CLEAR = "\x1b[H\x1b[2J"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "top",
        help="live view of apps, operating points and processing elements (q or Ctrl-C to quit)",
        description="Refresh the status view every --interval seconds until interrupted.",
    )
    add_connection_args(parser)
    parser.add_argument("--interval", type=number(above=0), default=1.0, metavar="S",
                        help="refresh period (default 1 s)")
    parser.add_argument("--iterations", type=integer(1), default=None, metavar="N", help="stop after N refreshes")
    parser.add_argument("--once", action="store_true", help="print one view and exit (same as --iterations 1)")
    parser.set_defaults(handler=_top)


def _top(args: argparse.Namespace) -> int:
    iterations = 1 if args.once else args.iterations
    if iterations is not None and iterations < 1:
        print("dynofa: error: --iterations must be at least 1", file=sys.stderr)
        return 2
    interactive = sys.stdout.isatty() and iterations != 1
    shown = 0
    with connect(args) as client:
        try:
            while iterations is None or shown < iterations:
                state = client.state()
                frame = render_status(state)
                stamp = time.strftime("%H:%M:%S")
                if interactive:
                    sys.stdout.write(CLEAR)
                elif shown:
                    sys.stdout.write("\n")
                sys.stdout.write(f"[{stamp}] refresh every {args.interval:g} s\n{frame}")
                sys.stdout.flush()
                shown += 1
                if iterations is None or shown < iterations:
                    time.sleep(max(0.05, args.interval))
        except KeyboardInterrupt:
            return 0
    return 0
