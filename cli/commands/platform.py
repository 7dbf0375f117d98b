"""``dynofa platform``: what this board offers (PEs, DVFS, rails, thermal zones, capabilities).

``dynofa platform restore`` puts back the DVFS settings a crashed daemon left changed.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

from cli.args import existing_dir


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "platform",
        help="show the detected board, processing elements, DVFS, power rails, thermal zones and capabilities",
        description="Detect the board and report what dynofa can read and change on it, and why not.",
    )
    p.add_argument("--sysfs-root", type=existing_dir, default="/", metavar="DIR",
                   help="root of the tree to inspect (default /)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--state-dir",
        default=None,
        metavar="DIR",
        help="daemon state dir, to show capabilities it found degraded (default: $DYNOFA_STATE_DIR or /var/lib/dynofa)",
    )
    p.add_argument("--sample", action="store_true", help="also take one monitor snapshot (0.5 s of load and power)")
    p.set_defaults(handler=_show)
    sub = p.add_subparsers(dest="platform_command", metavar="ACTION")
    r = sub.add_parser(
        "restore",
        help="restore the DVFS settings saved in the rollback state file (after a crash)",
        description="Put back governors and min/max/set frequencies saved before dynofa changed them.",
    )
    r.add_argument("--state-dir", default=argparse.SUPPRESS, metavar="DIR", help="where the rollback file is")
    r.add_argument(
        "--sysfs-root", default=argparse.SUPPRESS, metavar="DIR", help="tree to restore (default: the one recorded)"
    )
    r.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON object")
    r.set_defaults(handler=_restore)


def _show(args: argparse.Namespace) -> int:
    from governors.platform import detect_platform
    from governors.state import StateStore, default_state_dir

    platform = detect_platform(args.sysfs_root)
    store = StateStore(args.state_dir or default_state_dir())
    for name, reason in store.load_degraded(platform.root).items():
        platform.degrade(name, reason)
    data = platform.to_dict()
    pending = _pending_restore(store)
    data["pending_restore"] = pending
    if args.sample:
        from governors.monitors import Monitor

        with Monitor(platform) as monitor:
            time.sleep(0.5)
            data["snapshot"] = monitor.sample().to_dict()
    if args.json:
        print(json.dumps(data, indent=1, sort_keys=True))
    else:
        print(format_platform(data))
    return 0


def _pending_restore(store: Any) -> str | None:
    from dynofa.errors import PlatformError

    try:
        state = store.load()
    except PlatformError as exc:
        return str(exc)
    if state is None:
        return None
    return (f"{len(state.settings)} setting(s) saved by pid {state.pid} in {store.path}: run "
            f"`dynofa platform restore --state-dir {store.dir}`")  # fmt: skip


def _restore(args: argparse.Namespace) -> int:
    from dynofa.errors import PlatformError
    from governors.actuators import Actuator
    from governors.platform import detect_platform
    from governors.state import StateStore, default_state_dir

    state_dir = getattr(args, "state_dir", None) or default_state_dir()
    store = StateStore(state_dir)
    state = store.load()
    as_json = getattr(args, "json", False)
    if state is None:
        result: dict[str, Any] = {"restored": [], "failed": {}, "message": f"nothing to restore in {store.path}"}
        print(json.dumps(result) if as_json else result["message"])
        return 0
    given = os.path.abspath(args.sysfs_root)
    if given not in ("/", state.root):
        raise PlatformError(f"{store.path} was written for sysfs root {state.root}, not {given}")
    root = state.root
    platform = detect_platform(root)
    actuator = Actuator(platform, state_dir, recover=False)
    report = actuator.recover()
    restored = report.restored if report else []
    failed = report.failed if report else {}
    discarded = report.discarded if report else None
    if as_json:
        print(json.dumps({"restored": restored, "failed": failed, "discarded": discarded}, indent=1))
    else:
        if discarded:
            print(f"discarded {store.path}: {discarded}")
        for path in restored:
            print(f"restored {path}")
        for path, why in failed.items():
            print(f"FAILED   {path}: {why}")
    return 1 if failed else 0


# -- human output ------------------------------------------------------------------------------
def _mhz(value: Any, scale: float) -> str:
    return "-" if value is None else f"{value / scale:.1f}"


def _span(cpus: list[int]) -> str:
    if cpus and cpus == list(range(cpus[0], cpus[-1] + 1)):
        return f"{cpus[0]}-{cpus[-1]}" if len(cpus) > 1 else str(cpus[0])
    return ",".join(map(str, cpus)) or "-"


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]


def format_platform(d: dict[str, Any]) -> str:
    lines = [f"board   {d['board']}  ({d['model']})", f"root    {d['root']}"]
    info = d.get("info", {})
    if info.get("l4t"):
        lines.append(f"L4T     {info['l4t']}")
    if info.get("nvpmodel"):
        nv = info["nvpmodel"]
        clocks = {True: "on", False: "off"}.get(info.get("jetson_clocks"), "unknown")
        lines.append(f"nvpmodel mode {nv['id']} ({nv.get('name') or '?'}); jetson_clocks {clocks}")
    lines.append(f"PEs     {', '.join(d['pes'])}")
    lines.append("")
    rows = [["PE", "CPUs", "core", "governor", "cur MHz", "min-max MHz", "steps", "node"]]
    for c in d["clusters"]:
        rng = f"{_mhz(c['min_khz'], 1e3)}-{_mhz(c['max_khz'], 1e3)}" if c["min_khz"] else "-"
        rows.append(
            [
                c["name"],
                _span(c["cpus"]),
                c["core"] or "-",
                c["governor"] or "-",
                _mhz(c["cur_khz"], 1e3),
                rng,
                str(len(c["available_khz"])) if c["available_khz"] else "-",
                c["policies"][0] if c["policies"] else "(no cpufreq)",
            ]
        )
    gpu = d.get("gpu")
    if gpu:
        rng = f"{_mhz(gpu['min_hz'], 1e6)}-{_mhz(gpu['max_hz'], 1e6)}" if gpu["min_hz"] else "-"
        rows.append(
            [
                "gpu" if gpu["cuda"] else f"({gpu['name']})",
                "-",
                gpu["name"],
                gpu["governor"] or "-",
                _mhz(gpu["cur_hz"], 1e6),
                rng,
                str(len(gpu["available_hz"])) if gpu["available_hz"] else "-",
                gpu["devfreq"] or "-",
            ]
        )
    lines += ["Processing elements", *_table(rows), ""]
    if d["rails"]:
        rows = [["rail", "sensor", "role", "path"]]
        for r in d["rails"]:
            role = "total" if r["is_total"] else ("part" if r["in_sum"] else "sub-zone")
            rows.append([r["name"], r["kind"], role, r["power_path"] or r["energy_path"] or r["voltage_path"] or "-"])
        lines += ["Power rails", *_table(rows), ""]
    else:
        lines += ["Power rails: none", ""]
    if d["thermal_zones"]:
        zones = [[z["name"], z["path"]] for z in d["thermal_zones"]]
        lines += ["Thermal zones", *_table([["zone", "path"], *zones]), ""]
    else:
        lines += ["Thermal zones: none", ""]
    rows = [["capability", "status", "how / why not"]]
    for name, cap in d["capabilities"].items():
        detail = cap["method"] if cap["status"] == "available" else cap["reason"]
        if cap["status"] == "available" and cap["reason"]:
            detail = f"{detail} ({cap['reason']})"
        rows.append([name, cap["status"], detail or "-"])
    lines += ["Capabilities", *_table(rows)]
    if d.get("pending_restore"):
        lines += ["", f"pending restore: {d['pending_restore']}"]
    snap = d.get("snapshot")
    if snap:
        lines += ["", "Snapshot (0.5 s)", *_snapshot_lines(snap)]
    return "\n".join(lines)


def _per(values: dict[str, Any] | None, fmt: Any) -> str:
    """``cpu-big 40 %, cpu-little 5 %`` from a per-name mapping; ``-`` for a missing reading."""
    if not values:
        return "-"
    return ", ".join(f"{name} {'-' if v is None else fmt(v)}" for name, v in sorted(values.items()))


def _snapshot_lines(snap: dict[str, Any]) -> list[str]:
    """One monitor sample with units, never Python reprs."""
    power = snap.get("power_w")
    rows = [
        ["load by others", _per(snap.get("cpu_util"), lambda v: f"{100 * v:.0f} %")],
        ["load by all", _per(snap.get("cpu_util_total"), lambda v: f"{100 * v:.0f} %")],
        ["CPU frequency", _per(snap.get("cpu_khz"), lambda v: f"{v / 1000:.0f} MHz")],
        ["GPU load", "-" if snap.get("gpu_load") is None else f"{snap['gpu_load']:.0f} %"],
        ["GPU frequency", "-" if snap.get("gpu_hz") is None else f"{snap['gpu_hz'] / 1e6:.0f} MHz"],
        ["temperature", _per(snap.get("temperatures_c"), lambda v: f"{v:.1f} C")],
        ["power", "-" if power is None else f"{power:.2f} W"],
        ["rails", _per(snap.get("rails_w"), lambda v: f"{v:.2f} W")],
    ]
    return [f"  {label:15} {text}" for label, text in rows]
