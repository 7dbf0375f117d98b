"""A small real catalog for daemon tests: a randomly initialised OFA MobileNetV3 (width 0.5, 10 classes).

Latency and accuracy figures are labelled ``predicted`` (MAC-proportional): the daemon tests
check the daemon, not the figures; the demo catalog carries measured ones.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from dynofa.catalog import Accuracy, Catalog, CatalogEntry, Latency

FAMILY = {
    "kind": "ofa-mbv3",
    "width_mult": 0.5,
    "ks_list": [3],
    "expand_ratio_list": [3, 4],
    "depth_list": [2],
    "n_classes": 10,
    "seed": 0,
}


def make_catalog(
    directory: Path,
    resolutions: Sequence[int] = (32, 48),
    n: int = 4,
    pes: Sequence[str] = ("cpu", "cpu-big", "cpu-little"),
    ms_per_mmac: float = 2.0,
) -> Path:
    import subnets.ofa_compat

    subnets.ofa_compat.install()
    from subnets.ofa_family import mbv3_from_description

    family = mbv3_from_description({**FAMILY, "resolutions": list(resolutions)})
    rng = random.Random(1)
    specs = [family.smallest(min(resolutions)), family.largest(max(resolutions))]
    while len(specs) < n:
        spec = family.sample(rng)
        if spec not in specs:
            specs.append(spec)
    macs = [family.macs(s) for s in specs]
    low, high = min(macs), max(macs)
    entries = []
    for spec, mac in zip(specs, macs, strict=True):
        frac = (mac - low) / (high - low) if high > low else 1.0
        entries.append(
            CatalogEntry(
                id=spec.short_id("mbv3"),
                config=dict(spec.config),
                resolution=spec.resolution,
                macs=mac,
                params=family.params(spec),
                latency={pe: Latency(ms=mac / 1e6 * ms_per_mmac, source="predicted") for pe in pes},
                accuracy=Accuracy(top1=round(0.6 + 0.3 * frac, 4), source="predicted", dataset="none"),
            )
        )
    catalog = Catalog(
        family=family.describe(), entries=entries, weights={"init": "random", "seed": 0},
        provenance={"note": "tests/service/tiny.py: random weights, predicted figures"},
    )  # fmt: skip
    return catalog.save(directory / "catalog.json")
