"""OFA MBConv model families: MobileNetV3 and ProxylessNAS supernets from the ``ofa`` package
(ResNet50 is in ``subnets.ofa_resnet``; what all OFA families share is in ``subnets.ofa_base``).

Each family builds its supernet once (random initialisation from a seed, or a local
checkpoint in the official OFA format; nothing is ever downloaded), knows its subnet space,
and materialises subnets that share the supernet's tensors (see ``subnets.shared_mbconv``).
"""

from __future__ import annotations

import random
import threading
from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from subnets.family import SubnetSpec
from subnets.ofa_base import DEFAULT_RESOLUTIONS, OFAFamily, from_description, number, tuple_of
from subnets.shared_mbconv import build_shared_mbconv, make_divisible, plan_blocks, transformed_kernel

__all__ = [
    "OFAMobileNetV3Family",
    "OFAProxylessFamily",
    "make_divisible",
    "mbv3_from_description",
    "proxyless_from_description",
]


# ==================================================================== MobileNetV3 / ProxylessNAS


class _MBConvFamily(OFAFamily):
    """Shared logic of the two MBConv supernets (kernel/expand/depth spaces, shared materialisation)."""

    head_kind = ""
    #: width multiplier of the published supernet of this kind (used when none is given)
    default_width_mult = 1.0
    #: class names in ofa.imagenet_classification.elastic_nn.networks / ofa.nas.efficiency_predictor
    ofa_network = ""
    flops_model = ""

    def __init__(
        self,
        width_mult: float | None = None,
        ks_list: Sequence[int] | int = (3, 5, 7),
        expand_ratio_list: Sequence[float] | float = (3, 4, 6),
        depth_list: Sequence[int] | int = (2, 3, 4),
        n_classes: int = 1000,
        resolutions: Sequence[int] = DEFAULT_RESOLUTIONS,
        dropout_rate: float = 0.1,
        weights: str | Path | None = None,
        seed: int = 0,
        name: str | None = None,
    ) -> None:
        if width_mult is None:
            width_mult = self.default_width_mult
        if isinstance(width_mult, bool) or not isinstance(width_mult, (int, float)) or width_mult <= 0:
            raise ValueError(f"width_mult must be a positive number, got {width_mult!r}")
        self.width_mult = number(width_mult)
        self.ks_list = tuple_of(ks_list, int, "ks_list")
        if any(k % 2 == 0 or k < 1 for k in self.ks_list):
            raise ValueError(f"ks_list must hold odd kernel sizes, got {list(self.ks_list)}")
        self.expand_ratio_list = tuple_of(expand_ratio_list, float, "expand_ratio_list")
        self.depth_list = tuple_of(depth_list, int, "depth_list")
        if min(self.depth_list) < 1:
            raise ValueError(f"depth_list values must be >= 1, got {list(self.depth_list)}")
        self.dropout_rate = float(dropout_rate)
        self._kernels: dict[tuple[int, int], tuple[tuple[tuple[int, int], ...], Tensor]] = {}
        self._kernel_lock = threading.Lock()
        super().__init__(
            weights=weights,
            seed=seed,
            resolutions=resolutions,
            n_classes=n_classes,
            name=name or _mbconv_name(self.kind, width_mult, ks_list, expand_ratio_list, depth_list, n_classes),
            id_prefix=type(self).id_prefix,
        )

    def _construct(self) -> nn.Module:
        from ofa.imagenet_classification.elastic_nn import networks

        return getattr(networks, self.ofa_network)(
            n_classes=self.num_classes,
            dropout_rate=self.dropout_rate,
            width_mult=self.width_mult,
            ks_list=list(self.ks_list),
            expand_ratio_list=list(self.expand_ratio_list),
            depth_list=list(self.depth_list),
        )

    def _flops(self) -> Any:
        from ofa.nas import efficiency_predictor

        return getattr(efficiency_predictor, self.flops_model)(self.supernet())

    @property
    @abstractmethod
    def n_stages(self) -> int:
        """Elastic stages (each with its own depth choice)."""

    @property
    @abstractmethod
    def n_blocks(self) -> int:
        """Elastic blocks of the deepest subnet."""

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "width_mult": self.width_mult,
            "ks_list": list(self.ks_list),
            "expand_ratio_list": list(self.expand_ratio_list),
            "depth_list": list(self.depth_list),
            "n_classes": self.num_classes,
            "resolutions": self.resolutions(),
            "dropout_rate": self.dropout_rate,
            "seed": self.seed,
        }

    def _depth_choices(self, stage: int) -> list[int]:
        return list(self.depth_list)

    def sample(self, rng: random.Random) -> SubnetSpec:
        config = {
            "ks": [rng.choice(self.ks_list) for _ in range(self.n_blocks)],
            "e": [rng.choice(self.expand_ratio_list) for _ in range(self.n_blocks)],
            "d": [rng.choice(self._depth_choices(s)) for s in range(self.n_stages)],
        }
        return SubnetSpec(config=config, resolution=rng.choice(self._resolutions))

    def _uniform(self, k: int, e: float, d: Callable[[list[int]], int], resolution: int) -> SubnetSpec:
        config = {
            "ks": [k] * self.n_blocks,
            "e": [e] * self.n_blocks,
            "d": [d(self._depth_choices(s)) for s in range(self.n_stages)],
        }
        return SubnetSpec(config=config, resolution=resolution)

    def largest(self, resolution: int | None = None) -> SubnetSpec:
        return self._uniform(max(self.ks_list), max(self.expand_ratio_list), max, self._resolution(resolution, max))

    def smallest(self, resolution: int | None = None) -> SubnetSpec:
        return self._uniform(min(self.ks_list), min(self.expand_ratio_list), min, self._resolution(resolution, min))

    def validate(self, spec: SubnetSpec) -> None:
        config = spec.config
        unknown = set(config) - {"ks", "e", "d"}
        if unknown:
            raise ValueError(f"unknown config field(s) {sorted(unknown)} for {self.name}; expected ks, e, d")
        self._check_list(config, "ks", self.n_blocks, self.ks_list)
        self._check_list(config, "e", self.n_blocks, self.expand_ratio_list)
        d = config.get("d")
        if not isinstance(d, (list, tuple)) or len(d) != self.n_stages:
            raise ValueError(f"config field 'd' must be a list of {self.n_stages} values, got {d!r}")
        for s, item in enumerate(d):
            if isinstance(item, bool) or item not in self._depth_choices(s):
                raise ValueError(f"config field d[{s}] = {item!r} is not one of {self._depth_choices(s)}")
        self._check_resolution(spec)

    def _plans(self, spec: SubnetSpec) -> list[Any]:
        c = spec.config
        return plan_blocks(self.supernet(), c["ks"], c["e"], c["d"])

    def materialize(self, spec: SubnetSpec, bn_stats: Mapping[str, Tensor] | None = None) -> nn.Module:
        self.validate(spec)
        c = spec.config
        return build_shared_mbconv(
            self.supernet(), c["ks"], c["e"], c["d"], self.head_kind, bn_stats, kernels=self._kernel
        )

    def _kernel(self, index: int, kernel_size: int) -> Tensor:
        """Full-width transformed depthwise kernel, computed once per (block, kernel size) and shared by
        every subnet as a leading view. Recomputed when the supernet's weights change (training bumps
        the tensors' version counters) or move to another device."""
        conv = self._net().blocks[index].conv.depth_conv.conv
        sources = [conv.conv.weight] + [p for name, p in conv.named_parameters(recurse=False) if "matrix" in name]
        stamp = tuple((t.data_ptr(), t._version) for t in sources)
        with self._kernel_lock:
            cached = self._kernels.get((index, kernel_size))
            if cached is not None and cached[0] == stamp:
                return cached[1]
        with torch.no_grad():
            kernel = transformed_kernel(self._net(), index, kernel_size)
        with self._kernel_lock:
            self._kernels[(index, kernel_size)] = (stamp, kernel)
        return kernel

    def params(self, spec: SubnetSpec) -> int:
        """Parameters of the stock-extracted subnet (conv/linear weights and biases, BN affine)."""
        self.validate(spec)
        net: Any = self.supernet()
        fixed = sum(p.numel() for p in net.first_conv.parameters())
        fixed += sum(p.numel() for p in net.blocks[0].parameters())
        for attr in ("final_expand_layer", "feature_mix_layer", "classifier"):
            layer = getattr(net, attr, None)
            if layer is not None:
                fixed += sum(p.numel() for p in layer.parameters())
        total = fixed
        for plan in self._plans(spec):
            mid, cin, cout, k = plan.mid_channels, plan.in_channels, plan.out_channels, plan.kernel_size
            if plan.expand_ratio != 1:
                total += cin * mid + 2 * mid
            total += mid * k * k + 2 * mid
            if plan.use_se:
                se = plan.se_channels
                total += mid * se + se + se * mid + mid
            total += mid * cout + 2 * cout
        return int(total)

    def features(self, spec: SubnetSpec) -> dict[str, float]:
        """Architecture statistics, and the cost terms latency is made of (for the latency regression).

        Besides MACs: active blocks and SE blocks (per-block and per-layer overheads dominate small
        subnets), point-wise and depthwise MACs apart (a depthwise MAC costs several point-wise ones
        on a CPU), and activation traffic (elements read and written by every layer, the memory side;
        it follows each stage's resolution x channels).
        """
        plans = self._plans(spec)
        n = max(len(plans), 1)
        macs = self.macs(spec)
        side = -(-spec.resolution // 2)  # after the stride-2 stem (and the fixed first block, stride 1)
        pw = dw = act = 0.0
        layers = 0
        for p in plans:
            out_side = -(-side // p.stride)
            area_in, area_out = float(side * side), float(out_side * out_side)
            if p.expand_ratio != 1:
                pw += area_in * p.in_channels * p.mid_channels
                act += area_in * (p.in_channels + p.mid_channels)
                layers += 3  # 1x1 conv, BN, activation
            dw += area_out * p.mid_channels * p.kernel_size**2
            pw += area_out * p.mid_channels * p.out_channels
            act += area_in * p.mid_channels + area_out * (2 * p.mid_channels + p.out_channels)
            # depthwise conv, BN, activation; projection and BN; SE: pool, 2 linear, 2 activations, scale;
            # the residual add
            layers += 3 + 2 + (6 if p.use_se else 0) + (1 if p.stride == 1 and p.in_channels == p.out_channels else 0)
            side = out_side
        feats: dict[str, float] = {
            "macs_m": macs / 1e6,
            "params_m": self.params(spec) / 1e6,
            "resolution": float(spec.resolution),
            "resolution_sq": float(spec.resolution**2) / 1e4,
            "depth_sum": float(sum(p.index > 0 for p in plans)),
            "active_blocks": float(len(plans)),
            "expand_mean": sum(p.expand_ratio for p in plans) / n,
            "kernel_mean": sum(p.kernel_size for p in plans) / n,
            "mid_channels_sum": float(sum(p.mid_channels for p in plans)),
            "se_blocks": float(sum(p.use_se for p in plans)),
            "pointwise_macs_m": pw / 1e6,
            "depthwise_macs_m": dw / 1e6,
            "activations_m": act / 1e6,
        }
        feats["layers"] = float(layers)
        for k in self.ks_list:
            feats[f"k{k}_frac"] = sum(p.kernel_size == k for p in plans) / n
        return feats


class OFAMobileNetV3Family(_MBConvFamily):
    """OFA MobileNetV3 (``OFAMobileNetV3``): w1.0, w1.2 or any constructor arguments."""

    kind = "ofa-mbv3"
    head_kind = "mbv3"
    id_prefix = "mbv3"
    ofa_network = "OFAMobileNetV3"
    flops_model = "Mbv3FLOPsModel"

    @property
    def n_stages(self) -> int:
        return 5

    @property
    def n_blocks(self) -> int:
        return 5 * max(self.depth_list)



class OFAProxylessFamily(_MBConvFamily):
    """OFA ProxylessNAS (``OFAProxylessNASNets``), w1.3 by default. Its last stage has one block."""

    kind = "ofa-proxyless"
    head_kind = "proxyless"
    id_prefix = "proxyless"
    default_width_mult = 1.3
    ofa_network = "OFAProxylessNASNets"
    flops_model = "ProxylessNASFLOPsModel"

    @property
    def n_stages(self) -> int:
        return 6

    @property
    def n_blocks(self) -> int:
        return 5 * max(self.depth_list) + 1

    def _depth_choices(self, stage: int) -> list[int]:
        # the last stage holds a single block; OFA's sampler always sets its depth to 1
        return [1] if stage == self.n_stages - 1 else list(self.depth_list)



def _mbconv_name(prefix: str, w: float, ks: Any, e: Any, d: Any, n_classes: int) -> str:
    def code(values: Any) -> str:
        items = values if isinstance(values, (list, tuple)) else [values]
        return "".join(str(number(v)).replace(".", "") for v in sorted(items))

    name = f"{prefix}-w{float(w):.1f}"
    default = prefix == "ofa-mbv3" and (code(ks), code(e), code(d)) == ("357", "346", "234")
    default = default or (prefix == "ofa-proxyless" and (code(ks), code(e), code(d)) == ("357", "346", "234"))
    if not default:
        name += f"-k{code(ks)}-e{code(e)}-d{code(d)}"
    if n_classes != 1000:
        name += f"-c{n_classes}"
    return name


# ==================================================================== factories (subnets.registry)


def mbv3_from_description(description: Mapping[str, Any], weights: str | None = None) -> OFAFamily:
    return from_description(OFAMobileNetV3Family, description, weights)


def proxyless_from_description(description: Mapping[str, Any], weights: str | None = None) -> OFAFamily:
    return from_description(OFAProxylessFamily, description, weights)
