"""Candidate subnets of a catalog build: sampling, the measuring subset, and the checks on data."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dynofa.catalog import Accuracy, Latency
from dynofa.errors import CatalogBuildError
from subnets.family import ModelFamily, SubnetSpec

if TYPE_CHECKING:
    from subnets.offline.accuracy import LabelledArrays

Progress = Callable[[str], None]


@dataclass
class Candidate:
    """One sampled subnet and what is known about it so far (measured figures, BN statistics)."""

    spec: SubnetSpec
    id: str
    macs: int
    params: int
    features: dict[str, float]
    latency: dict[str, Latency] = field(default_factory=dict)
    accuracy: Accuracy | None = None
    bn: dict[str, Any] | None = None
    batch_latency: dict[str, dict[int, Latency]] = field(default_factory=dict)  # PE -> batch size -> latency

    def measured_on(self, pe: str) -> bool:
        lat = self.latency.get(pe)
        return lat is not None and lat.source == "measured"

    def accuracy_measured(self) -> bool:
        return self.accuracy is not None and self.accuracy.source == "measured"


def candidate(family: ModelFamily, spec: SubnetSpec) -> Candidate:
    family.validate(spec)
    return Candidate(
        spec=spec,
        id=spec.short_id(family.id_prefix),
        macs=int(family.macs(spec)),
        params=int(family.params(spec)),
        features={k: float(v) for k, v in family.features(spec).items()},
    )


def sample(family: ModelFamily, n: int, rng: random.Random, say: Progress) -> list[Candidate]:
    """``n`` distinct subnets (fewer if the space is smaller), the largest and the smallest first."""
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
    out = [candidate(family, spec) for spec in specs.values()]
    say(f"sampled {len(out)} distinct candidate subnets")
    return out


def spread_by_macs(pool: list[Candidate], m: int) -> list[Candidate]:
    """``m`` candidates spread evenly over the MACs ranking (ends included): good regression coverage."""
    ordered = sorted(pool, key=lambda c: (c.macs, c.id))
    if m >= len(ordered):
        return ordered
    if m == 1:
        return [ordered[-1]]
    picks = sorted({round(i * (len(ordered) - 1) / (m - 1)) for i in range(m)})
    return [ordered[i] for i in picks]


def check_data(family: ModelFamily, data: LabelledArrays, what: str) -> None:
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
