"""A pool of K weight-shared subnets resident on one processing element.

Switching is a reference swap between two inferences: every subnet is materialised ahead
of time (sharing the supernet's tensors, see ``ModelFamily.materialize``), the pool holds an
immutable *slot* per subnet, and a :class:`SubnetHandle` (one consumer's active subnet) assigns
one slot reference in ``switch``. ``infer`` reads that reference once and runs its whole forward
on it, so a switch that lands mid-inference never produces an output that mixes two subnets.

This is the one switching model of dynofa: the daemon keeps a handle per app and swaps it when
the control loop decides (``service.models``), an embedded app swaps its own handle when the
daemon's decision arrives (``subnets.embedded``), and ``SubnetPool.switch``/``infer`` are the
pool's default handle. ``benchmarks.switching`` measures exactly these calls.

When all K materialisations do not fit ``memory_budget_bytes`` the pool keeps the supernet
(the shared sub-graph) resident and caches materialisations by use (LRU, the SUSHI
"SubGraph Stationary" idea). A switch to an uncached subnet serves at once through dynamic
slicing of the supernet (under the family's lock, since it changes the supernet's active
subnet) while a background thread builds the materialisation off the hot path; the active
slot is swapped to it as soon as it is ready.
"""

from __future__ import annotations

import contextlib
import os
import queue
import sys
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from dynofa.errors import ConfigError, InputError, UnknownSubnetError
from subnets.family import ModelFamily, SubnetSpec
from subnets.graphs import Graph, trace_graph
from subnets.timing import ForwardTime, Timed, timed_forward

__all__ = ["InferenceResult", "SubnetHandle", "SubnetPool", "tensor_bytes", "module_tensors", "OPTIMIZE_MODES"]

#: "none": every subnet shares the supernet's tensors (least memory);
#: "fold-bn": fold BatchNorm into private copies of the conv weights wherever the budget allows (faster);
#: "auto": fold only under an explicit memory budget that holds the folded copies, else "none"
OPTIMIZE_MODES = ("auto", "none", "fold-bn")

#: interpreter thread switch interval while a background materialisation runs (default is 5 ms)
BUILD_SWITCH_INTERVAL_S = 0.0002


@dataclass(frozen=True)
class InferenceResult:
    output: Tensor
    subnet: str  # the id of the subnet that computed ``output``
    timing: ForwardTime  # the forward, as subnets.timing.timed_forward defines an inference's latency

    @property
    def latency_ms(self) -> float:
        """Wall-clock milliseconds of the forward: what the daemon reports and judges predictions by."""
        return self.timing.wall_ms


@dataclass(frozen=True)
class _Slot:
    """What ``active`` points at: immutable, so reading it once gives one consistent subnet."""

    id: str
    spec: SubnetSpec
    module: nn.Module | None  # None: serve by dynamic slicing of the supernet (cache miss)
    graph: Graph | None = None  # the same forward traced (runs without the GIL), for one input shape


@dataclass
class _CacheStats:
    hits: int = 0
    misses: int = 0
    builds: int = 0
    evictions: int = 0
    build_failures: int = 0
    last_error: str | None = None
    build_ms: list[float] = field(default_factory=list)


def module_tensors(module: nn.Module) -> Iterator[tuple[str, Tensor]]:
    """Every tensor a materialised subnet reads (its own ``named_tensors`` or params + buffers)."""
    named = getattr(module, "named_tensors", None)
    if callable(named):
        yield from named()
        return
    yield from module.named_parameters()
    yield from module.named_buffers()


def _storage_key(t: Tensor) -> tuple[int, int]:
    storage = t.untyped_storage()
    return storage.data_ptr(), storage.nbytes()


def tensor_bytes(tensors: Iterable[Tensor]) -> int:
    """Bytes of the distinct storages behind ``tensors`` (views of one storage count once)."""
    seen: dict[int, int] = {}
    for t in tensors:
        ptr, nbytes = _storage_key(t)
        seen[ptr] = max(seen.get(ptr, 0), nbytes)
    return sum(seen.values())


def _supernet_storages(supernet: nn.Module) -> dict[int, int]:
    out: dict[int, int] = {}
    for t in list(supernet.parameters()) + list(supernet.buffers()):
        ptr, nbytes = _storage_key(t)
        out[ptr] = nbytes
    return out


@dataclass(frozen=True)
class _Footprint:
    """Where one materialisation's tensors live."""

    shared_view_bytes: int  # bytes of the views it reads from the supernet's storages
    storages: dict[int, int]  # its other storages: data pointer -> bytes (private, or shared with other subnets)


def _footprint(module: nn.Module, supernet_ptrs: Mapping[int, int]) -> _Footprint:
    shared = 0
    storages: dict[int, int] = {}
    for _, t in module_tensors(module):
        ptr, nbytes = _storage_key(t)
        if ptr in supernet_ptrs:
            shared += t.numel() * t.element_size()
        else:
            storages[ptr] = max(storages.get(ptr, 0), nbytes)
    return _Footprint(shared, storages)


class _Ledger:
    """Tensor bytes held beyond the supernet, by storage, with the subnets that use each one.

    Subnets may share derived tensors (e.g. a transformed kernel used as a leading view by several),
    so a subnet's cost is what it adds to the pool, and evicting it frees only what it alone uses.
    """

    def __init__(self) -> None:
        self._storages: dict[int, tuple[int, set[str]]] = {}
        self.shared_view: dict[str, int] = {}

    def marginal(self, fp: _Footprint) -> int:
        return sum(n for ptr, n in fp.storages.items() if ptr not in self._storages)

    def add(self, sid: str, fp: _Footprint) -> None:
        self.remove(sid)
        for ptr, nbytes in fp.storages.items():
            _, owners = self._storages.setdefault(ptr, (nbytes, set()))
            owners.add(sid)
        self.shared_view[sid] = fp.shared_view_bytes

    def remove(self, sid: str) -> None:
        for ptr in [p for p, (_, owners) in self._storages.items() if sid in owners]:
            owners = self._storages[ptr][1]
            owners.discard(sid)
            if not owners:
                del self._storages[ptr]
        self.shared_view.pop(sid, None)

    def total(self) -> int:
        return sum(n for n, _ in self._storages.values())

    def exclusive(self, sid: str) -> int:
        return sum(n for n, owners in self._storages.values() if owners == {sid})

    def shared_between_subnets(self) -> int:
        return sum(n for n, owners in self._storages.values() if len(owners) > 1)


def _lower_thread_priority(niceness: int = 10) -> None:
    """Make the calling (builder) thread background work for the OS scheduler.

    Otherwise a builder woken by a switch has slept long enough to preempt the switching thread on
    its CPU, and the switch pays a scheduler time slice (several ms on a busy machine).
    """
    with contextlib.suppress(AttributeError, OSError):  # not Linux/BSD, or not permitted: builds still work
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)


def _stop_builder(work: queue.Queue[str | None], worker: threading.Thread) -> None:
    """Stop a builder thread (at close, or at interpreter exit for a pool never closed: a daemon
    thread killed inside a torch op aborts the process)."""
    work.put(None)
    worker.join(timeout=30)


def _claim(family: ModelFamily, pool: SubnetPool) -> None:
    """A supernet lives on one device: refuse a pool on another device while a pool on this one is open."""
    pools: weakref.WeakSet[SubnetPool] = family.__dict__.setdefault("_dynofa_pools", weakref.WeakSet())
    for other in list(pools):
        if not other._closed and other.device != pool.device:
            raise ConfigError(
                f"family {family.name} already serves an open pool on {other.device}; its supernet cannot also "
                f"live on {pool.device}. Build a second family for {pool.device} (SubnetPool.from_catalog does)"
            )
    pools.add(pool)


class SubnetHandle:
    """One consumer's active subnet in a pool (an app of the daemon, an embedded app, the pool itself).

    ``switch`` is the reference swap (one assignment; in cache mode it also counts the use and may
    queue a build); ``infer`` reads the reference once, so a concurrent switch never mixes subnets.
    """

    __slots__ = ("_pool", "_slot", "__weakref__")

    def __init__(self, pool: SubnetPool, slot: _Slot) -> None:
        self._pool = pool
        self._slot = slot

    @property
    def active(self) -> str:
        return self._slot.id

    @property
    def resolution(self) -> int:
        return int(self._slot.spec.resolution)

    def switch(self, subnet_id: str) -> None:
        """Make ``subnet_id`` this handle's active subnet (raises UnknownSubnetError)."""
        self._slot = self._pool._use(subnet_id)

    def infer(self, x: Tensor, resize: bool = False) -> InferenceResult:
        """One inference on the active subnet; ``resize``: bilinear to its resolution when it differs."""
        return self._pool._run(self._slot, x, resize)


class SubnetPool:
    """K pre-sampled subnets of one family, resident on one device, switched by reference."""

    def __init__(
        self,
        family: ModelFamily,
        subnets: Mapping[str, SubnetSpec],
        device: str | torch.device = "cpu",
        memory_budget_bytes: int | None = None,
        bn_stats: Mapping[str, Mapping[str, Tensor]] | None = None,
        warmup: bool = True,
        initial: str | None = None,
        optimize: str = "auto",
        graphs: bool = False,
    ) -> None:
        if optimize not in OPTIMIZE_MODES:
            raise ConfigError(f"optimize must be one of {', '.join(OPTIMIZE_MODES)}, got {optimize!r}")
        if not subnets:
            raise ConfigError("a subnet pool needs at least one subnet")
        unknown_stats = sorted(set(bn_stats or {}) - set(subnets))
        if unknown_stats:
            raise UnknownSubnetError(f"BN statistics given for subnets not in the pool: {', '.join(unknown_stats)}")
        self.family = family
        self.device = torch.device(device)
        self._specs: dict[str, SubnetSpec] = {}
        for sid, spec in subnets.items():
            family.validate(spec)
            self._specs[str(sid)] = spec
        if initial is not None and initial not in self._specs:
            raise UnknownSubnetError(self._unknown(initial))
        self._bn_stats = {
            sid: {k: v.to(self.device) for k, v in stats.items()} for sid, stats in (bn_stats or {}).items()
        }
        self._warmup = warmup
        self._closed = False

        supernet = family.supernet()
        supernet_bytes = sum(_supernet_storages(supernet).values())
        if memory_budget_bytes is not None and memory_budget_bytes < supernet_bytes:
            raise ConfigError(
                f"memory budget {memory_budget_bytes} bytes is below the supernet's own {supernet_bytes} "
                f"bytes of tensors ({family.name}); raise memory_budget_bytes or use a smaller family"
            )
        _claim(family, self)
        supernet.to(self.device)  # in place: the family's supernet now lives on this device
        self._supernet_ptrs = _supernet_storages(supernet)
        self.supernet_bytes = sum(self._supernet_ptrs.values())
        self.memory_budget_bytes = memory_budget_bytes
        self.optimize = optimize
        self.graphs = graphs

        self._lock = threading.Lock()  # guards the cache and the active slot in cache mode
        self._base_switch_interval = sys.getswitchinterval()
        self._stats = _CacheStats()
        self._modules: OrderedDict[str, nn.Module] = OrderedDict()  # LRU order, most recent last
        self._ledger = _Ledger()
        self._optimizations: dict[str, list[str]] = {}
        self._fallback_slots = {sid: _Slot(sid, spec, None) for sid, spec in self._specs.items()}
        self._slots: dict[str, _Slot] = {}
        self.mode = "resident"
        try:
            self._fill()
        except BaseException:
            self._closed = True  # releases the device claim on the family
            raise

        first = initial if initial is not None else next(iter(self._specs))
        self._handles: weakref.WeakSet[SubnetHandle] = weakref.WeakSet()
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._pending: set[str] = set()
        self._worker: threading.Thread | None = None
        if self.mode == "cache":
            self._worker = threading.Thread(target=self._build_loop, name="dynofa-pool-builder", daemon=True)
            self._worker.start()
            self._stopper = weakref.finalize(self, _stop_builder, self._queue, self._worker)
        self._default = self._new_handle(first)  # in cache mode this queues the first build

    # ------------------------------------------------------------------ construction

    def _materialize(self, sid: str) -> nn.Module:
        spec = self._specs[sid]
        start = time.perf_counter()
        module = self.family.materialize(spec, self._bn_stats.get(sid))
        if self._warmup:
            # the first forward of a new shape builds kernels/primitives: do it here, not in a switch
            with torch.inference_mode():
                module(torch.zeros(self.family.input_shape(spec), device=self.device))
        self._stats.build_ms.append((time.perf_counter() - start) * 1e3)
        return module

    def _fill(self) -> None:
        """Materialise subnets in order while they fit the budget; switch to cache mode otherwise."""
        budget = self.memory_budget_bytes
        used = self.supernet_bytes
        for sid in self._specs:
            module = self._materialize(sid)
            fp = _footprint(module, self._supernet_ptrs)
            if budget is not None and used + self._ledger.marginal(fp) > budget:
                self.mode = "cache"
                del module
                break
            self._admit(sid, module, fp)
            used = self.supernet_bytes + self._ledger.total()
        if self.mode == "resident":
            self._optimize_resident()
            if self.graphs:
                self._trace_resident()

    def _optimize_resident(self) -> None:
        """Fold BN into the convs of the subnets whose folded copies still fit the budget."""
        budget = self.memory_budget_bytes
        if self.optimize == "none" or (self.optimize == "auto" and budget is None):
            return
        for sid, module in list(self._modules.items()):
            fold = getattr(module, "fold_batchnorm", None)
            if not callable(fold):
                continue
            folded = fold()
            if self._warmup:
                with torch.inference_mode():
                    folded(torch.zeros(self.family.input_shape(self._specs[sid]), device=self.device))
            fp = _footprint(folded, self._supernet_ptrs)
            grown = self.supernet_bytes + self._ledger.total() - self._ledger.exclusive(sid) + self._ledger.marginal(fp)
            if budget is not None and grown > budget:
                continue
            self._admit(sid, folded, fp)

    def _trace_resident(self) -> None:
        """A GIL-free graph per resident subnet, for batch 1 at its resolution (see subnets.graphs)."""
        for sid, module in self._modules.items():
            spec = self._specs[sid]
            graph = trace_graph(module, tuple(self.family.input_shape(spec)), self.device,
                                (t for _, t in module_tensors(module)))  # fmt: skip
            if graph is not None:
                self._slots[sid] = _Slot(sid, spec, module, graph)
                self._optimizations[sid] = [*self._optimizations.get(sid, []), "graph"]

    def _admit(self, sid: str, module: nn.Module, fp: _Footprint) -> None:
        self._optimizations[sid] = list(getattr(module, "optimizations", []))
        self._modules[sid] = module
        self._modules.move_to_end(sid)
        self._ledger.add(sid, fp)
        self._slots[sid] = _Slot(sid, self._specs[sid], module)

    # ------------------------------------------------------------------ public API

    @property
    def ids(self) -> list[str]:
        return list(self._specs)

    @property
    def active(self) -> str:
        return self._default.active

    @property
    def _active(self) -> _Slot:
        return self._default._slot

    def spec(self, subnet_id: str) -> SubnetSpec:
        try:
            return self._specs[subnet_id]
        except KeyError:
            raise UnknownSubnetError(self._unknown(subnet_id)) from None

    def switch(self, subnet_id: str) -> None:
        """Make ``subnet_id`` the active subnet of the pool's default handle: a reference swap."""
        self._default.switch(subnet_id)

    def handle(self, initial: str | None = None) -> SubnetHandle:
        """A new consumer's active subnet (``initial``, default: the pool's active one)."""
        if initial is not None and initial not in self._specs:
            raise UnknownSubnetError(self._unknown(initial))
        return self._new_handle(initial if initial is not None else self._default.active)

    def prefetch(self, subnet_id: str) -> bool:
        """Ask for ``subnet_id``'s materialisation in the background (cache mode) without switching,
        e.g. when a policy expects to switch there soon. Returns True when it is already resident."""
        if subnet_id not in self._specs:
            raise UnknownSubnetError(self._unknown(subnet_id))
        if self.mode == "resident":
            return True
        with self._lock:
            if subnet_id in self._slots:
                return True
            self._request_build(subnet_id)
            return False

    def infer(self, x: Tensor, subnet: str | None = None, resize: bool = False) -> InferenceResult:
        """Run one inference on the active subnet (or on ``subnet``, without switching)."""
        slot = self._default._slot if subnet is None else self._use(subnet)
        return self._run(slot, x, resize)

    def forward(self, subnet_id: str) -> Callable[[Tensor], Tensor]:
        """What serves ``subnet_id`` (the path :meth:`infer` takes: its traced graph for the traced shape,
        the pool's module otherwise), as one callable: re-profiling times this, not an eager copy."""
        self.spec(subnet_id)  # an unknown id fails here, not at the first call

        def run(x: Tensor) -> Tensor:
            return self.infer(x, subnet_id).output

        return run

    def served(self, subnet_id: str) -> Timed:
        """:meth:`forward` returning how long each call's forward took as the daemon reports it (the
        pool's own :func:`~subnets.timing.timed_forward`): what re-profiling times, so that a figure and
        the latency the daemon compares with it are one measurement of one span."""
        self.spec(subnet_id)

        def run(x: Tensor) -> ForwardTime:
            return self.infer(x, subnet_id).timing

        return run

    def memory(self) -> dict[str, Any]:
        """Tensor bytes: the supernet, views into it, what the materialisations add, per subnet."""
        with self._lock:
            ledger = self._ledger
            resident = list(self._modules)
            private_total = ledger.total()
            per_subnet = {sid: ledger.exclusive(sid) for sid in resident}
            views = {sid: ledger.shared_view.get(sid, 0) for sid in resident}
            between = ledger.shared_between_subnets()
            optimizations = {sid: list(self._optimizations.get(sid, [])) for sid in resident}
        total = self.supernet_bytes + private_total
        return {
            "mode": self.mode,
            "device": str(self.device),
            "supernet_bytes": self.supernet_bytes,
            "shared_view_bytes": sum(views.values()),
            "private_bytes": private_total,
            "shared_between_subnets_bytes": between,
            "total_bytes": total,
            "ratio_to_supernet": total / self.supernet_bytes if self.supernet_bytes else float("nan"),
            "per_subnet_private_bytes": per_subnet,
            "per_subnet_shared_view_bytes": views,
            "budget_bytes": self.memory_budget_bytes,
            "resident_subnets": sorted(resident),
            "optimize": self.optimize,
            "optimizations": optimizations,
        }

    def cache_stats(self) -> dict[str, Any]:
        with self._lock:
            s = self._stats
            builds = sorted(s.build_ms)
            return {
                "mode": self.mode,
                "hits": s.hits,
                "misses": s.misses,
                "builds": s.builds,
                "evictions": s.evictions,
                "build_failures": s.build_failures,
                "last_error": s.last_error,
                "cached": list(self._modules),
                "pending": sorted(self._pending),
                "build_ms_median": builds[len(builds) // 2] if builds else None,
            }

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Block until no background build is pending (for tests and orderly shutdown)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._pending:
                    return True
            time.sleep(0.005)
        return False

    def close(self) -> None:
        """Stop the background builder and drop the materialisations."""
        if self._closed:
            return
        self._closed = True
        if self._worker is not None:
            self._stopper()
            sys.setswitchinterval(self._base_switch_interval)
        with self._lock:
            self._modules.clear()
            self._slots.clear()

    def __enter__(self) -> SubnetPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ catalogs

    @classmethod
    def from_catalog(
        cls,
        catalog: Any,
        weights: str | os.PathLike[str] | None = None,
        device: str | torch.device = "cpu",
        memory_budget_bytes: int | None = None,
        ids: Iterable[str] | None = None,
        family: ModelFamily | None = None,
        **options: Any,
    ) -> SubnetPool:
        """A pool over a catalog's subnets (or the ``ids`` among them), with their BN statistics.

        The family is rebuilt by :func:`subnets.registry.family_for_catalog` unless given: ``weights``
        defaults to the catalog's ``weights.path`` (relative to the catalog file), and a catalog built
        for other weights is refused (sha256 check).
        """
        from subnets.checkpoint import load_bn_stats
        from subnets.registry import family_for_catalog

        if family is None:
            family = family_for_catalog(catalog, weights)
        wanted = list(ids) if ids is not None else catalog.ids
        specs: dict[str, SubnetSpec] = {}
        stats: dict[str, Mapping[str, Tensor]] = {}
        for sid in wanted:
            entry = catalog.get(sid)
            specs[sid] = family.spec_from_dict({"config": entry.config, "resolution": entry.resolution})
            bn_path = catalog.bn_stats_path(entry)
            if bn_path is not None:
                stats[sid] = load_bn_stats(bn_path)
        return cls(family, specs, device=device, memory_budget_bytes=memory_budget_bytes, bn_stats=stats, **options)

    # ------------------------------------------------------------------ internals

    def _unknown(self, subnet_id: str) -> str:
        return f"unknown subnet {subnet_id!r}; this pool holds: {', '.join(self._specs)}"

    def _new_handle(self, sid: str) -> SubnetHandle:
        handle = SubnetHandle(self, self._slots.get(sid) or self._fallback_slots[sid])
        if self.mode == "cache":
            with self._lock:
                handle._slot = self._slots.get(sid) or self._fallback_slots[sid]
                self._handles.add(handle)
                if sid not in self._slots:
                    self._request_build(sid)
        return handle

    def _use(self, subnet_id: str) -> _Slot:
        """The slot of ``subnet_id`` for a switch or a one-off use; in cache mode the use counts
        (a hit moves it to the LRU end, a miss serves by dynamic slicing and queues a build)."""
        if self.mode == "resident":
            slot = self._slots.get(subnet_id)
            if slot is None:
                raise UnknownSubnetError(self._unknown(subnet_id))
            self._stats.hits += 1
            return slot
        if subnet_id not in self._specs:
            raise UnknownSubnetError(self._unknown(subnet_id))
        with self._lock:
            cached = self._slots.get(subnet_id)
            if cached is not None:
                self._modules.move_to_end(subnet_id)
                self._stats.hits += 1
                return cached
            self._stats.misses += 1
            self._request_build(subnet_id)
            return self._fallback_slots[subnet_id]

    def _run(self, slot: _Slot, x: Tensor, resize: bool) -> InferenceResult:
        """One forward of ``slot`` (read once by the caller). Materialised subnets are reentrant
        (their forward mutates nothing), so no lock is taken; dynamic slicing takes the family's."""
        if self._closed:
            raise ConfigError("this subnet pool is closed")
        if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != self.family.in_channels:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            channels = self.family.in_channels
            raise InputError(f"{self.family.name} takes tensors of shape (N, {channels}, H, W); got {got}")
        if not x.is_floating_point():
            raise InputError(f"{self.family.name} takes floating-point images; got dtype {x.dtype}")
        if x.dtype != torch.float32:
            x = x.float()
        if x.device != self.device:
            x = x.to(self.device)
        resolution = int(slot.spec.resolution)
        if resize and (x.shape[2] != resolution or x.shape[3] != resolution):
            x = torch.nn.functional.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)
        if slot.graph is not None and slot.graph.accepts(x):
            run: Callable[[Tensor], Tensor] = slot.graph.module
        else:
            run = slot.module if slot.module is not None else lambda t: self._dynamic(slot, t)
        # the one definition of an inference's latency; re-profiling times through here too (served)
        out, timing = timed_forward(lambda: run(x), self.device)
        return InferenceResult(out, slot.id, timing)

    def _dynamic(self, slot: _Slot, x: Tensor) -> Tensor:
        """Serve a cache miss by dynamic slicing of the supernet (serialised by the family's lock)."""
        stats = self._bn_stats.get(slot.id)
        forward_dynamic = getattr(self.family, "forward_dynamic", None)
        if callable(forward_dynamic):
            out: Tensor = forward_dynamic(slot.spec, x, stats)
            return out
        if stats:
            raise ConfigError(
                f"family {self.family.name} cannot serve subnet {slot.id} with its own BN statistics by dynamic "
                "slicing; give the pool a memory budget that holds its materialisation"
            )
        lock = getattr(self.family, "lock", None) or self._lock
        with lock:
            self.family.activate(slot.spec)
            result: Tensor = self.family.supernet()(x)
            return result

    def _request_build(self, sid: str) -> None:
        """Queue a background materialisation (caller holds ``self._lock``).

        The build is Python-heavy, and by default a thread that wants the GIL (the next switch or
        inference) waits up to 5 ms before the interpreter makes another thread hand it over. While
        builds are queued, the interpreter hands over after BUILD_SWITCH_INTERVAL_S instead.
        """
        if sid in self._pending or sid in self._slots or self._closed:
            return
        sys.setswitchinterval(min(self._base_switch_interval, BUILD_SWITCH_INTERVAL_S))
        self._pending.add(sid)
        self._queue.put(sid)

    def _restore_switch_interval(self) -> None:
        with self._lock:
            if not self._pending:
                sys.setswitchinterval(self._base_switch_interval)

    def _capacity(self) -> int:
        assert self.memory_budget_bytes is not None
        return self.memory_budget_bytes - self.supernet_bytes

    def _build_loop(self) -> None:
        _lower_thread_priority()
        while True:
            sid = self._queue.get()
            if sid is None or self._closed:
                return
            try:
                self._build_one(sid)
            finally:
                self._restore_switch_interval()

    def _build_one(self, sid: str) -> None:
        try:
            module = self._materialize(sid)
            fp = _footprint(module, self._supernet_ptrs)
        except Exception as exc:  # noqa: BLE001 - a failed build must not kill the builder; misses keep serving
            with self._lock:
                self._pending.discard(sid)
                self._stats.build_failures += 1
                self._stats.last_error = f"{sid}: {exc.__class__.__name__}: {exc}"
            return
        with self._lock:
            self._pending.discard(sid)
            alone = sum(fp.storages.values())
            if alone > self._capacity():
                self._stats.build_failures += 1
                self._stats.last_error = f"{sid}: needs {alone} private bytes, budget leaves {self._capacity()}"
                return
            self._evict_for(fp, keep=sid)
            self._admit(sid, module, fp)
            self._stats.builds += 1
            for handle in list(self._handles):  # handles served by dynamic slicing move to the build
                if handle._slot.id == sid and handle._slot.module is None:
                    handle._slot = self._slots[sid]

    def _evict_for(self, incoming: _Footprint, keep: str) -> None:
        """Drop least-recently-used materialisations until ``incoming`` fits (caller holds the lock)."""
        while self._modules and self._ledger.total() + self._ledger.marginal(incoming) > self._capacity():
            active = {h.active for h in list(self._handles)}
            victim = next((sid for sid in self._modules if sid != keep and sid not in active), None)
            if victim is None:
                victim = next(iter(self._modules))
            del self._modules[victim]
            del self._slots[victim]
            self._optimizations.pop(victim, None)
            self._ledger.remove(victim)
            self._stats.evictions += 1
            for handle in list(self._handles):
                if handle._slot.id == victim:
                    handle._slot = self._fallback_slots[victim]
