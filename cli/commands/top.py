"""``dynofa top``: a live, refreshing view of the daemon (like jtop/htop), built from ``state`` requests.

Keys on a terminal: q quit, p or space pause/resume, v switch view (all / apps / processing
elements), h help. Piped (``dynofa top | head``) it prints frames one after the other.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from cli.args import integer, number
from cli.commands.status import VIEWS, add_connection_args, connect, render_status

CLEAR = "\x1b[H\x1b[2J"
HELP = "keys: q quit, p/space pause, v view (all/apps/pes), h help"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "top",
        help="live view of apps, operating points and processing elements (q quits, p pauses, v switches view)",
        description=f"Refresh the status view every --interval seconds until q or Ctrl-C. {HELP}.",
    )
    add_connection_args(parser)
    parser.add_argument("--interval", type=number(above=0), default=1.0, metavar="S",
                        help="refresh period (default 1 s)")  # fmt: skip
    parser.add_argument("--iterations", type=integer(1), default=None, metavar="N", help="stop after N refreshes")
    parser.add_argument("--once", action="store_true", help="print one view and exit (same as --iterations 1)")
    parser.add_argument("--view", choices=VIEWS, default="all", help="what to show first (v switches on a terminal)")
    parser.set_defaults(handler=_top)


@dataclass
class Screen:
    """What the keys change: the view shown, paused or not, quitting, the help line."""

    view: str = "all"
    paused: bool = False
    quit: bool = False
    help: bool = False

    def key(self, key: str) -> None:
        if key in ("q", "Q", "\x1b"):
            self.quit = True
        elif key in ("p", "P", " "):
            self.paused = not self.paused
        elif key in ("v", "V", "\t"):
            self.view = VIEWS[(VIEWS.index(self.view) + 1) % len(VIEWS)]
        elif key in ("h", "H", "?"):
            self.help = not self.help


@contextlib.contextmanager
def _keys(enabled: bool) -> Iterator[bool]:
    """Single key presses without Enter (cbreak, no echo) while the view runs; restored on exit."""
    if not enabled:
        yield False
        return
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield True
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _wait_for_keys(screen: Screen, seconds: float, keys: bool) -> None:
    """Sleep ``seconds``, handling key presses as they come (a key redraws at once)."""
    if not keys:
        time.sleep(seconds)
        return
    ready, _, _ = select.select([sys.stdin], [], [], seconds)
    if ready:
        for key in os.read(sys.stdin.fileno(), 32).decode(errors="ignore"):
            screen.key(key)


def _top(args: argparse.Namespace) -> int:
    iterations = 1 if args.once else args.iterations
    interactive = sys.stdout.isatty() and iterations != 1
    screen = Screen(view=args.view)
    shown = 0
    state: dict[str, Any] | None = None
    with connect(args) as client, _keys(interactive and sys.stdin.isatty()) as keys:
        try:
            while not screen.quit and (iterations is None or shown < iterations):
                if state is None or not screen.paused:
                    state = client.state()
                stamp = time.strftime("%H:%M:%S")
                if interactive:
                    sys.stdout.write(CLEAR)
                elif shown:
                    sys.stdout.write("\n")
                mode = "paused (p resumes)" if screen.paused else f"refresh every {args.interval:g} s"
                hint = f" | {HELP}" if screen.help else (" | h for keys" if keys else "")
                sys.stdout.write(f"[{stamp}] {mode}, view {screen.view}{hint}\n{render_status(state, screen.view)}")
                sys.stdout.flush()
                shown += 1
                if iterations is None or shown < iterations:
                    _wait_for_keys(screen, args.interval, keys)
        except KeyboardInterrupt:
            return 0
    return 0
