"""Top-1 accuracy of an inference module on a labelled dataset held in memory.

The dataset is a :class:`subnets.offline.datasets.ArrayDataset` (``x`` float32 NCHW, ``y`` int64) or
anything with the same two arrays. When the subnet's input resolution differs from the images',
each batch is resized bilinearly on the fly, so one dataset serves subnets of every resolution.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from dynofa.errors import DatasetError

if TYPE_CHECKING:
    import numpy as np
    from torch import nn


class LabelledArrays(Protocol):
    x: np.ndarray
    y: np.ndarray


@dataclass(frozen=True)
class AccuracyResult:
    top1: float  # a fraction in [0, 1]
    correct: int
    count: int

    def to_dict(self) -> dict[str, Any]:
        return {"top1": self.top1, "correct": self.correct, "count": self.count}


def evaluate(
    module: nn.Module,
    dataset: LabelledArrays,
    batch_size: int = 64,
    device: str = "cpu",
    resolution: int | None = None,
    limit: int | None = None,
) -> AccuracyResult:
    """Top-1 accuracy of ``module`` (in eval mode, under inference mode) on ``dataset``.

    ``resolution`` resizes the images to that square size first; ``limit`` evaluates only the
    first ``limit`` images.
    """
    import torch
    import torch.nn.functional as F

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    x_all, y_all = dataset.x, dataset.y
    count = len(y_all) if limit is None else min(limit, len(y_all))
    if count == 0:
        raise DatasetError(f"dataset {getattr(dataset, 'name', '') or ''} holds no images to evaluate on".strip())
    was_training = module.training
    module.eval()
    correct = 0
    try:
        with torch.inference_mode():
            for start in range(0, count, batch_size):
                stop = min(start + batch_size, count)
                xb = torch.as_tensor(x_all[start:stop], dtype=torch.float32, device=device)
                if resolution is not None and tuple(xb.shape[-2:]) != (resolution, resolution):
                    xb = F.interpolate(xb, size=(resolution, resolution), mode="bilinear", align_corners=False)
                yb = torch.as_tensor(y_all[start:stop], dtype=torch.int64, device=device)
                logits = module(xb)
                if logits.ndim != 2 or logits.shape[0] != yb.shape[0]:
                    raise DatasetError(
                        f"the model's output has shape {tuple(logits.shape)}, expected [batch, classes] "
                        "for a classification dataset"
                    )
                if int(yb.max()) >= logits.shape[1]:
                    raise DatasetError(
                        f"the dataset has label {int(yb.max())} but the model predicts only {logits.shape[1]} classes; "
                        "use validation data of the model's own classes"
                    )
                correct += int((logits.argmax(dim=1) == yb).sum())
    finally:
        module.train(was_training)
    return AccuracyResult(top1=correct / count, correct=correct, count=count)


def image_batches(
    dataset: LabelledArrays, resolution: int, batch_size: int = 64, limit: int | None = None
) -> list[Any]:
    """Image tensors (no labels) resized to ``resolution``: calibration input for BN statistics."""
    import torch
    import torch.nn.functional as F

    x_all = dataset.x
    count = len(x_all) if limit is None else min(limit, len(x_all))
    out = []
    for start in range(0, count, batch_size):
        xb = torch.as_tensor(x_all[start : start + batch_size][: count - start], dtype=torch.float32)
        if tuple(xb.shape[-2:]) != (resolution, resolution):
            xb = F.interpolate(xb, size=(resolution, resolution), mode="bilinear", align_corners=False)
        out.append(xb)
    return out
