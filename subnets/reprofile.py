"""Make a shipped catalog's latency this machine's: re-time a few subnets, predict the rest.

The daemon calls :func:`reprofile` at start-up for a catalog measured elsewhere
(:func:`measured_elsewhere`), so it lives beside the pool, not in the offline builder.
The other subnets are predicted from a reference figure each subnet has (its catalog latency on
the PE, or on another PE every subnet has, else its MACs): either one ratio (this machine /
reference) or an affine fit, whichever has the lower leave-one-out error.

The daemon passes ``forward``: the callable that serves each subnet (``SubnetPool.served``: the
traced graph at its shape, the pool's module otherwise), so that what is timed is what it serves;
an eager re-materialisation differs from the graph by a per-op dispatch cost that is a large
share of a small subnet's latency. Each sample is the time the pool itself reports for the
forward (:func:`subnets.timing.timed_forward`, the span the daemon reports per inference and
judges predictions by), and each run follows an idle wait as a served request does
(:data:`subnets.timing.SERVED_IDLE_S`). With one torch thread on the CPU the figures are that
span's thread CPU time (on a quiet machine the wall time), so that other processes' load at
start-up is not baked into the catalog (contention is the policies' estimate, measured against
these figures).
"""

from __future__ import annotations

import math
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from dynofa.catalog import Catalog, CatalogEntry, Latency
from dynofa.errors import CatalogBuildError
from subnets import pareto
from subnets.family import ModelFamily
from subnets.timing import (
    SERVED_IDLE_S,
    Timed,
    cpu_freq_khz,
    cpu_model,
    measure_timed,
    on_device,
    pe_device,
    percentile,
    pinned,
    provenance,
    timed_module,
)

__all__ = ["MAX_REPEATS", "measured_elsewhere", "reprofile"]

Progress = Callable[[str], None]
Forward = Callable[[str], Timed]  # subnet id -> the forward that serves it, reporting its own time

#: the most timed runs per subnet and batch size when ``reprofile`` has a time budget
MAX_REPEATS = 40


def reprofile(
    catalog: Catalog,
    family: ModelFamily,
    pe: str = "cpu",
    measure: int = 3,
    *,
    threads: int | None = None,
    warmup: int = 2,
    repeats: int = 5,
    cpus: Sequence[int] | None = None,
    progress: Progress | None = None,
    load_bn: bool = False,
    forward: Forward | None = None,
    budget_ms: float | None = None,
) -> Catalog:
    """Re-time ``measure`` subnets of ``catalog`` on this machine's ``pe`` and predict the rest.

    Every batch size the catalog has figures for on ``pe`` is re-timed the same way (the chosen
    subnets measured at that batch size, the others predicted from their catalog figure at it).
    Returns a new catalog (same path); the input is left unchanged. BN statistics do not change
    latency, so they are only loaded when ``load_bn`` asks for it.

    ``forward(subnet_id)`` gives the callable that serves the subnet and reports how long its
    forward took (``SubnetPool.served``; it is timed instead of a fresh materialisation).
    ``budget_ms`` raises ``repeats`` while a round of the measured subnets at that batch size fits
    the budget (at most :data:`MAX_REPEATS`): fast subnets get the samples a stable median needs,
    slow ones do not stretch the daemon's start.
    """
    say = progress or (lambda _msg: None)
    if measure < 1:
        raise CatalogBuildError(f"reprofile needs at least 1 subnet to measure, got {measure}")
    if catalog.family.get("name") != family.name:
        raise CatalogBuildError(
            f"catalog is for family {catalog.family.get('name')!r}, not {family.name!r}; "
            "reprofile it with its own family"
        )
    entries = list(catalog.entries)
    ref_name, reference = _reference(entries, pe)
    if threads is None:
        known = [e.latency[pe].threads for e in entries if pe in e.latency]
        threads = known[0] if known else 1
    chosen = pareto.spread(entries, min(measure, len(entries)), cost=lambda e: reference[e.id])
    device = pe_device(pe)
    modules: dict[str, tuple[Timed, tuple[int, ...]]] = {}
    for entry in chosen:
        spec = family.spec_from_dict({"config": entry.config, "resolution": entry.resolution})
        if forward is not None:
            modules[entry.id] = (forward(entry.id), tuple(family.input_shape(spec)))
            continue
        bn = _load_bn(catalog, entry) if load_bn else None
        modules[entry.id] = (timed_module(on_device(family.materialize(spec, bn), device), device),
                             tuple(family.input_shape(spec)))  # fmt: skip
    # batch figures are re-timed too (each batch size predicted from the catalog's figure at that size)
    extra = [b for b in catalog.batch_sizes(pe) if b > 1] if ref_name == f"catalog_ms_{pe}" else []
    clock = "thread" if device == "cpu" and threads == 1 else "wall"
    timed = {}
    with pinned(cpus):
        for b in [1, *extra]:
            at_b = {sid: (m, (b, *shape[1:])) for sid, (m, shape) in modules.items()}
            n = repeats
            if budget_ms is not None:
                first = measure_timed(at_b, device, warmup, 1, threads, clock=clock, idle_s=SERVED_IDLE_S)
                per_round = sum(r.median_ms for r in first.values()) + 1e3 * SERVED_IDLE_S * len(at_b)
                n = max(repeats, min(MAX_REPEATS, int(budget_ms / max(per_round, 1e-3))))
            # each run as a request is served: after an idle wait, timed by the pool's own clock
            timed[b] = measure_timed(at_b, device, warmup, n, threads, clock=clock, idle_s=SERVED_IDLE_S)
    freq = cpu_freq_khz(cpus) if device == "cpu" else None
    del modules
    ids = [e.id for e in entries]
    figures: dict[int, tuple[dict[str, float], list[float]]] = {}
    info: dict[str, Any] = {}
    for b, records in timed.items():
        measured = {entry.id: records[entry.id].median_ms for entry in chosen}
        ref = reference if b == 1 else {e.id: e.latency[pe].batch[b].ms for e in entries}
        predicted, fit_info = predict_from_reference(ids, ref, ref_name if b == 1 else f"{ref_name}_b{b}", measured)
        figures[b] = (measured, predicted)
        fit_info["clock"] = clock
        fit_info["repeats"] = len(next(iter(records.values())).samples)
        fit_info["figure"] = "median"
        fit_info["idle_ms"] = 1e3 * SERVED_IDLE_S  # before each run, as a served request waits
        fit_info["spread"] = {sid: {"p10_ms": round(percentile(r.samples, 10), 4), "median_ms": round(r.median_ms, 4),
                                    "p90_ms": round(percentile(r.samples, 90), 4)} for sid, r in records.items()}
        if b == 1:
            info = fit_info
        else:
            info.setdefault("batch", {})[str(b)] = fit_info
        for entry in chosen:
            say(f"  [{pe}] {entry.id} at batch {b}: {measured[entry.id]:.2f} ms (measured)")
        loo = fit_info.get("loo") or {}
        if loo.get("mae") is not None:
            say(f"  [{pe}] reprofile at batch {b} ({fit_info['method']}): leave-one-out MAE {loo['mae']:.2f} ms "
                f"({loo['mape_pct']:.1f} %)")

    def figure(sid: str, b: int) -> Latency:
        measured, predicted = figures[b]
        if sid in measured:
            return Latency(ms=measured[sid], source="measured", threads=threads, freq_khz=freq)
        return Latency(ms=max(predicted[ids.index(sid)], 1e-6), source="predicted", threads=threads, freq_khz=freq)

    new_entries = []
    for entry in entries:
        lat = replace(figure(entry.id, 1), batch={b: figure(entry.id, b) for b in extra})
        new_entries.append(replace(entry, latency={**entry.latency, pe: lat}))
    models = dict(catalog.latency_models)
    previous = models.get(pe)
    if isinstance(previous, dict) and "reprofile" in previous:
        previous = previous.get("build")
    # the build machine's model is kept for the record; "reprofile" describes this machine
    models[pe] = {"reprofile": info, "build": previous}
    prov = dict(catalog.provenance)
    reprofiled = dict(prov.get("reprofiled") or {})
    reprofiled[pe] = provenance(device, threads)
    prov["reprofiled"] = reprofiled
    return Catalog(
        family=dict(catalog.family),
        entries=new_entries,
        weights=dict(catalog.weights),
        provenance=prov,
        latency_models=models,
        path=catalog.path,
    )


def measured_elsewhere(catalog: Catalog) -> bool:
    """Whether the catalog's latency figures were taken on another machine than this one.

    The daemon and ``dynofa subnets`` re-profile such a catalog, so that the latency they act on
    and show is this machine's.
    """
    prov = catalog.provenance
    latest = [info for info in (prov.get("reprofiled") or {}).values() if isinstance(info, dict)]
    where = latest[-1] if latest else prov
    if not where.get("host") and not where.get("cpu_model"):
        return True  # unknown origin: this machine's figures are the honest ones
    return bool(where.get("host") != socket.gethostname() or where.get("cpu_model") != cpu_model())


def predict_from_reference(
    ids: Sequence[str], reference: Mapping[str, float], ref_name: str, measured: Mapping[str, float]
) -> tuple[list[float], dict[str, Any]]:
    """This machine's latency of every subnet in ``ids`` from its reference figure.

    Two predictors: a single ratio (this machine / reference, geometric mean over the measured
    subnets) and an affine fit ``ms = a + b * reference``. With fewer than 3 measurements only the
    ratio is sound; otherwise the one with the lower leave-one-out error wins.
    """
    known = [i for i in ids if i in measured]
    if not known:
        raise CatalogBuildError("reprofile measured none of the catalog's subnets")
    xs = [reference[i] for i in known]
    ys = [measured[i] for i in known]
    info: dict[str, Any] = {"reference": ref_name, "measured": sorted(known), "method": "ratio"}
    ratio = _ratio(xs, ys)
    info["ratio"] = ratio
    if len(known) >= 2:
        info["loo"] = _loo(xs, ys, _ratio, lambda r, x: r * x)
    predicted = [reference[i] * ratio for i in ids]
    if len(known) >= 3:
        a, b = _affine(xs, ys)
        affine_loo = _loo(xs, ys, _affine, lambda ab, x: ab[0] + ab[1] * x)
        info["affine"] = {"intercept_ms": a, "slope": b, "loo": affine_loo}
        if affine_loo["mae"] < info["loo"]["mae"] and b > 0:
            info["method"] = "affine"
            info["loo"] = affine_loo
            floor = 0.5 * min(ys)  # an affine line must not predict a subnet faster than half the fastest
            predicted = [max(a + b * reference[i], floor) for i in ids]
    return predicted, info


def _ratio(xs: Sequence[float], ys: Sequence[float]) -> float:
    return math.exp(sum(math.log(y / x) for x, y in zip(xs, ys, strict=True)) / len(xs))


def _affine(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx <= 0:
        return 0.0, _ratio(xs, ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    return my - b * mx, b


def _loo(
    xs: Sequence[float], ys: Sequence[float], fit: Callable[..., Any], apply: Callable[..., float]
) -> dict[str, Any]:
    """Leave-one-out error of a one-variable predictor: each point predicted by a fit on the others."""
    errors = []
    for j in range(len(xs)):
        model = fit([*xs[:j], *xs[j + 1 :]], [*ys[:j], *ys[j + 1 :]])
        errors.append((abs(apply(model, xs[j]) - ys[j]), ys[j]))
    return {
        "method": "leave-one-out",
        "n": len(errors),
        "mae": sum(e for e, _ in errors) / len(errors),
        "mape_pct": 100.0 * sum(e / y for e, y in errors) / len(errors),
        "max_abs": max(e for e, _ in errors),
    }


def _load_bn(catalog: Catalog, entry: CatalogEntry) -> dict[str, Any] | None:
    """The entry's BN statistics from its sidecar file, or None if it has none."""
    from subnets.checkpoint import load_bn_stats

    path = catalog.bn_stats_path(entry)
    return None if path is None else load_bn_stats(path)


def _reference(entries: list[CatalogEntry], pe: str) -> tuple[str, dict[str, float]]:
    """A per-subnet figure to predict this machine's latency from (see :func:`reprofile`)."""
    candidates = [pe] + sorted({p for e in entries for p in e.latency} - {pe})
    for ref_pe in candidates:
        if all(ref_pe in e.latency for e in entries):
            return f"catalog_ms_{ref_pe}", {e.id: e.latency[ref_pe].ms for e in entries}
    return "macs", {e.id: float(max(e.macs, 1)) for e in entries}
