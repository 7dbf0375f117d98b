"""A small real catalog for daemon tests: a randomly initialised OFA MobileNetV3 (width 0.5, 10 classes).

Random initialisation alone makes a useless test model: activations vanish through the blocks
and every subnet answers the classifier bias whatever the input, so a daemon that ran the wrong
subnet, or skipped the resize, would still pass. Each subnet therefore gets its own BatchNorm
statistics, calibrated on seeded random images at its resolution (the sidecars a real catalog
build writes). Then outputs depend on the input and differ between subnets.

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
CALIBRATION_IMAGES = 16


def make_catalog(
    directory: Path,
    resolutions: Sequence[int] = (32, 48),
    n: int = 4,
    pes: Sequence[str] = ("cpu", "cpu-big", "cpu-little"),
    ms_per_mmac: float = 2.0,
) -> Path:
    import torch

    import subnets.ofa_compat
    from subnets.checkpoint import save_bn_stats

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
    images = torch.Generator().manual_seed(2)
    entries = []
    for spec, mac in zip(specs, macs, strict=True):
        frac = (mac - low) / (high - low) if high > low else 1.0
        sid = spec.short_id("mbv3")
        batch = torch.rand(CALIBRATION_IMAGES, 3, spec.resolution, spec.resolution, generator=images)
        bn_rel = f"catalog.json.bn/{sid}.pt"
        save_bn_stats(directory / bn_rel, family.calibrate_bn(spec, [batch]))
        entries.append(
            CatalogEntry(
                id=sid,
                config=dict(spec.config),
                resolution=spec.resolution,
                macs=mac,
                params=family.params(spec),
                latency={pe: Latency(ms=mac / 1e6 * ms_per_mmac, source="predicted") for pe in pes},
                accuracy=Accuracy(top1=round(0.6 + 0.3 * frac, 4), source="predicted", dataset="none"),
                bn_stats=bn_rel,
            )
        )
    catalog = Catalog(
        family=family.describe(), entries=entries, weights={"init": "random", "seed": 0},
        provenance={"note": "tests/service/tiny.py: random weights, per-subnet calibrated BN, predicted figures"},
    )  # fmt: skip
    return catalog.save(directory / "catalog.json")
