"""``dynofa plot``: a timeline PNG from the daemon's trace (JSON lines written by the control loop).

Three panels share the time axis: each app's measured latency against its budget (with
subnet switches marked), the accuracy of the subnet it ran, and the processing elements'
load from other processes (with frequency and board power where the board reports them).
matplotlib is imported only here, with the non-interactive Agg backend.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from cli.args import number, writable_file
from dynofa.errors import DynofaError

MAX_APPS = 6


class TraceError(DynofaError):
    """A trace file is missing, empty or unreadable."""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "plot",
        help="draw a timeline PNG (latency vs budget, subnet, accuracy, load) from the daemon's trace",
        description="Reads the trace the daemon writes (telemetry.trace; by default <state_dir>/trace.jsonl). "
        "Without --trace, asks the running daemon where its trace is, else uses the default location.",
    )
    parser.add_argument("--trace", metavar="FILE", help="trace file (JSON lines)")
    parser.add_argument("--config", metavar="FILE", help="daemon config, to find its trace file")
    parser.add_argument("-o", "--output", type=writable_file, default="dynofa-timeline.png", metavar="PNG",
                        help="output image")
    parser.add_argument("--last", type=number(above=0), default=None, metavar="S", help="only the last S seconds")
    parser.add_argument("--title", default=None)
    parser.set_defaults(handler=_plot)


def _plot(args: argparse.Namespace) -> int:
    trace = Path(args.trace) if args.trace else _find_trace(args.config)
    records = read_trace(trace)
    if args.last is not None:
        end = records[-1]["t"]
        records = [r for r in records if r["t"] >= end - args.last]
    out = plot_timeline(records, Path(args.output), title=args.title or f"dynofa timeline ({trace.name})")
    print(f"wrote {out} ({len(records)} samples from {trace})")
    return 0


def _find_trace(config_path: str | None) -> Path:
    if config_path is None:
        try:
            from dynofa.client import Client

            with Client(timeout_s=1.0, retries=0) as client:
                path = client.state().get("daemon", {}).get("trace")
            if path:
                return Path(path)
        except DynofaError:
            pass
    from dynofa.config import load_config

    found = load_config(config_path).trace_path()
    if found is None:
        raise TraceError("the configuration turns the trace off (telemetry.trace: ''); pass --trace FILE")
    return found


def read_trace(path: Path) -> list[dict[str, Any]]:
    """Records of a trace file (and its rotated predecessor ``.1``), oldest first; bad lines are skipped."""
    files = [p for p in (path.with_name(path.name + ".1"), path) if p.exists()]
    if not files:
        raise TraceError(f"no trace at {path}: is the daemon running with telemetry.trace enabled? (--trace FILE)")
    records = []
    for file in files:
        with open(file, encoding="utf-8") as fh:
            for line in fh:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # a line cut by a crash
                if isinstance(record, dict) and isinstance(record.get("t"), (int, float)):
                    records.append(record)
    if not records:
        raise TraceError(f"trace {path} holds no samples yet")
    records.sort(key=lambda r: r["t"])
    return records


def plot_timeline(
    records: list[dict[str, Any]],
    output: Path,
    title: str = "dynofa timeline",
    marks: list[tuple[float, str]] | None = None,
) -> Path:
    """Draw the trace; ``marks`` are (wall-clock time, label) events drawn as labelled lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = records[0]["t"]
    runs: dict[str, int] = {}
    for r in records:
        for name, a in (r.get("apps") or {}).items():
            runs[name] = max(runs.get(name, 0), int(a.get("inferences") or 0))
    # the busiest apps only: a legend of dozens of apps would crush the panels
    apps = sorted(sorted(runs, key=lambda n: -runs[n])[:MAX_APPS])
    fig, (ax_lat, ax_acc, ax_load) = plt.subplots(
        3, 1, sharex=True, figsize=(10, 8), height_ratios=[3, 1.5, 1.5], layout="constrained"
    )
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, app in enumerate(apps):
        color = colors[i % len(colors)]
        rows = [(r["t"] - t0, r["apps"][app]) for r in records if app in (r.get("apps") or {})]
        ts = [t for t, _ in rows]
        ax_lat.plot(ts, [a.get("latency_ms") for _, a in rows], color=color, label=f"{app} latency (median)")
        ax_lat.step(ts, [a.get("budget_ms") for _, a in rows], where="post", color=color, linestyle="--",
                    label=f"{app} budget")  # fmt: skip
        switches = [t for (t, a), (_, b) in zip(rows[1:], rows[:-1], strict=True) if a.get("subnet") != b.get("subnet")]
        for t in switches:
            ax_lat.axvline(t, color=color, alpha=0.25, linewidth=1)
        ax_acc.step(ts, [a.get("accuracy") for _, a in rows], where="post", color=color, label=f"{app} subnet accuracy")
    for when, label in marks or []:
        for ax in (ax_lat, ax_acc, ax_load):
            ax.axvline(when - t0, color="grey", linestyle=":", linewidth=1)
        ax_lat.annotate(label, xy=(when - t0, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -12),
                        textcoords="offset points", fontsize="small", color="dimgrey")  # fmt: skip
    ax_lat.set_ylabel("latency (ms)")
    ax_lat.set_title(title)
    if apps:
        ax_lat.legend(loc="best", fontsize="small")
        ax_acc.legend(loc="lower left", fontsize="small")
    ax_acc.set_ylabel("top-1 accuracy")
    pes = sorted({pe for r in records for pe in (r.get("cpu_util_others") or {})})
    ts_all = [r["t"] - t0 for r in records]
    for pe in pes:
        values = [(r.get("cpu_util_others") or {}).get(pe) for r in records]
        ax_load.plot(ts_all, [None if v is None else 100 * v for v in values], label=f"{pe} load by others (%)")
    ax_load.set_ylabel("load (%)")
    ax_load.set_xlabel("time (s)")
    power = [r.get("power_w") for r in records]
    if any(p is not None for p in power):
        ax_power = ax_load.twinx()
        ax_power.plot(ts_all, power, color="black", alpha=0.6, label="board power (W)")
        ax_power.set_ylabel("power (W)")
    if pes:
        ax_load.legend(loc="upper left", fontsize="small")
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=100)
    plt.close(fig)
    return output
