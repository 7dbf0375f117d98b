"""SubnetPool: outputs equal stock-extracted subnets, switching is a reference swap, concurrent switches
never mix subnets, memory is shared, the budgeted cache falls back to dynamic slicing, catalogs load."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from dynofa.catalog import Catalog, CatalogEntry, sha256_file
from dynofa.errors import CatalogError, ConfigError, InputError, UnknownSubnetError
from subnets.checkpoint import save_bn_stats
from subnets.family import SubnetSpec
from subnets.ofa_family import OFAMobileNetV3Family
from subnets.pool import SubnetPool
from tests.subnets.test_ofa_family import assert_same_output, outputs, randomize_bn

RESOLUTIONS = (32, 48)



@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)

@pytest.fixture(scope="module")
def family() -> OFAMobileNetV3Family:
    # a narrow 10-class MobileNetV3 space (same kernels, expands and depths as w1.0) keeps the tests fast;
    # tests/subnets/test_ofa_family.py checks the full-size families against stock extraction
    fam = OFAMobileNetV3Family(width_mult=0.5, n_classes=10, resolutions=RESOLUTIONS, seed=5)
    randomize_bn(fam.supernet(), seed=5)
    return fam


@pytest.fixture(scope="module")
def specs(family: OFAMobileNetV3Family) -> dict[str, SubnetSpec]:
    return {s.short_id(family.id_prefix): s for s in family.sample_many(4, random.Random(0))}


@pytest.fixture(scope="module")
def pool(family: OFAMobileNetV3Family, specs: dict[str, SubnetSpec]) -> SubnetPool:
    return SubnetPool(family, specs)


def _input(spec: SubnetSpec, seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 3, spec.resolution, spec.resolution, generator=torch.Generator().manual_seed(seed))


def test_pool_outputs_equal_stock_extracted_subnets(
    pool: SubnetPool, family: OFAMobileNetV3Family, specs: dict[str, SubnetSpec]
) -> None:
    assert pool.ids == list(specs) and pool.mode == "resident"
    for sid, spec in specs.items():
        pool.switch(sid)
        assert pool.active == sid
        x = _input(spec)
        result = pool.infer(x)
        assert result.subnet == sid and result.latency_ms > 0
        assert_same_output(result.output, outputs(family.extract(spec), x))
        other = pool.infer(x, subnet=sid)  # explicit subnet, no switch
        assert torch.equal(other.output, result.output)


def test_switch_is_a_reference_swap(pool: SubnetPool) -> None:
    modules = {sid: pool._slots[sid].module for sid in pool.ids}
    memory = pool.memory()
    rng = random.Random(1)
    for _ in range(50):
        sid = rng.choice(pool.ids)
        pool.switch(sid)
        assert pool._active is pool._slots[sid]
        assert pool._active.module is modules[sid]  # nothing rebuilt, nothing reloaded
    assert pool.memory() == memory


def test_malformed_inputs_are_refused_clearly(pool: SubnetPool) -> None:
    with pytest.raises(InputError, match=r"shape \(N, 3, H, W\); got \(3, 32, 32\)"):
        pool.infer(torch.zeros(3, 32, 32))
    with pytest.raises(InputError, match=r"got \(1, 1, 32, 32\)"):
        pool.infer(torch.zeros(1, 1, 32, 32))
    with pytest.raises(InputError, match="floating-point"):
        pool.infer(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    assert pool.infer(torch.zeros(1, 3, 32, 32, dtype=torch.float64)).output.dtype == torch.float32


def test_unknown_subnet_errors(pool: SubnetPool) -> None:
    with pytest.raises(UnknownSubnetError, match="unknown subnet 'nope'.*holds"):
        pool.switch("nope")
    with pytest.raises(UnknownSubnetError):
        pool.infer(torch.zeros(1, 3, 32, 32), subnet="nope")
    with pytest.raises(UnknownSubnetError):
        pool.spec("nope")


def test_concurrent_switches_never_mix_subnets(pool: SubnetPool, specs: dict[str, SubnetSpec]) -> None:
    a, b = [sid for sid in pool.ids if specs[sid].resolution == 32][:2] or pool.ids[:2]
    if specs[a].resolution != specs[b].resolution:
        pytest.skip("needs two subnets of one resolution")
    x = _input(specs[a], seed=3)
    reference = {sid: pool.infer(x, subnet=sid).output for sid in (a, b)}
    assert not torch.allclose(reference[a], reference[b])
    stop = threading.Event()
    errors: list[str] = []

    def switcher() -> None:
        i = 0
        while not stop.is_set():
            pool.switch((a, b)[i % 2])
            i += 1

    def inferrer() -> None:
        for _ in range(40):
            result = pool.infer(x)
            if not torch.equal(result.output, reference[result.subnet]):
                errors.append(result.subnet)

    threads = [threading.Thread(target=switcher)] + [threading.Thread(target=inferrer) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads[1:]:
        t.join()
    stop.set()
    threads[0].join()
    assert errors == []


def test_memory_reports_shared_and_private_bytes(pool: SubnetPool, family: OFAMobileNetV3Family) -> None:
    mem = pool.memory()
    supernet_bytes = sum(t.numel() * t.element_size() for t in family.supernet().state_dict().values())
    assert mem["supernet_bytes"] == supernet_bytes
    assert set(mem["per_subnet_private_bytes"]) == set(pool.ids)
    # transformed kernels are shared between subnets (leading views of one full-width kernel)
    exclusive = sum(mem["per_subnet_private_bytes"].values())
    assert mem["private_bytes"] == exclusive + mem["shared_between_subnets_bytes"]
    assert mem["shared_between_subnets_bytes"] > 0
    assert 0 < mem["private_bytes"] < 0.2 * supernet_bytes  # only transformed kernels are private
    assert mem["shared_view_bytes"] > mem["private_bytes"]
    assert mem["ratio_to_supernet"] == pytest.approx((supernet_bytes + mem["private_bytes"]) / supernet_bytes)
    assert mem["ratio_to_supernet"] < 1.5


def test_budgeted_pool_caches_by_use_and_falls_back_to_dynamic_slicing(
    family: OFAMobileNetV3Family, specs: dict[str, SubnetSpec], pool: SubnetPool
) -> None:
    ids = list(specs)
    with SubnetPool(family, {sid: specs[sid] for sid in ids[:2]}) as two:
        budget = two.memory()["total_bytes"]  # holds exactly the first two
    sizes = _alone_bytes(family, specs)
    with SubnetPool(family, specs, memory_budget_bytes=budget) as cached:
        assert cached.mode == "cache"
        assert cached.cache_stats()["cached"] == ids[:2]
        cached.switch(ids[0])
        assert cached.cache_stats()["hits"] == 1
        # a miss is served at once by dynamic slicing, the materialisation is built off the hot path
        target = next(sid for sid in ids[2:] if sizes[sid] <= budget - pool.supernet_bytes)
        cached.switch(target)
        stats = cached.cache_stats()
        assert stats["misses"] == 1
        x = _input(specs[target], seed=4)
        expected = outputs(family.extract(specs[target]), x)
        first = cached.infer(x)
        assert first.subnet == target
        assert_same_output(first.output, expected)
        assert cached.wait_idle()
        stats = cached.cache_stats()
        assert stats["builds"] == 1 and target in stats["cached"] and stats["evictions"] >= 1
        assert cached._active.module is not None  # swapped to the materialisation once it was ready
        assert_same_output(cached.infer(x).output, expected)
        cached.switch(target)
        assert cached.cache_stats()["hits"] == 2
        # using a subnet without switching to it counts too
        other = next(sid for sid in ids if sid not in cached.cache_stats()["cached"])
        y = cached.infer(_input(specs[other]), subnet=other)
        assert y.subnet == other and cached.cache_stats()["misses"] == 2
        assert cached.wait_idle() and other in cached.cache_stats()["cached"]
        assert cached.active == target
        # a prefetch builds in the background without switching or counting a use
        missing = next(sid for sid in ids if sid not in cached.cache_stats()["cached"])
        before = cached.cache_stats()
        assert cached.prefetch(missing) is False
        assert cached.wait_idle() and missing in cached.cache_stats()["cached"]
        assert cached.prefetch(missing) is True and cached.active == target
        assert (cached.cache_stats()["hits"], cached.cache_stats()["misses"]) == (before["hits"], before["misses"])
        assert cached.memory()["total_bytes"] <= budget
        with pytest.raises(UnknownSubnetError):
            cached.switch("nope")
    with pytest.raises(ConfigError, match="below the supernet"):
        SubnetPool(family, specs, memory_budget_bytes=1000)


def _alone_bytes(family: OFAMobileNetV3Family, specs: dict[str, SubnetSpec]) -> dict[str, int]:
    """Tensor bytes each subnet holds beyond the supernet when it is the only one resident."""
    sizes = {}
    for sid, spec in specs.items():
        with SubnetPool(family, {sid: spec}, warmup=False) as alone:
            sizes[sid] = alone.memory()["private_bytes"]
    return sizes


def test_per_subnet_bn_stats_are_used_resident_and_in_fallback(
    family: OFAMobileNetV3Family, specs: dict[str, SubnetSpec]
) -> None:
    sid, spec = next(iter(specs.items()))
    g = torch.Generator().manual_seed(1)
    stats = family.calibrate_bn(spec, [torch.randn(4, 3, spec.resolution, spec.resolution, generator=g)])
    x = _input(spec, seed=6)
    expected = outputs(family.materialize(spec, stats), x)
    with SubnetPool(family, {sid: spec}, bn_stats={sid: stats}) as resident:
        result = resident.infer(x)
        assert_same_output(result.output, expected)
        assert not torch.allclose(result.output, outputs(family.materialize(spec), x))
    with SubnetPool(family, {sid: spec}, bn_stats={sid: stats}, memory_budget_bytes=family_bytes(family) + 1) as pool:
        assert pool.mode == "cache" and pool._active.module is None
        # dynamic slicing with the subnet's own stats; freshly calibrated statistics on a few
        # images have tiny variances that amplify rounding differences, hence the looser tolerance
        assert_same_output(pool.infer(x).output, expected, tol=1e-3)
        pool.close()
    with pytest.raises(UnknownSubnetError, match="not in the pool"):
        SubnetPool(family, {sid: spec}, bn_stats={"other": stats})


def family_bytes(family: OFAMobileNetV3Family) -> int:
    return sum(t.numel() * t.element_size() for t in family.supernet().state_dict().values())


def test_from_catalog_loads_weights_bn_stats_and_checks_the_hash(
    tmp_path: Path, family: OFAMobileNetV3Family, specs: dict[str, SubnetSpec]
) -> None:
    weights = tmp_path / "supernet.pth"
    torch.save({"state_dict": family.supernet().state_dict()}, weights)
    sid, spec = next(iter(specs.items()))
    stats = family.calibrate_bn(spec, [torch.randn(2, 3, spec.resolution, spec.resolution)])
    save_bn_stats(tmp_path / "bn" / f"{sid}.pt", stats)
    entries = [
        CatalogEntry(
            id=k,
            config=dict(s.config),
            resolution=s.resolution,
            macs=family.macs(s),
            params=family.params(s),
            bn_stats=f"bn/{k}.pt" if k == sid else None,
        )
        for k, s in specs.items()
    ]
    catalog = Catalog(
        family=family.describe(), entries=entries, weights={"path": "supernet.pth", "sha256": sha256_file(weights)}
    )
    catalog.save(tmp_path / "catalog.json")
    with SubnetPool.from_catalog(catalog, ids=[sid, entries[1].id]) as pool:
        assert pool.ids == [sid, entries[1].id]
        x = _input(spec, seed=8)
        assert_same_output(pool.infer(x, subnet=sid).output, outputs(family.materialize(spec, stats), x))
    other = tmp_path / "other.pth"
    torch.save({"state_dict": family.supernet().state_dict(), "note": "different file"}, other)
    with pytest.raises(CatalogError, match="rebuild the catalog"):
        SubnetPool.from_catalog(catalog, weights=other)


def test_closed_pool_refuses_inference(family: OFAMobileNetV3Family, specs: dict[str, SubnetSpec]) -> None:
    sid, spec = next(iter(specs.items()))
    pool = SubnetPool(family, {sid: spec}, warmup=False)
    pool.close()
    with pytest.raises(ConfigError, match="closed"):
        pool.infer(_input(spec))


def test_bn_folding_is_chosen_under_the_budget_and_reported(
    family: OFAMobileNetV3Family, specs: dict[str, SubnetSpec], pool: SubnetPool
) -> None:
    assert pool.optimize == "auto" and all(v == [] for v in pool.memory()["optimizations"].values())
    with SubnetPool(family, specs, optimize="fold-bn") as folded:
        mem = folded.memory()
        assert all(v == ["fold-bn"] for v in mem["optimizations"].values())
        assert mem["private_bytes"] > pool.memory()["private_bytes"]  # folded weights are private copies
        for sid, spec in specs.items():
            x = _input(spec, seed=9)
            assert_same_output(folded.infer(x, subnet=sid).output, pool.infer(x, subnet=sid).output)
        folded_total = mem["total_bytes"]
    # "auto" folds only what an explicit budget holds: all of it, then none of it
    with SubnetPool(family, specs, memory_budget_bytes=folded_total) as roomy:
        assert roomy.mode == "resident" and all(v == ["fold-bn"] for v in roomy.memory()["optimizations"].values())
    tight = pool.memory()["total_bytes"]
    with SubnetPool(family, specs, memory_budget_bytes=tight) as lean:
        assert lean.mode == "resident" and lean.memory()["total_bytes"] <= tight
        assert all(v == [] for v in lean.memory()["optimizations"].values())
    with pytest.raises(ConfigError, match="optimize"):
        SubnetPool(family, specs, optimize="turbo")


def test_a_supernet_serves_one_device_at_a_time(specs: dict[str, SubnetSpec]) -> None:
    fam = OFAMobileNetV3Family(width_mult=0.5, n_classes=10, resolutions=RESOLUTIONS, seed=6)
    sid, spec = next(iter(specs.items()))
    cpu_pool = SubnetPool(fam, {sid: spec}, warmup=False)
    with pytest.raises(ConfigError, match="already serves an open pool on cpu"):
        SubnetPool(fam, {sid: spec}, device="meta", warmup=False)
    assert next(fam.supernet().parameters()).device.type == "cpu"  # refused before moving anything
    with SubnetPool(fam, {sid: spec}, warmup=False) as second_cpu_pool:  # same device: fine
        assert second_cpu_pool.infer(_input(spec)).subnet == sid
    cpu_pool.close()


def test_handles_switch_independently_by_reference(pool: SubnetPool) -> None:
    """The one switching model: each consumer (a daemon app, an embedded app) holds a handle."""
    a, b = pool.handle(pool.ids[0]), pool.handle(pool.ids[1])
    a.switch(pool.ids[2])
    assert (a.active, b.active) == (pool.ids[2], pool.ids[1])
    assert a._slot is pool._slots[pool.ids[2]]  # a reference to the resident slot, nothing built
    spec = pool.spec(pool.ids[1])
    x = torch.randn(1, 3, spec.resolution + 8, spec.resolution + 8, generator=torch.Generator().manual_seed(3))
    resized = torch.nn.functional.interpolate(x, size=(spec.resolution,) * 2, mode="bilinear", align_corners=False)
    result = b.infer(x, resize=True)
    assert result.subnet == pool.ids[1]
    assert torch.equal(result.output, pool.infer(resized, subnet=pool.ids[1]).output)
    with pytest.raises(UnknownSubnetError):
        a.switch("nope")
    assert a.active == pool.ids[2]
