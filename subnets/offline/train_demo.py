"""Train the bundled demo supernet: a small elastic OFA MobileNetV3 on the upsampled digits.

ofa's run managers and data providers do not work on torch 2.13, so this is our own loop over
the ``ofa`` package's elastic network (built through :class:`subnets.ofa_family.OFAMobileNetV3Family`,
kind ``ofa-mbv3``). Every step follows the **sandwich rule**: the largest subnet, the smallest
subnet and ``random_subnets`` random ones are run on the same batch at one random resolution and
their gradients summed; with ``distill`` the smaller ones also learn from the largest subnet's
(detached) outputs (in-place distillation). Elastic kernel, expand ratio and depth are trained
together from the start (on this small task progressive shrinking is not needed).

Single-threaded, seeded and CPU-only by default, so ``python -m subnets.offline.train_demo`` (or
``dynofa train demo``) reproduces the shipped weights' accuracy. BN statistics are shared in
the supernet; before saving they are recalibrated for the largest subnet, and the catalog
stores per-subnet statistics (see ``subnets.demo``).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from subnets.family import SubnetSpec
from subnets.ofa_family import OFAMobileNetV3Family
from subnets.offline.accuracy import evaluate, image_batches
from subnets.offline.datasets import ArrayDataset, digits_dataset

Log = Callable[[str], None]


@dataclass
class DemoTrainConfig:
    width_mult: float = 0.35
    ks_list: tuple[int, ...] = (3, 5, 7)
    # a wide elastic range (e 2..6, d 1..4, 16..32 px) so that subnets span a real accuracy range
    expand_ratio_list: tuple[int, ...] = (2, 3, 4, 6)
    depth_list: tuple[int, ...] = (1, 2, 3, 4)
    resolutions: tuple[int, ...] = (16, 20, 24, 28, 32)
    epochs: int = 12
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 3e-5
    label_smoothing: float = 0.1
    random_subnets: int = 1
    distill: bool = True
    seed: int = 0
    minutes: float | None = None  # hard cap on training time (the lr schedule still follows ``epochs``)
    max_steps: int | None = None  # for quick tests
    eval_every: int = 4  # epochs between held-out checks of the largest and smallest subnet
    distorted: bool = True  # the harder, distorted digits (subnets' capacity shows in their accuracy)
    train_copies: int = 3  # distorted copies of each training image
    threads: int = 1
    device: str = "cpu"

    def family(self) -> OFAMobileNetV3Family:
        return OFAMobileNetV3Family(
            width_mult=self.width_mult,
            ks_list=self.ks_list,
            expand_ratio_list=self.expand_ratio_list,
            depth_list=self.depth_list,
            n_classes=10,
            resolutions=self.resolutions,
            dropout_rate=0.0,
            seed=self.seed,
            name=f"ofa-mbv3-w{self.width_mult:g}-digits",
        )


@dataclass
class DemoTrainResult:
    family: OFAMobileNetV3Family
    seconds: float
    steps: int
    epochs: int
    stopped_early: bool
    history: list[dict[str, Any]] = field(default_factory=list)
    final: dict[str, float] = field(default_factory=dict)


def random_shift(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A random shift of up to 1/8 of the side, one per batch (cheap; the digits are centred).

    The training augmentation of both bundled recipes (demo supernet and grouped net)."""
    side = x.shape[-1]
    pad = max(1, side // 8)
    dx, dy = (int(v) for v in torch.randint(-pad, pad + 1, (2,), generator=gen))
    padded = F.pad(x, (pad, pad, pad, pad))
    return padded[..., pad + dy : pad + dy + side, pad + dx : pad + dx + side]


def subnet_accuracy(
    family: OFAMobileNetV3Family, spec: SubnetSpec, val: ArrayDataset, calib: ArrayDataset, calib_images: int = 512
) -> float:
    """Held-out top-1 of one subnet with its own BN statistics (calibrated on training images)."""
    net = family.supernet()
    was_training = net.training
    net.eval()
    try:
        stats = family.calibrate_bn(spec, image_batches(calib, spec.resolution, 128, limit=calib_images))
        module = family.materialize(spec, stats)
        return evaluate(module, val, resolution=spec.resolution).top1
    finally:
        net.train(was_training)


def train_demo(
    config: DemoTrainConfig,
    log: Log = print,
    train: ArrayDataset | None = None,
    val: ArrayDataset | None = None,
) -> DemoTrainResult:
    """Train the demo supernet with the sandwich rule; returns the family holding the trained supernet."""
    torch.set_num_threads(max(1, config.threads))
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    top = max(config.resolutions)
    if train is None:
        train = digits_dataset("train", top, config.seed, distorted=config.distorted,
                               copies=config.train_copies if config.distorted else 1)
    val = val if val is not None else digits_dataset("val", top, config.seed, distorted=config.distorted)
    family = config.family()
    net: Any = family.supernet()
    device = torch.device(config.device)
    net.to(device).train()
    optimizer = torch.optim.SGD(
        net.parameters(), lr=config.lr, momentum=config.momentum, nesterov=True, weight_decay=config.weight_decay
    )
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total = steps_per_epoch * config.epochs
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    largest, smallest = family.largest(), family.smallest()
    log(f"demo supernet {family.name}: {sum(p.numel() for p in net.parameters())} parameters, "
        f"{len(train)} training images, {total} steps ({config.epochs} epochs x {steps_per_epoch}), seed {config.seed}")
    start = time.perf_counter()
    step, epoch, stopped = 0, 0, False
    history: list[dict[str, Any]] = []
    while step < total and not stopped:
        epoch += 1
        loss_sum, n = 0.0, 0
        for xb, yb in train.batches(config.batch_size, shuffle=True, seed=config.seed * 10007 + epoch, device=device):
            if step >= total:
                break
            if config.minutes is not None and time.perf_counter() - start > 60 * config.minutes:
                log(f"time budget of {config.minutes} min reached at step {step}/{total}: stopping")
                stopped = True
                break
            lr = 0.5 * config.lr * (1 + math.cos(math.pi * step / total))
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss_sum += _sandwich_step(net, family, xb, yb, config, rng, gen, optimizer, largest, smallest)
            n += 1
            step += 1
        record: dict[str, Any] = {"epoch": epoch, "step": step, "loss": loss_sum / max(n, 1),
                                  "seconds": round(time.perf_counter() - start, 1)}
        if config.eval_every and (epoch % config.eval_every == 0 or step >= total or stopped):
            record["val_largest"] = subnet_accuracy(family, largest, val, train)
            record["val_smallest"] = subnet_accuracy(family, smallest, val, train)
        history.append(record)
        extra = "".join(f" {k} {record[k]:.4f}" for k in ("val_largest", "val_smallest") if k in record)
        log(f"epoch {epoch} step {step}/{total} lr {lr:.4f} loss {record['loss']:.4f}{extra} ({record['seconds']} s)")
    net.eval()
    _recalibrate_supernet_bn(family, largest, train)
    seconds = time.perf_counter() - start
    final = {
        "val_largest": subnet_accuracy(family, largest, val, train),
        "val_smallest": subnet_accuracy(family, smallest, val, train),
    }
    log(f"done in {seconds:.1f} s: held-out (val) top-1 largest {final['val_largest']:.4f}, "
        f"smallest {final['val_smallest']:.4f}")
    return DemoTrainResult(family, seconds, step, epoch, stopped, history, final)


def _sandwich_step(
    net: Any,
    family: OFAMobileNetV3Family,
    xb: torch.Tensor,
    yb: torch.Tensor,
    config: DemoTrainConfig,
    rng: random.Random,
    gen: torch.Generator,
    optimizer: torch.optim.Optimizer,
    largest: SubnetSpec,
    smallest: SubnetSpec,
) -> float:
    resolution = rng.choice(config.resolutions)
    x = F.interpolate(xb, size=(resolution, resolution), mode="bilinear", align_corners=False)
    x = random_shift(x, gen)
    optimizer.zero_grad(set_to_none=True)
    configs = [largest.config, smallest.config] + [family.sample(rng).config for _ in range(config.random_subnets)]
    teacher: torch.Tensor | None = None
    total = 0.0
    for i, cfg in enumerate(configs):
        net.set_active_subnet(ks=cfg["ks"], e=cfg["e"], d=cfg["d"])
        logits = net(x)
        loss = F.cross_entropy(logits, yb, label_smoothing=config.label_smoothing)
        if i == 0:
            teacher = logits.detach()
        elif config.distill and teacher is not None:
            loss = loss + F.kl_div(F.log_softmax(logits, 1), F.softmax(teacher, 1), reduction="batchmean")
        loss.backward()
        total += float(loss.detach())
    torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
    optimizer.step()
    return total / len(configs)


def _recalibrate_supernet_bn(family: OFAMobileNetV3Family, spec: SubnetSpec, data: ArrayDataset) -> None:
    """Store the largest subnet's BN statistics in the supernet (smaller subnets take their own from the catalog)."""
    stats = family.calibrate_bn(spec, image_batches(data, spec.resolution, 128, limit=1024))
    state = family.supernet().state_dict()
    with torch.no_grad():
        for key, value in stats.items():
            state[key].copy_(value)


def save_demo_weights(result: DemoTrainResult, path: str | Path, config: DemoTrainConfig) -> Path:
    """Write the supernet in the official OFA checkpoint layout (``{"state_dict": ...}``), matrices in fp16."""
    state = {
        k: (v.detach().cpu().half() if v.is_floating_point() and v.ndim > 1 else v.detach().cpu())
        for k, v in result.family.supernet().state_dict().items()
    }
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "family": result.family.describe(),
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()},
        "seconds": round(result.seconds, 1),
        "steps": result.steps,
        "final": result.final,
    }
    tmp = target.with_name(f".{target.name}.tmp")
    torch.save({"state_dict": state, "dynofa": meta}, tmp)
    tmp.replace(target)
    return target


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="train the bundled demo supernet (see docs/demo-model.md)")
    parser.add_argument("--out", default="demo-supernet.pt")
    parser.add_argument("--epochs", type=int, default=DemoTrainConfig.epochs)
    parser.add_argument("--minutes", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--width-mult", type=float, default=DemoTrainConfig.width_mult)
    args = parser.parse_args(argv)
    config = DemoTrainConfig(epochs=args.epochs, minutes=args.minutes, seed=args.seed, width_mult=args.width_mult)
    result = train_demo(config, log=lambda msg: print(msg, flush=True))
    save_demo_weights(result, args.out, config)
    print(f"wrote {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
