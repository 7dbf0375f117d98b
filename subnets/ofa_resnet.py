"""OFA ResNet50 family (``OFAResNets``): depth ``d`` (5), expand ``e`` (18), width indices ``w`` (6).

Subnets are stock static ``ResNets`` built from the active layer configs and pointed at views of the
supernet's tensors wherever the layout allows (see :meth:`OFAResNet50Family.materialize`).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from subnets.family import SubnetSpec
from subnets.ofa_base import DEFAULT_RESOLUTIONS, OFAFamily, from_description, tuple_of
from subnets.shared_static import share_module, strided_pointwise

__all__ = ["OFAResNet50Family", "resnet50_from_description"]


class OFAResNet50Family(OFAFamily):
    """OFA ResNet50 (``OFAResNets``): depth ``d`` (5), expand ``e`` (18), width indices ``w`` (6)."""

    kind = "ofa-resnet50"

    def __init__(
        self,
        depth_list: Sequence[int] | int = (0, 1, 2),
        expand_ratio_list: Sequence[float] | float = (0.2, 0.25, 0.35),
        width_mult_list: Sequence[float] | float = (0.65, 0.8, 1.0),
        n_classes: int = 1000,
        resolutions: Sequence[int] = DEFAULT_RESOLUTIONS,
        dropout_rate: float = 0.0,
        weights: str | Path | None = None,
        seed: int = 0,
        name: str | None = None,
    ) -> None:
        self.depth_list = tuple_of(depth_list, int, "depth_list")
        if min(self.depth_list) < 0:
            raise ValueError(f"depth_list values must be >= 0, got {list(self.depth_list)}")
        self.expand_ratio_list = tuple_of(expand_ratio_list, float, "expand_ratio_list")
        self.width_mult_list = tuple_of(width_mult_list, float, "width_mult_list")
        self.dropout_rate = float(dropout_rate)
        super().__init__(
            weights=weights,
            seed=seed,
            resolutions=resolutions,
            n_classes=n_classes,
            name=name or ("ofa-resnet50" + ("" if n_classes == 1000 else f"-c{n_classes}")),
            id_prefix="resnet50",
        )

    BASE_DEPTH = (2, 2, 4, 2)

    @property
    def n_blocks(self) -> int:
        return sum(b + max(self.depth_list) for b in self.BASE_DEPTH)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "depth_list": list(self.depth_list),
            "expand_ratio_list": list(self.expand_ratio_list),
            "width_mult_list": list(self.width_mult_list),
            "n_classes": self.num_classes,
            "resolutions": self.resolutions(),
            "dropout_rate": self.dropout_rate,
            "seed": self.seed,
        }

    def _construct(self) -> nn.Module:
        from ofa.imagenet_classification.elastic_nn.networks import OFAResNets

        return OFAResNets(
            n_classes=self.num_classes,
            dropout_rate=self.dropout_rate,
            depth_list=list(self.depth_list),
            expand_ratio_list=list(self.expand_ratio_list),
            width_mult_list=list(self.width_mult_list),
        )

    def _flops(self) -> Any:
        from ofa.nas.efficiency_predictor import ResNet50FLOPsModel

        return ResNet50FLOPsModel(self.supernet())

    def sample(self, rng: random.Random) -> SubnetSpec:
        widths = range(len(self.width_mult_list))
        config = {
            # like OFA's sampler: the stem skip is all-or-nothing (max or min depth)
            "d": [rng.choice([max(self.depth_list), min(self.depth_list)])]
            + [rng.choice(self.depth_list) for _ in self.BASE_DEPTH],
            "e": [rng.choice(self.expand_ratio_list) for _ in range(self.n_blocks)],
            "w": [rng.choice(widths) for _ in range(len(self.BASE_DEPTH) + 2)],
        }
        return SubnetSpec(config=config, resolution=rng.choice(self._resolutions))

    def _uniform(self, pick: Callable[[Sequence[Any]], Any], resolution: int) -> SubnetSpec:
        config = {
            "d": [pick(self.depth_list)] * (len(self.BASE_DEPTH) + 1),
            "e": [pick(self.expand_ratio_list)] * self.n_blocks,
            "w": [pick(range(len(self.width_mult_list)))] * (len(self.BASE_DEPTH) + 2),
        }
        return SubnetSpec(config=config, resolution=resolution)

    def largest(self, resolution: int | None = None) -> SubnetSpec:
        return self._uniform(max, self._resolution(resolution, max))

    def smallest(self, resolution: int | None = None) -> SubnetSpec:
        return self._uniform(min, self._resolution(resolution, min))

    def validate(self, spec: SubnetSpec) -> None:
        config = spec.config
        unknown = set(config) - {"d", "e", "w"}
        if unknown:
            raise ValueError(f"unknown config field(s) {sorted(unknown)} for {self.name}; expected d, e, w")
        self._check_list(config, "d", len(self.BASE_DEPTH) + 1, self.depth_list)
        self._check_list(config, "e", self.n_blocks, self.expand_ratio_list)
        self._check_list(config, "w", len(self.BASE_DEPTH) + 2, list(range(len(self.width_mult_list))))
        self._check_resolution(spec)

    def _net_config(self, spec: SubnetSpec) -> dict[str, Any]:
        with self.lock:
            self.activate(spec)
            config: dict[str, Any] = self._net().get_active_net_config()
            return config

    def params(self, spec: SubnetSpec) -> int:
        """Parameters of the stock-extracted subnet, from its layer configs."""
        cfg = self._net_config(spec)
        total = 0
        for layer in cfg["input_stem"]:
            conv = layer if layer["name"] == "ConvLayer" else layer["conv"]
            k = conv["kernel_size"]
            total += conv["in_channels"] * conv["out_channels"] * k * k + 2 * conv["out_channels"]
        for block in cfg["blocks"]:
            cin, mid, cout, k = block["in_channels"], block["mid_channels"], block["out_channels"], block["kernel_size"]
            total += cin * mid + 2 * mid + mid * mid * k * k + 2 * mid + mid * cout + 2 * cout
            if block["stride"] != 1 or cin != cout:
                total += cin * cout + 2 * cout
        cls = cfg["classifier"]
        total += cls["in_features"] * cls["out_features"] + (cls["out_features"] if cls["bias"] else 0)
        return int(total)

    def features(self, spec: SubnetSpec) -> dict[str, float]:
        cfg = self._net_config(spec)
        blocks = cfg["blocks"]
        n = max(len(blocks), 1)
        return {
            "macs_m": self.macs(spec) / 1e6,
            "params_m": self.params(spec) / 1e6,
            "resolution": float(spec.resolution),
            "resolution_sq": float(spec.resolution**2) / 1e4,
            "depth_sum": float(sum(spec.config["d"])),
            "active_blocks": float(len(blocks)),
            "expand_mean": sum(float(b["expand_ratio"]) for b in blocks) / n,
            "width_index_mean": sum(spec.config["w"]) / len(spec.config["w"]),
            "mid_channels_sum": float(sum(b["mid_channels"] for b in blocks)),
            "stem_skipped": float(len(cfg["input_stem"]) < 3),
        }

    def materialize(self, spec: SubnetSpec, bn_stats: Mapping[str, Tensor] | None = None) -> nn.Module:
        """A static ResNet whose weights are views of the supernet's wherever the layout allows.

        Only the active layer configs are read under the lock (milliseconds); the static network is
        built and filled outside it, so dynamic-slicing inference is not held up. BN vectors, fixed
        layers and convs that keep the supernet's input width are views; 1x1 convs over narrowed
        inputs become matrix products on row-strided views (:class:`StridedPointwise`); only 3x3 convs
        with narrowed inputs are private copies of the leading slice (what stock extraction copies).
        """
        from ofa.imagenet_classification.networks import ResNets

        self.validate(spec)
        net = self._net()
        with self.lock:
            self.activate(spec)
            config = _plain_config(net.get_active_net_config())
            active = [
                idx
                for stage, block_ids in enumerate(net.grouped_block_index)
                for idx in block_ids[: len(block_ids) - net.runtime_depth[stage]]
            ]
        device = next(net.parameters()).device
        with torch.random.fork_rng(devices=[]):  # the random init is overwritten; keep the caller's RNG
            subnet: Any = ResNets.build_from_config(config)
        subnet = subnet.to(device).eval()
        names = {id(m): n for n, m in net.named_modules()}
        with torch.no_grad():
            for owner, attr, dynamic in _resnet_pairs(net, subnet, active):
                static = getattr(owner, attr)
                strided = strided_pointwise(static, dynamic)
                if strided is not None:  # a 1x1 conv over narrowed inputs: matrix product on a view
                    setattr(owner, attr, strided)
                else:
                    share_module(static, dynamic, names[id(dynamic)], bn_stats, copy_rest=True)
        result: nn.Module = subnet
        return result


def _plain_config(config: Any) -> Any:
    """ofa's ResNet net config holds an IdentityLayer object where a config dict belongs (stem shortcut)."""
    if isinstance(config, dict):
        return {k: _plain_config(v) for k, v in config.items()}
    if isinstance(config, list):
        return [_plain_config(v) for v in config]
    if isinstance(config, nn.Module) and hasattr(config, "config"):
        return _plain_config(config.config)
    return config


def _resnet_pairs(net: Any, subnet: Any, active: Sequence[int]) -> Iterator[tuple[nn.Module, str, nn.Module]]:
    """(owner, attribute, matching supernet module) for every conv, BN and linear of the static subnet."""

    def conv_layer(static: Any, dynamic: Any) -> Iterator[tuple[nn.Module, str, nn.Module]]:
        yield static, "conv", dynamic.conv.conv
        if getattr(static, "bn", None) is not None:
            yield static, "bn", dynamic.bn.bn

    stem = list(subnet.input_stem)
    yield from conv_layer(stem[0], net.input_stem[0])
    if len(stem) == 3:
        yield from conv_layer(stem[1].conv, net.input_stem[1].conv)
    yield from conv_layer(stem[-1], net.input_stem[2])
    if len(active) != len(subnet.blocks):
        raise RuntimeError("static ResNet subnet does not match the supernet's active blocks")
    for static, idx in zip(subnet.blocks, active, strict=True):
        dynamic = net.blocks[idx]
        for part in ("conv1", "conv2", "conv3"):
            yield getattr(static, part), "conv", getattr(dynamic, part).conv.conv
            yield getattr(static, part), "bn", getattr(dynamic, part).bn.bn
        if hasattr(static.downsample, "conv") and hasattr(dynamic.downsample, "conv"):
            yield static.downsample, "conv", dynamic.downsample.conv.conv
            yield static.downsample, "bn", dynamic.downsample.bn.bn
    yield subnet.classifier, "linear", net.classifier.linear.linear


def resnet50_from_description(description: Mapping[str, Any], weights: str | None = None) -> OFAFamily:
    """Factory for ``subnets.registry``: the family from a catalog's ``family`` object."""
    return from_description(OFAResNet50Family, description, weights)
