"""What the OFA families share: the supernet (built once, weights from a local file), its lock,
resolutions, dynamic slicing, stock extraction, BN statistics and the analytic FLOPs model.

The MBConv families (``subnets.ofa_family``) and ResNet50 (``subnets.ofa_resnet``) derive from
:class:`OFAFamily`; :func:`from_description` rebuilds any of them from a catalog's ``family`` object.

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

__all__ = ["DEFAULT_RESOLUTIONS", "OFAFamily", "from_description", "number", "tuple_of"]

DEFAULT_RESOLUTIONS = (128, 144, 160, 176, 192, 208, 224)


def _dynamic_bn_class() -> Any:
    _install_ofa_shim()
    from ofa.imagenet_classification.elastic_nn.modules.dynamic_op import DynamicBatchNorm2d

    return DynamicBatchNorm2d


def number(value: float) -> float | int:
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


def tuple_of(value: Any, kind: type, field: str) -> tuple[Any, ...]:
    items = value if isinstance(value, (list, tuple)) else [value]
    if not items:
        raise ValueError(f"{field} must not be empty")
    out = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            raise ValueError(f"{field} must hold numbers, got {item!r}")
        out.append(kind(item) if kind is int else number(item))
    return tuple(sorted(set(out)))


def from_description(cls: type[OFAFamily], description: Mapping[str, Any], weights: str | None) -> OFAFamily:
    """An instance of ``cls`` from a catalog's ``family`` object (its constructor arguments), with ``weights``."""
    kind = cls.kind
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
