"""Make a stock-extracted static subnet share tensors with its supernet.

Used for families whose layout we do not re-implement (OFA ResNet50): the subnet is
extracted with ofa's ``get_active_subnet`` and then every weight that is a leading,
contiguous slice of the matching supernet tensor is replaced by a view of it, so only
truly non-contiguous slices stay private copies. Outputs are unchanged: the view holds the
same values the copy held.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

from dynofa.errors import CheckpointError

__all__ = ["leading_view", "share_module", "StridedPointwise", "strided_pointwise"]


def leading_view(source: Tensor, shape: torch.Size) -> Tensor | None:
    """``source[:a, :b, ...]`` for ``shape`` if that slice is contiguous (shareable), else None."""
    if len(shape) != source.dim() or any(n > m for n, m in zip(shape, source.shape, strict=True)):
        return None
    view = source.detach()[tuple(slice(0, n) for n in shape)]
    return view if view.is_contiguous() else None


class StridedPointwise(nn.Module):
    """A bias-free 1x1, stride-1 convolution over a row-strided view ``W[:out, :in]`` of a supernet
    weight, computed as a matrix product (no copy of the weight, once or per forward)."""

    def __init__(self, weight: Tensor) -> None:
        super().__init__()
        if weight.dim() != 2 or weight.stride(1) != 1:
            raise ValueError("StridedPointwise needs a 2-D weight view with unit column stride")
        self.register_buffer("weight", weight, persistent=False)
        self.weight: Tensor

    def forward(self, x: Tensor) -> Tensor:
        from subnets.shared_mbconv import Conv

        return Conv(self.weight).pointwise(x.contiguous())


def strided_pointwise(static: nn.Module, dynamic: nn.Module) -> StridedPointwise | None:
    """A :class:`StridedPointwise` replacing ``static`` (a 1x1 conv whose weight is a non-contiguous
    leading slice of ``dynamic``'s), or None when ``static`` is not such a conv."""
    if not isinstance(static, nn.Conv2d) or not isinstance(dynamic, nn.Conv2d):
        return None
    plain = static.kernel_size == (1, 1) and static.stride == (1, 1) and static.padding == (0, 0)
    if not plain or static.groups != 1 or static.bias is not None or static.dilation != (1, 1):
        return None
    out_c, in_c = static.weight.shape[:2]
    if leading_view(dynamic.weight, static.weight.shape) is not None:
        return None  # contiguous: share_module shares it as it is
    view = dynamic.weight.detach()[:out_c, :in_c, 0, 0]
    return StridedPointwise(view) if view.stride(1) == 1 else None


def _replace(module: nn.Module, attr: str, view: Tensor) -> None:
    if attr in module._parameters:
        module._parameters[attr] = nn.Parameter(view, requires_grad=False)
    else:
        module._buffers[attr] = view


def share_module(
    static: nn.Module,
    dynamic: nn.Module,
    dynamic_name: str,
    bn_stats: Mapping[str, Tensor] | None = None,
    copy_rest: bool = False,
) -> None:
    """Point ``static``'s tensors at views of ``dynamic``'s (same module type, smaller shapes).

    Slices that are not contiguous stay ``static``'s own tensors; with ``copy_rest`` they are filled
    with the leading slice of ``dynamic``'s (what stock extraction copies). BatchNorm running
    statistics come from ``bn_stats`` (keys ``<dynamic_name>.running_mean``/``.running_var``) when
    given: those are the subnet's private, recalibrated statistics.
    """
    is_bn = isinstance(static, nn.BatchNorm2d)
    for attr, own in _tensors(static):
        if is_bn and bn_stats is not None and attr in ("running_mean", "running_var"):
            key = f"{dynamic_name}.{attr}"
            value = bn_stats.get(key)
            if value is None:
                raise CheckpointError(f"BN statistics lack {key!r}; recalibrate this subnet (calibrate_bn)")
            if value.numel() != own.numel():
                raise CheckpointError(f"BN statistics {key!r} have {value.numel()} channels, need {own.numel()}")
            own.copy_(value.reshape(own.shape))
            continue
        source = getattr(dynamic, attr, None)
        if not isinstance(source, Tensor):
            continue
        view = leading_view(source, own.shape)
        if view is None and isinstance(static, nn.Linear) and attr == "weight":
            # F.linear multiplies by the transposed weight: BLAS takes a row-strided view as it is
            rows = source.detach()[: own.shape[0], : own.shape[1]]
            view = rows if rows.stride(1) == 1 else None
        if view is not None:
            _replace(static, attr, view)
        elif copy_rest:
            if own.dim() != source.dim() or any(n > m for n, m in zip(own.shape, source.shape, strict=True)):
                raise ValueError(f"{dynamic_name}.{attr}: {tuple(own.shape)} is not a slice of {tuple(source.shape)}")
            own.copy_(source.detach()[tuple(slice(0, n) for n in own.shape)])


def _tensors(module: nn.Module) -> Iterable[tuple[str, Tensor]]:
    for attr, param in list(module._parameters.items()):
        if param is not None:
            yield attr, param.data
    for attr, buf in list(module._buffers.items()):
        if buf is not None and attr != "num_batches_tracked":
            yield attr, buf
