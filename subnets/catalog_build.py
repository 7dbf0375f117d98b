"""Build a catalog by pre-sampling a family's subnets (Dynamic-OFA) with Reg-Tune-style profiling.

:func:`build_catalog`:

1. sample ``candidates`` distinct subnets (config and resolution), always with the largest and
   the smallest;
2. materialise ``measure`` of them, spread over the MACs range, and time each on every processing
   element (PE); fit a latency regression per PE over the family's features, report its error on
   held-out measured subnets and predict the others;
3. with calibration data, recompute each subnet's BatchNorm statistics (stored beside the catalog
   as ``<catalog>.bn/<id>.pt``, so that a switch needs no data);
4. with validation data, measure top-1 accuracy (on the same subset; an accuracy predictor fitted on
   those ranks the rest); without it, no accuracy is claimed and MACs stand in for selection;
5. keep ``keep`` subnets spread across the accuracy/latency Pareto front of the primary PE, then
   measure whatever kept figure was only predicted and select again (``refine``), so the kept
   subnets carry measured figures wherever the budget allowed.

:func:`reprofile` makes a shipped catalog honest on the machine it runs on: it re-times a few
subnets and predicts the others from their catalog latency through a fitted regression.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dynofa.catalog import Accuracy, Catalog, CatalogEntry, Latency
from dynofa.errors import CatalogBuildError
from subnets import pareto
from subnets.accuracy import evaluate, image_batches
from subnets.family import ModelFamily, SubnetSpec
from subnets.profiling import cpu_freq_khz, measure_interleaved, provenance
from subnets.regression import RegressionModel, error_report, fit, fit_accuracy, fit_latency

if TYPE_CHECKING:
    import torch
    from torch import nn

    from subnets.accuracy import LabelledArrays

Progress = Callable[[str], None]

#: refinement rounds: measure the kept subnets' predicted figures, select again
REFINE_ROUNDS = 3
#: subnets timed together in interleaved rounds (all materialised at once)
INTERLEAVE_CHUNK = 12
#: fewest measured accuracies an accuracy predictor is fitted on
MIN_ACCURACY_SAMPLES = 3


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


@dataclass
class _Candidate:
    spec: SubnetSpec
    id: str
    macs: int
    params: int
    features: dict[str, float]
    latency: dict[str, Latency] = field(default_factory=dict)
    accuracy: Accuracy | None = None
    bn: dict[str, Any] | None = None


@dataclass
class _Settings:
    pes: list[str]
    threads: int
    warmup: int
    repeats: int
    affinity: Mapping[str, Sequence[int]]
    val: LabelledArrays | None
    val_name: str
    val_limit: int | None
    calib: LabelledArrays | None
    calib_limit: int
    batch_size: int
    eval_device: str
    say: Progress
    freq_khz: dict[str, int | None] = field(default_factory=dict)  # per PE, at the last measurement


def build_catalog(
    family: ModelFamily,
    pes: Sequence[str] = ("cpu",),
    candidates: int = 100,
    measure: int = 20,
    keep: int = 10,
    val: LabelledArrays | None = None,
    calib: LabelledArrays | None = None,
    seed: int = 0,
    progress: Progress | None = None,
    *,
    out: str | os.PathLike[str] | None = None,
    weights: Mapping[str, Any] | None = None,
    threads: int = 1,
    warmup: int = 3,
    repeats: int = 10,
    refine: bool = True,
    affinity: Mapping[str, Sequence[int]] | None = None,
    val_name: str = "",
    val_limit: int | None = None,
    calib_limit: int = 2000,
    batch_size: int = 64,
    fill_dominated: bool = False,
) -> Catalog:
    """Pre-sample, profile and select subnets of ``family``; see the module docstring.

    Only Pareto-optimal subnets are kept (at most ``keep``), as Dynamic-OFA does: a dominated
    subnet is never the right choice and it misleads level-stepping policies. ``fill_dominated``
    tops a short front up to ``keep`` with the best dominated ones (e.g. to keep every level of a
    group-pruned net whatever timing noise says).

    ``out`` is where the catalog will be saved (needed for BN statistics sidecar files; the
    catalog itself is saved by the caller). ``weights`` becomes the catalog's ``weights`` object
    (``{"path", "sha256"}`` or ``{"init": "random", "seed"}``). ``affinity`` pins the measuring
    thread to a PE's CPUs (e.g. ``{"cpu-big": [4, 5, 6, 7]}``).
    """
    _check_counts(candidates, measure, keep)
    if not pes:
        raise CatalogBuildError("give at least one processing element to profile on (e.g. cpu)")
    if calib is not None and out is None:
        raise CatalogBuildError("BN statistics from calibration data need the catalog's output path (out=...)")
    say = progress or (lambda _msg: None)
    settings = _Settings(
        pes=list(pes),
        threads=threads,
        warmup=warmup,
        repeats=repeats,
        affinity=affinity or {},
        val=val,
        val_name=val_name or str(getattr(val, "name", "") or "validation"),
        val_limit=val_limit,
        calib=calib,
        calib_limit=calib_limit,
        batch_size=batch_size,
        eval_device=pe_device(pes[0]),
        say=say,
    )
    for data, what in ((val, "validation"), (calib, "calibration")):
        if data is not None:
            _check_data(family, data, what)
    family.supernet()  # build it and load the weights first: a bad weights file fails before any work
    rng = random.Random(seed)
    pool = _sample(family, candidates, rng, say)
    to_measure = _spread_by_macs(pool, min(measure, len(pool)))
    say(f"measuring {len(to_measure)} of {len(pool)} candidates on {', '.join(settings.pes)}")
    _measure(family, to_measure, settings, with_accuracy=val is not None)

    models: dict[str, RegressionModel] = {}
    acc_model: RegressionModel | None = None
    kept: list[_Candidate] = []
    rounds = REFINE_ROUNDS if refine else 1
    for round_no in range(rounds):
        models = {pe: _latency_model(pool, pe, seed, say if round_no == 0 else None) for pe in settings.pes}
        acc_model = _accuracy_model(pool, seed, say if round_no == 0 else None) if val is not None else None
        predictions = _predictions(pool, models, acc_model)
        kept = _select(pool, keep, settings.pes, predictions, fill_dominated)
        if not refine:
            break
        pending = [c for c in kept if _needs_measuring(c, settings.pes, val is not None)]
        if not pending:
            break
        say(f"refining: measuring {len(pending)} kept subnet(s) whose figures were predicted")
        _measure(family, pending, settings, with_accuracy=val is not None)
    if refine and round_no > 0:  # refitted on the refinement's measurements too
        for pe, model in models.items():
            say(f"final latency model [{pe}]: {_model_summary(model, 'ms')}")
    predictions = _predictions(pool, models, acc_model)
    if not fill_dominated:  # the last refinement's measurements may show a kept subnet dominated
        kept = _select(kept, keep, settings.pes, predictions, fill=False)
    entries = []
    # fastest first on the primary PE, by the final (refined) figures
    kept.sort(key=lambda c: _final_ms(c, settings.pes[0], predictions))
    for cand in kept:
        if calib is not None and cand.bn is None:
            cand.bn = _calibrate(family, cand, settings)
        entries.append(_entry(cand, predictions.get(cand.id, {}), settings, acc_model, out))
    catalog = Catalog(
        family=family.describe(),
        entries=entries,
        weights=dict(weights) if weights is not None else _weights_of(family),
        provenance=_provenance(pool, kept, settings, candidates, measure, keep, seed, val is not None),
        latency_models={pe: m.to_dict() for pe, m in models.items()},
    )
    if calib is not None and out is not None:
        _write_bn_sidecars(kept, Path(out), catalog)
    if val is None:
        say("no validation data: no accuracy claimed (pass --val DATA to measure it); selected by MACs vs latency")
    say(f"kept {len(entries)} subnet(s): {', '.join(e.id for e in entries)}")
    return catalog


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
) -> Catalog:
    """Re-time ``measure`` subnets of ``catalog`` on this machine's ``pe`` and predict the rest.

    The others are predicted by a regression of this machine's latency over a reference figure of
    every subnet: its catalog latency on ``pe`` (or on another PE every subnet has), else its MACs.
    Returns a new catalog (same path); the input is left unchanged. BN statistics do not change
    latency, so they are only loaded when ``load_bn`` asks for it.
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
    measured: dict[str, float] = {}
    device = pe_device(pe)
    modules = {}
    for entry in chosen:
        spec = family.spec_from_dict({"config": entry.config, "resolution": entry.resolution})
        bn = _load_bn(catalog, entry) if load_bn else None
        modules[entry.id] = (on_device(family.materialize(spec, bn), device), family.input_shape(spec))
    with _pinned(cpus):
        records = measure_interleaved(modules, device, warmup, repeats, threads)
    freq = cpu_freq_khz(cpus) if device == "cpu" else None
    del modules
    for entry in chosen:
        measured[entry.id] = records[entry.id].median_ms
        say(f"  [{pe}] {entry.id}: {measured[entry.id]:.2f} ms (measured)")
    predicted, info = _predict_from_reference(entries, reference, ref_name, measured)
    loo = info.get("loo") or {}
    if loo.get("mae") is not None:
        say(f"  [{pe}] reprofile ({info['method']}): leave-one-out MAE {loo['mae']:.2f} ms ({loo['mape_pct']:.1f} %)")
    new_entries = []
    for entry, guess in zip(entries, predicted, strict=True):
        lat = (
            Latency(ms=measured[entry.id], source="measured", threads=threads, freq_khz=freq)
            if entry.id in measured
            else Latency(ms=max(guess, 1e-6), source="predicted", threads=threads, freq_khz=freq)
        )
        new_entries.append(_replace_latency(entry, pe, lat))
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
    import socket

    from subnets.profiling import cpu_model

    prov = catalog.provenance
    latest = [info for info in (prov.get("reprofiled") or {}).values() if isinstance(info, dict)]
    where = latest[-1] if latest else prov
    if not where.get("host") and not where.get("cpu_model"):
        return True  # unknown origin: this machine's figures are the honest ones
    return bool(where.get("host") != socket.gethostname() or where.get("cpu_model") != cpu_model())


def _predict_from_reference(
    entries: list[CatalogEntry], reference: Mapping[str, float], ref_name: str, measured: Mapping[str, float]
) -> tuple[list[float], dict[str, Any]]:
    """This machine's latency of every entry from its reference figure.

    Two predictors: a single ratio (this machine / reference, geometric mean over the measured
    subnets) and an affine regression. With fewer than 3 measurements only the ratio is sound;
    otherwise the one with the lower leave-one-out error wins.
    """
    ids = [e.id for e in entries if e.id in measured]
    logs = [math.log(measured[i] / reference[i]) for i in ids]
    ratio = math.exp(sum(logs) / len(logs))
    info: dict[str, Any] = {"reference": ref_name, "measured": sorted(ids), "method": "ratio", "ratio": ratio}
    if len(ids) >= 2:
        loo_pred = []
        for j, i in enumerate(ids):
            others = logs[:j] + logs[j + 1 :]
            loo_pred.append(reference[i] * math.exp(sum(others) / len(others)))
        info["loo"] = error_report("leave-one-out", [measured[i] for i in ids], loo_pred).to_dict()
    predicted = [reference[e.id] * ratio for e in entries]
    if len(ids) >= 3:
        model = fit(
            [{ref_name: reference[i]} for i in ids],
            [measured[i] for i in ids],
            degrees=(1,),
            ridges=(1e-6, 1e-3, 1e-1),
            log_target=(False, True),
            lower=0.5 * min(measured.values()),
        )
        info["model"] = model.to_dict()
        model_mae, ratio_mae = model.error["loo"].get("mae"), info["loo"].get("mae")
        if model_mae is not None and (ratio_mae is None or model_mae < ratio_mae):
            info["method"] = "regression"
            info["loo"] = model.error["loo"]
            predicted = model.predict([{ref_name: reference[e.id]} for e in entries])
    return predicted, info


# --------------------------------------------------------------------------- sampling


def _check_counts(candidates: int, measure: int, keep: int) -> None:
    if candidates < 2:
        raise CatalogBuildError(f"--candidates must be >= 2 (largest and smallest are always in), got {candidates}")
    if measure < 2:
        raise CatalogBuildError(f"--measure must be >= 2 so that a latency regression can be fitted, got {measure}")
    if measure > candidates:
        raise CatalogBuildError(f"--measure ({measure}) cannot exceed --candidates ({candidates})")
    if keep < 1 or keep > candidates:
        raise CatalogBuildError(f"--keep must be between 1 and --candidates ({candidates}), got {keep}")


def _weights_of(family: ModelFamily) -> dict[str, Any]:
    """The catalog's ``weights`` object from a family that can describe its weights, else empty."""
    info = getattr(family, "weights_info", None)
    return dict(info()) if callable(info) else {}


def _check_data(family: ModelFamily, data: LabelledArrays, what: str) -> None:
    """Refuse data the family cannot take before spending minutes on profiling."""
    shape = tuple(data.x.shape)
    if len(shape) != 4 or shape[1] != family.in_channels:
        raise CatalogBuildError(
            f"{what} images have shape {list(shape)}; {family.name} takes [N, {family.in_channels}, H, W]"
        )
    if what == "validation" and len(data.y) and int(data.y.max()) >= family.num_classes:
        raise CatalogBuildError(
            f"{what} labels go up to {int(data.y.max())}, but {family.name} predicts {family.num_classes} classes; "
            "give held-out data of the model's own classes (or the family's n_classes in --family-args)"
        )


def _sample(family: ModelFamily, n: int, rng: random.Random, say: Progress) -> list[_Candidate]:
    specs: dict[str, SubnetSpec] = {}
    for spec in (family.largest(), family.smallest()):
        specs.setdefault(spec.key, spec)
    tries = 0
    while len(specs) < n and tries < 50 * n:
        spec = family.sample(rng)
        specs.setdefault(spec.key, spec)
        tries += 1
    if len(specs) < n:
        say(f"the family's space holds only {len(specs)} distinct subnets found in {tries} draws (asked for {n})")
    out = []
    for spec in specs.values():
        family.validate(spec)
        out.append(
            _Candidate(
                spec=spec,
                id=spec.short_id(family.id_prefix),
                macs=int(family.macs(spec)),
                params=int(family.params(spec)),
                features={k: float(v) for k, v in family.features(spec).items()},
            )
        )
    say(f"sampled {len(out)} distinct candidate subnets")
    return out


def _spread_by_macs(pool: list[_Candidate], m: int) -> list[_Candidate]:
    """``m`` candidates spread evenly over the MACs ranking (ends included): good regression coverage."""
    ordered = sorted(pool, key=lambda c: (c.macs, c.id))
    if m >= len(ordered):
        return ordered
    if m == 1:
        return [ordered[-1]]
    picks = sorted({round(i * (len(ordered) - 1) / (m - 1)) for i in range(m)})
    return [ordered[i] for i in picks]


# --------------------------------------------------------------------------- measuring


@contextmanager
def _pinned(cpus: Sequence[int] | None):  # type: ignore[no-untyped-def]
    """Pin this thread to ``cpus`` for the measurement (restored afterwards)."""
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


def _measure(family: ModelFamily, cands: list[_Candidate], s: _Settings, *, with_accuracy: bool) -> None:
    """Time ``cands`` on every PE (interleaved, in chunks) and, with validation data, evaluate them."""
    if with_accuracy and s.calib is not None:
        for cand in cands:
            if cand.bn is None:
                cand.bn = _calibrate(family, cand, s)
    for pe in s.pes:
        device = pe_device(pe)
        todo = [c for c in cands if c.latency.get(pe) is None or c.latency[pe].source != "measured"]
        for start in range(0, len(todo), INTERLEAVE_CHUNK):
            chunk = todo[start : start + INTERLEAVE_CHUNK]
            s.say(f"  timing {len(chunk)} subnet(s) on {pe}, interleaved ({s.warmup} warm-up + {s.repeats} rounds)")
            modules = {
                c.id: (on_device(family.materialize(c.spec, c.bn), device), family.input_shape(c.spec)) for c in chunk
            }
            with _pinned(s.affinity.get(pe)):
                records = measure_interleaved(modules, device, s.warmup, s.repeats, s.threads)
            freq = cpu_freq_khz(s.affinity.get(pe)) if device == "cpu" else None
            s.freq_khz[pe] = freq
            del modules
            for cand in chunk:
                rec = records[cand.id]
                cand.latency[pe] = Latency(ms=rec.median_ms, source="measured", threads=rec.threads, freq_khz=freq)
    for i, cand in enumerate(cands, 1):
        if with_accuracy and s.val is not None and (cand.accuracy is None or cand.accuracy.source != "measured"):
            module = on_device(family.materialize(cand.spec, cand.bn), s.eval_device)
            res = evaluate(module, s.val, s.batch_size, s.eval_device, cand.spec.resolution, s.val_limit)
            cand.accuracy = Accuracy(top1=res.top1, source="measured", dataset=s.val_name, samples=res.count)
        s.say(f"  [{i}/{len(cands)}] {_describe(cand)}")


def _calibrate(family: ModelFamily, cand: _Candidate, s: _Settings) -> dict[str, torch.Tensor]:
    assert s.calib is not None
    batches = image_batches(s.calib, cand.spec.resolution, s.batch_size, s.calib_limit)
    return family.calibrate_bn(cand.spec, batches)


def _needs_measuring(cand: _Candidate, pes: Sequence[str], with_accuracy: bool) -> bool:
    if any(cand.latency.get(pe) is None or cand.latency[pe].source != "measured" for pe in pes):
        return True
    return with_accuracy and (cand.accuracy is None or cand.accuracy.source != "measured")


def _describe(cand: _Candidate) -> str:
    parts = [f"{pe} {lat.ms:.2f} ms" for pe, lat in sorted(cand.latency.items())]
    if cand.accuracy is not None:
        parts.append(f"top-1 {cand.accuracy.top1 * 100:.1f} %")
    return f"{cand.id} (r{cand.spec.resolution}, {cand.macs / 1e6:.1f} MMACs): {', '.join(parts)}"


# --------------------------------------------------------------------------- models and selection


def _latency_model(pool: list[_Candidate], pe: str, seed: int, say: Progress | None) -> RegressionModel:
    done = [c for c in pool if pe in c.latency and c.latency[pe].source == "measured"]
    model = fit_latency([c.features for c in done], [c.latency[pe].ms for c in done], seed=seed)
    if say is not None:
        say(f"latency model [{pe}]: {_model_summary(model, 'ms')}")
    return model


def _accuracy_model(pool: list[_Candidate], seed: int, say: Progress | None) -> RegressionModel | None:
    done = [c for c in pool if c.accuracy is not None and c.accuracy.source == "measured"]
    if len(done) < MIN_ACCURACY_SAMPLES:
        if say is not None:
            say(f"only {len(done)} measured accuracies: no accuracy predictor; unmeasured subnets claim none")
        return None
    model = fit_accuracy([c.features for c in done], [c.accuracy.top1 for c in done if c.accuracy], seed=seed)
    if say is not None:
        say(f"accuracy predictor: {_model_summary(model, '')}")
    return model


def _model_summary(model: RegressionModel, unit: str) -> str:
    text = f"degree {model.degree}{' (log)' if model.log_target else ''}, fitted on {model.n_train}"
    scale = 1.0 if unit else 100.0
    unit = unit or "pt"
    for key, label in (("held_out", "held-out"), ("loo", "leave-one-out")):
        err = model.error.get(key) or {}
        if err.get("mae") is not None:
            text += f"; {label} MAE {err['mae'] * scale:.2f} {unit} ({err['mape_pct']:.1f} %, n={err['n']})"
    return text


def _predictions(
    pool: list[_Candidate], models: Mapping[str, RegressionModel], acc_model: RegressionModel | None
) -> dict[str, dict[str, float]]:
    """Per candidate id: predicted latency per PE and predicted ``top1`` (only where not measured)."""
    out: dict[str, dict[str, float]] = {c.id: {} for c in pool}
    for pe, model in models.items():
        todo = [c for c in pool if pe not in c.latency or c.latency[pe].source != "measured"]
        for cand, ms in zip(todo, model.predict([c.features for c in todo]), strict=True):
            out[cand.id][pe] = ms
    if acc_model is not None:
        todo = [c for c in pool if c.accuracy is None or c.accuracy.source != "measured"]
        for cand, top1 in zip(todo, acc_model.predict([c.features for c in todo]), strict=True):
            out[cand.id]["top1"] = top1
    return out


def _select(
    pool: list[_Candidate],
    keep: int,
    pes: Sequence[str],
    predictions: Mapping[str, Mapping[str, float]],
    fill: bool,
) -> list[_Candidate]:
    """K subnets spread over the Pareto front(s); see :func:`subnets.pareto.select_across`."""

    def latency_on(pe: str) -> Callable[[_Candidate], float]:
        def latency(c: _Candidate) -> float:
            lat = c.latency.get(pe)
            return lat.ms if lat is not None and lat.source == "measured" else predictions[c.id][pe]

        return latency

    def top1(c: _Candidate) -> float | None:
        if c.accuracy is not None and c.accuracy.source == "measured":
            return c.accuracy.top1
        return predictions[c.id].get("top1")

    if all(top1(c) is not None for c in pool):
        return pareto.select_across(pool, keep, lambda c: float(top1(c) or 0.0), [latency_on(pe) for pe in pes], fill)
    return pareto.select_across(pool, keep, lambda c: float(c.macs), [latency_on(pe) for pe in pes], fill)


def _final_ms(cand: _Candidate, pe: str, predictions: Mapping[str, Mapping[str, float]]) -> float:
    lat = cand.latency.get(pe)
    return lat.ms if lat is not None and lat.source == "measured" else float(predictions[cand.id][pe])


def _entry(
    cand: _Candidate,
    predicted: Mapping[str, float],
    s: _Settings,
    acc_model: RegressionModel | None,
    out: str | os.PathLike[str] | None,
) -> CatalogEntry:
    latency = {}
    for pe in s.pes:
        lat = cand.latency.get(pe)
        if lat is None or lat.source != "measured":
            # predicted from figures taken at the frequency the measured ones were taken at
            freq = s.freq_khz.get(pe)
            lat = Latency(ms=max(float(predicted[pe]), 1e-6), source="predicted", threads=s.threads, freq_khz=freq)
        latency[pe] = lat
    accuracy = cand.accuracy if cand.accuracy is not None and cand.accuracy.source == "measured" else None
    if accuracy is None and acc_model is not None and "top1" in predicted:
        accuracy = Accuracy(top1=float(predicted["top1"]), source="predicted", dataset=s.val_name, samples=0)
    bn_rel = None
    if cand.bn is not None and out is not None:
        bn_rel = f"{Path(out).name}.bn/{cand.id}.pt"
    return CatalogEntry(
        id=cand.id,
        config=cand.spec.to_dict()["config"],
        resolution=cand.spec.resolution,
        macs=cand.macs,
        params=cand.params,
        latency=latency,
        accuracy=accuracy,
        bn_stats=bn_rel,
    )


# --------------------------------------------------------------------------- files and provenance


def _write_bn_sidecars(kept: list[_Candidate], out: Path, catalog: Catalog) -> None:
    from subnets.checkpoint import save_bn_stats

    written = set()
    for cand in kept:
        entry = catalog.get(cand.id)
        if cand.bn is not None and entry.bn_stats is not None:
            save_bn_stats(out.parent / entry.bn_stats, cand.bn)
            written.add(out.parent / entry.bn_stats)
    # a rebuild into the same place must not leave the previous build's statistics behind
    for directory in {path.parent for path in written}:
        for stale in directory.glob("*.pt"):
            if stale not in written:
                stale.unlink()


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


def _replace_latency(entry: CatalogEntry, pe: str, lat: Latency) -> CatalogEntry:
    latency = dict(entry.latency)
    latency[pe] = lat
    return CatalogEntry(
        id=entry.id,
        config=entry.config,
        resolution=entry.resolution,
        macs=entry.macs,
        params=entry.params,
        latency=latency,
        accuracy=entry.accuracy,
        bn_stats=entry.bn_stats,
    )


def _provenance(
    pool: list[_Candidate],
    kept: list[_Candidate],
    s: _Settings,
    candidates: int,
    measure: int,
    keep: int,
    seed: int,
    with_val: bool,
) -> dict[str, Any]:
    prov = provenance(s.eval_device, s.threads)
    prov["pes"] = {pe: {"device": pe_device(pe), "cpus": list(s.affinity.get(pe, []))} for pe in s.pes}
    measured = {pe: sum(1 for c in pool if pe in c.latency) for pe in s.pes}
    prov["build"] = {
        "candidates": candidates,
        "distinct_candidates": len(pool),
        "measure": measure,
        "measured_latency": measured,
        "measured_accuracy": sum(1 for c in pool if c.accuracy is not None),
        "keep": keep,
        "kept": len(kept),
        "seed": seed,
        "threads": s.threads,
        "warmup": s.warmup,
        "repeats": s.repeats,
        "primary_pe": s.pes[0],
        "selection": "pareto accuracy vs latency" if with_val else "pareto MACs vs latency (no accuracy)",
        "accuracy": (
            f"measured on {s.val_name}" if with_val else "not claimed: no validation data given (--val DATA)"
        ),
        "bn_calibration": None if s.calib is None else {"images": min(s.calib_limit, len(s.calib.y))},
    }
    return prov


def family_for_catalog(catalog: Catalog, weights: str | os.PathLike[str] | None = None) -> ModelFamily:
    """Rebuild the family a catalog was built for, with its weights (checked against the catalog's hash).

    ``weights`` overrides the path recorded in the catalog; a relative recorded path is taken
    relative to the catalog file. A catalog built on random initialisation needs no weights.
    """
    from dynofa.catalog import sha256_file
    from dynofa.errors import WeightsNotFoundError
    from subnets.registry import family_from_description

    recorded = catalog.weights.get("path")
    path: Path | None = None
    if weights is not None:
        path = Path(weights).expanduser()
    elif recorded:
        path = Path(str(recorded)).expanduser()
        if not path.is_absolute() and catalog.path is not None:
            path = catalog.path.parent / path
    if path is None:
        if catalog.weights.get("sha256"):
            raise WeightsNotFoundError(f"family {catalog.family.get('name')}", [])
        if catalog.weights.get("init") == "random":
            import torch

            torch.manual_seed(int(catalog.weights.get("seed", 0)))
        return family_from_description(catalog.family, None)
    if not path.is_file():
        raise WeightsNotFoundError(f"family {catalog.family.get('name')}", [str(path.absolute())])
    catalog.check_weights(sha256_file(path))
    return family_from_description(catalog.family, str(path))
