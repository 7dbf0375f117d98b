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

Private tensors are only the kernel-transformed k=5/k=3 depthwise weights and per-subnet BN
running statistics (when the subnet was recalibrated). The forward is a flat loop over
prepared tensors, which also has less Python overhead than ofa's module tree.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dynofa.errors import CheckpointError

__all__ = ["BatchNorm", "MBBlock", "BlockPlan", "SharedMBConvNet", "build_shared_mbconv"]

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


def pointwise(weight: Tensor, x: Tensor) -> Tensor:
    """A 1x1 convolution as a matrix product; ``weight`` is (out, in) with unit column stride."""
    n, c, h, w = x.shape
    if n == 1:
        return torch.mm(weight, x.view(c, h * w)).view(1, weight.shape[0], h, w)
    return torch.matmul(weight, x.reshape(n, c, h * w)).view(n, weight.shape[0], h, w)


@dataclass(frozen=True)
class MBBlock:
    """One mobile inverted bottleneck: [1x1 expand, BN, act], depthwise, BN, act, [SE], 1x1 project, BN."""

    expand_w: Tensor | None
    expand_bn: BatchNorm | None
    dw_w: Tensor
    dw_stride: int
    dw_pad: int
    dw_bn: BatchNorm
    se: SqueezeExcite | None
    project_w: Tensor
    project_bn: BatchNorm
    act: str
    residual: bool
    source: str  # supernet module name, for reports and BN-statistics keys

    def __call__(self, x: Tensor) -> Tensor:
        y = x
        if self.expand_w is not None and self.expand_bn is not None:
            y = _act_inplace(self.act, self.expand_bn(pointwise(self.expand_w, y)))
        y = F.conv2d(y, self.dw_w, None, self.dw_stride, self.dw_pad, 1, self.dw_w.shape[0])
        y = _act_inplace(self.act, self.dw_bn(y))
        if self.se is not None:
            y = self.se(y)
        y = self.project_bn(pointwise(self.project_w, y))
        if self.residual:
            y = y.add_(x)
        return y

    def tensors(self) -> Iterator[tuple[str, Tensor]]:
        p = self.source
        if self.expand_w is not None and self.expand_bn is not None:
            yield f"{p}.expand.weight", self.expand_w
            yield from self.expand_bn.tensors(f"{p}.expand.bn")
        yield f"{p}.depthwise.weight", self.dw_w
        yield from self.dw_bn.tensors(f"{p}.depthwise.bn")
        if self.se is not None:
            yield f"{p}.se.reduce.weight", self.se.reduce_w
            yield f"{p}.se.reduce.bias", self.se.reduce_b
            yield f"{p}.se.expand.weight", self.se.expand_w
            yield f"{p}.se.expand.bias", self.se.expand_b
        yield f"{p}.project.weight", self.project_w
        yield from self.project_bn.tensors(f"{p}.project.bn")


@dataclass(frozen=True)
class Head:
    """Everything after the blocks: [1x1 conv, BN, act]* -> global average pool -> [linear, act]*."""

    pre_pool: tuple[tuple[Tensor, BatchNorm | None, str | None], ...]
    post_pool: tuple[tuple[Tensor, Tensor | None, str | None], ...]

    def __call__(self, x: Tensor) -> Tensor:
        for weight, bn, act in self.pre_pool:
            x = pointwise(weight, x)
            if bn is not None:
                x = bn(x)
            x = _act_inplace(act, x)
        x = x.mean((2, 3))
        for weight, bias, act in self.post_pool:
            x = _act_inplace(act, F.linear(x, weight, bias))
        return x


class SharedMBConvNet(nn.Module):
    """A static MBConv subnet whose forward runs over prepared (mostly shared) tensors."""

    def __init__(
        self,
        stem_w: Tensor,
        stem_stride: int,
        stem_pad: int,
        stem_bn: BatchNorm,
        stem_act: str,
        blocks: Sequence[MBBlock],
        head: Head,
        description: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.stem_w = stem_w
        self.stem_stride = stem_stride
        self.stem_pad = stem_pad
        self.stem_bn = stem_bn
        self.stem_act = stem_act
        self.mb_blocks = tuple(blocks)
        self.head = head
        self.description = dict(description or {})
        self.eval()

    def forward(self, x: Tensor) -> Tensor:
        x = F.conv2d(x, self.stem_w, None, self.stem_stride, self.stem_pad)
        x = _act_inplace(self.stem_act, self.stem_bn(x))
        for block in self.mb_blocks:
            x = block(x)
        return self.head(x)

    def named_tensors(self) -> Iterator[tuple[str, Tensor]]:
        """Every tensor the forward reads (views of the supernet or private)."""
        yield "stem.weight", self.stem_w
        yield from self.stem_bn.tensors("stem.bn")
        for block in self.mb_blocks:
            yield from block.tensors()
        for i, (weight, bn, _) in enumerate(self.head.pre_pool):
            yield f"head.pre_pool.{i}.weight", weight
            if bn is not None:
                yield from bn.tensors(f"head.pre_pool.{i}.bn")
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
    expand_w = expand_bn = None
    if layer.inverted_bottleneck is not None:
        conv = layer.inverted_bottleneck.conv
        expand_w = _matrix(conv.weight, conv.out_channels, conv.in_channels)
        expand_bn = _bn(layer.inverted_bottleneck.bn, conv.out_channels, names, stats, dev)
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
        expand_w=expand_w,
        expand_bn=expand_bn,
        dw_w=dw.weight.detach(),
        dw_stride=int(dw.stride[0]),
        dw_pad=int(dw.padding[0]),
        dw_bn=_bn(layer.depth_conv.bn, mid, names, stats, dev),
        se=se,
        project_w=_matrix(pw.weight, pw.out_channels, mid),
        project_bn=_bn(layer.point_linear.bn, pw.out_channels, names, stats, dev),
        act=str(layer.act_func),
        residual=residual,
        source=source,
    )


def _dynamic_mbconv(
    supernet: Any, plan: BlockPlan, names: _Names, stats: Mapping[str, Tensor] | None, dev: torch.device
) -> MBBlock:
    block = supernet.blocks[plan.index]
    layer = block.conv
    mid, cin, cout = plan.mid_channels, plan.in_channels, plan.out_channels
    expand_w = expand_bn = None
    # stock extraction drops the expansion when the ratio is 1 (MBConvLayer(expand_ratio=1))
    if layer.inverted_bottleneck is not None and plan.expand_ratio != 1:
        expand_w = _matrix(layer.inverted_bottleneck.conv.conv.weight, mid, cin)
        expand_bn = _bn(layer.inverted_bottleneck.bn.bn, mid, names, stats, dev)
    # largest kernel: a leading slice (view); smaller kernels: ofa's kernel transform (private)
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
        expand_w=expand_w,
        expand_bn=expand_bn,
        dw_w=dw_w,
        dw_stride=plan.stride,
        dw_pad=plan.kernel_size // 2,
        dw_bn=_bn(layer.depth_conv.bn.bn, mid, names, stats, dev),
        se=se,
        project_w=_matrix(layer.point_linear.conv.conv.weight, cout, mid),
        project_bn=_bn(layer.point_linear.bn.bn, cout, names, stats, dev),
        act=str(layer.act_func),
        residual=block.shortcut is not None,
        source=names(block),
    )


def _conv_layer_pre_pool(
    layer: Any, names: _Names, stats: Mapping[str, Tensor] | None, dev: torch.device
) -> tuple[Tensor, BatchNorm | None, str | None]:
    conv = layer.conv
    if conv.kernel_size != (1, 1) or conv.bias is not None or layer.ops_order != "weight_bn_act":
        raise ValueError(f"unsupported head layer {names(layer)}: expected a bias-free 1x1 conv, weight_bn_act")
    bn = _bn(layer.bn, conv.out_channels, names, stats, dev) if layer.use_bn else None
    return _matrix(conv.weight, conv.out_channels, conv.in_channels), bn, layer.act_func


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
) -> SharedMBConvNet:
    """Materialise subnet (ks, e, d) of an OFAMobileNetV3 (``head_kind="mbv3"``) or
    OFAProxylessNASNets (``"proxyless"``) supernet, sharing its tensors.

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
        blocks += [_dynamic_mbconv(supernet, p, names, bn_stats, dev) for p in plan_blocks(supernet, ks, e, d)]
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
            stem_w=first.conv.weight.detach(),
            stem_stride=int(first.conv.stride[0]),
            stem_pad=int(first.conv.padding[0]),
            stem_bn=stem_bn,
            stem_act=str(first.act_func),
            blocks=blocks,
            head=head,
            description={"ks": list(ks), "e": list(e), "d": list(d), "head": head_kind},
        )
