"""Latency of a subnet on a processing element at a frequency.

The catalog gives each subnet's latency on each processing element (PE) at one
frequency (the one it was profiled at). Across frequencies we use a Reg-Tune-style
regression fitted from a few measured points per PE (anchors.md, item 4)::

    t(f) = a + b / f

``b / f`` is the compute-bound part (cycles / frequency) and ``a`` the part that does
not scale with the core clock (memory stalls, launch overheads). Normalised at the
reference frequency ``f_ref`` this is one number per PE, the non-scaling fraction
``m = a / t(f_ref)``, so ``t(f) = t(f_ref) * (m + (1 - m) * f_ref / f)``. One fraction
per PE is enough because it describes the PE's memory system more than the subnet;
the fit reports its error on the points it was fitted on and leave-one-out, so a user
can see when it is not.

What an app's forwards take against those figures on a quiet PE (its idle gaps between
requests, its batch size, the machine since the figures were taken) is learnt per app online:
:class:`AppCorrection`, kept apart from the contention estimate (docs/policies.md).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from statistics import median
from typing import Any

from dynofa.catalog import CatalogEntry
from dynofa.errors import DynofaError

#: Non-scaling fraction assumed when no measurements were fitted (an assumption, stated
#: in docs/policies.md): CPU inference of small convnets is mostly compute-bound; GPU
#: inference at batch 1 carries kernel-launch and memory time that does not scale with
#: the GPU clock.
DEFAULT_NONSCALING = {"cpu": 0.1, "gpu": 0.25}


class LatencyModelError(DynofaError):
    """A latency regression cannot be fitted from the points given (too few, or bad values)."""


@dataclass(frozen=True)
class ScalingPoint:
    """One measurement: ``subnet`` took ``latency_ms`` at ``freq_khz`` on a PE."""

    subnet: str
    freq_khz: int
    latency_ms: float


@dataclass(frozen=True)
class FrequencyScaling:
    """``t(f) = t(f_ref) * (m + (1 - m) * f_ref / f)`` for one PE, with the fit's error."""

    nonscaling: float  # m in [0, 1]
    fitted: bool = False
    points: int = 0
    mean_abs_error_pct: float | None = None  # on the fitted points
    max_abs_error_pct: float | None = None
    loo_mean_abs_error_pct: float | None = None  # leave-one-out, when every subnet has >= 3 points

    def factor(self, freq_khz: float, ref_khz: float) -> float:
        """Latency at ``freq_khz`` divided by latency at ``ref_khz``."""
        if freq_khz <= 0 or ref_khz <= 0:
            raise LatencyModelError(f"frequencies must be positive, got {freq_khz} and {ref_khz} kHz")
        m = self.nonscaling
        return m + (1.0 - m) * ref_khz / freq_khz

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": "t(f) = a + b/f",
            "nonscaling_fraction": round(self.nonscaling, 4),
            "fitted": self.fitted,
            "points": self.points,
            "mean_abs_error_pct": self.mean_abs_error_pct,
            "max_abs_error_pct": self.max_abs_error_pct,
            "loo_mean_abs_error_pct": self.loo_mean_abs_error_pct,
        }


def _fit_line(points: Sequence[ScalingPoint]) -> tuple[float, float]:
    """Least squares ``t = a + b * (1/f)``."""
    xs = [1.0 / p.freq_khz for p in points]
    ys = [p.latency_ms for p in points]
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        raise LatencyModelError("need measurements at two or more distinct frequencies per subnet")
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    return my - b * mx, b


def _fraction(points: Sequence[ScalingPoint], ref_khz: float) -> tuple[float, dict[str, float]]:
    """Pooled non-scaling fraction and each subnet's fitted latency at ``ref_khz``."""
    by_subnet: dict[str, list[ScalingPoint]] = {}
    for p in points:
        by_subnet.setdefault(p.subnet, []).append(p)
    fractions: list[float] = []
    at_ref: dict[str, float] = {}
    for subnet, pts in by_subnet.items():
        a, b = _fit_line(pts)
        t_ref = a + b / ref_khz
        if t_ref <= 0:
            raise LatencyModelError(f"fit for subnet {subnet!r} predicts a non-positive latency at {ref_khz} kHz")
        at_ref[subnet] = t_ref
        fractions.append(min(1.0, max(0.0, a / t_ref)))
    return median(fractions), at_ref


def fit_frequency_scaling(points: Iterable[ScalingPoint], ref_khz: int | None = None) -> FrequencyScaling:
    """Fit one PE's frequency scaling from a few measured points (>= 2 frequencies per subnet).

    Reports the mean/max absolute relative error on the fitted points and, when every
    subnet has 3 or more points, the leave-one-out error (each point predicted by a fit
    that did not see it).
    """
    pts = list(points)
    for p in pts:
        if p.freq_khz <= 0 or not p.latency_ms > 0:
            raise LatencyModelError(f"bad measurement {p}: frequency and latency must be positive")
    if len(pts) < 2:
        raise LatencyModelError(f"need at least 2 measured points to fit a frequency scaling, got {len(pts)}")
    ref = float(ref_khz if ref_khz is not None else max(p.freq_khz for p in pts))
    m, at_ref = _fraction(pts, ref)
    scaling = FrequencyScaling(nonscaling=m, fitted=True, points=len(pts))
    errors = [abs(at_ref[p.subnet] * scaling.factor(p.freq_khz, ref) / p.latency_ms - 1.0) * 100 for p in pts]
    loo = _leave_one_out(pts, ref)
    return FrequencyScaling(
        nonscaling=m,
        fitted=True,
        points=len(pts),
        mean_abs_error_pct=round(sum(errors) / len(errors), 3),
        max_abs_error_pct=round(max(errors), 3),
        loo_mean_abs_error_pct=None if loo is None else round(loo, 3),
    )


def _leave_one_out(pts: Sequence[ScalingPoint], ref: float) -> float | None:
    counts: dict[str, int] = {}
    for p in pts:
        counts[p.subnet] = counts.get(p.subnet, 0) + 1
    if min(counts.values()) < 3:
        return None
    errors = []
    for i, held in enumerate(pts):
        rest = [p for j, p in enumerate(pts) if j != i]
        m, at_ref = _fraction(rest, ref)
        predicted = at_ref[held.subnet] * FrequencyScaling(nonscaling=m).factor(held.freq_khz, ref)
        errors.append(abs(predicted / held.latency_ms - 1.0) * 100)
    return sum(errors) / len(errors)


@dataclass
class LatencyModel:
    """Predicts a catalog subnet's latency on a PE at a frequency (no contention, no margin).

    ``scalings`` holds fitted regressions per PE name; PEs without one use
    :data:`DEFAULT_NONSCALING` by kind. The catalog figure's frequency is the one stored
    with it (``Latency.freq_khz``); when the catalog does not say, the figure is taken to
    be at ``reference_khz[pe]`` (the top of the PE's ladder, where catalogs are profiled).
    """

    scalings: dict[str, FrequencyScaling] = field(default_factory=dict)

    def scaling(self, pe: str, kind: str) -> FrequencyScaling:
        found = self.scalings.get(pe)
        if found is not None:
            return found
        return FrequencyScaling(nonscaling=DEFAULT_NONSCALING.get(kind, 0.1))

    def predict_ms(
        self,
        entry: CatalogEntry,
        pe: str,
        kind: str,
        freq_khz: int | None,
        top_khz: int | None,
        batch: int = 1,
    ) -> float | None:
        """Latency in ms of one forward of ``batch`` images, or None when the catalog has no figure for this PE.

        ``freq_khz`` is the PE's frequency in kHz (GPU Hz / 1000); None = not controlled
        (the catalog figure is used as is). ``top_khz`` is the top of the PE's ladder. The
        batch figure is the catalog's (:meth:`dynofa.catalog.Latency.at_batch`: measured per
        batch size, or its one interpolation rule), scaled to the frequency like batch 1.
        """
        lat = entry.latency.get(pe)
        if lat is None:
            return None
        ms = lat.at_batch(batch)
        if freq_khz is None:
            return ms
        ref = lat.freq_khz or top_khz
        if ref is None:
            return ms
        return ms * self.scaling(pe, kind).factor(freq_khz, ref)

    def to_dict(self) -> dict[str, Any]:
        return {pe: s.to_dict() for pe, s in sorted(self.scalings.items())}

    @classmethod
    def from_catalog_models(cls, latency_models: Mapping[str, Any]) -> LatencyModel:
        """Read fitted scalings stored in a catalog's ``latency_models`` (``nonscaling_fraction`` per PE).

        Entries without that field (e.g. a catalog builder's own per-subnet regression)
        are ignored: the defaults apply to those PEs.
        """
        scalings: dict[str, FrequencyScaling] = {}
        for pe, model in latency_models.items():
            if isinstance(model, Mapping) and isinstance(model.get("nonscaling_fraction"), (int, float)):
                m = float(model["nonscaling_fraction"])
                if 0.0 <= m <= 1.0:
                    scalings[str(pe)] = FrequencyScaling(nonscaling=m, fitted=bool(model.get("fitted", True)))
        return cls(scalings=scalings)


# -- what an app's forwards really take: a per-app correction learnt online ------------------------


def scaled(entry: CatalogEntry, pe: str, factor: float) -> CatalogEntry:
    """``entry`` with its latency on ``pe`` (batch 1 and every batch figure) multiplied by ``factor``."""
    lat = entry.latency.get(pe)
    if lat is None or factor == 1.0:
        return entry
    batch = {b: replace(fig, ms=fig.ms * factor) for b, fig in lat.batch.items()}
    return replace(entry, latency={**entry.latency, pe: replace(lat, ms=lat.ms * factor, batch=batch)})


@dataclass
class _Ratios:
    recent: deque[float]
    held: int = 0  # observations not learnt from: the monitors saw other load on the PE


class AppCorrection:
    """Per app, PE and batch size: how much longer the app's forwards take than the catalog says, on a quiet PE.

    A catalog figure (re-profiled at start-up) is one machine state and one way of calling the
    forward; an app's forwards run in another: after its own idle gap between requests (CPU idle
    states and DVFS governors slow the first milliseconds after a wait, caches are refilled), at its
    own batch size, with the machine's speed some seconds later (a VM's host, a board's thermals).
    None of that is other processes' load, so the contention estimate must not carry it: with two
    apps on one PE it cannot be right for both, and on a quiet machine it would read as contention.

    The estimate is the median of the last ``window`` ratios ``measured / catalog`` (catalog: the
    contention-free prediction, frequency scaling and batch size included) observed while the
    monitors saw no other load that slows the PE (``quiet``); each ratio is clamped to ``bounds``
    first and the estimate stays within them, so neither one wild forward nor a broken figure can
    move it far. It applies once ``min_samples`` quiet ratios were seen (1.0 before). Under other
    load it holds (the contention estimate measures the slowdown against it); it is per batch size
    because the idle penalty is a larger share of a small forward than of a 32-image one.
    """

    def __init__(self, window: int = 256, min_samples: int = 16, bounds: tuple[float, float] = (1 / 3, 3.0)) -> None:
        if window < 1 or not 1 <= min_samples <= window:
            raise LatencyModelError(f"need window >= 1 and 1 <= min_samples <= window, got {window}, {min_samples}")
        if not 0 < bounds[0] <= 1.0 <= bounds[1]:
            raise LatencyModelError(f"bounds must bracket 1, got {bounds}")
        self.window = window
        self.min_samples = min_samples
        self.bounds = bounds
        self._keys: dict[tuple[str, str, int], _Ratios] = {}

    def observe(self, app: str, pe: str, batch: int, measured_ms: float, catalog_ms: float, quiet: bool) -> None:
        """One forward of ``batch`` images of ``app`` on ``pe`` took ``measured_ms`` against ``catalog_ms``."""
        if not (measured_ms > 0 and catalog_ms > 0 and math.isfinite(measured_ms / catalog_ms)):
            return
        ratios = self._keys.setdefault((app, pe, batch), _Ratios(deque(maxlen=self.window)))
        if not quiet:
            ratios.held += 1
            return
        low, high = self.bounds
        ratios.recent.append(min(high, max(low, measured_ms / catalog_ms)))

    def factor(self, app: str, pe: str, batch: int) -> float:
        """The catalog figure's multiplier for ``app`` on ``pe`` at ``batch`` (1.0 until it is known)."""
        ratios = self._keys.get((app, pe, batch))
        if ratios is None or len(ratios.recent) < self.min_samples:
            return 1.0
        return float(median(ratios.recent))

    def forget(self, app: str) -> None:
        for key in [k for k in self._keys if k[0] == app]:
            del self._keys[key]

    def to_dict(self, app: str) -> dict[str, Any]:
        """``{pe: {batch: {"factor", "samples", "held"}}}`` for ``app`` (what ``state`` shows)."""
        out: dict[str, Any] = {}
        for (name, pe, batch), ratios in sorted(self._keys.items()):
            if name == app:
                out.setdefault(pe, {})[str(batch)] = {
                    "factor": round(self.factor(app, pe, batch), 4), "samples": len(ratios.recent), "held": ratios.held}
        return out
