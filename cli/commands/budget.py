"""``dynofa budget set|clear|remove|list``: change apps' budgets in the running daemon.

An app belongs to the client that registered it; ``--override`` lets an operator (root, or the
daemon's user, on the ipc socket) change or remove any app (docs/protocol.md, "Ownership").
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from cli.args import number
from cli.commands.status import add_connection_args, connect, describe_budget, table
from dynofa.budget import OBJECTIVES


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "budget",
        help="set, clear or list app budgets (latency, accuracy, power cap, priority)",
        description="Budgets are kept by the daemon across restarts. Setting a budget for an app that is not "
        "registered yet registers it on the daemon's default model.",
    )
    sub = parser.add_subparsers(dest="budget_command", metavar="ACTION")
    parser.set_defaults(handler=lambda _a: (parser.print_help(), 2)[1])

    s = sub.add_parser("set", help="set or replace an app's budget")
    s.add_argument("app")
    s.add_argument("--latency-ms", type=number(above=0), required=True, help="per-inference deadline in ms")
    s.add_argument("--min-accuracy", type=number(0, 1), default=0.0,
                   help="minimum top-1 accuracy, a fraction in [0, 1]")
    s.add_argument("--power-cap-w", type=number(above=0), default=None, help="board power cap in W while the app runs")
    s.add_argument("--priority", type=int, default=0, help="higher wins when budgets conflict")
    s.add_argument("--objective", choices=OBJECTIVES, default=None,
                   help="accuracy: the most accurate point meeting the latency; energy: the lowest energy per frame "
                        "meeting the latency and --min-accuracy (default: the daemon's policy.objective)")
    add_connection_args(s)
    _add_override(s)
    s.add_argument("--json", action="store_true")
    s.set_defaults(handler=_set)

    for action, handler, text in (
        ("clear", _clear, "remove an app's budget"),
        ("remove", _remove, "unregister an app (forget it and its budget)"),
    ):
        p = sub.add_parser(action, help=text)
        p.add_argument("app")
        add_connection_args(p)
        _add_override(p)
        p.add_argument("--json", action="store_true")
        p.set_defaults(handler=handler)

    ls = sub.add_parser("list", help="every app's budget")
    add_connection_args(ls)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(handler=_list)


def _add_override(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--override", action="store_true",
        help="act on an app another client owns (operators only: root or the daemon's user, on the ipc socket)",
    )  # fmt: skip


def _owned(args: argparse.Namespace) -> dict[str, Any]:
    return {"app": args.app, "override": True if args.override else None}


def _run(args: argparse.Namespace, op: str, **fields: Any) -> dict[str, Any]:
    with connect(args) as client:
        return client.call(op, **fields)


def _print(args: argparse.Namespace, reply: dict[str, Any], text: str) -> None:
    if args.json:
        json.dump({k: v for k, v in reply.items() if k not in ("v", "ok", "id")}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(text)


def _set(args: argparse.Namespace) -> int:
    budget: dict[str, Any] = {
        "latency_ms": args.latency_ms,
        "min_accuracy": args.min_accuracy,
        "priority": args.priority,
    }
    if args.power_cap_w is not None:
        budget["power_cap_w"] = args.power_cap_w
    if args.objective is not None:
        budget["objective"] = args.objective
    reply = _run(args, "set_budget", budget=budget, **_owned(args))
    _print(args, reply, f"{args.app}: {describe_budget(reply['budget'])}\n")
    return 0


def _clear(args: argparse.Namespace) -> int:
    reply = _run(args, "clear_budget", **_owned(args))
    _print(args, reply, f"{args.app}: budget cleared\n")
    return 0


def _remove(args: argparse.Namespace) -> int:
    reply = _run(args, "unregister", **_owned(args))
    _print(args, reply, f"{args.app}: unregistered\n")
    return 0


def _list(args: argparse.Namespace) -> int:
    reply = _run(args, "budgets")
    rows = [
        [app, item["model"], item.get("owner") or "-", describe_budget(item["budget"])]
        for app, item in reply["budgets"].items()
    ]
    _print(args, reply, table(["APP", "MODEL", "OWNER", "BUDGET"], rows) if rows else "no apps registered\n")
    return 0
