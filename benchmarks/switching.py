"""Subnet switching on CPU: weight-shared pool vs stock OFA extraction vs Dynamic-OFA-style restart.

    python -m benchmarks.switching [--k 10] [--switches 1000] [--first 200] [--seed 0]

Prints one JSON object. Everything is measured in the same run with one intra-op thread, so
the ratios hold on a noisy shared machine even when absolute times drift:

Switches and first inferences go through a :class:`~subnets.pool.SubnetHandle`, the path production
takes: the daemon's decision swaps an app's handle (``ModelRuntime.select``) and its inferences read it
(``ModelRuntime.infer``); an embedded app (``subnets.embedded``) swaps and reads its own handle.

* ``switch_overhead_ms_p50/p99``: wall time of ``SubnetHandle.switch`` between random pairs of the K subnets;
* ``first_inference_excess_ms_median``: first inference after a switch minus that subnet's
  steady-state median, the steady state measured interleaved with the switches (``_cpu_``: the same
  in thread CPU time, which other processes' load does not inflate; ``_paired_``: minus the median
  of the inferences right after it);
* ``extract_switch_ms_median``: the switch done by stock ``get_active_subnet(preserve_weight=True)``;
* ``restart_switch_ms_median``: the switch done as the public Dynamic-OFA code does it, a new
  Python process that loads the supernet weights from disk, extracts the subnet and runs the first
  inference (timed from spawn to exit);
* ``cache_*``: a pool whose memory budget holds only a few materialisations (SUSHI-style cache):
  switch overhead, hits/misses over random switches, first inference on a hit vs on a miss (served
  at once by dynamic slicing while the materialisation is built in the background);
* ``resident_tensor_bytes_ratio``: tensor bytes of the pool with K resident / the supernet alone;
* ``latency_ratio_vs_extracted_median``: median over the K of pool latency / stock extracted
  (eager) latency, interleaved; ``latency_ratio_dynamic_vs_extracted_median`` is the same for
  dynamic slicing of the supernet, and ``fold_bn_*`` for a pool that folds BN into private weight
  copies (``optimize="fold-bn"``: faster, more memory), for context.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from subnets.family import SubnetSpec
from subnets.ofa_family import OFAMobileNetV3Family
from subnets.pool import SubnetPool

RESTART_SCRIPT = r"""
import json, sys, time
import torch
torch.set_num_threads(1)
from subnets.ofa_compat import install
install()
from ofa.imagenet_classification.elastic_nn.networks import OFAMobileNetV3
args = json.loads(sys.argv[1])
net = OFAMobileNetV3(n_classes=1000, dropout_rate=0.1, width_mult=1.0, ks_list=[3, 5, 7],
                     expand_ratio_list=[3, 4, 6], depth_list=[2, 3, 4])
net.load_state_dict(torch.load(args["weights"], map_location="cpu", weights_only=True)["state_dict"])
net.set_active_subnet(**args["config"])
subnet = net.get_active_subnet(preserve_weight=True).eval()
with torch.inference_mode():
    subnet(torch.zeros(1, 3, args["resolution"], args["resolution"]))
"""


def _ms(ns: int) -> float:
    return ns / 1e6


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter_ns()
    fn()
    return _ms(time.perf_counter_ns() - start)


def measure_switch_overhead(pool: SubnetPool, switches: int, rng: random.Random) -> list[float]:
    handle = pool.handle()  # what the daemon holds per app, and an embedded app for itself
    times = []
    for _ in range(switches):
        target = rng.choice([sid for sid in pool.ids if sid != handle.active])
        start = time.perf_counter_ns()
        handle.switch(target)
        times.append(_ms(time.perf_counter_ns() - start))
    return times


def _timed_both(fn: Callable[[], Any]) -> tuple[float, float]:
    """(wall ms, this thread's CPU ms): with one intra-op thread the CPU time excludes the time the
    scheduler gave to other processes, so it is far less noisy on a shared machine."""
    wall, cpu = time.perf_counter_ns(), time.thread_time_ns()
    fn()
    return _ms(time.perf_counter_ns() - wall), _ms(time.thread_time_ns() - cpu)


def measure_first_inference(
    pool: SubnetPool, inputs: dict[str, torch.Tensor], switches: int, steady_per_switch: int, rng: random.Random
) -> dict[str, Any]:
    """First inference after each switch, and the steady state of each subnet measured interleaved."""
    handle = pool.handle()  # what the daemon holds per app, and an embedded app for itself
    first: list[tuple[str, tuple[float, float]]] = []
    steady: dict[str, list[tuple[float, float]]] = {sid: [] for sid in pool.ids}
    paired: list[float] = []
    for _ in range(switches):
        target = rng.choice([sid for sid in pool.ids if sid != handle.active])
        x = inputs[target]
        handle.switch(target)
        t_first = _timed_both(lambda x=x: handle.infer(x, resize=True))  # type: ignore[misc]
        first.append((target, t_first))
        steady_call = lambda x=x: handle.infer(x, resize=True)  # type: ignore[misc]  # noqa: E731
        after = [_timed_both(steady_call) for _ in range(steady_per_switch)]
        steady[target].extend(after)
        if after:
            paired.append(t_first[0] - statistics.median(t for t, _ in after))
    wall_med = {sid: statistics.median(t for t, _ in v) for sid, v in steady.items() if v}
    cpu_med = {sid: statistics.median(c for _, c in v) for sid, v in steady.items() if v}
    return {
        "excess": [t - wall_med[sid] for sid, (t, _) in first if sid in wall_med],
        "excess_cpu": [c - cpu_med[sid] for sid, (_, c) in first if sid in cpu_med],
        "excess_paired": paired,
        "steady_median_ms": wall_med,
        "first_median_ms": statistics.median(t for _, (t, _) in first),
    }


def measure_latency_ratios(
    pool: SubnetPool,
    folded: SubnetPool,
    family: OFAMobileNetV3Family,
    specs: dict[str, SubnetSpec],
    inputs: dict[str, torch.Tensor],
    rounds: int,
    rng: random.Random,
) -> dict[str, Any]:
    extracted = {sid: family.extract(spec) for sid, spec in specs.items()}
    pool_t: dict[str, list[float]] = {sid: [] for sid in specs}
    fold_t: dict[str, list[float]] = {sid: [] for sid in specs}
    ext_t: dict[str, list[float]] = {sid: [] for sid in specs}
    dyn_t: dict[str, list[float]] = {sid: [] for sid in specs}
    pool_cpu: dict[str, list[float]] = {sid: [] for sid in specs}
    ext_cpu: dict[str, list[float]] = {sid: [] for sid in specs}
    with torch.inference_mode():
        for sid in specs:  # warm-up of every path and shape
            extracted[sid](inputs[sid])
            family.forward_dynamic(specs[sid], inputs[sid])
        for _ in range(rounds):
            order = list(specs)
            rng.shuffle(order)
            for sid in order:
                x, spec, ext = inputs[sid], specs[sid], extracted[sid]
                runs = [
                    (pool_t, pool_cpu, lambda x=x, sid=sid: pool.infer(x, subnet=sid)),
                    (fold_t, None, lambda x=x, sid=sid: folded.infer(x, subnet=sid)),
                    (ext_t, ext_cpu, lambda x=x, ext=ext: ext(x)),
                    (dyn_t, None, lambda x=x, spec=spec: family.forward_dynamic(spec, x)),
                ]
                rng.shuffle(runs)
                for store, cpu_store, fn in runs:
                    wall, cpu = _timed_both(fn)
                    store[sid].append(wall)
                    if cpu_store is not None:
                        cpu_store[sid].append(cpu)
    med = {
        name: {sid: statistics.median(v) for sid, v in t.items()}
        for name, t in (("pool", pool_t), ("pool_fold_bn", fold_t), ("extracted", ext_t), ("dynamic", dyn_t))
    }
    return {
        "pool_vs_extracted": {sid: med["pool"][sid] / med["extracted"][sid] for sid in specs},
        "folded_vs_extracted": {sid: med["pool_fold_bn"][sid] / med["extracted"][sid] for sid in specs},
        "dynamic_vs_extracted": {sid: med["dynamic"][sid] / med["extracted"][sid] for sid in specs},
        "pool_vs_extracted_cpu": {
            sid: statistics.median(pool_cpu[sid]) / statistics.median(ext_cpu[sid]) for sid in specs
        },
        "median_ms": med,
    }


def measure_cache_mode(
    family: OFAMobileNetV3Family,
    specs: dict[str, SubnetSpec],
    inputs: dict[str, torch.Tensor],
    switches: int,
    resident: int,
    rng: random.Random,
) -> dict[str, Any]:
    """A pool whose budget holds only ``resident`` materialisations: switches between random subnets
    (no locality: the cache's worst case), first inference after each, hit or miss."""
    first_ids = list(specs)[:resident]
    with SubnetPool(family, {sid: specs[sid] for sid in first_ids}, optimize="none") as sizing:
        budget = sizing.memory()["total_bytes"]
    pool = SubnetPool(family, specs, memory_budget_bytes=budget, optimize="none")
    handle = pool.handle()
    switch_ms: list[float] = []
    hit_first: list[float] = []
    miss_first: list[float] = []
    for _ in range(switches):
        target = rng.choice([sid for sid in pool.ids if sid != handle.active])
        misses = pool.cache_stats()["misses"]
        start = time.perf_counter_ns()
        handle.switch(target)
        switch_ms.append(_ms(time.perf_counter_ns() - start))
        missed = pool.cache_stats()["misses"] > misses
        x = inputs[target]
        (miss_first if missed else hit_first).append(_timed(lambda x=x: handle.infer(x, resize=True)))  # type: ignore[misc]
        handle.infer(x, resize=True)
    pool.wait_idle()
    stats = pool.cache_stats()
    ratio = pool.memory()["ratio_to_supernet"]
    pool.close()
    return {
        "cache_budget_bytes": budget,
        "cache_resident_tensor_bytes_ratio": ratio,
        "cache_switch_overhead_ms_p99": _percentile(switch_ms, 99),
        "cache_hits": stats["hits"],
        "cache_misses": stats["misses"],
        "cache_evictions": stats["evictions"],
        "cache_hit_first_inference_ms_median": statistics.median(hit_first) if hit_first else None,
        "cache_miss_first_inference_ms_median": statistics.median(miss_first) if miss_first else None,
        "cache_build_ms_median": stats["build_ms_median"],
    }


def measure_extract_switch(family: OFAMobileNetV3Family, specs: list[SubnetSpec], switches: int) -> list[float]:
    return [_timed(lambda spec=spec: family.extract(spec)) for spec in (specs * switches)[:switches]]  # type: ignore[misc]


def measure_restart_switch(
    family: OFAMobileNetV3Family, specs: list[SubnetSpec], repetitions: int, workdir: Path
) -> list[float]:
    weights = workdir / "ofa_mbv3_supernet.pth"
    torch.save({"state_dict": family.supernet().state_dict()}, weights)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    times = []
    for spec in (specs * repetitions)[:repetitions]:
        args = json.dumps({"weights": str(weights), "config": dict(spec.config), "resolution": spec.resolution})
        start = time.perf_counter_ns()
        subprocess.run([sys.executable, "-c", RESTART_SCRIPT, args], check=True, env=env, cwd=root)
        times.append(_ms(time.perf_counter_ns() - start))
    return times


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    rng = random.Random(args.seed)
    resolutions = args.resolutions or None
    extra = {"resolutions": resolutions} if resolutions else {}
    family = OFAMobileNetV3Family(width_mult=1.0, seed=args.seed, **extra)
    specs = {s.short_id(family.id_prefix): s for s in family.sample_many(args.k, rng)}
    inputs = {
        sid: torch.randn(family.input_shape(spec), generator=torch.Generator().manual_seed(i))
        for i, (sid, spec) in enumerate(specs.items())
    }

    build_start = time.perf_counter()
    pool = SubnetPool(family, specs, optimize="none")  # the memory-minimal layout (the default without a budget)
    pool_build_s = time.perf_counter() - build_start
    memory = pool.memory()
    folded = SubnetPool(family, specs, optimize="fold-bn")  # the optional optimisation, for context

    switch = measure_switch_overhead(pool, args.switches, rng)
    first = measure_first_inference(pool, inputs, args.first, args.steady, rng)
    ratios = measure_latency_ratios(pool, folded, family, specs, inputs, args.rounds, rng)
    cache = measure_cache_mode(family, specs, inputs, args.cache_switches, args.cache_resident, rng)
    extract = measure_extract_switch(family, list(specs.values()), args.extract)
    with tempfile.TemporaryDirectory() as tmp:
        restart = measure_restart_switch(family, list(specs.values()), args.restarts, Path(tmp))
    pool.close()
    folded_memory = folded.memory()
    folded.close()

    pool_ratio = list(ratios["pool_vs_extracted"].values())
    dyn_ratio = list(ratios["dynamic_vs_extracted"].values())
    return {
        "benchmark": "switching",
        "family": family.name,
        "k": args.k,
        "resolutions": sorted({s.resolution for s in specs.values()}),
        "threads": torch.get_num_threads(),
        "device": "cpu",
        "switch_overhead_ms_p50": _percentile(switch, 50),
        "switch_overhead_ms_p99": _percentile(switch, 99),
        "switch_overhead_ms_max": max(switch),
        "switches": len(switch),
        "first_inference_excess_ms_median": statistics.median(first["excess"]),
        "first_inference_excess_ms_p90": _percentile(first["excess"], 90),
        "first_inference_excess_cpu_ms_median": statistics.median(first["excess_cpu"]),
        "first_inference_excess_paired_ms_median": statistics.median(first["excess_paired"]),
        "first_inference_switches": len(first["excess"]),
        "first_inference_ms_median": first["first_median_ms"],
        "extract_switch_ms_median": statistics.median(extract),
        "extract_switches": len(extract),
        "restart_switch_ms_median": statistics.median(restart),
        "restart_repetitions": len(restart),
        "resident_tensor_bytes_ratio": memory["ratio_to_supernet"],
        "supernet_tensor_bytes": memory["supernet_bytes"],
        "private_tensor_bytes": memory["private_bytes"],
        "latency_ratio_vs_extracted_median": statistics.median(pool_ratio),
        "latency_ratio_vs_extracted_max": max(pool_ratio),
        "latency_ratio_vs_extracted_cpu_median": statistics.median(ratios["pool_vs_extracted_cpu"].values()),
        "latency_ratio_dynamic_vs_extracted_median": statistics.median(dyn_ratio),
        "fold_bn_latency_ratio_vs_extracted_median": statistics.median(ratios["folded_vs_extracted"].values()),
        "fold_bn_resident_tensor_bytes_ratio": folded_memory["ratio_to_supernet"],
        "latency_ms_median": {name: statistics.median(v.values()) for name, v in ratios["median_ms"].items()},
        **cache,
        "latency_rounds": args.rounds,
        "pool_build_s": pool_build_s,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "seed": args.seed,
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--k", type=int, default=10, help="subnets in the pool (default 10)")
    parser.add_argument("--switches", type=int, default=2000, help="switches timed for the overhead (>= 1000)")
    parser.add_argument("--first", type=int, default=200, help="switches timed for the first inference (>= 200)")
    parser.add_argument("--steady", type=int, default=2, help="steady-state inferences after each of those")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds for the latency ratio")
    parser.add_argument("--cache-switches", type=int, default=100, help="switches timed in the budgeted pool")
    parser.add_argument("--cache-resident", type=int, default=3, help="materialisations the budget holds")
    parser.add_argument("--extract", type=int, default=20, help="stock extractions timed")
    parser.add_argument("--restarts", type=int, default=3, help="process restarts timed")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--resolutions", type=int, nargs="*", help="resolutions to sample from (default: family's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.k < 2:
        parser.error("--k must be at least 2 (switches go between two different subnets)")
    print(json.dumps(run(args), indent=1))


if __name__ == "__main__":
    main()
