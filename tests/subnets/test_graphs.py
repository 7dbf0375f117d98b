"""Traced (GIL-free) forwards: same outputs as the eager forward, and no weight copies."""

from __future__ import annotations

import random

import pytest
import torch

from subnets.family import SubnetSpec
from subnets.graphs import graph_constants, trace_graph
from subnets.ofa_family import OFAMobileNetV3Family
from subnets.pool import SubnetPool, module_tensors
from tests.subnets.test_ofa_family import one_thread, randomize_bn  # noqa: F401  (autouse: one intra-op thread)


@pytest.fixture(scope="module")
def family() -> OFAMobileNetV3Family:
    fam = OFAMobileNetV3Family(width_mult=0.5, n_classes=10, resolutions=(32, 48), seed=7)
    randomize_bn(fam.supernet(), seed=7)
    return fam


@pytest.fixture(scope="module")
def specs(family: OFAMobileNetV3Family) -> dict[str, SubnetSpec]:
    return {s.short_id(family.id_prefix): s for s in family.sample_many(3, random.Random(3))}


def _input(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def test_graph_pool_equals_eager_pool_bit_for_bit_and_adds_no_bytes(
    family: OFAMobileNetV3Family, specs: dict[str, SubnetSpec]
) -> None:
    with SubnetPool(family, specs) as eager, SubnetPool(family, specs, graphs=True) as traced:
        mem = traced.memory()
        assert all("graph" in v for v in mem["optimizations"].values()), mem["optimizations"]
        assert mem["total_bytes"] == eager.memory()["total_bytes"]
        for k, (sid, spec) in enumerate(specs.items()):
            graph = traced._slots[sid].graph
            assert graph is not None and graph.shape == family.input_shape(spec)
            # the graph's constants are the subnet's own tensors (views of the supernet), not copies
            own = {t.untyped_storage().data_ptr() for _, t in module_tensors(traced._slots[sid].module)}
            assert {c.untyped_storage().data_ptr() for c in graph_constants(graph.module)} <= own
            x = _input(family.input_shape(spec), seed=k)
            assert torch.equal(traced.infer(x, subnet=sid).output, eager.infer(x, subnet=sid).output)
            # other shapes (a batch, another resolution) take the eager forward
            for shape in ((2, 3, spec.resolution, spec.resolution), (1, 3, spec.resolution + 8, spec.resolution + 8)):
                y = _input(shape, seed=k + 10)
                assert torch.equal(traced.infer(y, subnet=sid).output, eager.infer(y, subnet=sid).output)


def test_a_graph_that_would_copy_weights_is_refused(family: OFAMobileNetV3Family, specs: dict[str, SubnetSpec]) -> None:
    spec = next(iter(specs.values()))
    module = family.materialize(spec)
    shape = family.input_shape(spec)
    assert trace_graph(module, shape, torch.device("cpu"), (t for _, t in module_tensors(module))) is not None
    # told that the module reads none of its tensors, every graph constant counts as a copy
    assert trace_graph(module, shape, torch.device("cpu"), []) is None


def test_an_untraceable_module_keeps_its_eager_forward() -> None:
    class Broken(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("cannot trace me")

    assert trace_graph(Broken(), (1, 3, 8, 8), torch.device("cpu"), []) is None


def test_infer_runs_the_graph_for_its_shape_only(family: OFAMobileNetV3Family, specs: dict[str, SubnetSpec]) -> None:
    from dataclasses import replace

    sid, spec = next(iter(specs.items()))
    with SubnetPool(family, {sid: spec}, graphs=True) as pool:
        slot = pool._slots[sid]
        assert slot.graph is not None
        calls: list[tuple[int, ...]] = []
        script = slot.graph.module

        def counting(x: torch.Tensor) -> torch.Tensor:
            calls.append(tuple(x.shape))
            return script(x)

        pool._slots[sid] = replace(slot, graph=replace(slot.graph, module=counting))
        pool.infer(_input(family.input_shape(spec), seed=1), subnet=sid)
        pool.infer(_input((2, 3, spec.resolution, spec.resolution), seed=2), subnet=sid)
        assert calls == [family.input_shape(spec)]
