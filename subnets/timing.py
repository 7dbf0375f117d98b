"""Latency measurement of inference modules, and the provenance of a measurement.

Two clocks: ``wall`` (``time.perf_counter``, what a request waits on an otherwise idle machine)
and ``thread`` (``time.thread_time``, the CPU time of the measuring thread). With one torch thread
on the CPU the two agree on an idle machine, but on a shared one the wall clock also counts the
time other processes hold the core, which is noise for a catalog; the thread clock leaves it out.
The thread clock is CPU-only (CUDA kernels run asynchronously on the device).

Used by the offline catalog builder and by the daemon at start-up (:mod:`subnets.reprofile`).

Figures are batch-1 medians of repeated runs after a warm-up, under ``torch.inference_mode``,
with the thread count recorded (and restored afterwards, since it is process-global). On CUDA
every run is bracketed by ``torch.cuda.synchronize`` so that the wall time covers the kernels.

One definition of an inference's latency, :func:`timed_forward`: the daemon's pool reports each
served forward's latency with it (``SubnetPool._run``), and every figure timed here comes from it
too, so that a catalog figure and the latency the daemon compares with it cover the same span.
The daemon's figures are re-timed the way requests are served (:data:`SERVED_IDLE_S`).
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import socket
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from dynofa.errors import CatalogBuildError

if TYPE_CHECKING:
    from torch import nn

T = TypeVar("T")


@dataclass(frozen=True)
class ForwardTime:
    """How long one forward took (milliseconds): wall clock, and CPU time of the calling thread."""

    wall_ms: float
    cpu_ms: float

    def on(self, clock: str) -> float:
        """The figure on ``clock`` (see :data:`CLOCKS`)."""
        if clock not in CLOCKS:
            raise ValueError(f"clock must be one of {', '.join(CLOCKS)}, got {clock!r}")
        return self.cpu_ms if clock == "thread" else self.wall_ms


def timed_forward(run: Callable[[], T], device: Any = "cpu") -> tuple[T, ForwardTime]:
    """``run()`` (one forward) timed as dynofa defines an inference's latency.

    The span is the forward alone, under ``torch.inference_mode``, up to its last CUDA kernel: the
    input is already a float tensor on the device at the subnet's resolution, and the output is
    not copied back. What the daemon reports per inference (``latency_ms``), what it judges a
    prediction by, and every catalog figure are this span, measured by this function.
    """
    import torch

    is_cuda = torch.device(device).type == "cuda"
    if is_cuda:  # earlier work queued on the device is not this forward's
        torch.cuda.synchronize(device)
    cpu, start = time.thread_time(), time.perf_counter()
    with torch.inference_mode():
        out = run()
    if is_cuda:
        torch.cuda.synchronize(device)
    wall = time.perf_counter() - start
    return out, ForwardTime(wall_ms=wall * 1e3, cpu_ms=(time.thread_time() - cpu) * 1e3)


#: A timed callable: one forward of its input, returning how long it took (:func:`timed_forward`).
Timed = Callable[[Any], ForwardTime]


def timed_module(module: Callable[[Any], Any], device: Any = "cpu") -> Timed:
    """``module`` as a :data:`Timed` callable: each call one :func:`timed_forward` of its input."""
    return lambda x: timed_forward(lambda: module(x), device)[1]


#: how long the thread that times a figure for the daemon blocks before each timed run. A served
#: forward starts when a request arrives, after its worker waited for it on a socket, never right after
#: the previous forward; on a machine whose cores slow down while idle (deep C-states, a VM's halted
#: vCPU, caches refilled by whatever ran meanwhile) the first milliseconds after a wait run slower.
#: Measured here (2-core VM, tiny catalog's largest subnet, batch 1): 2.30 ms back to back, 2.53 ms
#: after 1.5 ms idle, 3.36 ms after 5 ms; the test app's requests arrive ~1.4 ms after the previous
#: forward ended. Figures timed back to back read 1.2-1.3x low against served inferences.
SERVED_IDLE_S = 0.002


@dataclass(frozen=True)
class LatencyRecord:
    """Repeated timings of one module on one device (milliseconds)."""

    median_ms: float
    p90_ms: float
    samples: list[float] = field(default_factory=list)
    threads: int = 1
    device: str = "cpu"
    input_shape: tuple[int, ...] = ()
    warmup: int = 0
    clock: str = "wall"

    @property
    def repeats(self) -> int:
        return len(self.samples)

    def to_dict(self) -> dict[str, Any]:
        return {
            "median_ms": self.median_ms,
            "p90_ms": self.p90_ms,
            "samples": list(self.samples),
            "threads": self.threads,
            "device": self.device,
            "input_shape": list(self.input_shape),
            "warmup": self.warmup,
            "clock": self.clock,
        }


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile, ``q`` in [0, 100]."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def measure_latency(
    module: nn.Module,
    input_shape: Sequence[int],
    device: str = "cpu",
    warmup: int = 3,
    repeats: int = 10,
    threads: int | None = None,
) -> LatencyRecord:
    """Time ``module`` on a random input of ``input_shape``.

    ``threads`` sets ``torch.set_num_threads`` for the measurement (the previous value is
    restored); None keeps the current setting. The module is moved to ``device`` by the caller.
    """
    import torch

    _check_timing_args(device, repeats, threads, warmup)
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        used = torch.get_num_threads()
        x = torch.randn(*input_shape, device=device)
        samples: list[float] = []
        for i in range(warmup + repeats):
            _, took = timed_forward(lambda: module(x), device)
            if i >= warmup:
                samples.append(took.wall_ms)
    finally:
        torch.set_num_threads(previous)
    return LatencyRecord(
        median_ms=statistics.median(samples),
        p90_ms=percentile(samples, 90),
        samples=samples,
        threads=used,
        device=str(device),
        input_shape=tuple(int(d) for d in input_shape),
        warmup=warmup,
    )


def cpu_model(cpuinfo: str | os.PathLike[str] = "/proc/cpuinfo") -> str:
    """The CPU's model name (x86 ``model name``; ARM ``Hardware``/``Model``/CPU part), or platform's guess."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and value.strip():
            fields.setdefault(key.strip().lower(), value.strip())
    for key in ("model name", "hardware", "model", "cpu model", "processor"):
        value = fields.get(key, "")
        if value and not value.isdigit():
            return value
    if "cpu part" in fields:
        return f"{fields.get('cpu implementer', '?')}/{fields['cpu part']}"
    return platform.processor() or platform.machine() or "unknown"


def device_name(device: str) -> str:
    """Human-readable name of a torch device: the CPU model, or the CUDA device's name."""
    if str(device).startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            return str(torch.cuda.get_device_name(torch.device(device)))
        return "cuda (unavailable)"
    return cpu_model()


def provenance(device: str = "cpu", threads: int | None = None) -> dict[str, Any]:
    """Where and with what a measurement was taken: host, CPU model, versions, date, threads."""
    import torch

    from dynofa import __version__

    return {
        "host": socket.gethostname(),
        "cpu_model": cpu_model(),
        "device": device_name(device),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "dynofa": __version__,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "threads": torch.get_num_threads() if threads is None else threads,
    }


def measure_interleaved(
    modules: Mapping[str, tuple[nn.Module, Sequence[int]]],
    device: str = "cpu",
    warmup: int = 3,
    repeats: int = 10,
    threads: int | None = None,
    seed: int = 0,
    clock: str = "wall",
    idle_s: float = 0.0,
) -> dict[str, LatencyRecord]:
    """Time several modules in interleaved rounds: one run of each (in shuffled order) per round.

    On a shared machine the load drifts over seconds; timing subnet after subnet would charge that
    drift to whichever subnet ran at the time. Interleaving spreads it evenly, so that the ratios
    between subnets (what a regression and a policy rely on) stay right. Each run is timed by
    :func:`timed_forward` (see :func:`measure_timed`).
    """
    timed = {name: (timed_module(m, device), shape) for name, (m, shape) in modules.items()}
    return measure_timed(timed, device, warmup, repeats, threads, seed, clock, idle_s)


def measure_timed(
    runs: Mapping[str, tuple[Timed, Sequence[int]]],
    device: str = "cpu",
    warmup: int = 3,
    repeats: int = 10,
    threads: int | None = None,
    seed: int = 0,
    clock: str = "wall",
    idle_s: float = 0.0,
) -> dict[str, LatencyRecord]:
    """Interleaved rounds of timed callables (:data:`Timed`), each sample the time the callable reports.

    ``idle_s``: the thread blocks this long before every run (:data:`SERVED_IDLE_S` for the daemon's
    figures, 0 for back-to-back runs).
    """
    import random

    import torch

    _check_timing_args(device, repeats, threads, warmup)
    _check_clock(clock, str(device).startswith("cuda"))
    if idle_s < 0:
        raise ValueError(f"idle_s must be >= 0, got {idle_s}")
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    samples: dict[str, list[float]] = {name: [] for name in runs}
    order = list(runs)
    rng = random.Random(seed)
    try:
        used = torch.get_num_threads()
        if clock == "thread" and used != 1:
            raise ValueError(f"the thread clock needs one torch thread (it sees only the measuring thread), got {used}")
        inputs = {name: torch.randn(*shape, device=device) for name, (_, shape) in runs.items()}
        for round_no in range(warmup + repeats):
            rng.shuffle(order)
            for name in order:
                if idle_s:
                    _idle(idle_s)
                took = runs[name][0](inputs[name])
                if round_no >= warmup:
                    samples[name].append(took.on(clock))
    finally:
        torch.set_num_threads(previous)
    return {
        name: LatencyRecord(
            median_ms=statistics.median(values),
            p90_ms=percentile(values, 90),
            samples=values,
            threads=used,
            device=str(device),
            input_shape=tuple(int(d) for d in runs[name][1]),
            warmup=warmup,
            clock=clock,
        )
        for name, values in samples.items()
    }


def _idle(seconds: float) -> None:
    """Block the thread as a worker waiting for a request does (a module function: tests count the waits)."""
    time.sleep(seconds)


#: the latency figure of a catalog build and of ``benchmarks.catalog_regression``: this percentile of
#: every interleaved run. Interference (other jobs, cache and TLB thrashing, a descheduled vCPU) only
#: ever adds time, and on a shared machine whole passes run slower than others: a median of runs (or of
#: pass figures) follows the load, a low percentile of all runs pooled follows the subnet. Measured here
#: (2 cores, load ~5, thread clock, 60 demo subnets): two halves of the passes agree to 2.6 % with the
#: pooled 10th percentile, 11 % with the pooled median and 12 % with the median of per-pass 25th percentiles.
FIGURE_PERCENTILE = 10.0


@dataclass(frozen=True)
class TimedFigure:
    """One module's latency figure from several passes of interleaved rounds (milliseconds)."""

    ms: float  # FIGURE_PERCENTILE of every run of every pass
    passes: tuple[tuple[float, ...], ...]
    threads: int = 1
    clock: str = "wall"

    @property
    def samples(self) -> list[float]:
        return [v for run in self.passes for v in run]

    @property
    def median_ms(self) -> float:
        """The median of every run: the typical latency, where ``ms`` is a near-best case."""
        return statistics.median(self.samples)

    @property
    def repeatability(self) -> float:
        """How far the figure moves between two halves of the measurement: ``|a - b| / mean(a, b)``.

        The halves are the even and odd passes (or, with one pass, the even and odd rounds): no
        model can predict a figure more closely than it repeats. NaN with a single run.
        """
        halves = (self.passes[0::2], self.passes[1::2]) if len(self.passes) > 1 else (
            (self.passes[0][0::2],), (self.passes[0][1::2],))
        pooled = [[v for run in half for v in run] for half in halves]
        if not all(pooled):
            return float("nan")
        a, b = (percentile(values, FIGURE_PERCENTILE) for values in pooled)
        return abs(a - b) / ((a + b) / 2.0)


def measure_figures(
    modules: Mapping[str, tuple[nn.Module, Sequence[int]]],
    device: str = "cpu",
    warmup: int = 3,
    repeats: int = 10,
    passes: int = 1,
    threads: int | None = None,
    clock: str = "wall",
    seed: int = 0,
) -> dict[str, TimedFigure]:
    """:func:`measure_interleaved` ``passes`` times (each its own warm-up and shuffles); every
    module's figure is :data:`FIGURE_PERCENTILE` of all its runs pooled."""
    if passes < 1:
        raise ValueError(f"passes must be >= 1, got {passes}")
    runs: dict[str, list[tuple[float, ...]]] = {name: [] for name in modules}
    used = 1
    for p in range(passes):
        for name, rec in measure_interleaved(modules, device, warmup, repeats, threads, seed + p, clock).items():
            runs[name].append(tuple(rec.samples))
            used = rec.threads
    return {
        name: TimedFigure(percentile([v for run in r for v in run], FIGURE_PERCENTILE), tuple(r), used, clock)
        for name, r in runs.items()
    }


def cpu_freq_khz(cpus: Sequence[int] | None = None, root: str | os.PathLike[str] = "/") -> int | None:
    """Current frequency (kHz) of the given CPUs (all when None): the highest reading, or None.

    Read right after a measurement, it says which frequency a latency figure was taken at, so
    that a policy can scale it to other frequencies. None where cpufreq is not exposed.
    """
    base = Path(root) / "sys" / "devices" / "system" / "cpu"
    if cpus is None:
        cpus = sorted(
            int(p.name[3:]) for p in base.glob("cpu[0-9]*") if p.name[3:].isdigit()
        ) if base.is_dir() else []
    readings = []
    for cpu in cpus:
        try:
            text = (base / f"cpu{cpu}" / "cpufreq" / "scaling_cur_freq").read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) > 0:
            readings.append(int(text))
    return max(readings) if readings else None


#: the clocks a measurement can be taken with (see the module docstring)
CLOCKS = ("wall", "thread")


def _check_clock(clock: str, is_cuda: bool) -> None:
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {', '.join(CLOCKS)}, got {clock!r}")
    if clock == "thread" and is_cuda:
        raise ValueError("the thread clock measures CPU time; time CUDA inference with the wall clock")


def _check_timing_args(device: str, repeats: int, threads: int | None, warmup: int) -> bool:
    """Validate timing arguments; returns whether ``device`` is a CUDA device."""
    import torch

    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    is_cuda = str(device).startswith("cuda")
    if is_cuda and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but CUDA is not available here")
    return is_cuda


def pe_device(pe: str) -> str:
    """The torch device a processing element runs on: ``gpu`` is CUDA, every CPU cluster is ``cpu``."""
    return "cuda" if pe == "gpu" else "cpu"


def on_device(module: nn.Module, device: str) -> nn.Module:
    """``module`` ready to run on ``device``, leaving the supernet where it is.

    A materialised subnet shares the supernet's tensors, and ``Module.to`` moves shared
    parameters in place, which would drag the supernet to the GPU; a private copy avoids that.
    """
    if device == "cpu":
        return module
    import copy

    return copy.deepcopy(module).to(device)


@contextmanager
def pinned(cpus: Sequence[int] | None) -> Iterator[None]:
    """Pin this thread to ``cpus`` for a measurement (restored afterwards); None or empty: no pinning."""
    if not cpus or not hasattr(os, "sched_setaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, set(cpus))
    except OSError as exc:
        raise CatalogBuildError(f"cannot pin the profiler to CPUs {list(cpus)}: {exc.strerror or exc}") from None
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)

