"""``dynofa demo``: the daemon, one app with a latency budget, CPU contention, a tighter budget.

Starts ``dynofa serve`` on this machine's platform with the bundled demo catalog (in a
temporary runtime/state directory, so it never touches a running system daemon), runs a
camera-like app that classifies handwritten digits at a fixed frame rate, and goes through
three phases while printing the operating point live:

1. **idle**: a budget the most accurate subnet meets here (calibrated on this machine);
2. **contention**: busy-loop processes on every CPU: the measured latency rises, and the
   policy moves to a faster subnet (and, where DVFS is writable, a higher frequency);
3. **tight budget**: contention gone, the budget cut to between the fastest and the most
   accurate subnet's latency.

It ends with a summary per phase (deadline hit rate, accuracy measured against the digit
labels, subnet switches) and a timeline PNG drawn from the daemon's trace.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cli.args import number
from dynofa.errors import DynofaError

APP = "demo-camera"


class DemoError(DynofaError):
    """The demo could not run (no catalog, the daemon did not start, ...)."""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the daemon with the bundled demo model: budget, CPU contention, tighter budget (< 1 min)",
        description="Start a private daemon with the bundled demo catalog, run an app with a latency budget, add "
        "CPU contention, then tighten the budget; show the operating point live, end with a summary and a plot.",
    )
    parser.add_argument("--catalog", metavar="FILE", help="catalog to serve (default: the bundled demo catalog)")
    parser.add_argument(
        "--output", default="dynofa-demo.png", metavar="PNG", help="timeline plot (default %(default)s)"
    )
    parser.add_argument("--phase-seconds", type=number(above=0), default=7.0, metavar="S", help="length of each phase")
    parser.add_argument("--fps", type=number(above=0), default=50.0, help="the app's frame rate (default %(default)s)")
    parser.add_argument("--policy", default="model-based", help="policy the daemon runs (default %(default)s)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (config, logs, trace)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON (progress goes to stderr)")
    parser.set_defaults(handler=_demo)


# ---------------------------------------------------------------------------------------------


def _default_catalog() -> Path:
    from service.models import default_catalog_path

    try:
        return default_catalog_path()
    except DynofaError as exc:
        raise DemoError(f"{exc} (or pass --catalog FILE)") from None


@dataclass
class Sample:
    t: float
    phase: str
    subnet: str
    latency_ms: float
    budget_ms: float | None
    correct: bool


@dataclass
class PhaseStats:
    name: str
    budget_ms: float | None
    samples: list[Sample] = field(default_factory=list)

    def summary(self, accuracy_of: dict[str, float | None]) -> dict[str, Any]:
        s = self.samples
        hits = [x.latency_ms <= x.budget_ms for x in s if x.budget_ms is not None]
        subnets = [x.subnet for x in s]
        catalog_acc = [accuracy_of.get(x) for x in subnets]
        known = [a for a in catalog_acc if a is not None]
        return {
            "phase": self.name,
            "budget_ms": self.budget_ms,
            "inferences": len(s),
            "latency_ms_p50": statistics.median([x.latency_ms for x in s]) if s else None,
            "hit_rate": sum(hits) / len(hits) if hits else None,
            "accuracy_measured": sum(x.correct for x in s) / len(s) if s else None,
            "accuracy_catalog": sum(known) / len(known) if known else None,
            "switches": sum(1 for a, b in zip(subnets[1:], subnets[:-1], strict=True) if a != b),
            "subnets": sorted(set(subnets)),
        }


class DemoDaemon:
    """A private ``dynofa serve`` in a temporary directory."""

    def __init__(self, workdir: Path, catalog: Path, policy: str) -> None:
        import yaml

        self.workdir = workdir
        self.runtime = workdir / "run"
        self.trace = workdir / "trace.jsonl"
        self.log_path = workdir / "daemon.log"
        config = {
            "models": {"demo": {"catalog": str(catalog)}},
            "policy": {"name": policy},
            "control_interval_s": 0.2,
            "paths": {"runtime_dir": str(self.runtime), "state_dir": str(workdir / "state")},
            "telemetry": {"period_s": 0.25, "trace": str(self.trace)},
            "logging": {"level": "info"},
        }
        self.config_path = workdir / "config.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"ipc://{self.runtime / 'control.sock'}"

    def start(self, timeout_s: float, say: Callable[[str], None]) -> None:
        from dynofa.client import Client

        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cli", "serve", "--config", str(self.config_path)],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if self.proc.poll() is not None:
                raise DemoError(f"the daemon exited with status {self.proc.returncode}:\n{self.log_tail()}")
            if (self.runtime / "control.sock").exists():
                try:
                    with Client(self.endpoint, timeout_s=2.0, retries=0) as c:
                        c.ping()
                    say(f"daemon ready in {time.monotonic() - started:.1f} s (pid {self.proc.pid})")
                    return
                except DynofaError:
                    pass
            time.sleep(0.1)
        raise DemoError(f"the daemon did not start within {timeout_s:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


class Contention:
    """Busy-loop processes on every CPU (other processes from the daemon's point of view)."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, n: int) -> None:
        for _ in range(n):
            self.procs.append(subprocess.Popen([sys.executable, "-c", "while True: pass"]))

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs.clear()


class App(threading.Thread):
    """Classifies digits at ``fps`` through the daemon; records every inference."""

    def __init__(self, endpoint: str, images: Any, labels: Any, fps: float) -> None:
        super().__init__(name="demo-app", daemon=True)
        self.endpoint = endpoint
        self.images = images
        self.labels = labels
        self.period = 1.0 / fps
        self.phase: PhaseStats | None = None
        self.stop_event = threading.Event()
        self.error: str | None = None
        self.t0 = time.monotonic()

    def run(self) -> None:
        from dynofa.client import Client

        i = 0
        with Client(self.endpoint, timeout_s=10.0, retries=1) as client:
            next_frame = time.monotonic()
            while not self.stop_event.is_set():
                phase = self.phase
                k = i % len(self.images)
                try:
                    reply = client.infer(APP, self.images[k : k + 1])
                except DynofaError as exc:
                    self.error = str(exc)
                    return
                if phase is not None:
                    phase.samples.append(Sample(
                        t=time.monotonic() - self.t0, phase=phase.name, subnet=reply.subnet,
                        latency_ms=reply.latency_ms, budget_ms=phase.budget_ms,
                        correct=int(reply.output.argmax()) == int(self.labels[k]),
                    ))  # fmt: skip
                i += 1
                next_frame += self.period
                delay = next_frame - time.monotonic()
                if delay > 0:
                    self.stop_event.wait(delay)
                else:
                    next_frame = time.monotonic()  # running late: do not try to catch up


def _calibrate(client: Any, images: Any, subnet: str, fps: float, n: int = 20) -> float:
    """Median forward latency of ``subnet`` here, paced like the app (idle gaps cool caches and clocks)."""
    times = []
    for i in range(n):
        started = time.monotonic()
        times.append(client.infer(APP, images[i % len(images)][None], subnet=subnet).latency_ms)
        time.sleep(max(0.0, 1.0 / fps - (time.monotonic() - started)))
    return statistics.median(times[3:])


def _live_line(state: dict[str, Any], phase: PhaseStats, t: float) -> str:
    app = (state.get("apps") or {}).get(APP) or {}
    point = app.get("operating_point") or {}
    lat = (app.get("latency_ms") or {}).get("median")
    recent = phase.samples[-20:]
    hits = [s.latency_ms <= s.budget_ms for s in recent if s.budget_ms is not None]
    pes = state.get("pes") or {}
    pe = pes.get(point.get("pe", ""), {})
    load = pe.get("load_others")
    freq = pe.get("freq_khz")
    acc = app.get("accuracy")
    hit_rate = "-" if not hits else f"{100 * sum(hits) / len(hits):3.0f}%"
    return (
        f"{t:5.1f}s  {phase.name:<11} budget {phase.budget_ms or 0:6.2f} ms  "
        f"p50 {'-' if lat is None else f'{lat:6.2f}'} ms  hits {hit_rate}"
        f"  subnet {point.get('subnet', '-')} (acc {'-' if acc is None else f'{acc:.3f}'})"
        f"  {point.get('pe', '-')}"
        f"{'' if freq is None else f' {freq / 1000:.0f} MHz'}"
        f"  others' load {'-' if load is None else f'{100 * load:.0f}%'}"
    )


def _demo(args: argparse.Namespace) -> int:
    out = sys.stderr if args.json else sys.stdout

    def say(text: str) -> None:
        print(text, file=out, flush=True)

    catalog_path = Path(args.catalog) if args.catalog else _default_catalog()
    from dynofa.catalog import load_catalog

    catalog = load_catalog(catalog_path)
    accuracy_of = {e.id: (e.accuracy.top1 if e.accuracy else None) for e in catalog.entries}
    say(f"dynofa demo: {len(catalog)} subnets of {catalog.family.get('name')} from {catalog_path}")
    workdir = Path(tempfile.mkdtemp(prefix="dynofa-demo-"))
    daemon = DemoDaemon(workdir, catalog_path, args.policy)
    contention = Contention()
    app: App | None = None
    try:
        say("starting the daemon on this machine's platform ...")
        daemon.start(timeout_s=90.0, say=say)
        from dynofa.client import Client

        images, labels = _digits(max(e.resolution for e in catalog.entries))
        with Client(daemon.endpoint, timeout_s=10.0) as client:
            client.register(APP)
            best = max(catalog.entries, key=lambda e: (accuracy_of[e.id] or 0.0, e.macs)).id
            fastest = min(catalog.entries, key=lambda e: e.macs).id
            l_best = _calibrate(client, images, best, args.fps)
            l_fast = _calibrate(client, images, fastest, args.fps)
            say(f"measured here: most accurate subnet {best} {l_best:.2f} ms, fastest {fastest} {l_fast:.2f} ms")
            phases = [
                PhaseStats("idle", round(max(1.3 * l_best, l_fast * 1.5), 3)),
                PhaseStats("contention", None),
                PhaseStats("tight", round(max(l_fast * 1.15, (l_fast + l_best) / 2), 3)),
            ]
            phases[1].budget_ms = phases[0].budget_ms
            app = App(daemon.endpoint, images, labels, args.fps)
            say(f"app {APP}: digits at {args.fps:g} fps; phases of {args.phase_seconds:g} s\n")
            app.start()
            marks: list[tuple[float, str]] = []
            for phase in phases:
                assert phase.budget_ms is not None
                marks.append((time.time(), phase.name))
                client.set_budget(APP, latency_ms=phase.budget_ms)
                if phase.name == "contention":
                    n = os.cpu_count() or 1
                    contention.start(n)
                    say(f"-- adding CPU contention: {n} busy-loop process(es)")
                elif phase.name == "tight":
                    contention.stop()
                    say(f"-- contention removed; budget tightened to {phase.budget_ms:.2f} ms")
                else:
                    say(f"-- budget {phase.budget_ms:.2f} ms")
                app.phase = phase
                end = time.monotonic() + args.phase_seconds
                while time.monotonic() < end:
                    time.sleep(min(0.5, max(0.0, end - time.monotonic())))
                    say(_live_line(client.state(), phase, time.monotonic() - app.t0))
                    if app.error:
                        raise DemoError(f"the app lost the daemon: {app.error}")
            app.stop_event.set()
            app.join(15)
            time.sleep(0.3)  # one more trace record
        contention.stop()
        summaries = [p.summary(accuracy_of) for p in phases]
        every = [s for p in phases for s in p.samples]
        overall = PhaseStats("overall", None, every).summary(accuracy_of)
        overall["hit_rate"] = _overall_hits(phases)
        plot = _plot(daemon.trace, Path(args.output), marks)
        result = {"catalog": str(catalog_path), "phases": summaries, "overall": overall, "plot": str(plot)}
        if args.json:
            json.dump(result, sys.stdout, indent=2)
            sys.stdout.write("\n")
        else:
            say("\n" + _summary_table(summaries + [overall]))
            say(f"timeline plot: {plot}")
            say("next: `dynofa serve` runs the daemon for real; `dynofa status` and `dynofa top` show it live.")
        return 0
    finally:
        if app is not None:
            app.stop_event.set()
        contention.stop()
        daemon.stop()
        if args.keep:
            say(f"kept {workdir} (config, daemon.log, trace.jsonl)")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def _overall_hits(phases: list[PhaseStats]) -> float | None:
    hits = [s.latency_ms <= s.budget_ms for p in phases for s in p.samples if s.budget_ms is not None]
    return sum(hits) / len(hits) if hits else None


def _digits(resolution: int) -> tuple[Any, Any]:
    from subnets.offline.datasets import digits_dataset

    data = digits_dataset("test", resolution=resolution)
    return data.x, data.y


def _plot(trace: Path, output: Path, marks: list[tuple[float, str]]) -> Path:
    from cli.commands.plot import plot_timeline, read_trace

    title = "dynofa demo: budget, CPU contention, tighter budget"
    return plot_timeline(read_trace(trace), output, title=title, marks=marks)


def _summary_table(rows: list[dict[str, Any]]) -> str:
    from cli.commands.status import table

    def pct(v: Any) -> str:
        return "-" if v is None else f"{100 * v:.1f}%"

    body = [
        [
            r["phase"], "-" if r["budget_ms"] is None else f"{r['budget_ms']:.2f}", str(r["inferences"]),
            "-" if r["latency_ms_p50"] is None else f"{r['latency_ms_p50']:.2f}", pct(r["hit_rate"]),
            pct(r["accuracy_measured"]), pct(r["accuracy_catalog"]), str(r["switches"]),
        ]  # fmt: skip
        for r in rows
    ]
    return table(
        ["PHASE", "BUDGET ms", "RUNS", "LATENCY p50 ms", "HIT RATE", "ACCURACY (labels)", "ACCURACY (catalog)",
         "SWITCHES"], body)  # fmt: skip
