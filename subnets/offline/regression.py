"""Reg-Tune-style regression of latency (or accuracy) over architecture features.

Measuring every candidate subnet on every processing element is what Reg-Tune avoids: measure a
handful, fit a low-degree polynomial over the configuration variables and predict the rest.
Here the variables are the family's :meth:`~subnets.family.ModelFamily.features` (MACs, params,
resolution, depth/width/kernel statistics). The model is ridge-regularised least squares on
standardised features, of degree 1 or 2 (squares and pairwise products), optionally on the log
of the target; degree, ridge strength and transform are chosen by leave-one-out cross-validation
(closed form through the hat matrix, so choosing costs no refits). Its error on measured subnets
it was not fitted on is reported, so a catalog says how far its predicted figures can be trusted.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dynofa.errors import CatalogBuildError

DEFAULT_RIDGES = (1e-6, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
MODEL_KIND = "ridge-poly/1"
#: a feature joins the model only if it lowers the leave-one-out error by this fraction
FEATURE_GAIN = 0.10
#: measured points needed per model term (without the intercept): 6 points fit one term, 10 two, 20 four
POINTS_PER_TERM = 4
#: the simplest model form within this fraction of the best form's leave-one-out error is kept
FORM_SLACK = 0.05


@dataclass(frozen=True)
class ErrorReport:
    """Prediction error on points a model did not see (``method`` says how they were held out)."""

    method: str  # "held-out", "leave-one-out" or "none"
    n: int
    mae: float
    mape_pct: float
    max_abs: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "n": self.n,
            "mae": _finite(self.mae),
            "mape_pct": _finite(self.mape_pct),
            "max_abs": _finite(self.max_abs),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ErrorReport:
        def num(key: str) -> float:
            value = data.get(key)
            return float("nan") if value is None else float(value)

        return cls(str(data.get("method", "none")), int(data.get("n", 0)), num("mae"), num("mape_pct"), num("max_abs"))


def error_report(
    method: str, actual: Sequence[float] | np.ndarray, predicted: Sequence[float] | np.ndarray
) -> ErrorReport:
    a = np.asarray(actual, dtype=float)
    p = np.asarray(predicted, dtype=float)
    if a.size == 0:
        return ErrorReport("none", 0, float("nan"), float("nan"), float("nan"))
    err = np.abs(a - p)
    nonzero = np.abs(a) > 1e-12
    mape = float(np.mean(err[nonzero] / np.abs(a[nonzero])) * 100.0) if nonzero.any() else float("nan")
    return ErrorReport(method, int(a.size), float(err.mean()), mape, float(err.max()))


@dataclass
class RegressionModel:
    """A fitted polynomial model ``target = f(features)``; JSON-serialisable."""

    target: str
    features: list[str]
    degree: int
    ridge: float
    log_target: bool
    mean: list[float]
    scale: list[float]
    coef: list[float]  # intercept first, then the expanded terms
    lower: float | None = None  # predictions are clipped into [lower, upper]
    upper: float | None = None
    n_train: int = 0
    error: dict[str, Any] = field(default_factory=dict)  # "held_out" and "loo" ErrorReport dicts
    #: "ridge-poly" (:func:`fit`) or "cost-terms" (:func:`fit_cost_terms`): how the form was chosen
    fitter: str = "ridge-poly"

    def predict(self, rows: Sequence[Mapping[str, float]]) -> list[float]:
        if not rows:
            return []
        x = _matrix(rows, self.features)
        design = _design(x, np.asarray(self.mean), np.asarray(self.scale), self.degree)
        out = design @ np.asarray(self.coef)
        if self.log_target:
            out = np.exp(np.clip(out, -50.0, 50.0))
        if self.lower is not None or self.upper is not None:
            out = np.clip(out, self.lower, self.upper)
        return [float(v) for v in out]

    def predict_one(self, row: Mapping[str, float]) -> float:
        return self.predict([row])[0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": MODEL_KIND,
            "target": self.target,
            "features": list(self.features),
            "degree": self.degree,
            "ridge": self.ridge,
            "log_target": self.log_target,
            "mean": list(self.mean),
            "scale": list(self.scale),
            "coef": list(self.coef),
            "lower": self.lower,
            "upper": self.upper,
            "n_train": self.n_train,
            "error": self.error,
            "fitter": self.fitter,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RegressionModel:
        if not isinstance(data, Mapping) or data.get("kind") != MODEL_KIND:
            kind = data.get("kind") if isinstance(data, Mapping) else data
            raise CatalogBuildError(f"unknown regression model kind {kind!r}; this dynofa reads {MODEL_KIND!r}")
        try:
            model = cls(
                target=str(data["target"]),
                features=[str(f) for f in data["features"]],
                degree=int(data["degree"]),
                ridge=float(data["ridge"]),
                log_target=bool(data["log_target"]),
                mean=[float(v) for v in data["mean"]],
                scale=[float(v) for v in data["scale"]],
                coef=[float(v) for v in data["coef"]],
                lower=None if data.get("lower") is None else float(data["lower"]),
                upper=None if data.get("upper") is None else float(data["upper"]),
                n_train=int(data.get("n_train", 0)),
                error=dict(data.get("error", {})),
                fitter=str(data.get("fitter", "ridge-poly")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CatalogBuildError(f"malformed regression model: {exc!r}") from None
        n_terms = _n_terms(len(model.features), model.degree)
        if len(model.mean) != len(model.features) or len(model.scale) != len(model.features) or (
            len(model.coef) != n_terms + 1
        ):
            raise CatalogBuildError("malformed regression model: coefficient count does not match its features")
        return model


def fit(
    rows: Sequence[Mapping[str, float]],
    targets: Sequence[float],
    *,
    target: str = "latency_ms",
    features: Sequence[str] | None = None,
    degrees: Sequence[int] = (1, 2),
    ridges: Sequence[float] = DEFAULT_RIDGES,
    log_target: Sequence[bool] = (False,),
    lower: float | None = None,
    upper: float | None = None,
    select_features: bool = True,
    start_with: Sequence[str] | None = None,
) -> RegressionModel:
    """Fit candidate models and keep a simple one with a low leave-one-out mean absolute error.

    With a handful of measured subnets and timing noise, the leave-one-out winner is often a
    lucky, overfitted model (a quadratic over many features that extrapolates badly), so the
    choice leans on simplicity, Occam-style:

    * at most one model term per :data:`POINTS_PER_TERM` measured points;
    * features by greedy forward selection, starting from ``start_with`` (default: the first
      feature named ``macs*``, latency's first-order cause); a feature joins only if it lowers
      the error by at least :data:`FEATURE_GAIN`;
    * for a feature set, the simplest form (degree 1 before 2, identity before log, stronger
      ridge first) whose error is within :data:`FORM_SLACK` of the best form's.
    """
    y = np.asarray(targets, dtype=float)
    if len(rows) != y.size:
        raise CatalogBuildError(f"regression needs one target per row, got {len(rows)} rows and {y.size} targets")
    if y.size < 2:
        raise CatalogBuildError(f"regression of {target} needs at least 2 measured points, got {y.size}")
    if not np.all(np.isfinite(y)):
        raise CatalogBuildError(f"regression of {target}: targets must be finite numbers")
    names = sorted(_common_features(rows)) if features is None else list(features)
    if not names:
        raise CatalogBuildError(f"regression of {target}: the rows share no numeric feature")
    for degree in degrees:
        if degree not in (1, 2):
            raise CatalogBuildError(f"regression degree must be 1 or 2, got {degree}")
    x_all = _matrix(rows, names)
    # a handful of noisy points supports few terms: at least POINTS_PER_TERM measurements each
    # (without selection the caller asked for every feature: no limit)
    max_terms = max(1, (y.size - 1) // POINTS_PER_TERM) if select_features else 1 << 30
    grid = _Grid(y, tuple(degrees), tuple(ridges), tuple(log_target), lower, upper, max_terms)
    if select_features:
        varying = [j for j in range(len(names)) if np.ptp(x_all[:, j]) > 0] or [0]
        if start_with is None:
            start_with = [n for n in names if n.lower().startswith("macs")][:1]
        chosen = [names.index(n) for n in start_with if n in names and names.index(n) in varying]
        best = grid.search(x_all[:, chosen]) if chosen else None
        remaining = [j for j in varying if j not in chosen]
        while remaining:
            trials = [(grid.search(x_all[:, [*chosen, j]]), j) for j in remaining]
            scored = [(t, j) for t, j in trials if t is not None]
            if not scored:
                break
            trial, j = min(scored, key=lambda tj: tj[0].score)
            if best is not None and trial.score >= best.score * (1.0 - FEATURE_GAIN):
                break
            best, chosen = trial, [*chosen, j]
            remaining.remove(j)
        picked = sorted(chosen)
        best = grid.search(x_all[:, picked]) if picked else None
    else:
        picked = list(range(len(names)))
        best = grid.search(x_all)
    if best is None:
        raise CatalogBuildError(f"regression of {target}: no candidate model could be fitted to {y.size} points")
    model = RegressionModel(
        target=target,
        features=[names[j] for j in picked],
        degree=best.degree,
        ridge=best.ridge,
        log_target=best.log_target,
        mean=[float(v) for v in best.mean],
        scale=[float(v) for v in best.scale],
        coef=[float(v) for v in best.coef],
        lower=lower,
        upper=upper,
        n_train=int(y.size),
    )
    model.error["loo"] = loo_error(model, rows, y).to_dict()
    return model


@dataclass
class _Fit:
    score: float  # leave-one-out mean absolute error, in target units
    degree: int
    ridge: float
    log_target: bool
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray


@dataclass
class _Grid:
    """The candidate model forms (degree x ridge x transform) searched for each feature set."""

    y: np.ndarray
    degrees: tuple[int, ...]
    ridges: tuple[float, ...]
    log_target: tuple[bool, ...]
    lower: float | None
    upper: float | None
    max_terms: int

    def search(self, x: np.ndarray) -> _Fit | None:
        """The simplest form within FORM_SLACK of the best leave-one-out error (None if none fits)."""
        mean = x.mean(axis=0)
        scale = x.std(axis=0)
        scale[scale < 1e-12] = 1.0
        fits: list[_Fit] = []  # in order of increasing complexity
        for degree in sorted(self.degrees):
            design = _design(x, mean, scale, degree)
            if design.shape[1] - 1 > self.max_terms:
                continue
            for use_log in sorted(self.log_target):
                if use_log and np.any(self.y <= 0):
                    continue
                yt = np.log(self.y) if use_log else self.y
                for ridge in sorted(self.ridges):
                    coef, loo_pred = _ridge_with_loo(design, yt, ridge)
                    pred = np.exp(np.clip(loo_pred, -50.0, 50.0)) if use_log else loo_pred
                    if self.lower is not None or self.upper is not None:
                        pred = np.clip(pred, self.lower, self.upper)
                    score = float(np.mean(np.abs(pred - self.y)))
                    if math.isfinite(score):
                        fits.append(_Fit(score, degree, ridge, use_log, mean, scale, coef))
        if not fits:
            return None
        best = min(f.score for f in fits)
        return next(f for f in fits if f.score <= best * (1.0 + FORM_SLACK) + 1e-12)


def fit_with_holdout(
    rows: Sequence[Mapping[str, float]],
    targets: Sequence[float],
    *,
    holdout: float = 0.25,
    seed: int = 0,
    fitter: Callable[..., RegressionModel] | None = None,
    **options: Any,
) -> RegressionModel:
    """Report the error on held-out points, then refit on all points.

    A fraction ``holdout`` of the points (at least one, and only when at least 4 points
    exist) is set aside; a model fitted on the rest (by ``fitter``, default :func:`fit`, which
    chooses its form by cross-validation on those points only) predicts them and its error is
    stored as ``error["held_out"]``. The returned model is refitted on every point (more data),
    and also carries its leave-one-out error ``error["loo"]``.
    """
    fit_fn = fitter or fit
    n = len(rows)
    held: ErrorReport
    if n >= 4 and holdout > 0:
        order = list(range(n))
        random.Random(seed).shuffle(order)
        n_held = max(1, min(n - 2, round(n * holdout)))
        test, train = order[:n_held], order[n_held:]
        partial = fit_fn([rows[i] for i in train], [targets[i] for i in train], **options)
        predicted = partial.predict([rows[i] for i in test])
        held = error_report("held-out", [float(targets[i]) for i in test], predicted)
    else:
        held = ErrorReport("none", 0, float("nan"), float("nan"), float("nan"))
    model = fit_fn(rows, targets, **options)
    model.error["held_out"] = held.to_dict()
    return model


def fit_latency(
    rows: Sequence[Mapping[str, float]], latencies_ms: Sequence[float], *, seed: int = 0, **options: Any
) -> RegressionModel:
    """The latency model of the catalog builder and of ``benchmarks.catalog_regression``.

    Two families of forms compete on the leave-one-out relative error of the measured subnets
    (:func:`choose_latency_model`): the additive cost-term model (:func:`fit_cost_terms`), when
    the family reports cost terms, and the ridge polynomial (:func:`fit`, identity or log target).
    Predictions are clipped to stay positive. The held-out error (a quarter of the measured
    subnets set aside, the choice made without them) is stored in ``error["held_out"]``.
    """
    options.setdefault("log_target", (False, True))
    positive = 0.5 * min(float(v) for v in latencies_ms) if len(latencies_ms) else 1e-6
    options.setdefault("lower", max(positive, 1e-6))
    return fit_with_holdout(rows, latencies_ms, seed=seed, fitter=choose_latency_model, **options)


#: the ridge polynomial replaces the cost-term model only below this fraction of its nested-LOO MAPE
POLY_MARGIN = 0.8


def choose_latency_model(
    rows: Sequence[Mapping[str, float]], latencies_ms: Sequence[float], **options: Any
) -> RegressionModel:
    """The cost-term model or the ridge polynomial, whichever predicts left-out subnets better.

    Each fitter picks its own form (features, ridge, transform) by cross-validation, so its own
    leave-one-out error is optimistic; the two are compared by *nested* leave-one-out instead: each
    measured subnet is predicted by each fitter run, selection included, on the others. The
    polynomial must beat the cost-term model by a margin (:data:`POLY_MARGIN`): its form search is
    much wider, and a nested leave-one-out over a handful of noisy points is itself noisy, so a
    small lead is more likely luck than a better model. Both scores are stored in ``error["choice"]``.
    """
    poly = fit(rows, latencies_ms, target="latency_ms", **options)
    cost = fit_cost_terms(rows, latencies_ms, lower=options.get("lower"))
    if cost is None:
        return poly
    y = [float(v) for v in latencies_ms]
    scores: dict[str, float] = {}
    for name, fitter in (
        ("cost-terms", lambda r, t: fit_cost_terms(r, t, lower=options.get("lower"))),
        ("ridge-poly", lambda r, t: fit(r, t, target="latency_ms", **options)),
    ):
        predicted = []
        for i in range(len(rows)):
            inner = fitter([*rows[:i], *rows[i + 1 :]], [*y[:i], *y[i + 1 :]])
            predicted.append(inner.predict_one(rows[i]) if inner is not None else float("inf"))
        scores[name] = error_report("nested-leave-one-out", y, predicted).mape_pct
    chosen = poly if scores["ridge-poly"] < POLY_MARGIN * scores["cost-terms"] else cost
    chosen.error["choice"] = {name: round(v, 3) for name, v in scores.items()}
    return chosen


#: additive cost terms a family's features may carry (see ``_MBConvFamily.features``): latency on a
#: CPU is close to a constant (stem, head, framework) plus non-negative costs per block, per layer (torch
#: op: per-call overhead), per SE block, per point-wise MAC, per depthwise MAC, per activation element
#: moved and per weight read
COST_TERMS = (
    "active_blocks",
    "layers",
    "se_blocks",
    "pointwise_macs_m",
    "depthwise_macs_m",
    "activations_m",
    "macs_m",
    "params_m",
)


#: ridge strengths tried by :func:`fit_cost_terms` (on terms scaled to unit spread)
COST_RIDGES = (0.0, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)


def fit_cost_terms(
    rows: Sequence[Mapping[str, float]],
    latencies_ms: Sequence[float],
    *,
    lower: float | None = None,
    terms: Sequence[str] = COST_TERMS,
    ridges: Sequence[float] = COST_RIDGES,
) -> RegressionModel | None:
    """Latency as a constant plus non-negative costs of the family's cost terms; None without them.

    Every cost term the rows share enters; non-negative least squares (a term cannot make a subnet
    faster) on *relative* error (rows weighted by 1/latency: the goal is a low percentage error
    across subnets 10x apart) keeps the model physical and stops a handful of noisy points from
    fitting noise, and zeroes the terms the data do not support. The ridge strength (towards zero
    costs, on standardised terms) is chosen by leave-one-out MAPE.
    """
    y = np.asarray(latencies_ms, dtype=float)
    common = _common_features(rows)
    names = [t for t in terms if t in common]
    if not names or y.size < 4 or np.any(y <= 0):
        return None
    x_all = _matrix(rows, names)
    usable = [j for j in range(len(names)) if np.ptp(x_all[:, j]) > 0]
    if not usable:
        return None
    x = x_all[:, usable]
    scale = x.std(axis=0)
    best: tuple[float, float, np.ndarray] | None = None
    for ridge in sorted(ridges):
        loo = np.array([
            _nnls_relative(np.delete(x, i, axis=0), np.delete(y, i), scale, ridge) @ np.r_[1.0, x[i]]
            for i in range(y.size)
        ])
        if lower is not None:
            loo = np.maximum(loo, lower)
        score = float(np.mean(np.abs(loo - y) / y))
        if math.isfinite(score) and (best is None or score < best[0] * (1.0 - 1e-9)):
            best = (score, ridge, _nnls_relative(x, y, scale, ridge))
    if best is None:
        return None
    _, ridge, coef = best
    model = RegressionModel(
        target="latency_ms",
        features=[names[j] for j in usable],
        degree=1,
        ridge=ridge,
        log_target=False,
        mean=[0.0] * len(usable),  # raw terms: the coefficients are costs per unit (ms per block, ...)
        scale=[1.0] * len(usable),
        coef=[float(v) for v in coef],
        lower=lower,
        n_train=int(y.size),
        fitter="cost-terms",
    )
    model.error["loo"] = loo_error(model, rows, y).to_dict()
    return model


def _nnls_relative(x: np.ndarray, y: np.ndarray, scale: np.ndarray, ridge: float) -> np.ndarray:
    """``[c0, c1..]``, c1.. >= 0, minimising sum(((c0 + x c) / y - 1)^2) + ridge * sum((c * scale / mean(y))^2).

    The penalty is on each term's share of a typical latency (dimensionless, like the residuals).
    """
    from scipy.optimize import nnls

    n, k = x.shape
    safe = np.where(scale > 1e-12, scale, 1.0) / float(np.mean(y))
    # the free intercept as the difference of two non-negative ones
    design = np.column_stack([np.ones(n), -np.ones(n), x / safe]) / y[:, None]
    target = np.ones(n)
    if ridge > 0:
        penalty = np.zeros((k, k + 2))
        penalty[:, 2:] = np.sqrt(ridge) * np.eye(k)
        design = np.vstack([design, penalty])
        target = np.concatenate([target, np.zeros(k)])
    solution, _ = nnls(design, target, maxiter=50 * (k + 2))
    return np.concatenate([[solution[0] - solution[1]], solution[2:] / safe])


def fit_accuracy(
    rows: Sequence[Mapping[str, float]], top1: Sequence[float], *, seed: int = 0, **options: Any
) -> RegressionModel:
    """Accuracy predictor fitted on subnets whose accuracy was measured; predictions stay in [0, 1]."""
    options.setdefault("lower", 0.0)
    options.setdefault("upper", 1.0)
    return fit_with_holdout(rows, top1, target="top1", seed=seed, **options)


def loo_error(model: RegressionModel, rows: Sequence[Mapping[str, float]], targets: Any) -> ErrorReport:
    """Leave-one-out error of ``model``'s form (features, degree, ridge, transform) on ``rows``.

    A cost-term model is refitted without each point (non-negative least squares has no
    closed-form leave-one-out); a ridge polynomial uses the hat matrix.
    """
    y = np.asarray(targets, dtype=float)
    x = _matrix(rows, model.features)
    if model.fitter == "cost-terms":
        scale = x.std(axis=0)
        pred = np.array([
            _nnls_relative(np.delete(x, i, axis=0), np.delete(y, i), scale, model.ridge) @ np.r_[1.0, x[i]]
            for i in range(y.size)
        ])
    else:
        design = _design(x, np.asarray(model.mean), np.asarray(model.scale), model.degree)
        yt = np.log(y) if model.log_target else y
        _, loo_pred = _ridge_with_loo(design, yt, model.ridge)
        pred = np.exp(np.clip(loo_pred, -50.0, 50.0)) if model.log_target else loo_pred
    if model.lower is not None or model.upper is not None:
        pred = np.clip(pred, model.lower, model.upper)
    if not np.all(np.isfinite(pred)):
        return ErrorReport("leave-one-out", int(y.size), float("inf"), float("inf"), float("inf"))
    return error_report("leave-one-out", y, pred)


def _ridge_with_loo(design: np.ndarray, y: np.ndarray, ridge: float) -> tuple[np.ndarray, np.ndarray]:
    """Ridge solution (intercept unpenalised) and leave-one-out predictions via the hat matrix."""
    penalty = np.eye(design.shape[1]) * ridge
    penalty[0, 0] = 0.0
    gram = design.T @ design + penalty
    try:
        inverse = np.linalg.inv(gram)
    except np.linalg.LinAlgError:
        inverse = np.linalg.pinv(gram)
    coef = inverse @ design.T @ y
    fitted = design @ coef
    leverage = np.einsum("ij,jk,ik->i", design, inverse, design)
    with np.errstate(divide="ignore", invalid="ignore"):
        residual = (y - fitted) / (1.0 - leverage)
    residual[np.abs(1.0 - leverage) < 1e-9] = np.inf
    return coef, y - residual


def _common_features(rows: Sequence[Mapping[str, float]]) -> set[str]:
    common: set[str] | None = None
    for row in rows:
        numeric = {k for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        common = numeric if common is None else common & numeric
    return common or set()


def _matrix(rows: Sequence[Mapping[str, float]], names: Sequence[str]) -> np.ndarray:
    try:
        return np.array([[float(row[n]) for n in names] for row in rows], dtype=float).reshape(len(rows), len(names))
    except KeyError as exc:
        raise CatalogBuildError(f"regression feature {exc.args[0]!r} is missing from a subnet's features") from None


def _n_terms(n_features: int, degree: int) -> int:
    return n_features + (n_features * (n_features + 1) // 2 if degree == 2 else 0)


def _design(x: np.ndarray, mean: np.ndarray, scale: np.ndarray, degree: int) -> np.ndarray:
    z = (x - mean) / scale
    columns = [np.ones(len(z)), *z.T]
    if degree == 2:
        n = z.shape[1]
        columns += [z[:, i] * z[:, j] for i in range(n) for j in range(i, n)]
    return np.column_stack(columns)


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None
