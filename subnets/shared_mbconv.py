"""Weight-shared static subnets of OFA MobileNetV3 and ProxylessNAS supernets.

Stock OFA extraction (``get_active_subnet``) deep-copies every tensor of the subnet, about
20 MB per MobileNetV3 subnet. Here a subnet is a plain functional forward over tensors that
are, wherever the layout allows, *views* of the supernet's own tensors:

* fixed layers (first conv, first block, head, classifier) are the supernet's tensors;
* the 1x1 expansion weight ``W[:mid, :in]``, BN vectors ``[:c]`` and the k=7 (largest-kernel)
  depthwise weight ``[:mid]`` are leading slices, hence contiguous views;
* the point-wise projection ``W[:out, :mid]`` and the SE weights are row-strided views. They
  are computed as matrix products (``torch.mm``/``F.linear``), which BLAS runs on a strided
  matrix directly, so neither the pool nor any forward copies them.

Tensors outside the supernet are only the kernel-transformed k=5/k=3 depthwise weights (computed
once per block and kernel size at full width, then shared by subnets as leading views; see
:func:`transformed_kernel`) and per-subnet BN running statistics (when the subnet was recalibrated).
:meth:`SharedMBConvNet.fold_batchnorm` optionally trades memory for speed. The forward is a flat loop over
prepared tensors, which also has less Python overhead than ofa's module tree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dynofa.errors import CheckpointError

__all__ = [
    "BatchNorm",
    "Conv",
    "MBBlock",
    "BlockPlan",
    "SharedMBConvNet",
    "build_shared_mbconv",
    "transformed_kernel",
]

CHANNEL_DIVISIBLE = 8  # ofa.utils.MyNetwork.CHANNEL_DIVISIBLE
SE_REDUCTION = 4  # ofa.utils.SEModule.REDUCTION


def make_divisible(v: float, divisor: int = CHANNEL_DIVISIBLE) -> int:
    """Same rounding as ``ofa.utils.make_divisible`` (kept here to plan without importing ofa)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def _act_inplace(name: str | None, x: Tensor) -> Tensor:
    if name == "relu":
        return torch.relu_(x)
    if name == "relu6":
        return x.clamp_(0.0, 6.0)
    if name == "h_swish":
        return F.hardswish(x, inplace=True)
    if name is None or name == "none":
        return x
    raise ValueError(f"unsupported activation {name!r}")


@dataclass(frozen=True)
class BatchNorm:
    """Inference-mode BatchNorm over (views of) the supernet's vectors."""

    weight: Tensor
    bias: Tensor
    mean: Tensor
    var: Tensor
    eps: float

    def __call__(self, x: Tensor) -> Tensor:
        return F.batch_norm(x, self.mean, self.var, self.weight, self.bias, False, 0.0, self.eps)

    def tensors(self, prefix: str) -> Iterator[tuple[str, Tensor]]:
        yield f"{prefix}.weight", self.weight
        yield f"{prefix}.bias", self.bias
        yield f"{prefix}.running_mean", self.mean
        yield f"{prefix}.running_var", self.var


@dataclass(frozen=True)
class Conv:
    """A convolution's weight and what follows it: a BatchNorm over (views of) the supernet's
    vectors or, once folded (:meth:`fold`), a private bias."""

    weight: Tensor
    bn: BatchNorm | None = None
    bias: Tensor | None = None

    def fold(self) -> Conv:
        """BN folded into a private copy of the weight: one op less per conv, the weight's bytes more."""
        if self.bn is None:
            return self
        bn = self.bn
        scale = bn.weight / torch.sqrt(bn.var + bn.eps)
        bias = bn.bias - bn.mean * scale
        if self.bias is not None:
            bias = bias + self.bias * scale
        shape = (-1,) + (1,) * (self.weight.dim() - 1)
        return Conv((self.weight * scale.view(shape)).contiguous(), None, bias.contiguous())

    def pointwise(self, x: Tensor) -> Tensor:
        """A 1x1 convolution as a matrix product; ``weight`` is (out, in) with unit column stride, so a
        row-strided view of the supernet's weight is used as it is (BLAS takes the row stride)."""
        n, c, h, w = x.shape
        weight, bias = self.weight, self.bias
        if n == 1:
            flat = x.view(c, h * w)
            y = torch.mm(weight, flat) if bias is None else torch.addmm(bias.view(-1, 1), weight, flat)
            y = y.view(1, weight.shape[0], h, w)
        else:
            y = torch.matmul(weight, x.reshape(n, c, h * w)).view(n, weight.shape[0], h, w)
            if bias is not None:
                y = y.add_(bias.view(1, -1, 1, 1))
        return y if self.bn is None else self.bn(y)

    def conv2d(self, x: Tensor, stride: int, padding: int, groups: int = 1) -> Tensor:
        y = F.conv2d(x, self.weight, self.bias, stride, padding, 1, groups)
        return y if self.bn is None else self.bn(y)

    def tensors(self, prefix: str) -> Iterator[tuple[str, Tensor]]:
        yield f"{prefix}.weight", self.weight
        if self.bias is not None:
            yield f"{prefix}.bias", self.bias
        if self.bn is not None:
            yield from self.bn.tensors(f"{prefix}.bn")


@dataclass(frozen=True)
class SqueezeExcite:
    reduce_w: Tensor  # (se_mid, mid), row stride = supernet's max mid
    reduce_b: Tensor
    expand_w: Tensor  # (mid, se_mid)
    expand_b: Tensor

    def __call__(self, x: Tensor) -> Tensor:
        y = x.mean((2, 3))
        y = torch.relu_(F.linear(y, self.reduce_w, self.reduce_b))
        y = F.hardsigmoid(F.linear(y, self.expand_w, self.expand_b), inplace=True)
        return x.mul_(y.view(y.shape[0], y.shape[1], 1, 1))

    def tensors(self, prefix: str) -> Iterator[tuple[str, Tensor]]:
        yield f"{prefix}.reduce.weight", self.reduce_w
        yield f"{prefix}.reduce.bias", self.reduce_b
        yield f"{prefix}.expand.weight", self.expand_w
        yield f"{prefix}.expand.bias", self.expand_b


@dataclass(frozen=True)
class MBBlock:
    """One mobile inverted bottleneck: [1x1 expand, BN, act], depthwise, BN, act, [SE], 1x1 project, BN."""

    expand: Conv | None
    depthwise: Conv
    stride: int
    padding: int
    se: SqueezeExcite | None
    project: Conv
    act: str
    residual: bool
    source: str  # supernet module name, for reports

    def __call__(self, x: Tensor) -> Tensor:
        y = x
        if self.expand is not None:
            y = _act_inplace(self.act, self.expand.pointwise(y))
        y = _act_inplace(self.act, self.depthwise.conv2d(y, self.stride, self.padding, self.depthwise.weight.shape[0]))
        if self.se is not None:
            y = self.se(y)
        y = self.project.pointwise(y)
        if self.residual:
            y = y.add_(x)
        return y

    def folded(self) -> MBBlock:
        return replace(
            self,
            expand=None if self.expand is None else self.expand.fold(),
            depthwise=self.depthwise.fold(),
            project=self.project.fold(),
        )

    def tensors(self) -> Iterator[tuple[str, Tensor]]:
        p = self.source
        if self.expand is not None:
            yield from self.expand.tensors(f"{p}.expand")
        yield from self.depthwise.tensors(f"{p}.depthwise")
        if self.se is not None:
            yield from self.se.tensors(f"{p}.se")
        yield from self.project.tensors(f"{p}.project")


@dataclass(frozen=True)
class Head:
    """Everything after the blocks: [1x1 conv, BN, act]* -> global average pool -> [linear, act]*."""

    pre_pool: tuple[tuple[Conv, str | None], ...]
    post_pool: tuple[tuple[Tensor, Tensor | None, str | None], ...]

    def __call__(self, x: Tensor) -> Tensor:
        for conv, act in self.pre_pool:
            x = _act_inplace(act, conv.pointwise(x))
        x = x.mean((2, 3))
        for weight, bias, act in self.post_pool:
            x = _act_inplace(act, F.linear(x, weight, bias))
        return x

    def folded(self) -> Head:
        return replace(self, pre_pool=tuple((conv.fold(), act) for conv, act in self.pre_pool))


class SharedMBConvNet(nn.Module):
    """A static MBConv subnet whose forward runs over prepared (mostly shared) tensors."""

    def __init__(
        self,
        stem: Conv,
        stem_stride: int,
        stem_pad: int,
        stem_act: str,
        blocks: Sequence[MBBlock],
        head: Head,
        description: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.stem = stem
        self.stem_stride = stem_stride
        self.stem_pad = stem_pad
        self.stem_act = stem_act
        self.mb_blocks = tuple(blocks)
        self.head = head
        self.description = dict(description or {})
        self.eval()

    def forward(self, x: Tensor) -> Tensor:
        x = _act_inplace(self.stem_act, self.stem.conv2d(x.contiguous(), self.stem_stride, self.stem_pad))
        for block in self.mb_blocks:
            x = block(x)
        return self.head(x)

    @property
    def optimizations(self) -> list[str]:
        return ["fold-bn"] if self.description.get("folded") else []

    def fold_batchnorm(self) -> SharedMBConvNet:
        """A copy with every BatchNorm folded into its conv: faster, but the folded weights are private."""
        with torch.no_grad():
            return SharedMBConvNet(
                self.stem.fold(),
                self.stem_stride,
                self.stem_pad,
                self.stem_act,
                [block.folded() for block in self.mb_blocks],
                self.head.folded(),
                {**self.description, "folded": True},
            )

    def named_tensors(self) -> Iterator[tuple[str, Tensor]]:
        """Every tensor the forward reads (views of the supernet or private)."""
        yield from self.stem.tensors("stem")
        for block in self.mb_blocks:
            yield from block.tensors()
        for i, (conv, _) in enumerate(self.head.pre_pool):
            yield from conv.tensors(f"head.pre_pool.{i}")
        for i, (weight, bias, _) in enumerate(self.head.post_pool):
            yield f"head.post_pool.{i}.weight", weight
            if bias is not None:
                yield f"head.post_pool.{i}.bias", bias


# --------------------------------------------------------------------------------------------
# planning and building from an OFA supernet


@dataclass(frozen=True)
class BlockPlan:
    """One active dynamic block of a subnet: where it is in the supernet and its shape."""

    index: int  # index in supernet.blocks
    in_channels: int
    mid_channels: int
    out_channels: int
    kernel_size: int
    expand_ratio: float
    stride: int
    use_se: bool

    @property
    def se_channels(self) -> int:
        return make_divisible(self.mid_channels // SE_REDUCTION)


def plan_blocks(supernet: Any, ks: Sequence[int], e: Sequence[float], d: Sequence[int]) -> list[BlockPlan]:
    """The active dynamic blocks of config (ks, e, d), without touching the supernet's state."""
    plans: list[BlockPlan] = []
    channels = int(supernet.blocks[0].conv.out_channels)
    for stage, block_ids in enumerate(supernet.block_group_info):
        depth = min(len(block_ids), int(d[stage]))
        for idx in block_ids[:depth]:
            layer = supernet.blocks[idx].conv
            ratio = e[idx - 1]
            mid = make_divisible(round(channels * ratio))
            out = int(layer.active_out_channel)
            plans.append(
                BlockPlan(idx, channels, mid, out, int(ks[idx - 1]), ratio, int(layer.stride), bool(layer.use_se))
            )
            channels = out
    return plans


class _Names:
    """Supernet module names, for BN-statistics keys."""

    def __init__(self, supernet: nn.Module) -> None:
        self._by_id = {id(m): name for name, m in supernet.named_modules()}

    def __call__(self, module: Any) -> str:
        return self._by_id[id(module)]


def _bn(
    bn: Any, dim: int, names: _Names, stats: Mapping[str, Tensor] | None, device: torch.device
) -> BatchNorm:
    """A BatchNorm over the first ``dim`` channels of supernet BN ``bn`` (views), with its own stats if given."""
    if not isinstance(bn, nn.BatchNorm2d) or bn.running_mean is None or bn.running_var is None:
        raise TypeError(f"expected BatchNorm2d with running statistics, got {type(bn).__name__}")
    mean = bn.running_mean.detach()[:dim]
    var = bn.running_var.detach()[:dim]
    if stats is not None:
        name = names(bn)
        mean = _stat(stats, f"{name}.running_mean", dim, device)
        var = _stat(stats, f"{name}.running_var", dim, device)
    return BatchNorm(bn.weight.detach()[:dim], bn.bias.detach()[:dim], mean, var, float(bn.eps))


def _stat(stats: Mapping[str, Tensor], key: str, dim: int, device: torch.device) -> Tensor:
    value = stats.get(key)
    if value is None:
        raise CheckpointError(f"BN statistics lack {key!r}; recalibrate this subnet (calibrate_bn)")
    if value.numel() != dim:
        raise CheckpointError(f"BN statistics {key!r} have {value.numel()} channels, the subnet needs {dim}")
    return value.detach().reshape(dim).to(device=device, dtype=torch.float32).clone()


def _matrix(weight: Tensor, rows: int, cols: int) -> Tensor:
    """The (rows, cols) leading block of a 1x1 conv weight, as a 2-D view with unit column stride."""
    view = weight.detach()[:rows, :cols, 0, 0]
    assert view.stride(1) == 1 or cols == 1, "1x1 conv weight must have unit column stride"
    return view


def _static_mbconv(
    layer: Any, residual: bool, source: str, names: _Names, stats: Mapping[str, Tensor] | None, dev: torch.device
) -> MBBlock:
    """A fixed ofa MBConvLayer (the supernet's first block): all tensors shared."""
    expand = None
    if layer.inverted_bottleneck is not None:
        conv = layer.inverted_bottleneck.conv
        expand = Conv(
            _matrix(conv.weight, conv.out_channels, conv.in_channels),
            _bn(layer.inverted_bottleneck.bn, conv.out_channels, names, stats, dev),
        )
    dw = layer.depth_conv.conv
    mid = dw.out_channels
    se = None
    if layer.use_se:
        fc = layer.depth_conv.se.fc
        se = SqueezeExcite(
            _matrix(fc.reduce.weight, fc.reduce.out_channels, mid),
            fc.reduce.bias.detach(),
            _matrix(fc.expand.weight, mid, fc.reduce.out_channels),
            fc.expand.bias.detach(),
        )
    pw = layer.point_linear.conv
    return MBBlock(
        expand=expand,
        depthwise=Conv(dw.weight.detach(), _bn(layer.depth_conv.bn, mid, names, stats, dev)),
        stride=int(dw.stride[0]),
        padding=int(dw.padding[0]),
        se=se,
        project=Conv(
            _matrix(pw.weight, pw.out_channels, mid), _bn(layer.point_linear.bn, pw.out_channels, names, stats, dev)
        ),
        act=str(layer.act_func),
        residual=residual,
        source=source,
    )


#: (block index, kernel size) -> depthwise kernel transformed for *all* of the block's channels
KernelSource = Callable[[int, int], Tensor]


def transformed_kernel(supernet: Any, index: int, kernel_size: int) -> Tensor:
    """The depthwise kernel of ``supernet.blocks[index]`` at ``kernel_size``, for all its channels.

    ofa's kernel transform acts on each channel independently, so the kernel of a subnet with
    ``mid`` channels is the leading slice ``[:mid]`` of this one: subnets can share it as a view.
    For the largest kernel it is the supernet's weight itself.
    """
    conv = supernet.blocks[index].conv.depth_conv.conv
    full = int(conv.conv.weight.shape[0])
    return conv.get_active_filter(full, kernel_size).detach().contiguous()


def _dynamic_mbconv(
    supernet: Any,
    plan: BlockPlan,
    names: _Names,
    stats: Mapping[str, Tensor] | None,
    dev: torch.device,
    kernels: KernelSource | None,
) -> MBBlock:
    block = supernet.blocks[plan.index]
    layer = block.conv
    mid, cin, cout = plan.mid_channels, plan.in_channels, plan.out_channels
    expand = None
    # stock extraction drops the expansion when the ratio is 1 (MBConvLayer(expand_ratio=1))
    if layer.inverted_bottleneck is not None and plan.expand_ratio != 1:
        expand = Conv(
            _matrix(layer.inverted_bottleneck.conv.conv.weight, mid, cin),
            _bn(layer.inverted_bottleneck.bn.bn, mid, names, stats, dev),
        )
    # largest kernel: a leading slice (view); smaller kernels: ofa's kernel transform (private)
    if kernels is not None:
        dw_w = kernels(plan.index, plan.kernel_size)[:mid]
    else:
        dw_w = layer.depth_conv.conv.get_active_filter(mid, plan.kernel_size).detach().contiguous()
    se = None
    if layer.use_se:
        fc = layer.depth_conv.se.fc
        se_mid = plan.se_channels
        se = SqueezeExcite(
            _matrix(fc.reduce.weight, se_mid, mid),
            fc.reduce.bias.detach()[:se_mid],
            _matrix(fc.expand.weight, mid, se_mid),
            fc.expand.bias.detach()[:mid],
        )
    return MBBlock(
        expand=expand,
        depthwise=Conv(dw_w, _bn(layer.depth_conv.bn.bn, mid, names, stats, dev)),
        stride=plan.stride,
        padding=plan.kernel_size // 2,
        se=se,
        project=Conv(
            _matrix(layer.point_linear.conv.conv.weight, cout, mid),
            _bn(layer.point_linear.bn.bn, cout, names, stats, dev),
        ),
        act=str(layer.act_func),
        residual=block.shortcut is not None,
        source=names(block),
    )


def _conv_layer_pre_pool(
    layer: Any, names: _Names, stats: Mapping[str, Tensor] | None, dev: torch.device
) -> tuple[Conv, str | None]:
    conv = layer.conv
    if conv.kernel_size != (1, 1) or conv.bias is not None or layer.ops_order != "weight_bn_act":
        raise ValueError(f"unsupported head layer {names(layer)}: expected a bias-free 1x1 conv, weight_bn_act")
    bn = _bn(layer.bn, conv.out_channels, names, stats, dev) if layer.use_bn else None
    return Conv(_matrix(conv.weight, conv.out_channels, conv.in_channels), bn), layer.act_func


def _conv_layer_post_pool(layer: Any) -> tuple[Tensor, Tensor | None, str | None]:
    """A 1x1 ConvLayer without BN applied to pooled features is a linear layer."""
    conv = layer.conv
    if conv.kernel_size != (1, 1) or layer.use_bn:
        raise ValueError("a post-pool conv layer must be a 1x1 conv without BN")
    bias = None if conv.bias is None else conv.bias.detach()
    return _matrix(conv.weight, conv.out_channels, conv.in_channels), bias, layer.act_func


def _classifier(layer: Any) -> tuple[Tensor, Tensor | None, str | None]:
    linear = layer.linear
    bias = None if linear.bias is None else linear.bias.detach()
    return linear.weight.detach(), bias, None


def build_shared_mbconv(
    supernet: Any,
    ks: Sequence[int],
    e: Sequence[float],
    d: Sequence[int],
    head_kind: str,
    bn_stats: Mapping[str, Tensor] | None = None,
    kernels: KernelSource | None = None,
) -> SharedMBConvNet:
    """Materialise subnet (ks, e, d) of an OFAMobileNetV3 (``head_kind="mbv3"``) or
    OFAProxylessNASNets (``"proxyless"``) supernet, sharing its tensors.

    ``kernels`` (see :func:`transformed_kernel`) supplies full-width transformed depthwise kernels
    that subnets share as leading views; without it each subnet transforms its own (private) copy.

    Reads the supernet's tensors only: it never changes the supernet's active subnet, so it is
    safe while other threads run the supernet.
    """
    names = _Names(supernet)
    first = supernet.first_conv
    dev = first.conv.weight.device
    with torch.no_grad():
        if first.ops_order != "weight_bn_act" or first.conv.bias is not None:
            raise ValueError("unsupported first conv layer: expected weight_bn_act without bias")
        stem_bn = _bn(first.bn, first.conv.out_channels, names, bn_stats, dev)
        first_block = supernet.blocks[0]
        blocks = [
            _static_mbconv(
                first_block.conv, first_block.shortcut is not None, names(first_block), names, bn_stats, dev
            )
        ]
        blocks += [_dynamic_mbconv(supernet, p, names, bn_stats, dev, kernels) for p in plan_blocks(supernet, ks, e, d)]
        if head_kind == "mbv3":
            head = Head(
                pre_pool=(_conv_layer_pre_pool(supernet.final_expand_layer, names, bn_stats, dev),),
                post_pool=(_conv_layer_post_pool(supernet.feature_mix_layer), _classifier(supernet.classifier)),
            )
        elif head_kind == "proxyless":
            head = Head(
                pre_pool=(_conv_layer_pre_pool(supernet.feature_mix_layer, names, bn_stats, dev),),
                post_pool=(_classifier(supernet.classifier),),
            )
        else:
            raise ValueError(f"unknown head kind {head_kind!r}")
        return SharedMBConvNet(
            stem=Conv(first.conv.weight.detach(), stem_bn),
            stem_stride=int(first.conv.stride[0]),
            stem_pad=int(first.conv.padding[0]),
            stem_act=str(first.act_func),
            blocks=blocks,
            head=head,
            description={"ks": list(ks), "e": list(e), "d": list(d), "head": head_kind},
        )
