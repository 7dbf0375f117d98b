"""The model-family interface shared by OFA supernets and group-pruned incremental nets.

A *family* owns a weight-shared supernet and knows its subnet space. A subnet is a
:class:`SubnetSpec`: a JSON-serialisable architecture config plus an input resolution.
For OFA MobileNetV3 the config is ``{"ks": [...], "e": [...], "d": [...]}``; for a
group-pruned net it is ``{"level": g}``. Everything a pool, a profiler or a catalog
builder needs goes through this interface, so both kinds of family share one pool,
one catalog format and one set of benchmarks.
"""

from __future__ import annotations

import hashlib
import json
import random
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch stays out of import time for the light parts of dynofa
    import torch
    from torch import nn


@dataclass(frozen=True)
class SubnetSpec:
    """One subnet: an architecture config inside the family's space and an input resolution."""

    config: Mapping[str, Any]
    resolution: int
    _key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        canonical = json.dumps({"c": self.config, "r": self.resolution}, sort_keys=True, separators=(",", ":"))
        object.__setattr__(self, "_key", canonical)

    @property
    def key(self) -> str:
        """Canonical JSON text: equal specs have equal keys."""
        return self._key

    def short_id(self, prefix: str) -> str:
        """A stable, readable id such as ``mbv3-r160-3fa2c1``."""
        digest = hashlib.sha1(self._key.encode()).hexdigest()[:6]
        return f"{prefix}-r{self.resolution}-{digest}"

    def __hash__(self) -> int:
        return hash(self._key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SubnetSpec) and other._key == self._key

    def to_dict(self) -> dict[str, Any]:
        return {"config": json.loads(json.dumps(self.config)), "resolution": self.resolution}


class ModelFamily(ABC):
    """A weight-shared family of subnets.

    Implementations must not download anything: weights come from a local file given
    to the constructor (or random initialisation, for structure-only use).
    """

    #: short name used in catalogs and ids, e.g. ``ofa-mbv3-w1.0`` or ``grouped-alexnet-g4``
    name: str
    #: prefix of subnet ids in catalogs, e.g. ``mbv3``
    id_prefix: str
    num_classes: int
    in_channels: int = 3

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """The catalog's ``family`` object: name plus the constructor arguments that rebuild it."""

    @abstractmethod
    def supernet(self) -> nn.Module:
        """The weight-shared supernet (built once, cached, in eval mode)."""

    @abstractmethod
    def resolutions(self) -> list[int]:
        """Input resolutions this family supports."""

    @abstractmethod
    def sample(self, rng: random.Random) -> SubnetSpec:
        """A random subnet (config and resolution) from the space."""

    @abstractmethod
    def largest(self, resolution: int | None = None) -> SubnetSpec: ...

    @abstractmethod
    def smallest(self, resolution: int | None = None) -> SubnetSpec: ...

    @abstractmethod
    def validate(self, spec: SubnetSpec) -> None:
        """Raise ValueError naming the offending field if ``spec`` is outside the space."""

    @abstractmethod
    def macs(self, spec: SubnetSpec) -> int:
        """Multiply-accumulates of one inference at the spec's resolution (batch 1)."""

    @abstractmethod
    def params(self, spec: SubnetSpec) -> int:
        """Parameters the subnet uses."""

    @abstractmethod
    def features(self, spec: SubnetSpec) -> dict[str, float]:
        """Numeric architecture features for latency/accuracy regression (MACs, resolution, depth, ...)."""

    @abstractmethod
    def activate(self, spec: SubnetSpec) -> None:
        """Set the supernet's active subnet for dynamic slicing (the slow, allocation-free fallback)."""

    @abstractmethod
    def materialize(self, spec: SubnetSpec, bn_stats: Mapping[str, torch.Tensor] | None = None) -> nn.Module:
        """A static inference module for ``spec`` that shares the supernet's tensors wherever possible.

        Private tensors are only those that cannot be views (transformed kernels, per-subnet BN
        statistics, ...). The module is in eval mode and its outputs equal the stock-extracted subnet's.
        """

    @abstractmethod
    def calibrate_bn(self, spec: SubnetSpec, batches: Iterable[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Recompute BatchNorm running statistics of ``spec`` on calibration images.

        Returns a state-dict fragment (BN running mean/var only) that ``materialize`` accepts,
        so that a switch needs no data.
        """

    def spec_from_dict(self, data: Mapping[str, Any]) -> SubnetSpec:
        spec = SubnetSpec(config=dict(data["config"]), resolution=int(data["resolution"]))
        self.validate(spec)
        return spec

    def input_shape(self, spec: SubnetSpec, batch: int = 1) -> tuple[int, int, int, int]:
        return (batch, self.in_channels, spec.resolution, spec.resolution)
