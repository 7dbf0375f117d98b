"""``dynofa status``: the live operating point (per app and per processing element).

Also home of the helpers the other daemon-talking commands share (``top``, ``budget``,
``demo``): connection arguments and the table renderer.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from cli.args import number


def add_connection_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--endpoint",
        metavar="URL",
        help="daemon control endpoint (default: $DYNOFA_ENDPOINT, else the runtime directory's control.sock)",
    )
    parser.add_argument("--timeout", type=number(above=0), default=3.0, metavar="S",
                        help="seconds to wait for the daemon")


def connect(args: argparse.Namespace) -> Any:
    from dynofa.client import Client

    return Client(args.endpoint, timeout_s=args.timeout, retries=0)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "status",
        help="show the daemon's current operating point per app and per processing element",
        description="Per app: budget vs measured latency, subnet, accuracy, hit rate. Per processing element: "
        "frequency, load, power. Exits 1 with a message when the daemon is not running.",
    )
    add_connection_args(parser)
    parser.add_argument("--json", action="store_true", help="print the daemon's state as one JSON object")
    parser.set_defaults(handler=_status)


def _status(args: argparse.Namespace) -> int:
    with connect(args) as client:
        state = client.state()
    if args.json:
        state.pop("v", None)
        state.pop("ok", None)
        state.pop("id", None)
        json.dump(state, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render_status(state))
    return 0


# rendering ---------------------------------------------------------------------------------------


def _ms(value: Any) -> str:
    return "-" if value is None else f"{value:.1f}"


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines) + "\n"


def describe_budget(budget: dict[str, Any] | None) -> str:
    """Every field of a budget, with units: ``latency <= 30 ms, accuracy >= 0.9, power <= 5 W, priority 2``."""
    if not budget:
        return "none"
    text = f"latency <= {budget['latency_ms']:g} ms"
    if budget.get("min_accuracy"):
        text += f", accuracy >= {budget['min_accuracy']:g}"
    if budget.get("power_cap_w") is not None:
        text += f", power <= {budget['power_cap_w']:g} W"
    if budget.get("priority"):
        text += f", priority {budget['priority']}"
    if budget.get("objective"):
        text += f", objective {budget['objective']}"
    return text


def _embedded_lines(apps: dict[str, Any]) -> list[str]:
    """What only an embedded app has: its lease, its reports and the last refusal between it and the daemon."""
    lines = []
    for name, app in apps.items():
        emb = app.get("embedded")
        if not emb:
            continue
        line = (f"{name}: embedded, decision {emb.get('seq', '-')}, {emb.get('reports', 0)} reports, "
                f"lease {emb.get('lease_s', 0):g} s")  # fmt: skip
        if emb.get("error"):
            line += f"; {emb['error']}"
        lines.append(line + "\n")
    return lines


VIEWS = ("all", "apps", "pes")  # what `top` cycles through with v


def _wakeup_line(wakeup: dict[str, Any]) -> list[str]:
    """The PM QoS bound, when configured: held, waiting for apps, or why it cannot be applied."""
    if wakeup.get("limit_us") is None:
        return []
    if wakeup.get("status") not in (None, "available"):
        how = f"not applied: {wakeup.get('reason') or wakeup['status']}"
    else:
        how = "held" if wakeup.get("held") else "released (no apps)"
    return [f"cpu wake-up latency <= {wakeup['limit_us']} us: {how}\n"]


def render_status(state: dict[str, Any], view: str = "all") -> str:
    daemon = state.get("daemon") or {}
    platform = state.get("platform") or {}
    policy = state.get("policy") or {}
    out = [
        f"dynofa {daemon.get('version', '?')} on {platform.get('board', '?')} ({platform.get('model', '?')}), "
        f"policy {policy.get('name', '?')}, up {daemon.get('uptime_s', 0):.0f} s\n"
    ]
    for name, model in sorted((state.get("models") or {}).items()):
        out.append(f"model {name}: {model.get('subnets', '?')} subnets from {model.get('catalog') or '?'} "
                   f"on {', '.join(model.get('pes') or []) or '-'}\n")  # fmt: skip
    if daemon.get("metrics"):
        out.append(f"metrics {daemon['metrics']}\n")
    direct = {d: e for d, e in (daemon.get("inference_endpoints") or {}).items() if e}
    if direct:
        out.append("inference endpoints " + ", ".join(f"{d} {e}" for d, e in sorted(direct.items())) + "\n")
    out.extend(_wakeup_line(daemon.get("wakeup_latency") or {}))
    out.append("\n")
    apps = state.get("apps") or {}
    if view == "pes":
        pass
    elif apps:
        rows = []
        for name, app in apps.items():
            budget = app.get("budget") or {}
            point = app.get("operating_point") or {}
            lat = app.get("latency_ms") or {}
            want = describe_budget(budget)
            rows.append([
                name, app.get("kind", "served"), app.get("model", "-"), want,
                f"{_ms(lat.get('median'))}/{_ms(lat.get('p90'))}",
                _pct(app.get("hit_rate")), str(point.get("subnet", "-")), str(point.get("pe", "-")),
                str(point.get("threads", "-")),
                "-" if app.get("accuracy") is None else f"{app['accuracy']:.3f}",
                str(app.get("inferences", 0)), str(app.get("switches", 0)),
            ])  # fmt: skip
        out.append(table(
            ["APP", "KIND", "MODEL", "BUDGET", "LATENCY ms p50/p90", "HIT", "SUBNET", "PE", "THREADS", "ACCURACY",
             "RUNS", "SWITCHES"], rows))  # fmt: skip
        out.extend(_embedded_lines(apps))
    else:
        out.append("no apps registered (an app registers through dynofa.client.Client.register)\n")
    if view == "apps":
        return "".join(out)
    pes = state.get("pes") or {}
    monitor = state.get("monitor") or {}
    if pes:
        rows = []
        for name, pe in pes.items():
            if pe.get("kind") == "gpu":
                freq = "-" if pe.get("freq_hz") is None else f"{pe['freq_hz'] / 1e6:.0f} MHz"
                load = "-" if pe.get("load") is None else f"{pe['load']:.0f}%"
            else:
                freq = "-" if pe.get("freq_khz") is None else f"{pe['freq_khz'] / 1e3:.0f} MHz"
                load = f"{_pct(pe.get('load_others'))} / {_pct(pe.get('load_total'))}"
            rows.append([name, pe.get("kind", "-"), str(pe.get("cpus", "-")), freq, load])
        out.append("\n" + table(["PE", "KIND", "CPUS", "FREQUENCY", "LOAD others/total"], rows))
    power = monitor.get("power_w")
    temp = monitor.get("max_temperature_c")
    out.append(
        f"\npower {'-' if power is None else f'{power:.2f} W'}, energy {monitor.get('energy_j', 0.0):.1f} J, "
        f"max temperature {'-' if temp is None else f'{temp:.0f} C'}\n"
    )
    missing = [k for k, v in (state.get("capabilities") or {}).items() if v.get("status") != "available"]
    if missing:
        out.append(f"without: {', '.join(sorted(missing))} (see `dynofa platform`)\n")
    if policy.get("last_error"):
        out.append(f"control loop error: {policy['last_error']}\n")
    return "".join(out)
