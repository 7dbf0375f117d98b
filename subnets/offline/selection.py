"""Fitting the build's latency and accuracy models, predicting unmeasured figures, selecting the front."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from subnets import pareto
from subnets.offline.candidates import Candidate, Progress
from subnets.offline.regression import RegressionModel, fit_accuracy, fit_latency

#: fewest measured accuracies an accuracy predictor is fitted on
MIN_ACCURACY_SAMPLES = 3

#: per candidate id: predicted latency per PE and predicted ``top1`` (only where not measured)
Predictions = dict[str, dict[str, float]]


def latency_model(pool: list[Candidate], pe: str, seed: int, say: Progress | None) -> RegressionModel:
    done = [c for c in pool if c.measured_on(pe)]
    model = fit_latency([c.features for c in done], [c.latency[pe].ms for c in done], seed=seed)
    if say is not None:
        say(f"latency model [{pe}]: {model_summary(model, 'ms')}")
    return model


def accuracy_model(pool: list[Candidate], seed: int, say: Progress | None) -> RegressionModel | None:
    done = [c for c in pool if c.accuracy_measured()]
    if len(done) < MIN_ACCURACY_SAMPLES:
        if say is not None:
            say(f"only {len(done)} measured accuracies: no accuracy predictor; unmeasured subnets claim none")
        return None
    model = fit_accuracy([c.features for c in done], [c.accuracy.top1 for c in done if c.accuracy], seed=seed)
    if say is not None:
        say(f"accuracy predictor: {model_summary(model, '')}")
    return model


def model_summary(model: RegressionModel, unit: str) -> str:
    if model.fitter == "cost-terms":
        used = [f for f, c in zip(model.features, model.coef[1:], strict=True) if c > 0]
        text = f"cost terms ({', '.join(used) or 'constant'}), fitted on {model.n_train}"
    else:
        text = f"ridge-poly degree {model.degree}{' (log)' if model.log_target else ''}, fitted on {model.n_train}"
    scale = 1.0 if unit else 100.0
    unit = unit or "pt"
    for key, label in (("held_out", "held-out"), ("loo", "leave-one-out")):
        err = model.error.get(key) or {}
        if err.get("mae") is not None:
            text += f"; {label} MAE {err['mae'] * scale:.2f} {unit} ({err['mape_pct']:.1f} %, n={err['n']})"
    return text


def predictions(
    pool: list[Candidate], models: Mapping[str, RegressionModel], acc_model: RegressionModel | None
) -> Predictions:
    out: Predictions = {c.id: {} for c in pool}
    for pe, model in models.items():
        todo = [c for c in pool if not c.measured_on(pe)]
        for cand, ms in zip(todo, model.predict([c.features for c in todo]), strict=True):
            out[cand.id][pe] = ms
    if acc_model is not None:
        todo = [c for c in pool if not c.accuracy_measured()]
        for cand, top1 in zip(todo, acc_model.predict([c.features for c in todo]), strict=True):
            out[cand.id]["top1"] = top1
    return out


def final_ms(cand: Candidate, pe: str, predicted: Mapping[str, Mapping[str, float]]) -> float:
    """The candidate's latency on ``pe``: measured where it was, else predicted."""
    return cand.latency[pe].ms if cand.measured_on(pe) else float(predicted[cand.id][pe])


def select(
    pool: list[Candidate],
    keep: int,
    pes: Sequence[str],
    predicted: Mapping[str, Mapping[str, float]],
    fill: bool,
) -> list[Candidate]:
    """K subnets spread over the Pareto front(s); see :func:`subnets.pareto.select_across`."""

    def latency_on(pe: str) -> Callable[[Candidate], float]:
        return lambda c: final_ms(c, pe, predicted)

    def top1(c: Candidate) -> float | None:
        if c.accuracy is not None and c.accuracy_measured():
            return c.accuracy.top1
        return predicted[c.id].get("top1")

    if all(top1(c) is not None for c in pool):
        return pareto.select_across(pool, keep, lambda c: float(top1(c) or 0.0), [latency_on(pe) for pe in pes], fill)
    return pareto.select_across(pool, keep, lambda c: float(c.macs), [latency_on(pe) for pe in pes], fill)
