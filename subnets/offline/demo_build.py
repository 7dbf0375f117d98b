"""Build the bundled demo catalogs (``subnets/data/demo/``); see docs/demo-model.md."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dynofa.catalog import Catalog, sha256_file
from subnets.demo import DIGITS_SEED, demo_weights_path, grouped_demo_family, ofa_demo_family
from subnets.offline.build import BuildOptions, build_catalog
from subnets.offline.datasets import digits_dataset

Progress = Callable[[str], None]

#: batch sizes the demo catalogs carry: the demo app sends 1 image, the contention benchmark 32
BATCH_SIZES = (1, 8, 32)
#: candidate subnets the demo catalog samples (and, by default, measures: latency and accuracy)
DEMO_CANDIDATES = 160
#: distortions of each test digit in the demo supernet's held-out set (finer accuracy steps: 1080 images)
TEST_COPIES = 3


def _weights_object(weights: Path, out: Path) -> dict[str, Any]:
    """Recorded relative to the catalog when the weights sit beside it (so the package can move)."""
    path = weights.resolve()
    recorded = path.name if path.parent == out.resolve().parent else str(path)
    return {"path": recorded, "sha256": sha256_file(path)}


def build_ofa_catalog(
    out: str | os.PathLike[str],
    weights: str | os.PathLike[str] | None = None,
    candidates: int = DEMO_CANDIDATES,
    measure: int = DEMO_CANDIDATES,
    keep: int = 12,
    repeats: int = 10,
    seed: int = 0,
    progress: Progress | None = None,
    clock: str = "thread",
    passes: int = 3,
    blend: float = 0.5,
) -> Path:
    """Sample, time and select demo-supernet subnets; accuracy measured on the distorted digits test
    split (each test image under :data:`TEST_COPIES` distortions), per-subnet BN statistics calibrated
    on the training split; CPU latency at :data:`BATCH_SIZES`.

    By default every candidate is measured (this supernet is small enough), so the front is made of
    measured figures only; half the candidates are blended towards the largest or the smallest subnet
    (:func:`subnets.offline.candidates.sample`), so that the front's both ends are sampled densely."""
    target = Path(out)
    weights_path = Path(weights) if weights else demo_weights_path("ofa")
    family = ofa_demo_family(weights_path)
    top = max(family.resolutions())
    test = digits_dataset("test", top, DIGITS_SEED, distorted=True, copies=TEST_COPIES)
    calib = digits_dataset("train", top, DIGITS_SEED, distorted=True)
    options = BuildOptions(
        pes=("cpu",),
        candidates=candidates,
        blend=blend,
        measure=min(measure, candidates),
        keep=keep,
        seed=seed,
        out=target,
        weights=_weights_object(weights_path, target),
        repeats=repeats,
        passes=passes,
        val_name=f"sklearn-digits distorted test split (seed {DIGITS_SEED}, {len(test)} images: each of the "
        f"{len(test) // TEST_COPIES} test digits under {TEST_COPIES} distortions; never used in training)",
        batch_sizes=BATCH_SIZES,
        clock=clock,
    )
    catalog = build_catalog(family, options, val=test, calib=calib, progress=progress)
    _note(catalog, "demo supernet trained on sklearn digits; see docs/demo-model.md")
    catalog.save(target)
    return target


def build_grouped_catalog(
    out: str | os.PathLike[str],
    weights: str | os.PathLike[str] | None = None,
    repeats: int = 10,
    progress: Progress | None = None,
    clock: str = "thread",
) -> Path:
    """Every level of the grouped demo net, each measured (accuracy on the digits test split, CPU latency)."""
    target = Path(out)
    weights_path = Path(weights) if weights else demo_weights_path("grouped")
    family = grouped_demo_family(weights_path)
    test = digits_dataset("test", family.resolution, DIGITS_SEED)
    levels = family.groups
    options = BuildOptions(
        pes=("cpu",),
        candidates=levels,
        measure=levels,
        keep=levels,
        fill_dominated=True,  # every level is the method's point, whatever timing noise says
        seed=0,
        out=target,
        weights=_weights_object(weights_path, target),
        repeats=repeats,
        val_name=_test_split_name(len(test)),
        batch_sizes=BATCH_SIZES,
        clock=clock,
    )
    catalog = build_catalog(family, options, val=test, progress=progress)
    _note(catalog, "group-pruned incremental net trained on sklearn digits; see docs/grouped.md")
    catalog.save(target)
    return target


def _note(catalog: Catalog, text: str) -> None:
    catalog.provenance["note"] = text


def _test_split_name(n: int) -> str:
    return f"sklearn-digits test split (seed {DIGITS_SEED}, {n} images, never used in training)"
