"""OFA families: materialised (weight-shared) subnets equal stock-extracted ones; spaces, weights, BN stats.

Supernets are randomly initialised and their BatchNorm vectors randomised (so that a wrong BN slice or
a shared-instead-of-private statistic changes the output); low resolutions keep the tests fast.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from dynofa.errors import CatalogError, CheckpointError, WeightsNotFoundError
from subnets.family import SubnetSpec
from subnets.ofa_family import OFAMobileNetV3Family, OFAProxylessFamily
from subnets.ofa_resnet import OFAResNet50Family
from subnets.pool import module_tensors
from subnets.registry import family_from_description
from subnets.shared_static import StridedPointwise

RESOLUTIONS = (32, 48, 64)


def randomize_bn(net: nn.Module, seed: int = 0) -> None:
    """Make every BatchNorm non-trivial: random statistics and affine parameters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.uniform_(-0.5, 0.5, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.uniform_(-0.2, 0.2, generator=g)


def assert_same_output(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5) -> None:
    """Equal up to float rounding (matrix products vs convolutions sum in another order)."""
    scale = float(b.abs().max())
    assert scale > 0
    torch.testing.assert_close(a, b, rtol=10 * tol, atol=tol * scale)


def outputs(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return module(x)



@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Small tensors on a shared 2-core machine: extra intra-op threads only spin and slow everyone down."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)

@pytest.fixture(scope="module")
def mbv3() -> OFAMobileNetV3Family:
    family = OFAMobileNetV3Family(resolutions=RESOLUTIONS, seed=1)
    randomize_bn(family.supernet(), seed=1)
    return family


@pytest.fixture(scope="module")
def proxyless() -> OFAProxylessFamily:
    family = OFAProxylessFamily(resolutions=RESOLUTIONS, seed=2)
    randomize_bn(family.supernet(), seed=2)
    return family


def _specs(family: OFAMobileNetV3Family | OFAProxylessFamily, n: int, seed: int) -> list[SubnetSpec]:
    specs = family.sample_many(n, random.Random(seed))
    return specs + [family.largest(), family.smallest()]


def test_mbv3_materialized_equals_stock_extraction(mbv3: OFAMobileNetV3Family) -> None:
    specs = _specs(mbv3, 3, seed=0)
    assert {s.resolution for s in specs} >= {32, 64}
    for spec in specs:
        x = torch.randn(2, 3, spec.resolution, spec.resolution)
        assert_same_output(outputs(mbv3.materialize(spec), x), outputs(mbv3.extract(spec), x))


def test_mbv3_w12_materialized_equals_stock_extraction() -> None:
    family = OFAMobileNetV3Family(width_mult=1.2, resolutions=[32], seed=4)
    randomize_bn(family.supernet(), seed=4)
    spec = family.sample(random.Random(2))
    x = torch.randn(1, 3, 32, 32)
    assert_same_output(outputs(family.materialize(spec), x), outputs(family.extract(spec), x))


def test_proxyless_materialized_equals_stock_extraction(proxyless: OFAProxylessFamily) -> None:
    for spec in _specs(proxyless, 2, seed=1):
        x = torch.randn(1, 3, spec.resolution, spec.resolution)
        assert_same_output(outputs(proxyless.materialize(spec), x), outputs(proxyless.extract(spec), x))


def test_resnet50_materialized_equals_stock_extraction_and_shares_fixed_tensors() -> None:
    family = OFAResNet50Family(resolutions=[32], seed=3)
    supernet = family.supernet()
    randomize_bn(supernet, seed=3)
    spec = family.sample(random.Random(5))
    x = torch.randn(1, 3, 32, 32)
    subnet = family.materialize(spec)
    assert_same_output(outputs(subnet, x), outputs(family.extract(spec), x))
    smallest = family.smallest()  # skips the stem's residual conv
    assert_same_output(outputs(family.materialize(smallest), x), outputs(family.extract(smallest), x))
    storages = {t.untyped_storage().data_ptr() for t in supernet.parameters()}
    shared = {n for n, t in module_tensors(subnet) if t.untyped_storage().data_ptr() in storages}
    assert {"classifier.linear.weight", "input_stem.0.bn.weight"} <= shared
    # 1x1 convs over narrowed inputs are matrix products on row-strided views of the supernet
    strided = [m for m in subnet.modules() if isinstance(m, StridedPointwise)]
    assert strided and all(m.weight.untyped_storage().data_ptr() in storages for m in strided)
    assert any(m.weight.stride(0) > m.weight.shape[1] for m in strided)
    assert family.params(spec) == sum(p.numel() for p in family.extract(spec).parameters())
    assert family.macs(spec) > 0


def test_materialized_mbv3_shares_supernet_tensors(mbv3: OFAMobileNetV3Family) -> None:
    supernet: Any = mbv3.supernet()
    spec = SubnetSpec(
        config={"ks": [7, 5, 3, 7] * 5, "e": [3, 4, 6, 6] * 5, "d": [4, 3, 2, 4, 3]}, resolution=32
    )
    subnet = mbv3.materialize(spec)
    super_ptrs = {t.untyped_storage().data_ptr() for t in list(supernet.parameters()) + list(supernet.buffers())}

    def shared(t: torch.Tensor) -> bool:
        return t.untyped_storage().data_ptr() in super_ptrs

    tensors = dict(module_tensors(subnet))
    # fixed layers: the supernet's own tensors
    assert tensors["stem.weight"].data_ptr() == supernet.first_conv.conv.weight.data_ptr()
    assert shared(tensors["head.post_pool.1.weight"])
    block = supernet.blocks[1].conv  # first dynamic block: ks 7, e 3
    mid = tensors["blocks.1.project.weight"].shape[1]
    # 1x1 expansion and BN vectors are leading views; the projection is a row-strided view
    assert tensors["blocks.1.expand.weight"].data_ptr() == block.inverted_bottleneck.conv.conv.weight.data_ptr()
    assert tensors["blocks.1.project.weight"].stride() == (block.point_linear.conv.conv.weight.shape[1], 1)
    assert mid < block.point_linear.conv.conv.weight.shape[1]
    assert shared(tensors["blocks.1.project.weight"])
    assert shared(tensors["blocks.1.depthwise.bn.running_mean"])
    # k=7 (largest) depthwise weight is a view; k=5 and k=3 are transformed, hence private
    assert shared(tensors["blocks.1.depthwise.weight"])
    assert not shared(tensors["blocks.2.depthwise.weight"])
    assert not shared(tensors["blocks.3.depthwise.weight"])
    # SE weights (stage 3 has SE) are row-strided views
    se_names = [n for n in tensors if ".se." in n]
    assert se_names and all(shared(tensors[n]) for n in se_names)
    private = {n for n, t in tensors.items() if not shared(t)}
    assert private and all(n.endswith("depthwise.weight") for n in private)
    # ...and shared between subnets: one full-width transformed kernel per (block, kernel size)
    other = mbv3.materialize(SubnetSpec(config={**spec.config, "e": [6] * 20}, resolution=48))
    mine, theirs = tensors["blocks.2.depthwise.weight"], dict(module_tensors(other))["blocks.2.depthwise.weight"]
    assert mine.data_ptr() == theirs.data_ptr() and mine.shape[0] < theirs.shape[0]


def test_materialized_forward_copies_no_weights(mbv3: OFAMobileNetV3Family) -> None:
    """No per-forward copy of the strided views: the forward runs no copy/contiguous/clone op."""
    spec = mbv3.sample(random.Random(7))
    subnet = mbv3.materialize(spec)
    x = torch.randn(1, 3, spec.resolution, spec.resolution)
    outputs(subnet, x)
    profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True)
    with profiler as prof, torch.inference_mode():
        subnet(x)
    events = prof.key_averages(group_by_input_shape=True)
    assert any(e.key == "aten::mm" for e in events)
    copies = [
        (e.key, e.input_shapes)
        for e in events
        if e.key in ("aten::copy_", "aten::contiguous", "aten::clone", "aten::_to_copy")
        and any(sum(d > 1 for d in shape) >= 2 for shape in e.input_shapes if isinstance(shape, list))
    ]
    # only scalars and (1, C) bias rows (addmm's output initialisation) are ever copied, never a weight
    assert copies == []


def test_params_and_macs_match_the_extracted_subnet(mbv3: OFAMobileNetV3Family) -> None:
    from ofa.utils import count_net_flops

    spec = mbv3.sample(random.Random(11))
    extracted = mbv3.extract(spec)
    assert mbv3.params(spec) == sum(p.numel() for p in extracted.parameters())
    flops = count_net_flops(extracted, (1, 3, spec.resolution, spec.resolution))
    assert mbv3.macs(spec) == pytest.approx(flops, rel=1e-6)
    features = mbv3.features(spec)
    assert features["macs_m"] == pytest.approx(mbv3.macs(spec) / 1e6)
    assert features["resolution"] == spec.resolution
    assert all(isinstance(v, float) for v in features.values())
    assert mbv3.macs(mbv3.largest()) > mbv3.macs(mbv3.smallest())


def test_sampling_is_seeded_and_valid(mbv3: OFAMobileNetV3Family, proxyless: OFAProxylessFamily) -> None:
    for family in (mbv3, proxyless):
        a = family.sample_many(5, random.Random(3))
        b = family.sample_many(5, random.Random(3))
        assert a == b and len({s.key for s in a}) == 5
        for spec in a:
            family.validate(spec)
            assert spec.resolution in family.resolutions()
            assert spec.short_id(family.id_prefix).startswith(family.id_prefix)
    assert all(s.config["d"][-1] == 1 for s in proxyless.sample_many(5, random.Random(0)))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda c: c.update(ks=c["ks"][:-1]), "ks"),
        (lambda c: c["e"].__setitem__(0, 5), "e[0]"),
        (lambda c: c["d"].__setitem__(2, 9), "d[2]"),
        (lambda c: c.update(width=1), "width"),
    ],
)
def test_validate_names_the_offending_field(mbv3: OFAMobileNetV3Family, change, field: str) -> None:  # type: ignore[no-untyped-def]
    config = copy.deepcopy(dict(mbv3.largest().config))
    change(config)
    with pytest.raises(ValueError, match=field.replace("[", r"\[").replace("]", r"\]")):
        mbv3.validate(SubnetSpec(config=config, resolution=32))
    with pytest.raises(ValueError, match="resolution 65"):
        mbv3.validate(SubnetSpec(config=dict(mbv3.largest().config), resolution=65))


def test_describe_round_trips_through_the_registry(mbv3: OFAMobileNetV3Family) -> None:
    desc = mbv3.describe()
    assert desc["kind"] == "ofa-mbv3" and desc["name"] == "ofa-mbv3-w1.0"
    rebuilt = family_from_description(desc, None)
    assert rebuilt.describe() == desc
    # same seed, same random weights (before the test fixture randomised BN)
    fresh = OFAMobileNetV3Family(resolutions=RESOLUTIONS, seed=1)
    fresh_state = fresh.supernet().state_dict()
    for n, a in rebuilt.supernet().state_dict().items():
        assert torch.equal(a, fresh_state[n]), n
    for family in (OFAMobileNetV3Family(width_mult=1.2), OFAProxylessFamily(), OFAResNet50Family()):
        assert family_from_description(family.describe()).describe() == family.describe()
    assert OFAMobileNetV3Family(width_mult=1.2).name == "ofa-mbv3-w1.2"
    small = OFAMobileNetV3Family(
        width_mult=0.5, ks_list=[3, 5], expand_ratio_list=[2, 3], depth_list=[1, 2], n_classes=10
    )
    assert family_from_description(small.describe()).describe() == small.describe()
    with pytest.raises(CatalogError, match="unknown field"):
        family_from_description({**desc, "colour": "blue"})
    with pytest.raises(CatalogError, match="width_mult"):
        family_from_description({**desc, "width_mult": -1})


def test_small_custom_supernet_works_end_to_end() -> None:
    family = OFAMobileNetV3Family(
        width_mult=0.5, ks_list=[3, 5], expand_ratio_list=[2, 3], depth_list=[1, 2], n_classes=10, resolutions=[32]
    )
    randomize_bn(family.supernet())
    for spec in family.sample_many(3, random.Random(0)):
        x = torch.randn(4, 3, 32, 32)
        out = outputs(family.materialize(spec), x)
        assert out.shape == (4, 10)
        assert_same_output(out, outputs(family.extract(spec), x))


def test_missing_weights_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "ofa_mbv3.pth"
    family = OFAMobileNetV3Family(weights=missing)
    with pytest.raises(WeightsNotFoundError) as info:
        family.supernet()
    assert str(missing) in str(info.value) and "never downloads" in str(info.value)
    with pytest.raises(WeightsNotFoundError):
        family.weights_sha256()


def test_checkpoint_formats_load_and_are_hashed(tmp_path: Path, mbv3: OFAMobileNetV3Family) -> None:
    state = mbv3.supernet().state_dict()
    official = tmp_path / "official.pth"
    torch.save({"state_dict": state, "epoch": 3}, official)
    bare = tmp_path / "bare.pth"
    torch.save({f"module.{k}": v for k, v in state.items()}, bare)
    for path in (official, bare):
        family = OFAMobileNetV3Family(resolutions=RESOLUTIONS, weights=path, seed=99)
        loaded = family.supernet().state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in state.items())
        info = family.weights_info()
        assert info["path"] == str(path) and len(info["sha256"]) == 64
    hashes = {OFAMobileNetV3Family(weights=path).weights_sha256() for path in (official, bare)}
    assert len(hashes) == 2
    assert mbv3.weights_info() == {"init": "random", "seed": 1}


def test_bad_checkpoints_give_clear_errors(tmp_path: Path, proxyless: OFAProxylessFamily) -> None:
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read weight file"):
        OFAMobileNetV3Family(weights=corrupt).supernet()
    other = tmp_path / "proxyless.pth"
    torch.save({"state_dict": proxyless.supernet().state_dict()}, other)
    with pytest.raises(CheckpointError, match="does not fit family ofa-mbv3-w1.0"):
        OFAMobileNetV3Family(weights=other).supernet()


def test_calibrated_bn_stats_match_ofa_recalibration(mbv3: OFAMobileNetV3Family) -> None:
    from ofa.imagenet_classification.elastic_nn.utils import set_running_statistics

    spec = SubnetSpec(config=mbv3.sample(random.Random(21)).config, resolution=48)
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(3, 3, 48, 48, generator=g) for _ in range(2)]
    before = {k: v.clone() for k, v in mbv3.supernet().state_dict().items()}
    stats = mbv3.calibrate_bn(spec, batches)
    after = mbv3.supernet().state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items()), "calibration must not touch the supernet"
    assert stats and all(k.endswith(("running_mean", "running_var")) for k in stats)

    # reference: ofa's own recalibration on a copy of the supernet, then stock extraction
    reference: Any = copy.deepcopy(mbv3.supernet())
    reference.set_active_subnet(**spec.config)
    set_running_statistics(reference, [(b, None) for b in batches])
    extracted = reference.get_active_subnet(preserve_weight=True).eval()

    x = torch.randn(2, 3, spec.resolution, spec.resolution)
    calibrated = outputs(mbv3.materialize(spec, stats), x)
    assert_same_output(calibrated, outputs(extracted, x))
    assert not torch.allclose(calibrated, outputs(mbv3.materialize(spec), x))
    with torch.inference_mode():
        assert_same_output(mbv3.forward_dynamic(spec, x, stats), calibrated)
    # recalibrated statistics are private to the subnet
    super_ptrs = {t.untyped_storage().data_ptr() for t in mbv3.supernet().buffers()}
    tensors = dict(module_tensors(mbv3.materialize(spec, stats)))
    assert tensors["stem.bn.running_mean"].untyped_storage().data_ptr() not in super_ptrs
    incomplete = {k: v for k, v in stats.items() if not k.startswith("first_conv")}
    with pytest.raises(CheckpointError, match="first_conv.bn.running_mean"):
        mbv3.materialize(spec, incomplete)


def test_dynamic_forward_equals_materialized(proxyless: OFAProxylessFamily) -> None:
    spec = proxyless.sample(random.Random(4))
    x = torch.randn(1, 3, spec.resolution, spec.resolution)
    with torch.inference_mode():
        assert_same_output(proxyless.forward_dynamic(spec, x), outputs(proxyless.materialize(spec), x))
