"""OFA model families: MobileNetV3, ProxylessNAS (here) and ResNet50 (``subnets.ofa_resnet``) supernets
from the ``ofa`` package.

Each family builds its supernet once (random initialisation from a seed, or a local
checkpoint in the official OFA format; nothing is ever downloaded), knows its subnet space,
and materialises subnets that share the supernet's tensors (see ``subnets.shared_mbconv``
and ``subnets.shared_static``).

Everything that changes the supernet's *active* subnet (dynamic slicing, FLOPs models,
stock extraction, BN calibration) runs under ``family.lock``; materialisation only reads
tensors, so it is safe while other threads run inference.
"""

from __future__ import annotations

import inspect
import random
import threading
from abc import abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dynofa.errors import CatalogError, CheckpointError
from subnets.checkpoint import load_state_dict, weights_sha256
from subnets.family import ModelFamily, SubnetSpec
from subnets.ofa_compat import install as _install_ofa_shim
from subnets.shared_mbconv import build_shared_mbconv, make_divisible, plan_blocks, transformed_kernel

__all__ = [
    "OFAFamily",
    "OFAMobileNetV3Family",
    "OFAProxylessFamily",
    "mbv3_from_description",
    "proxyless_from_description",
    "resnet50_from_description",
]

DEFAULT_RESOLUTIONS = (128, 144, 160, 176, 192, 208, 224)


def _dynamic_bn_class() -> Any:
    _install_ofa_shim()
    from ofa.imagenet_classification.elastic_nn.modules.dynamic_op import DynamicBatchNorm2d

    return DynamicBatchNorm2d


def _number(value: float) -> float | int:
    """3.0 -> 3 so that configs read the way OFA writes them."""
    return int(value) if float(value).is_integer() else float(value)


class OFAFamily(ModelFamily):
    """Common machinery of the OFA families (supernet, weights, locking, BN statistics)."""

    kind: str = ""

    def __init__(
        self,
        *,
        weights: str | Path | None,
        seed: int,
        resolutions: Sequence[int],
        n_classes: int,
        name: str,
        id_prefix: str,
    ) -> None:
        if not resolutions or any(int(r) <= 0 for r in resolutions):
            raise ValueError(f"resolutions must be a non-empty list of positive integers, got {resolutions!r}")
        if n_classes <= 0:
            raise ValueError(f"n_classes must be positive, got {n_classes}")
        self.weights_path = None if weights is None else Path(weights)
        self.seed = int(seed)
        self._resolutions = sorted({int(r) for r in resolutions})
        self.num_classes = int(n_classes)
        self.name = name
        self.id_prefix = id_prefix
        self.lock = threading.RLock()
        self._supernet: nn.Module | None = None
        self._sha256: str | None = None
        self._flops_model: Any = None

    # ---------------------------------------------------------------- construction

    @abstractmethod
    def _construct(self) -> nn.Module:
        """Build the ofa supernet (random init; weights are loaded by :meth:`supernet`)."""

    def supernet(self) -> nn.Module:
        with self.lock:
            if self._supernet is None:
                _install_ofa_shim()
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(self.seed)
                    net = self._construct()
                if self.weights_path is not None:
                    state = load_state_dict(self.weights_path, what=f"model family {self.name}")
                    try:
                        net.load_state_dict(state)
                    except (RuntimeError, ValueError, AssertionError, KeyError) as exc:
                        raise CheckpointError(
                            f"weight file {self.weights_path} does not fit family {self.name} "
                            f"({self.describe_short()}): {str(exc).splitlines()[0][:300]}"
                        ) from None
                self._supernet = net.eval()
            return self._supernet

    def _net(self) -> Any:
        """The supernet, typed loosely: ofa's modules carry untyped attributes."""
        return self.supernet()

    def describe_short(self) -> str:
        args = {k: v for k, v in self.describe().items() if k not in ("kind", "name")}
        return ", ".join(f"{k}={v}" for k, v in args.items())

    def weights_sha256(self) -> str | None:
        """SHA-256 of the weight file (None for random initialisation)."""
        if self.weights_path is None:
            return None
        if self._sha256 is None:
            self._sha256 = weights_sha256(self.weights_path, what=f"model family {self.name}")
        return self._sha256

    def weights_info(self) -> dict[str, Any]:
        """The catalog's ``weights`` object."""
        if self.weights_path is None:
            return {"init": "random", "seed": self.seed}
        return {"path": str(self.weights_path), "sha256": self.weights_sha256()}

    def resolutions(self) -> list[int]:
        return list(self._resolutions)

    def _resolution(self, resolution: int | None, pick: Callable[[list[int]], int]) -> int:
        if resolution is None:
            return pick(self._resolutions)
        if resolution not in self._resolutions:
            raise ValueError(f"resolution {resolution} not supported by {self.name}; choose from {self._resolutions}")
        return int(resolution)

    def _check_resolution(self, spec: SubnetSpec) -> None:
        if spec.resolution not in self._resolutions:
            raise ValueError(
                f"resolution {spec.resolution} is outside {self.name}'s resolutions {self._resolutions}"
            )

    @staticmethod
    def _check_list(config: Mapping[str, Any], key: str, length: int, allowed: Sequence[Any]) -> list[Any]:
        value = config.get(key)
        if not isinstance(value, (list, tuple)) or len(value) != length:
            raise ValueError(f"config field {key!r} must be a list of {length} values, got {value!r}")
        for i, item in enumerate(value):
            if isinstance(item, bool) or not isinstance(item, (int, float)) or item not in allowed:
                raise ValueError(f"config field {key}[{i}] = {item!r} is not one of {list(allowed)}")
        return list(value)

    # ---------------------------------------------------------------- dynamic slicing

    def activate(self, spec: SubnetSpec) -> None:
        self.validate(spec)
        with self.lock:
            self._net().set_active_subnet(**dict(spec.config))

    def forward_dynamic(
        self, spec: SubnetSpec, x: Tensor, bn_stats: Mapping[str, Tensor] | None = None
    ) -> Tensor:
        """Run ``x`` through the supernet with ``spec`` active (slices every forward; no materialisation).

        With ``bn_stats`` the subnet's own BN statistics replace the supernet's for this call.
        """
        with self.lock:
            self.activate(spec)
            net: Any = self.supernet()
            if not bn_stats:
                return net(x)
            with self._bn_overridden(lambda name, bn: _stats_bn_forward(name, bn, bn_stats)):
                return net(x)

    def extract(self, spec: SubnetSpec) -> nn.Module:
        """Stock OFA extraction (``get_active_subnet(preserve_weight=True)``), eval mode: a full copy."""
        with self.lock:
            self.activate(spec)
            return self._net().get_active_subnet(preserve_weight=True).eval()

    @contextmanager
    def _bn_overridden(self, factory: Callable[[str, nn.BatchNorm2d], Callable[[Tensor], Tensor]]) -> Iterator[None]:
        """Temporarily replace the forward of every BatchNorm of the supernet (caller holds the lock)."""
        dynamic_bn = _dynamic_bn_class()
        net: Any = self.supernet()
        wrapped: set[int] = set()
        targets: list[tuple[Any, str, Any]] = []
        module: Any
        for name, module in net.named_modules():
            if isinstance(module, dynamic_bn):
                targets.append((module, f"{name}.bn", module.bn))
                wrapped.add(id(module.bn))
        for name, module in net.named_modules():
            if isinstance(module, nn.BatchNorm2d) and id(module) not in wrapped:
                targets.append((module, name, module))
        try:
            for module, name, bn in targets:
                module.forward = factory(name, bn)  # type: ignore[method-assign]
            yield
        finally:
            for module, _, _ in targets:
                module.__dict__.pop("forward", None)

    def calibrate_bn(self, spec: SubnetSpec, batches: Iterable[Tensor]) -> dict[str, Tensor]:
        """BN statistics of ``spec`` on calibration images, computed like ofa's ``set_running_statistics``
        (per-batch mean and biased variance, averaged weighted by batch size) without touching the
        supernet's own statistics. Keys: ``<supernet BN module>.running_mean``/``.running_var``."""
        sums: dict[str, list[Any]] = {}

        def factory(name: str, bn: nn.BatchNorm2d) -> Callable[[Tensor], Tensor]:
            def forward(x: Tensor) -> Tensor:
                mean = x.mean(0, keepdim=True).mean(2, keepdim=True).mean(3, keepdim=True)
                var = ((x - mean) * (x - mean)).mean(0, keepdim=True).mean(2, keepdim=True).mean(3, keepdim=True)
                mean, var = mean.flatten(), var.flatten()
                n = x.shape[0]
                acc = sums.setdefault(name, [torch.zeros_like(mean), torch.zeros_like(var), 0])
                acc[0] += mean * n
                acc[1] += var * n
                acc[2] += n
                c = mean.numel()
                return F.batch_norm(x, mean, var, bn.weight[:c], bn.bias[:c], False, 0.0, bn.eps)

            return forward

        seen = 0
        with self.lock, torch.no_grad():
            self.activate(spec)
            net: Any = self.supernet()
            device = next(net.parameters()).device
            with self._bn_overridden(factory):
                for batch in batches:
                    images = batch[0] if isinstance(batch, (tuple, list)) else batch
                    net(images.to(device))
                    seen += int(images.shape[0])
        if seen == 0:
            raise ValueError("calibrate_bn needs at least one calibration batch")
        stats: dict[str, Tensor] = {}
        for name, (mean_sum, var_sum, n) in sums.items():
            stats[f"{name}.running_mean"] = (mean_sum / n).cpu()
            stats[f"{name}.running_var"] = (var_sum / n).cpu()
        return stats

    # ---------------------------------------------------------------- cost model

    @abstractmethod
    def _flops(self) -> Any:
        """ofa's analytic FLOPs model for this supernet."""

    def macs(self, spec: SubnetSpec) -> int:
        """MACs from ofa's analytic FLOPs model (a few ms; exact on extracted subnets)."""
        self.validate(spec)
        with self.lock:
            if self._flops_model is None:
                _install_ofa_shim()  # _flops() imports ofa.nas, maybe before the supernet exists
                self._flops_model = self._flops()
            mflops = self._flops_model.get_efficiency({**dict(spec.config), "image_size": spec.resolution})
        return int(round(float(mflops) * 1e6))

    def sample_many(self, n: int, rng: random.Random, unique: bool = True) -> list[SubnetSpec]:
        """``n`` random subnets (distinct when ``unique``)."""
        out: list[SubnetSpec] = []
        seen: set[str] = set()
        tries = 0
        while len(out) < n:
            spec = self.sample(rng)
            tries += 1
            if unique and spec.key in seen:
                if tries > 100 * n:
                    raise ValueError(f"cannot draw {n} distinct subnets from {self.name}")
                continue
            seen.add(spec.key)
            out.append(spec)
        return out


def _stats_bn_forward(name: str, bn: Any, stats: Mapping[str, Tensor]) -> Callable[[Tensor], Tensor]:
    mean_all = stats.get(f"{name}.running_mean")
    var_all = stats.get(f"{name}.running_var")

    def forward(x: Tensor) -> Tensor:
        c = x.shape[1]
        if mean_all is not None and var_all is not None and mean_all.numel() == c:
            mean, var = mean_all.to(x.device), var_all.to(x.device)
        else:
            mean, var = bn.running_mean[:c], bn.running_var[:c]
        return F.batch_norm(x, mean, var, bn.weight[:c], bn.bias[:c], False, 0.0, bn.eps)

    return forward


def _tuple_of(value: Any, kind: type, field: str) -> tuple[Any, ...]:
    items = value if isinstance(value, (list, tuple)) else [value]
    if not items:
        raise ValueError(f"{field} must not be empty")
    out = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            raise ValueError(f"{field} must hold numbers, got {item!r}")
        out.append(kind(item) if kind is int else _number(item))
    return tuple(sorted(set(out)))


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
        self.width_mult = _number(width_mult)
        self.ks_list = _tuple_of(ks_list, int, "ks_list")
        if any(k % 2 == 0 or k < 1 for k in self.ks_list):
            raise ValueError(f"ks_list must hold odd kernel sizes, got {list(self.ks_list)}")
        self.expand_ratio_list = _tuple_of(expand_ratio_list, float, "expand_ratio_list")
        self.depth_list = _tuple_of(depth_list, int, "depth_list")
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
        plans = self._plans(spec)
        n = max(len(plans), 1)
        macs = self.macs(spec)
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
        }
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
        return "".join(str(_number(v)).replace(".", "") for v in sorted(items))

    name = f"{prefix}-w{float(w):.1f}"
    default = prefix == "ofa-mbv3" and (code(ks), code(e), code(d)) == ("357", "346", "234")
    default = default or (prefix == "ofa-proxyless" and (code(ks), code(e), code(d)) == ("357", "346", "234"))
    if not default:
        name += f"-k{code(ks)}-e{code(e)}-d{code(d)}"
    if n_classes != 1000:
        name += f"-c{n_classes}"
    return name


# ==================================================================== factories (subnets.registry)

def _family_class(kind: str) -> type[OFAFamily]:
    if kind == "ofa-mbv3":
        return OFAMobileNetV3Family
    if kind == "ofa-proxyless":
        return OFAProxylessFamily
    from subnets.ofa_resnet import OFAResNet50Family  # its own module; imports this one

    return OFAResNet50Family


def _from_description(kind: str, description: Mapping[str, Any], weights: str | None) -> OFAFamily:
    cls = _family_class(kind)
    args = {k: v for k, v in description.items() if k != "kind"}
    accepted = set(inspect.signature(cls).parameters) - {"weights"}
    unknown = sorted(set(args) - accepted)
    if unknown:
        raise CatalogError(
            f"family {description.get('name', kind)!r}: unknown field(s) {unknown} for kind {kind!r}; "
            f"accepted: {sorted(accepted)}"
        )
    try:
        family: OFAFamily = cls(weights=weights, **args)
    except (TypeError, ValueError) as exc:
        raise CatalogError(f"family {description.get('name', kind)!r}: {exc}") from None
    return family


def mbv3_from_description(description: Mapping[str, Any], weights: str | None = None) -> OFAFamily:
    return _from_description("ofa-mbv3", description, weights)


def proxyless_from_description(description: Mapping[str, Any], weights: str | None = None) -> OFAFamily:
    return _from_description("ofa-proxyless", description, weights)


def resnet50_from_description(description: Mapping[str, Any], weights: str | None = None) -> OFAFamily:
    return _from_description("ofa-resnet50", description, weights)


# make_divisible is re-exported for callers that plan channel counts
__all__ += ["make_divisible"]
