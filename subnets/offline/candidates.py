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


def sample(
    family: ModelFamily, n: int, rng: random.Random, say: Progress, *, blend: float = 0.0
) -> list[Candidate]:
    """``n`` distinct subnets (fewer if the space is smaller), the largest and the smallest first.

    A fraction ``blend`` of them are :func:`blended` towards the largest or the smallest subnet by
    a uniform random amount, the rest drawn by ``family.sample``. Uniform draws pile up in the
    middle of the space (each choice is drawn independently, so capacity averages out), where the
    accuracy/latency front is flat; near the largest subnet, where the front climbs to the best
    accuracy, they almost never land. Blends cover the space from end to end.
    """
    specs: dict[str, SubnetSpec] = {}
    ends = (family.largest(), family.smallest())
    for spec in ends:
        specs.setdefault(spec.key, spec)
    tries = 0
    while len(specs) < n and tries < 50 * n:
        spec = family.sample(rng)
        if rng.random() < blend:
            mixed = blended(spec, ends[rng.random() < 0.5], rng.random(), rng)
            try:
                family.validate(mixed)
                spec = mixed
            except ValueError:  # the family's space is not a product of its choices here: keep the draw
                pass
        specs.setdefault(spec.key, spec)
        tries += 1
    if len(specs) < n:
        say(f"the family's space holds only {len(specs)} distinct subnets found in {tries} draws (asked for {n})")
    out = [candidate(family, spec) for spec in specs.values()]
    say(f"sampled {len(out)} distinct candidate subnets" + (f" ({blend:.0%} blended towards an end)" if blend else ""))
    return out


def blended(spec: SubnetSpec, end: SubnetSpec, t: float, rng: random.Random) -> SubnetSpec:
    """``spec`` with each choice (list item, scalar, the resolution) replaced by ``end``'s with probability ``t``."""

    def pick(mine: Any, theirs: Any) -> Any:
        if isinstance(mine, (list, tuple)) and isinstance(theirs, (list, tuple)) and len(mine) == len(theirs):
            return [pick(a, b) for a, b in zip(mine, theirs, strict=True)]
        return theirs if rng.random() < t else mine

    config = {key: pick(value, end.config.get(key, value)) for key, value in spec.config.items()}
    return SubnetSpec(config, int(pick(spec.resolution, end.resolution)))


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
