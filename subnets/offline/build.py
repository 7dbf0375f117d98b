"""Build a catalog by pre-sampling a family's subnets (Dynamic-OFA) with Reg-Tune-style profiling.

:func:`build_catalog`:

1. sample ``candidates`` distinct subnets (config and resolution), always with the largest and
   the smallest (:mod:`subnets.offline.candidates`);
2. materialise ``measure`` of them, spread over the MACs range, and time each on every processing
   element (PE) (:mod:`subnets.offline.measuring`); fit a latency regression per PE over the
   family's features, report its error on held-out measured subnets and predict the others
   (:mod:`subnets.offline.selection`);
3. with calibration data, recompute each subnet's BatchNorm statistics (stored beside the catalog
   as ``<catalog>.bn/<id>.pt``, so that a switch needs no data);
4. with validation data, measure top-1 accuracy (on the same subset; an accuracy predictor fitted on
   those ranks the rest); without it, no accuracy is claimed and MACs stand in for selection;
5. keep ``keep`` subnets spread across the accuracy/latency Pareto front of the primary PE, then
   measure whatever kept figure was only predicted and select again (``refine``), so the kept
   subnets carry measured figures wherever the budget allowed;
6. time the kept subnets at every extra batch size (``batch_sizes``) and check the batch rule
   (:meth:`dynofa.catalog.Latency.at_batch`) at a batch size it must interpolate.

Only Pareto-optimal subnets are kept (at most ``keep``), as Dynamic-OFA does: a dominated subnet is
never the right choice and it misleads level-stepping policies (unless ``fill_dominated``).
The options are a :class:`~subnets.offline.options.BuildOptions`. Re-timing a shipped catalog on
the machine it runs on is :func:`subnets.reprofile.reprofile`, not part of the builder.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from dynofa.catalog import Catalog
from dynofa.errors import CatalogBuildError
from subnets.family import ModelFamily
from subnets.offline import selection
from subnets.offline.candidates import Candidate, check_data, sample, spread_by_macs
from subnets.offline.measuring import BuildRun, calibrate, measure, measure_batches, needs_measuring, weights_of
from subnets.offline.options import BuildOptions
from subnets.offline.records import build_provenance, entry, write_bn_sidecars
from subnets.offline.regression import RegressionModel

if TYPE_CHECKING:
    from subnets.offline.accuracy import LabelledArrays

__all__ = ["BuildOptions", "build_catalog"]

Progress = Callable[[str], None]

#: refinement rounds: measure the kept subnets' predicted figures, select again
REFINE_ROUNDS = 3


def build_catalog(
    family: ModelFamily,
    options: BuildOptions | None = None,
    *,
    val: LabelledArrays | None = None,
    calib: LabelledArrays | None = None,
    progress: Progress | None = None,
) -> Catalog:
    """Pre-sample, profile and select subnets of ``family``; see the module docstring.

    ``val`` (held-out images) gives measured accuracy, ``calib`` per-subnet BN statistics (then
    ``options.out`` must say where the catalog goes).
    """
    opts = options or BuildOptions()
    opts.check()
    if calib is not None and opts.out is None:
        raise CatalogBuildError("BN statistics from calibration data need the catalog's output path (out=...)")
    say = progress or (lambda _msg: None)
    run = BuildRun(opts, val, calib, say, val_name=opts.val_name or str(getattr(val, "name", "") or "validation"))
    for data, what in ((val, "validation"), (calib, "calibration")):
        if data is not None:
            check_data(family, data, what)
    family.supernet()  # build it and load the weights first: a bad weights file fails before any work
    pool = sample(family, opts.candidates, random.Random(opts.seed), say, blend=opts.blend)
    to_measure = spread_by_macs(pool, min(opts.measure, len(pool)))
    say(f"measuring {len(to_measure)} of {len(pool)} candidates on {', '.join(run.pes)}")
    measure(family, to_measure, run, with_accuracy=val is not None)
    kept, models, acc_model = _select_and_refine(family, pool, run)
    predicted = selection.predictions(pool, models, acc_model)
    kept.sort(key=lambda c: selection.final_ms(c, run.pes[0], predicted))  # fastest first on the primary PE
    batch = measure_batches(family, kept, run)
    entries = []
    for cand in kept:
        if calib is not None and cand.bn is None:
            cand.bn = calibrate(family, cand, run)
        entries.append(entry(cand, predicted.get(cand.id, {}), run, acc_model, opts.out))
    catalog = Catalog(
        family=family.describe(),
        entries=entries,
        weights=dict(opts.weights) if opts.weights is not None else weights_of(family),
        provenance=build_provenance(pool, kept, run, batch),
        latency_models={pe: m.to_dict() for pe, m in models.items()},
    )
    if calib is not None and opts.out is not None:
        write_bn_sidecars(kept, Path(opts.out), catalog)
    if val is None:
        say("no validation data: no accuracy claimed (pass --val DATA to measure it); selected by MACs vs latency")
    say(f"kept {len(entries)} subnet(s): {', '.join(e.id for e in entries)}")
    return catalog


def _select_and_refine(
    family: ModelFamily, pool: list[Candidate], run: BuildRun
) -> tuple[list[Candidate], dict[str, RegressionModel], RegressionModel | None]:
    """Fit, select, measure the kept subnets' predicted figures, and again (``REFINE_ROUNDS``)."""
    opts, say = run.options, run.say
    with_val = run.val is not None
    models: dict[str, RegressionModel] = {}
    acc_model: RegressionModel | None = None
    kept: list[Candidate] = []
    rounds = REFINE_ROUNDS if opts.refine else 1
    for round_no in range(rounds):
        tell = say if round_no == 0 else None
        models = {pe: selection.latency_model(pool, pe, opts.seed, tell) for pe in run.pes}
        acc_model = selection.accuracy_model(pool, opts.seed, tell) if with_val else None
        predicted = selection.predictions(pool, models, acc_model)
        kept = selection.select(pool, opts.keep, run.pes, predicted, opts.fill_dominated)
        if not opts.refine:
            break
        pending = [c for c in kept if needs_measuring(c, run.pes, with_val)]
        if not pending:
            break
        say(f"refining: measuring {len(pending)} kept subnet(s) whose figures were predicted")
        measure(family, pending, run, with_accuracy=with_val)
    if opts.refine and round_no > 0:  # refitted on the refinement's measurements too
        for pe, model in models.items():
            say(f"final latency model [{pe}]: {selection.model_summary(model, 'ms')}")
    if not opts.fill_dominated:  # the last refinement's measurements may show a kept subnet dominated
        kept = selection.select(kept, opts.keep, run.pes, selection.predictions(pool, models, acc_model), fill=False)
    return kept, models, acc_model
