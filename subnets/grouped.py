"""Group-pruned incremental CNNs (Xun et al., MLCAD 2019) as a model family.

Every conv layer's output channels are split into ``G`` equal groups. **Level g** uses groups
1..g of every layer; the input of layer l+1 at level g is groups 1..g of layer l. Group g is
trained after groups 1..g-1 are frozen, so a group only ever reads the groups at or before it:
each conv weight is *block lower-triangular* over (output group, input group) and the blocks
above the diagonal stay exactly zero. Hence level g's computation is a leading slice of the
full net: conv weight ``W[:cout_g, :cin_g]``, BN vectors ``[:cout_g]``, plus level g's own
classifier head. Switching level = using another slice; nothing is copied or retrained.

Two architectures: ``"alexnet"`` (AlexNet-style for 32x32 CIFAR-10 inputs as in the paper:
five convs 64-192-384-256-256, three max-pools, flattened 4x4 features into a linear head) and
``"small"`` (three convs 16-32-32 for the bundled digits demo). BatchNorm follows every conv;
a channel's statistics are learnt while its group trains and never change afterwards.

Weights are a ``torch.save`` file (format ``dynofa.grouped/1``) with the architecture, the
number of trained levels and the state dict (matrices in fp16, vectors in fp32).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dynofa.errors import CheckpointError, WeightsNotFoundError
from subnets.family import ModelFamily, SubnetSpec

WEIGHTS_FORMAT = "dynofa.grouped/1"
BN_EPS = 1e-5


@dataclass(frozen=True)
class ConvSpec:
    """One conv layer of the full (all groups) net."""

    channels: int
    kernel: int
    pool: bool  # 2x2 max-pool after the activation


ARCHS: dict[str, tuple[tuple[ConvSpec, ...], int]] = {
    # (conv layers, side of the pooled feature map that is flattened into the head)
    "alexnet": (
        (
            ConvSpec(64, 5, True),
            ConvSpec(192, 5, True),
            ConvSpec(384, 3, False),
            ConvSpec(256, 3, False),
            ConvSpec(256, 3, True),
        ),
        4,
    ),
    "small": ((ConvSpec(16, 3, True), ConvSpec(32, 3, True), ConvSpec(32, 3, True)), 2),
}


def _scaled(channels: int, width_mult: float, groups: int) -> int:
    """Channels after the width multiplier, rounded to a multiple of ``groups`` (at least one per group)."""
    return max(groups, int(round(channels * width_mult / groups)) * groups)


class GroupedNet(nn.Module):
    """The full group-pruned net: dense block-lower-triangular conv weights and one head per level.

    ``forward`` runs the active level (``active_level``, default the largest). Training code uses
    :meth:`forward_level` with ``train_group`` so that frozen groups' BatchNorm statistics stay put.
    """

    def __init__(
        self,
        arch: str = "small",
        groups: int = 4,
        num_classes: int = 10,
        in_channels: int = 3,
        width_mult: float = 1.0,
    ) -> None:
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"unknown grouped architecture {arch!r}; known: {', '.join(ARCHS)}")
        if groups < 1:
            raise ValueError(f"groups must be >= 1, got {groups}")
        if width_mult <= 0:
            raise ValueError(f"width_mult must be positive, got {width_mult}")
        layers, pooled = ARCHS[arch]
        self.arch = arch
        self.groups = groups
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.width_mult = width_mult
        self.kernels = [spec.kernel for spec in layers]
        self.pools = [spec.pool for spec in layers]
        self.channels = [_scaled(spec.channels, width_mult, groups) for spec in layers]
        self.pooled = pooled
        self.active_level = groups
        #: how many levels hold trained weights (0 for a fresh net); saved with the weights
        self.trained_levels = 0
        self.weights = nn.ParameterList()
        self.bn_weights = nn.ParameterList()
        self.bn_biases = nn.ParameterList()
        cin = in_channels
        for i, (cout, k) in enumerate(zip(self.channels, self.kernels, strict=True)):
            self.weights.append(nn.Parameter(torch.zeros(cout, cin, k, k)))
            self.bn_weights.append(nn.Parameter(torch.ones(cout)))
            self.bn_biases.append(nn.Parameter(torch.zeros(cout)))
            self.register_buffer(f"running_mean_{i}", torch.zeros(cout))
            self.register_buffer(f"running_var_{i}", torch.ones(cout))
            cin = cout
        self.heads = nn.ModuleList(
            nn.Linear(self.feature_size(g), num_classes) for g in range(1, groups + 1)
        )
        self.reset_parameters()

    # ---- geometry

    @property
    def num_layers(self) -> int:
        return len(self.channels)

    def cout(self, layer: int, level: int) -> int:
        """Output channels of ``layer`` used at ``level`` (0 at level 0)."""
        return self.channels[layer] // self.groups * level

    def cin(self, layer: int, level: int) -> int:
        return self.in_channels if layer == 0 else self.cout(layer - 1, level)

    def feature_size(self, level: int) -> int:
        return self.cout(self.num_layers - 1, level) * self.pooled * self.pooled

    def running_mean(self, layer: int) -> torch.Tensor:
        return getattr(self, f"running_mean_{layer}")  # type: ignore[no-any-return]

    def running_var(self, layer: int) -> torch.Tensor:
        return getattr(self, f"running_var_{layer}")  # type: ignore[no-any-return]

    def reset_parameters(self) -> None:
        """Kaiming-initialise the lower-triangular blocks; the blocks above the diagonal stay zero."""
        with torch.no_grad():
            for layer, w in enumerate(self.weights):
                w.zero_()
                for g in range(1, self.groups + 1):
                    rows = slice(self.cout(layer, g - 1), self.cout(layer, g))
                    block = w[rows, : self.cin(layer, g)]
                    nn.init.kaiming_normal_(block, mode="fan_in", nonlinearity="relu")

    def block_mask(self, layer: int) -> torch.Tensor:
        """1 where a weight may be non-zero (output group >= input group), 0 elsewhere."""
        w = self.weights[layer]
        mask = torch.zeros(w.shape[:2], dtype=torch.bool, device=w.device)
        for g in range(1, self.groups + 1):
            mask[self.cout(layer, g - 1) : self.cout(layer, g), : self.cin(layer, g)] = True
        return mask

    # ---- forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_level(x, self.active_level)

    def forward_level(self, x: torch.Tensor, level: int, train_group: int | None = None) -> torch.Tensor:
        """Logits of ``level``. With ``train_group`` (== level), only that group's BN uses batch statistics."""
        if not 1 <= level <= self.groups:
            raise ValueError(f"level must be in 1..{self.groups}, got {level}")
        for layer in range(self.num_layers):
            c = self.cout(layer, level)
            w = self.weights[layer][:c, : self.cin(layer, level)]
            x = F.conv2d(x, w, padding=self.kernels[layer] // 2)
            x = self._bn(layer, x, c, level if train_group is None else train_group, train_group is not None)
            x = F.relu(x)
            if self.pools[layer]:
                x = F.max_pool2d(x, 2)
        x = F.adaptive_avg_pool2d(x, self.pooled).flatten(1)
        head: nn.Linear = self.heads[level - 1]  # type: ignore[assignment]
        return head(x)  # type: ignore[no-any-return]

    def _bn(self, layer: int, x: torch.Tensor, c: int, group: int, training: bool) -> torch.Tensor:
        mean, var = self.running_mean(layer), self.running_var(layer)
        weight, bias = self.bn_weights[layer], self.bn_biases[layer]
        if not training:
            return F.batch_norm(x, mean[:c], var[:c], weight[:c], bias[:c], False, 0.0, BN_EPS)
        c0 = self.cout(layer, group - 1)
        new = F.batch_norm(x[:, c0:c], mean[c0:c], var[c0:c], weight[c0:c], bias[c0:c], True, 0.1, BN_EPS)
        if c0 == 0:
            return new
        # frozen groups normalise with their stored statistics, which therefore never change
        old = F.batch_norm(x[:, :c0], mean[:c0], var[:c0], weight[:c0], bias[:c0], False, 0.0, BN_EPS)
        return torch.cat([old, new], dim=1)

    # ---- counting

    def level_macs(self, level: int, resolution: int) -> int:
        total = 0
        side = resolution
        for layer in range(self.num_layers):
            k = self.kernels[layer]
            total += self.cout(layer, level) * self.cin(layer, level) * k * k * side * side
            if self.pools[layer]:
                side //= 2
        return total + self.feature_size(level) * self.num_classes

    def level_params(self, level: int) -> int:
        """Weights the level's module references (conv slices incl. their zero blocks, BN, its head)."""
        total = 0
        for layer in range(self.num_layers):
            k = self.kernels[layer]
            total += self.cout(layer, level) * self.cin(layer, level) * k * k + 2 * self.cout(layer, level)
        return total + (self.feature_size(level) + 1) * self.num_classes

    def describe(self) -> dict[str, Any]:
        return {
            "arch": self.arch,
            "groups": self.groups,
            "num_classes": self.num_classes,
            "in_channels": self.in_channels,
            "width_mult": self.width_mult,
        }


class GroupedSubnet(nn.Module):
    """A static level-g net whose tensors are views of the :class:`GroupedNet`'s (no copies).

    Conv weights are ``W[:cout_g, :cin_g]`` (strided views), BN vectors leading slices, and the head
    is the level's own module. Only BN statistics passed as ``bn_stats`` are private tensors.
    """

    def __init__(self, net: GroupedNet, level: int, bn_stats: Mapping[str, torch.Tensor] | None = None) -> None:
        super().__init__()
        self.level = level
        self.kernels = list(net.kernels)
        self.pools = list(net.pools)
        self.pooled = net.pooled
        self.head = net.heads[level - 1]
        for layer in range(net.num_layers):
            c = net.cout(layer, level)
            mean = net.running_mean(layer)[:c]
            var = net.running_var(layer)[:c]
            if bn_stats is not None:
                mean = _stat(bn_stats, f"running_mean_{layer}", c)
                var = _stat(bn_stats, f"running_var_{layer}", c)
            tensors = (
                net.weights[layer].detach()[:c, : net.cin(layer, level)],
                net.bn_weights[layer].detach()[:c],
                net.bn_biases[layer].detach()[:c],
                mean,
                var,
            )
            names = ("weight", "bn_weight", "bn_bias", "running_mean", "running_var")
            for name, tensor in zip(names, tensors, strict=True):
                self.register_buffer(f"{name}_{layer}", tensor, persistent=False)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in range(len(self.kernels)):
            w, bw, bb, mean, var = (
                getattr(self, f"{name}_{layer}")
                for name in ("weight", "bn_weight", "bn_bias", "running_mean", "running_var")
            )
            x = F.conv2d(x, w, padding=self.kernels[layer] // 2)
            x = F.relu(F.batch_norm(x, mean, var, bw, bb, False, 0.0, BN_EPS))
            if self.pools[layer]:
                x = F.max_pool2d(x, 2)
        x = F.adaptive_avg_pool2d(x, self.pooled).flatten(1)
        return self.head(x)  # type: ignore[no-any-return]


def _stat(stats: Mapping[str, torch.Tensor], key: str, size: int) -> torch.Tensor:
    if key not in stats:
        raise CheckpointError(f"BN statistics lack {key!r}; recompute them with calibrate_bn")
    tensor = stats[key]
    if tensor.shape != (size,):
        raise CheckpointError(f"BN statistics {key!r} have shape {tuple(tensor.shape)}, expected ({size},)")
    return tensor


# --------------------------------------------------------------------------- weights files


def save_grouped(net: GroupedNet, path: str | Path, extra: Mapping[str, Any] | None = None) -> Path:
    """Write the net's weights (matrices fp16, vectors fp32) with its architecture."""
    state = {
        k: (v.detach().to("cpu", torch.float16) if v.ndim > 1 else v.detach().to("cpu", torch.float32))
        for k, v in net.state_dict().items()
    }
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": WEIGHTS_FORMAT,
        "arch": net.describe(),
        "trained_levels": net.trained_levels,
        "state_dict": state,
        "extra": dict(extra or {}),
    }
    tmp = target.with_name(f".{target.name}.tmp")
    torch.save(payload, tmp)
    tmp.replace(target)
    return target


def read_grouped_file(path: str | Path) -> dict[str, Any]:
    source = Path(path)
    if not source.is_file():
        raise WeightsNotFoundError("the grouped net", [str(source)])
    try:
        payload = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch.load raises many types on corrupt files
        raise CheckpointError(f"grouped weights {source} cannot be read (corrupt or not a torch file): {exc}") from None
    if not isinstance(payload, dict) or payload.get("format") != WEIGHTS_FORMAT:
        raise CheckpointError(f"{source} is not a dynofa grouped-net weights file (format {WEIGHTS_FORMAT})")
    return payload


def load_grouped(path: str | Path, device: str | torch.device = "cpu") -> GroupedNet:
    """Rebuild a :class:`GroupedNet` from a weights file written by :func:`save_grouped`."""
    payload = read_grouped_file(path)
    arch = payload["arch"]
    net = GroupedNet(**arch)
    load_grouped_state(net, payload, path)
    return net.to(device).eval()


def load_grouped_state(net: GroupedNet, payload: Mapping[str, Any], where: str | Path) -> None:
    arch = payload.get("arch", {})
    if arch != net.describe():
        raise CheckpointError(f"grouped weights {where} are for {arch}, but the family was built as {net.describe()}")
    state = {k: v.float() for k, v in payload["state_dict"].items()}
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"grouped weights {where} do not fit the architecture: {exc}") from None
    net.trained_levels = int(payload.get("trained_levels", net.groups))


# --------------------------------------------------------------------------- the family


class GroupedFamily(ModelFamily):
    """Group-pruned incremental net as a :class:`ModelFamily`: config ``{"level": g}``, one resolution."""

    id_prefix = "grp"
    in_channels = 3

    def __init__(
        self,
        arch: str = "small",
        groups: int = 4,
        num_classes: int = 10,
        resolution: int = 32,
        width_mult: float = 1.0,
        weights: str | Path | None = None,
        device: str | torch.device = "cpu",
        seed: int = 0,
    ) -> None:
        if groups < 1:
            raise ValueError(f"groups must be >= 1, got {groups}")
        self.arch = arch
        self.groups = groups
        self.num_classes = num_classes
        self.resolution = resolution
        self.width_mult = width_mult
        self.weights_path = None if weights is None else Path(weights)
        self.device = torch.device(device)
        self.seed = seed
        self.name = f"grouped-{arch}-g{groups}"
        self._net: GroupedNet | None = None

    @classmethod
    def from_weights(cls, path: str | Path, resolution: int = 32, device: str | torch.device = "cpu") -> GroupedFamily:
        """A family whose architecture is read from the weights file itself."""
        payload = read_grouped_file(path)
        arch = payload["arch"]
        res = int(payload.get("extra", {}).get("resolution", resolution))
        return cls(
            arch=arch["arch"],
            groups=arch["groups"],
            num_classes=arch["num_classes"],
            resolution=res,
            width_mult=arch["width_mult"],
            weights=path,
            device=device,
        )

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": "grouped",
            "arch": self.arch,
            "groups": self.groups,
            "num_classes": self.num_classes,
            "resolution": self.resolution,
            "width_mult": self.width_mult,
        }

    def supernet(self) -> GroupedNet:
        if self._net is None:
            torch.manual_seed(self.seed)
            net = GroupedNet(self.arch, self.groups, self.num_classes, self.in_channels, self.width_mult)
            if self.weights_path is not None:
                payload = read_grouped_file(self.weights_path)
                load_grouped_state(net, payload, self.weights_path)
            self._net = net.to(self.device).eval()
        return self._net

    def weights_info(self) -> dict[str, Any]:
        """The catalog's ``weights`` object."""
        if self.weights_path is None:
            return {"init": "random", "seed": self.seed}
        from dynofa.catalog import sha256_file

        if not self.weights_path.is_file():
            raise WeightsNotFoundError(self.name, [str(self.weights_path)])
        return {"path": str(self.weights_path), "sha256": sha256_file(self.weights_path)}

    def resolutions(self) -> list[int]:
        return [self.resolution]

    def levels(self) -> list[int]:
        return list(range(1, self.groups + 1))

    def spec(self, level: int) -> SubnetSpec:
        spec = SubnetSpec(config={"level": level}, resolution=self.resolution)
        self.validate(spec)
        return spec

    def sample(self, rng: random.Random) -> SubnetSpec:
        return self.spec(rng.randint(1, self.groups))

    def largest(self, resolution: int | None = None) -> SubnetSpec:
        self._check_resolution(resolution)
        return self.spec(self.groups)

    def smallest(self, resolution: int | None = None) -> SubnetSpec:
        self._check_resolution(resolution)
        return self.spec(1)

    def validate(self, spec: SubnetSpec) -> None:
        extra = set(spec.config) - {"level"}
        if extra:
            raise ValueError(f"grouped subnet config has unknown field(s) {sorted(extra)}; it takes only 'level'")
        level = spec.config.get("level")
        if isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= self.groups:
            raise ValueError(f"config.level must be an integer in 1..{self.groups}, got {level!r}")
        self._check_resolution(spec.resolution)

    def _check_resolution(self, resolution: int | None) -> None:
        if resolution is not None and resolution != self.resolution:
            raise ValueError(f"resolution must be {self.resolution} for {self.name}, got {resolution}")

    def macs(self, spec: SubnetSpec) -> int:
        self.validate(spec)
        return self._geometry().level_macs(int(spec.config["level"]), spec.resolution)

    def params(self, spec: SubnetSpec) -> int:
        self.validate(spec)
        return self._geometry().level_params(int(spec.config["level"]))

    def features(self, spec: SubnetSpec) -> dict[str, float]:
        level = int(spec.config["level"])
        return {
            "level": float(level),
            "width_fraction": level / self.groups,
            "macs": float(self.macs(spec)),
            "params": float(self.params(spec)),
            "resolution": float(spec.resolution),
        }

    def activate(self, spec: SubnetSpec) -> None:
        self.validate(spec)
        self.supernet().active_level = int(spec.config["level"])

    def materialize(self, spec: SubnetSpec, bn_stats: Mapping[str, torch.Tensor] | None = None) -> nn.Module:
        self.validate(spec)
        return GroupedSubnet(self.supernet(), int(spec.config["level"]), bn_stats)

    def calibrate_bn(self, spec: SubnetSpec, batches: Iterable[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Cumulative BN statistics of the level on calibration images (rarely needed: a group's
        statistics are learnt once and hold for every level that contains it)."""
        self.validate(spec)
        net = self.supernet()
        level = int(spec.config["level"])
        sums: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        count = 0
        with torch.inference_mode():
            for images in batches:
                x = images.to(self.device, torch.float32)
                for layer in range(net.num_layers):
                    c = net.cout(layer, level)
                    x = F.conv2d(x, net.weights[layer][:c, : net.cin(layer, level)], padding=net.kernels[layer] // 2)
                    mean = x.mean(dim=(0, 2, 3))
                    var = x.var(dim=(0, 2, 3), unbiased=False)
                    s_mean, s_var = sums.get(layer, (torch.zeros_like(mean), torch.zeros_like(var)))
                    sums[layer] = (s_mean + mean, s_var + var)
                    x = F.batch_norm(x, mean, var, net.bn_weights[layer][:c], net.bn_biases[layer][:c], False, 0.0,
                                     BN_EPS)
                    x = F.relu(x)
                    if net.pools[layer]:
                        x = F.max_pool2d(x, 2)
                count += 1
        if count == 0:
            raise ValueError("calibrate_bn needs at least one batch of images")
        stats: dict[str, torch.Tensor] = {}
        for layer, (s_mean, s_var) in sums.items():
            stats[f"running_mean_{layer}"] = s_mean / count
            stats[f"running_var_{layer}"] = s_var / count
        return stats

    def _geometry(self) -> GroupedNet:
        if self._net is not None:
            return self._net
        return _geometry_net(self.arch, self.groups, self.num_classes, self.in_channels, self.width_mult)


def _geometry_net(arch: str, groups: int, num_classes: int, in_channels: int, width_mult: float) -> GroupedNet:
    # counting MACs/params needs only the shapes; a meta-device net allocates nothing
    with torch.device("meta"):
        return GroupedNet(arch, groups, num_classes, in_channels, width_mult)


def grouped_family(description: Mapping[str, Any], weights: str | None = None) -> GroupedFamily:
    """Registry factory: rebuild the family from a catalog's ``family`` object.

    With a weights file, the architecture fields the description leaves out come from the file (it
    records them), so ``dynofa catalog build --family grouped --weights FILE`` works on any file
    ``dynofa train grouped`` wrote; a field the description does give must match the file.
    """
    defaults: dict[str, Any] = {"arch": "small", "groups": 4, "num_classes": 10, "resolution": 32, "width_mult": 1.0}
    if weights is not None:
        payload = read_grouped_file(weights)
        recorded = payload.get("arch", {})
        defaults.update({k: recorded[k] for k in ("arch", "groups", "num_classes", "width_mult") if k in recorded})
        defaults["resolution"] = int(payload.get("extra", {}).get("resolution", defaults["resolution"]))
    try:
        return GroupedFamily(
            arch=str(description.get("arch", defaults["arch"])),
            groups=int(description.get("groups", defaults["groups"])),
            num_classes=int(description.get("num_classes", defaults["num_classes"])),
            resolution=int(description.get("resolution", defaults["resolution"])),
            width_mult=float(description.get("width_mult", defaults["width_mult"])),
            weights=weights,
        )
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"invalid grouped family description {dict(description)}: {exc}") from None
