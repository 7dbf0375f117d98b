"""Incremental training of a group-pruned net (Xun et al., MLCAD 2019).

Level 1 (group 1 of every layer + head 1) is trained first. Then, for g = 2..G, group g of
every layer and head g are trained on top of the frozen groups 1..g-1. Frozen means bit for bit:

* gradients of frozen rows (output channels of earlier groups) are zeroed before each step, and
  weight decay is added to the gradient *before* that masking (an optimizer's own weight decay
  would shrink frozen weights), so SGD's momentum buffers of frozen entries stay exactly zero;
* frozen groups' BatchNorm uses its stored statistics during later training (only the group
  being trained updates its running mean/var), see :meth:`GroupedNet.forward_level`;
* earlier heads are not handed to the optimizer at all.

Data: a CIFAR-10 python directory when given (train split for training, a stratified slice of
it for validation, test_batch for the held-out accuracy), otherwise the bundled digits.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from subnets.grouped import GroupedNet, save_grouped
from subnets.offline.datasets import ArrayDataset, digits_dataset, load_dataset
from subnets.offline.train_demo import random_shift

Log = Callable[[str], None]


@dataclass
class GroupedTrainConfig:
    arch: str = "small"
    groups: int = 4
    width_mult: float = 1.0
    resolution: int = 32
    epochs_per_level: int = 8
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0
    augment: bool = True  # random shifts of up to 1/8 of the image
    max_steps_per_level: int | None = None  # for quick tests
    threads: int = 1
    device: str = "cpu"


@dataclass
class LevelReport:
    level: int
    epochs: int
    steps: int
    seconds: float
    train_loss: float
    val_top1: float


@dataclass
class Splits:
    train: ArrayDataset
    val: ArrayDataset
    test: ArrayDataset
    dataset: str  # name recorded with measured accuracies
    normalize: str


def digits_splits(resolution: int, seed: int = 0) -> Splits:
    return Splits(
        train=digits_dataset("train", resolution, seed),
        val=digits_dataset("val", resolution, seed),
        test=digits_dataset("test", resolution, seed),
        dataset=f"sklearn-digits test split (seed {seed}, {resolution}px)",
        normalize="digits",
    )


def cifar10_splits(path: str | Path, val_fraction: float = 0.1, seed: int = 0, limit: int | None = None) -> Splits:
    train_all = load_dataset(path, normalize="cifar10", split="train", limit=limit)
    test = load_dataset(path, normalize="cifar10", split="test", limit=limit)
    train, val = train_all.split(1.0 - val_fraction, seed=seed)
    return Splits(train=train, val=val, test=test, dataset=f"CIFAR-10 test_batch ({Path(path)})", normalize="cifar10")


def frozen_row_masks(net: GroupedNet, level: int) -> list[torch.Tensor]:
    """Per conv layer, a [cout] mask that is 1 for the rows (output channels) group ``level`` owns."""
    masks = []
    for layer in range(net.num_layers):
        mask = torch.zeros(net.channels[layer], device=net.weights[layer].device)
        mask[net.cout(layer, level - 1) : net.cout(layer, level)] = 1.0
        masks.append(mask)
    return masks


def train_level(
    net: GroupedNet, level: int, train: ArrayDataset, val: ArrayDataset, config: GroupedTrainConfig, log: Log = print
) -> LevelReport:
    """Train group ``level`` (+ head ``level``) with groups 1..level-1 frozen."""
    if level != net.trained_levels + 1:
        raise ValueError(f"level {level} cannot be trained now: {net.trained_levels} level(s) are trained, "
                         f"train level {net.trained_levels + 1} next")
    device = torch.device(config.device)
    net.to(device).train()
    head = net.heads[level - 1]
    shared = list(net.weights) + list(net.bn_weights) + list(net.bn_biases)
    params = shared + list(head.parameters())
    optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=0.0)
    masks = frozen_row_masks(net, level)
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total = steps_per_epoch * config.epochs_per_level
    if config.max_steps_per_level is not None:
        total = min(total, config.max_steps_per_level)
    gen = torch.Generator().manual_seed(config.seed * 1000 + level)
    start = time.perf_counter()
    step, epoch, loss_sum, loss_n, last_loss = 0, 0, 0.0, 0, 0.0
    while step < total:
        epoch += 1
        for xb, yb in train.batches(config.batch_size, shuffle=True, seed=config.seed * 1000 + level * 100 + epoch,
                                    device=device):
            if step >= total:
                break
            for group in optimizer.param_groups:  # cosine decay over the level's steps
                group["lr"] = 0.5 * config.lr * (1.0 + math.cos(math.pi * step / total))
            if config.augment:
                xb = random_shift(xb, gen)
            loss = F.cross_entropy(net.forward_level(xb, level, train_group=level), yb)
            optimizer.zero_grad(set_to_none=False)
            loss.backward()
            _decay_and_mask(net, masks, head, config.weight_decay)
            optimizer.step()
            step += 1
            loss_sum += float(loss.detach())
            loss_n += 1
        val_top1 = level_accuracy(net, level, val, device=device)
        log(f"level {level}/{net.groups} epoch {epoch} step {step}/{total} "
            f"loss {loss_sum / max(loss_n, 1):.4f} val-top1 {val_top1:.4f} ({time.perf_counter() - start:.1f} s)")
        last_loss = loss_sum / max(loss_n, 1)
        loss_sum, loss_n = 0.0, 0
    net.eval()
    net.trained_levels = level
    return LevelReport(level, epoch, step, time.perf_counter() - start, last_loss,
                       level_accuracy(net, level, val, device=device))


def _decay_and_mask(net: GroupedNet, masks: list[torch.Tensor], head: torch.nn.Module, weight_decay: float) -> None:
    with torch.no_grad():
        for layer, mask in enumerate(masks):
            for param in (net.weights[layer], net.bn_weights[layer], net.bn_biases[layer]):
                if param.grad is None:
                    continue
                if weight_decay and param.ndim > 1:
                    param.grad.add_(param, alpha=weight_decay)
                shape = (-1,) + (1,) * (param.ndim - 1)
                param.grad.mul_(mask.view(shape))
            # keep the blocks above the diagonal at exactly zero (their gradient is zero; decay of 0 is 0)
        for param in head.parameters():
            if weight_decay and param.grad is not None and param.ndim > 1:
                param.grad.add_(param, alpha=weight_decay)


def level_accuracy(net: GroupedNet, level: int, data: ArrayDataset, device: torch.device | str = "cpu",
                   batch_size: int = 256) -> float:
    was_training = net.training
    net.eval()
    correct = 0
    with torch.inference_mode():
        for xb, yb in data.batches(batch_size, device=device):
            correct += int((net.forward_level(xb, level).argmax(1) == yb).sum())
    net.train(was_training)
    return correct / len(data)


@dataclass
class GroupedTrainResult:
    net: GroupedNet
    levels: list[LevelReport]
    test_top1: list[float]
    seconds: float
    dataset: str
    config: dict[str, Any] = field(default_factory=dict)


def train_incremental(
    splits: Splits, config: GroupedTrainConfig, num_classes: int | None = None, log: Log = print,
    net: GroupedNet | None = None,
) -> GroupedTrainResult:
    """Train every level in turn (levels already trained in ``net`` are kept as they are)."""
    torch.set_num_threads(max(1, config.threads))
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    classes = num_classes or max(splits.train.num_classes, splits.test.num_classes)
    if net is None:
        net = GroupedNet(config.arch, config.groups, classes, splits.train.channels, config.width_mult)
    start = time.perf_counter()
    reports = []
    for level in range(net.trained_levels + 1, net.groups + 1):
        log(f"training level {level}/{net.groups} (groups 1..{level - 1} frozen) on {len(splits.train)} images")
        reports.append(train_level(net, level, splits.train, splits.val, config, log))
    test = [level_accuracy(net, g, splits.test, device=config.device) for g in range(1, net.groups + 1)]
    log("held-out top-1 per level: " + ", ".join(f"L{g} {a:.4f}" for g, a in enumerate(test, 1)))
    return GroupedTrainResult(net, reports, test, time.perf_counter() - start, splits.dataset, asdict(config))


def train_and_save(
    output: str | Path, config: GroupedTrainConfig, cifar10: str | Path | None = None, log: Log = print,
    limit: int | None = None,
) -> GroupedTrainResult:
    """Train on CIFAR-10 (when a directory is given) or the digits, and write the weights file."""
    splits = cifar10_splits(cifar10, seed=config.seed, limit=limit) if cifar10 else digits_splits(config.resolution,
                                                                                                    config.seed)
    config.resolution = splits.train.resolution
    result = train_incremental(splits, config, log=log)
    extra = {
        "resolution": splits.train.resolution,
        "normalize": splits.normalize,
        "dataset": splits.dataset,
        "seed": config.seed,
        "train_seconds": round(result.seconds, 1),
        "config": result.config,
        "test_top1": result.test_top1,
    }
    save_grouped(result.net, output, extra)
    log(f"wrote {output} ({Path(output).stat().st_size / 1e6:.2f} MB) after {result.seconds:.1f} s")
    return result
