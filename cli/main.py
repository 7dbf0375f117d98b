"""The ``dynofa`` command line.

Each subcommand lives in its own module under :mod:`cli.commands` and exposes
``register(subparsers)``; modules are discovered, so adding a command touches no
shared file. Handlers import heavy parts (torch, governors, service) lazily so that
``dynofa --help`` and the daemon-talking commands stay fast.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from cli import commands
from cli.args import Parser, quiet_broken_pipe
from dynofa import __version__
from dynofa.errors import DaemonUnavailableError, DynofaError


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="dynofa",
        description="Runtime manager for dynamic DNNs on embedded SoCs (subnet switching, DVFS, task mapping).",
    )
    parser.add_argument("--version", action="version", version=f"dynofa {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return int(handler(args) or 0)
    except DaemonUnavailableError as exc:
        # The one place a command reports an unreachable daemon; the message says which endpoint and why.
        print(f"dynofa: {exc}", file=sys.stderr)
        return 1
    except DynofaError as exc:
        print(f"dynofa: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `dynofa top | head`: the reader left; nothing more to say
        return quiet_broken_pipe()
    except OSError as exc:  # a file a command reads or writes; the message names it
        where = f" {exc.filename}" if exc.filename else ""
        print(f"dynofa: error:{where}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
