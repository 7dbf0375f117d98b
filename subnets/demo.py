"""The bundled demo models and their catalogs (``subnets/data/demo/``).

Two families trained by us on scikit-learn's handwritten digits (no download anywhere):

* the demo supernet, a small elastic OFA MobileNetV3 (``ofa-mbv3``, width 0.35, 10 classes,
  resolutions 24-64), trained by :mod:`subnets.train_demo`;
* a group-pruned incremental net (``grouped``, arch "small", 4 groups), trained by
  :mod:`subnets.train_grouped`.

Their catalogs carry top-1 accuracy **measured** on the digits test split (never used in training)
and CPU latency measured on the machine that built them; ``reprofile`` re-times them where they
run. ``docs/demo-model.md`` has the commands that reproduce every file here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dynofa.catalog import Catalog, sha256_file

if TYPE_CHECKING:
    from subnets.grouped import GroupedFamily
    from subnets.ofa_family import OFAMobileNetV3Family

DEMO_DIR = Path(__file__).resolve().parent / "data" / "demo"
OFA_WEIGHTS = "ofa-mbv3-digits.pt"
GROUPED_WEIGHTS = "grouped-small-g4-digits.pt"
OFA_CATALOG = "catalog-ofa.json"
GROUPED_CATALOG = "catalog-grouped.json"

#: constructor arguments of the demo supernet (kind ofa-mbv3); must match subnets.train_demo defaults
OFA_DEMO_ARGS: dict[str, Any] = {
    "width_mult": 0.35,
    "ks_list": (3, 5, 7),
    "expand_ratio_list": (2, 3, 4, 6),
    "depth_list": (1, 2, 3, 4),
    "n_classes": 10,
    "resolutions": (24, 32, 40, 48, 56, 64),
    "dropout_rate": 0.0,
    "seed": 0,
    "name": "ofa-mbv3-w0.35-digits",
}
#: the digits split seed the shipped artefacts were trained and measured with
DIGITS_SEED = 0

Progress = Callable[[str], None]


def demo_dir() -> Path:
    return DEMO_DIR


def demo_catalog_path(kind: str = "ofa") -> Path:
    """The default catalog: the demo supernet's (``kind="grouped"`` for the group-pruned net's)."""
    return DEMO_DIR / _pick(kind, OFA_CATALOG, GROUPED_CATALOG)


def demo_weights_path(kind: str = "ofa") -> Path:
    return DEMO_DIR / _pick(kind, OFA_WEIGHTS, GROUPED_WEIGHTS)


def demo_catalog_paths() -> dict[str, Path]:
    return {"ofa": demo_catalog_path("ofa"), "grouped": demo_catalog_path("grouped")}


def _pick(kind: str, ofa: str, grouped: str) -> str:
    if kind == "ofa":
        return ofa
    if kind == "grouped":
        return grouped
    raise ValueError(f"demo kind must be 'ofa' or 'grouped', got {kind!r}")


def ofa_demo_family(weights: str | os.PathLike[str] | None = None) -> OFAMobileNetV3Family:
    """The demo supernet family with its weights (the shipped ones by default)."""
    from subnets.ofa_family import OFAMobileNetV3Family

    return OFAMobileNetV3Family(weights=Path(weights or demo_weights_path("ofa")), **OFA_DEMO_ARGS)


def grouped_demo_family(weights: str | os.PathLike[str] | None = None) -> GroupedFamily:
    from subnets.grouped import GroupedFamily

    return GroupedFamily.from_weights(Path(weights or demo_weights_path("grouped")))


def _weights_object(weights: Path, out: Path) -> dict[str, Any]:
    """Recorded relative to the catalog when the weights sit beside it (so the package can move)."""
    path = weights.resolve()
    recorded = path.name if path.parent == out.resolve().parent else str(path)
    return {"path": recorded, "sha256": sha256_file(path)}


def build_ofa_catalog(
    out: str | os.PathLike[str],
    weights: str | os.PathLike[str] | None = None,
    candidates: int = 200,
    measure: int = 40,
    keep: int = 8,
    repeats: int = 10,
    seed: int = 0,
    progress: Progress | None = None,
) -> Path:
    """Sample, time and select demo-supernet subnets; accuracy measured on the digits test split
    with per-subnet BN statistics calibrated on the training split."""
    from subnets.catalog_build import build_catalog
    from subnets.datasets import digits_dataset

    target = Path(out)
    weights_path = Path(weights) if weights else demo_weights_path("ofa")
    family = ofa_demo_family(weights_path)
    top = max(family.resolutions())
    test = digits_dataset("test", top, DIGITS_SEED)
    calib = digits_dataset("train", top, DIGITS_SEED)
    catalog = build_catalog(
        family,
        pes=("cpu",),
        candidates=candidates,
        measure=measure,
        keep=keep,
        val=test,
        calib=calib,
        seed=seed,
        progress=progress,
        out=target,
        weights=_weights_object(weights_path, target),
        repeats=repeats,
        val_name=f"sklearn-digits test split (seed {DIGITS_SEED}, {len(test)} images, never used in training)",
    )
    _note(catalog, "demo supernet trained on sklearn digits; see docs/demo-model.md")
    catalog.save(target)
    return target


def build_grouped_catalog(
    out: str | os.PathLike[str],
    weights: str | os.PathLike[str] | None = None,
    repeats: int = 10,
    progress: Progress | None = None,
) -> Path:
    """Every level of the grouped demo net, each measured (accuracy on the digits test split, CPU latency)."""
    from subnets.catalog_build import build_catalog
    from subnets.datasets import digits_dataset

    target = Path(out)
    weights_path = Path(weights) if weights else demo_weights_path("grouped")
    family = grouped_demo_family(weights_path)
    test = digits_dataset("test", family.resolution, DIGITS_SEED)
    levels = family.groups
    catalog = build_catalog(
        family,
        pes=("cpu",),
        candidates=levels,
        measure=levels,
        keep=levels,
        fill_dominated=True,  # every level is the method's point, whatever timing noise says
        val=test,
        seed=0,
        progress=progress,
        out=target,
        weights=_weights_object(weights_path, target),
        repeats=repeats,
        val_name=f"sklearn-digits test split (seed {DIGITS_SEED}, {len(test)} images, never used in training)",
    )
    _note(catalog, "group-pruned incremental net trained on sklearn digits; see docs/grouped.md")
    catalog.save(target)
    return target


def _note(catalog: Catalog, text: str) -> None:
    catalog.provenance["note"] = text
