"""Group-pruned incremental family: structure, weight sharing, and bit-for-bit frozen earlier levels."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from dynofa.errors import CheckpointError, WeightsNotFoundError
from subnets.family import SubnetSpec
from subnets.grouped import GroupedFamily, GroupedNet, grouped_family, load_grouped, save_grouped
from subnets.offline.datasets import ArrayDataset
from subnets.offline.train_grouped import GroupedTrainConfig, Splits, cifar10_splits, train_incremental, train_level
from subnets.registry import family_from_description
from tests.subnets.test_datasets import write_cifar10_dir


def _toy_data(n: int = 64, side: int = 16, classes: int = 4, seed: int = 0) -> ArrayDataset:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, size=n)
    x = rng.normal(size=(n, 3, side, side)).astype(np.float32) * 0.3
    for i, label in enumerate(y):  # a learnable signal: a bright quadrant per class
        r, c = divmod(int(label), 2)
        x[i, :, r * side // 2 : (r + 1) * side // 2, c * side // 2 : (c + 1) * side // 2] += 1.0
    return ArrayDataset(x, y)


def _snapshot(net: GroupedNet) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def test_upper_blocks_are_zero_and_levels_are_prefixes() -> None:
    torch.manual_seed(0)
    net = GroupedNet("small", groups=4, num_classes=5).eval()
    for layer in range(net.num_layers):
        w = net.weights[layer].detach()
        mask = net.block_mask(layer)
        assert torch.all(w[~mask] == 0) and torch.all(w[mask] != 0)
    # level g's features do not depend on groups > g: zeroing group 4 leaves level 2 unchanged
    x = torch.randn(2, 3, 32, 32)
    before = net.forward_level(x, 2)
    with torch.no_grad():
        for layer in range(net.num_layers):
            net.weights[layer][net.cout(layer, 3) :] = 7.0
    assert torch.equal(before, net.forward_level(x, 2))


def test_materialize_shares_tensors_and_matches() -> None:
    family = GroupedFamily("small", groups=4, num_classes=10, resolution=32)
    net = family.supernet()
    storages = {p.untyped_storage().data_ptr() for p in net.parameters()} | {
        b.untyped_storage().data_ptr() for b in net.buffers()
    }
    x = torch.randn(3, 3, 32, 32)
    for level in family.levels():
        sub = family.materialize(family.spec(level))
        assert not sub.training
        for tensor in list(sub.buffers()) + list(sub.parameters()):
            assert tensor.untyped_storage().data_ptr() in storages  # a view, never a copy
        with torch.inference_mode():
            assert torch.equal(sub(x), net.forward_level(x, level))
        family.activate(family.spec(level))
        with torch.inference_mode():
            assert torch.equal(net(x), sub(x))


def test_family_interface_and_counts() -> None:
    family = GroupedFamily("alexnet", groups=4, num_classes=10, resolution=32)
    assert family.describe()["kind"] == "grouped"
    macs = [family.macs(family.spec(g)) for g in family.levels()]
    params = [family.params(family.spec(g)) for g in family.levels()]
    assert macs == sorted(macs) and len(set(macs)) == 4 and macs[-1] > 8 * macs[0]
    assert params == sorted(params)
    assert family.smallest() == family.spec(1) and family.largest() == family.spec(4)
    assert family.sample(random.Random(1)).config["level"] in (1, 2, 3, 4)
    for bad in ({"level": 0}, {"level": 5}, {"level": "2"}, {"level": 2, "ks": [3]}):
        with pytest.raises(ValueError):
            family.validate(SubnetSpec(config=bad, resolution=32))
    with pytest.raises(ValueError, match="resolution"):
        family.validate(SubnetSpec(config={"level": 1}, resolution=64))
    assert family._net is None  # counting did not build the weights
    rebuilt = family_from_description(family.describe())
    assert isinstance(rebuilt, GroupedFamily) and rebuilt.describe() == family.describe()
    assert rebuilt.features(rebuilt.spec(2))["width_fraction"] == 0.5


def test_incremental_training_keeps_earlier_levels_bit_for_bit() -> None:
    torch.manual_seed(0)
    data = _toy_data()
    splits = Splits(train=data, val=data.head(16), test=data.head(16), dataset="toy", normalize="none")
    config = GroupedTrainConfig(arch="small", groups=4, width_mult=0.5, batch_size=16, lr=0.1, epochs_per_level=1,
                                max_steps_per_level=3, weight_decay=5e-3)
    net = GroupedNet("small", groups=4, num_classes=4, width_mult=0.5)
    x = torch.from_numpy(data.x[:8])
    train_level(net, 1, splits.train, splits.val, config, log=lambda _: None)
    with pytest.raises(ValueError, match="train level 2 next"):
        train_level(net, 3, splits.train, splits.val, config, log=lambda _: None)
    outputs_1 = net.eval().forward_level(x, 1).detach().clone()
    state_1 = _snapshot(net)
    train_level(net, 2, splits.train, splits.val, config, log=lambda _: None)
    assert torch.equal(net.eval().forward_level(x, 1), outputs_1)
    after = _snapshot(net)
    changed_rows = 0
    for layer in range(net.num_layers):
        c1 = net.cout(layer, 1)
        for key in (f"weights.{layer}", f"bn_weights.{layer}", f"bn_biases.{layer}", f"running_mean_{layer}",
                    f"running_var_{layer}"):
            assert torch.equal(after[key][:c1], state_1[key][:c1]), key  # frozen group untouched
        changed_rows += int(not torch.equal(after[f"weights.{layer}"], state_1[f"weights.{layer}"]))
        # blocks above the diagonal are still exactly zero
        assert torch.all(after[f"weights.{layer}"][~net.block_mask(layer)] == 0)
    assert changed_rows == net.num_layers  # group 2 did train
    assert torch.equal(after["heads.0.weight"], state_1["heads.0.weight"])
    assert not torch.equal(after["heads.1.weight"], state_1["heads.1.weight"])
    outputs_2 = net.forward_level(x, 2).detach().clone()
    train_incremental(splits, config, log=lambda _: None, net=net)  # trains levels 3 and 4
    assert net.trained_levels == 4
    assert torch.equal(net.eval().forward_level(x, 1), outputs_1)
    assert torch.equal(net.forward_level(x, 2), outputs_2)


def test_weights_round_trip_and_errors(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = GroupedNet("small", groups=4, num_classes=10).eval()
    net.trained_levels = 4
    path = save_grouped(net, tmp_path / "g.pt", {"resolution": 32})
    loaded = load_grouped(path)
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        # matrices are stored in fp16: outputs agree to fp16 rounding of the weights
        torch.testing.assert_close(loaded.forward_level(x, 4), net.forward_level(x, 4), rtol=2e-2, atol=2e-2)
    family = GroupedFamily.from_weights(path)
    assert family.resolution == 32 and family.supernet().trained_levels == 4
    assert isinstance(grouped_family(family.describe(), str(path)), GroupedFamily)
    with pytest.raises(WeightsNotFoundError):
        GroupedFamily(weights=tmp_path / "missing.pt").supernet()
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="bad.pt"):
        GroupedFamily(weights=tmp_path / "bad.pt").supernet()
    with pytest.raises(CheckpointError, match="built as"):
        GroupedFamily(groups=8, weights=path).supernet()


def test_trains_end_to_end_on_a_cifar10_directory(tmp_path: Path) -> None:
    root = write_cifar10_dir(tmp_path / "cifar-10-batches-py", per_batch=8)
    splits = cifar10_splits(root, val_fraction=0.2)
    assert splits.train.x.shape[1:] == (3, 32, 32) and len(splits.test) == 8
    lines: list[str] = []
    config = GroupedTrainConfig(arch="alexnet", groups=4, width_mult=0.125, batch_size=8, epochs_per_level=1,
                                max_steps_per_level=1)
    result = train_incremental(splits, config, log=lines.append)
    assert result.net.trained_levels == 4 and len(result.test_top1) == 4
    assert any("level 4/4" in line for line in lines)


def test_calibrate_bn_gives_private_stats_that_materialize_uses() -> None:
    family = GroupedFamily("small", groups=4, num_classes=10, resolution=16)
    spec = family.spec(2)
    torch.manual_seed(0)
    batches = [torch.randn(8, 3, 16, 16) * 2 + 1 for _ in range(3)]
    stats = family.calibrate_bn(spec, batches)
    net = family.supernet()
    assert set(stats) == {f"running_{s}_{i}" for s in ("mean", "var") for i in range(net.num_layers)}
    assert stats["running_mean_0"].shape == (net.cout(0, 2),)
    sub = family.materialize(spec, stats)
    assert sub.running_mean_0.data_ptr() == stats["running_mean_0"].data_ptr()
    with torch.inference_mode():
        assert not torch.equal(sub(batches[0]), family.materialize(spec)(batches[0]))
    with pytest.raises(CheckpointError, match="running_var_1"):
        family.materialize(spec, {k: v for k, v in stats.items() if k != "running_var_1"})
    with pytest.raises(ValueError):
        family.calibrate_bn(spec, [])
