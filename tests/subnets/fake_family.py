"""A tiny weight-shared model family for catalog tests: elastic width and depth, three resolutions.

Real (not mocked): subnets share the supernet's conv weights as leading-channel slices, carry their
own BN statistics, and their latency and MACs grow with width, depth and resolution.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from subnets.family import ModelFamily, SubnetSpec

WIDTHS = (4, 8, 16)
DEPTHS = (1, 2, 3)
RESOLUTIONS = (8, 12, 16)


class _Supernet(nn.Module):
    def __init__(self, num_classes: int, max_width: int, max_depth: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, max_width, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(max_width)
        self.blocks = nn.ModuleList(nn.Conv2d(max_width, max_width, 3, padding=1) for _ in range(max_depth))
        self.head = nn.Linear(max_width, num_classes)


def _tensor(value: object) -> torch.Tensor:
    assert isinstance(value, torch.Tensor)
    return value


class FakeSubnet(nn.Module):
    """A static subnet whose conv weights are views of the supernet's."""

    def __init__(self, sup: _Supernet, width: int, depth: int, bn: Mapping[str, torch.Tensor] | None) -> None:
        super().__init__()
        self.width = width
        self.stem_w = sup.stem.weight[:width]
        convs: list[nn.Conv2d] = [b for b in sup.blocks[:depth] if isinstance(b, nn.Conv2d)]
        self.block_ws = [(c.weight[:width, :width], _tensor(c.bias)[:width]) for c in convs]
        self.head_w, self.head_b = sup.head.weight[:, :width], sup.head.bias
        self.bn_weight, self.bn_bias = sup.stem_bn.weight[:width], sup.stem_bn.bias[:width]
        stats = sup.stem_bn
        mean = _tensor(stats.running_mean)[:width] if bn is None else bn["stem_bn.running_mean"]
        var = _tensor(stats.running_var)[:width] if bn is None else bn["stem_bn.running_var"]
        self.register_buffer("running_mean", mean.clone())
        self.register_buffer("running_var", var.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(x, self.stem_w, padding=1)
        mean, var = _tensor(self.running_mean), _tensor(self.running_var)
        x = F.batch_norm(x, mean, var, self.bn_weight, self.bn_bias, False)
        x = F.relu(x)
        for w, b in self.block_ws:
            x = F.relu(F.conv2d(x, w, b, padding=1))
        x = x.mean(dim=(2, 3))
        return F.linear(x, self.head_w, self.head_b)


class FakeFamily(ModelFamily):
    name = "fake-tiny"
    id_prefix = "fake"

    def __init__(self, num_classes: int = 4, seed: int = 0) -> None:
        self.num_classes = num_classes
        self.seed = seed
        torch.manual_seed(seed)
        self._net = _Supernet(num_classes, max(WIDTHS), max(DEPTHS)).eval()
        self.materialized = 0
        self.calibrated = 0

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": "fake", "num_classes": self.num_classes, "seed": self.seed}

    def supernet(self) -> nn.Module:
        return self._net

    def resolutions(self) -> list[int]:
        return list(RESOLUTIONS)

    def sample(self, rng: random.Random) -> SubnetSpec:
        return SubnetSpec({"width": rng.choice(WIDTHS), "depth": rng.choice(DEPTHS)}, rng.choice(RESOLUTIONS))

    def largest(self, resolution: int | None = None) -> SubnetSpec:
        return SubnetSpec({"width": max(WIDTHS), "depth": max(DEPTHS)}, resolution or max(RESOLUTIONS))

    def smallest(self, resolution: int | None = None) -> SubnetSpec:
        return SubnetSpec({"width": min(WIDTHS), "depth": min(DEPTHS)}, resolution or min(RESOLUTIONS))

    def validate(self, spec: SubnetSpec) -> None:
        if spec.config.get("width") not in WIDTHS:
            raise ValueError(f"config.width must be one of {WIDTHS}")
        if spec.config.get("depth") not in DEPTHS:
            raise ValueError(f"config.depth must be one of {DEPTHS}")
        if spec.resolution not in RESOLUTIONS:
            raise ValueError(f"resolution must be one of {RESOLUTIONS}")

    def macs(self, spec: SubnetSpec) -> int:
        w, d, r = spec.config["width"], spec.config["depth"], spec.resolution
        return r * r * (3 * w * 9 + d * w * w * 9) + w * self.num_classes

    def params(self, spec: SubnetSpec) -> int:
        w, d = spec.config["width"], spec.config["depth"]
        return 27 * w + 2 * w + d * (9 * w * w + w) + w * self.num_classes + self.num_classes

    def features(self, spec: SubnetSpec) -> dict[str, float]:
        return {
            "macs": float(self.macs(spec)),
            "params": float(self.params(spec)),
            "resolution": float(spec.resolution),
            "width": float(spec.config["width"]),
            "depth": float(spec.config["depth"]),
        }

    def activate(self, spec: SubnetSpec) -> None:
        self.validate(spec)

    def materialize(self, spec: SubnetSpec, bn_stats: Mapping[str, torch.Tensor] | None = None) -> nn.Module:
        self.validate(spec)
        self.materialized += 1
        return FakeSubnet(self._net, spec.config["width"], spec.config["depth"], bn_stats).eval()

    def calibrate_bn(self, spec: SubnetSpec, batches: Iterable[torch.Tensor]) -> dict[str, torch.Tensor]:
        self.validate(spec)
        self.calibrated += 1
        w = spec.config["width"]
        with torch.no_grad():
            outs = torch.cat([F.conv2d(b, self._net.stem.weight[:w], padding=1) for b in batches])
        return {
            "stem_bn.running_mean": outs.mean(dim=(0, 2, 3)),
            "stem_bn.running_var": outs.var(dim=(0, 2, 3), unbiased=False),
        }


def from_description(description: Mapping[str, Any], weights: str | None = None) -> FakeFamily:
    """Registry factory (tests register it under kind "fake")."""
    return FakeFamily(num_classes=int(description.get("num_classes", 4)), seed=int(description.get("seed", 0)))
