"""The bundled demo models and their catalogs (``subnets/data/demo/``).

Two families trained by us on scikit-learn's handwritten digits (no download anywhere):

* the demo supernet, a small elastic OFA MobileNetV3 (``ofa-mbv3``, width 0.35, 10 classes,
  resolutions 16-32), trained by :mod:`subnets.offline.train_demo` on distorted digits;
* a group-pruned incremental net (``grouped``, arch "small", 4 groups), trained by
  :mod:`subnets.offline.train_grouped`.

Their catalogs carry top-1 accuracy **measured** on the digits test split (never used in training)
and CPU latency measured on the machine that built them; ``reprofile`` re-times them where they
run. ``docs/demo-model.md`` has the commands that reproduce every file here; the catalogs are
built by :mod:`subnets.offline.demo_build`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from subnets.grouped import GroupedFamily
    from subnets.ofa_family import OFAMobileNetV3Family

DEMO_DIR = Path(__file__).resolve().parent / "data" / "demo"
OFA_WEIGHTS = "ofa-mbv3-digits.pt"
GROUPED_WEIGHTS = "grouped-small-g4-digits.pt"
OFA_CATALOG = "catalog-ofa.json"
GROUPED_CATALOG = "catalog-grouped.json"

#: constructor arguments of the demo supernet (kind ofa-mbv3); must match subnets.offline.train_demo defaults
OFA_DEMO_ARGS: dict[str, Any] = {
    "width_mult": 0.35,
    "ks_list": (3, 5, 7),
    "expand_ratio_list": (2, 3, 4, 6),
    "depth_list": (1, 2, 3, 4),
    "n_classes": 10,
    "resolutions": (16, 20, 24, 28, 32),
    "dropout_rate": 0.0,
    "seed": 0,
    "name": "ofa-mbv3-w0.35-digits",
}
#: the digits split seed the shipped artefacts were trained and measured with
DIGITS_SEED = 0


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
