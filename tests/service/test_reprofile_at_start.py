"""A catalog measured on another machine is re-timed when the daemon loads it."""

from __future__ import annotations

import dataclasses

import pytest

from dynofa.catalog import load_catalog
from dynofa.config import ModelConfig
from service.models import ModelRuntime
from subnets.demo import demo_catalog_path


def _copy_from_elsewhere(tmp_path):  # type: ignore[no-untyped-def]
    catalog = load_catalog(demo_catalog_path("ofa"))
    catalog.provenance = {**catalog.provenance, "host": "another-board", "cpu_model": "Cortex-A57", "reprofiled": {}}
    # BN sidecars and weights are resolved relative to the catalog file: keep them next to the copy
    shipped = demo_catalog_path("ofa").parent
    for item in shipped.iterdir():
        if item.name.startswith("catalog-ofa.json.bn") or item.suffix == ".pt":
            (tmp_path / item.name).symlink_to(item)
    target = tmp_path / "catalog-ofa.json"
    catalog.save(target)
    return target


@pytest.mark.parametrize("enabled", [True, False])
def test_reprofile_when_measured_elsewhere(tmp_path, enabled: bool) -> None:  # type: ignore[no-untyped-def]
    path = _copy_from_elsewhere(tmp_path)
    config = dataclasses.replace(ModelConfig(), catalog=str(path), reprofile=enabled)
    runtime = ModelRuntime.load("demo", config, ["cpu"])
    try:
        reprofiled = runtime.catalog.provenance.get("reprofiled") or {}
        sources = {e.latency["cpu"].source for e in runtime.catalog.entries}
        if enabled:
            assert "cpu" in reprofiled
            assert sources == {"measured", "predicted"}
            assert sum(e.latency["cpu"].source == "measured" for e in runtime.catalog.entries) == 3
        else:
            assert reprofiled == {}
            assert runtime.catalog.to_dict()["subnets"] == load_catalog(path).to_dict()["subnets"]
    finally:
        runtime.close()


def test_the_daemon_never_imports_the_offline_pipeline(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Loading and re-profiling a model (what the daemon runs at start) stays out of subnets.offline."""
    import subprocess
    import sys

    path = _copy_from_elsewhere(tmp_path)
    code = (
        "import dataclasses, sys\n"
        "import service.daemon\n"
        "from dynofa.config import ModelConfig\n"
        "from service.models import ModelRuntime\n"
        f"config = dataclasses.replace(ModelConfig(), catalog={str(path)!r}, reprofile=True)\n"
        "runtime = ModelRuntime.load('demo', config, ['cpu'])\n"
        "assert runtime.catalog.provenance.get('reprofiled'), 'not re-profiled'\n"
        "runtime.close()\n"
        "print(sorted(m for m in sys.modules if m.startswith('subnets.offline')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_reprofile_times_the_forward_that_serves(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The start-up figures are the served path's: the pool's graph at batch 1, its module at other batch sizes.

    Timing an eager re-materialisation instead (what re-profiling once did) measured another
    callable than the one the daemon serves, so measured / predicted was off by that difference.
    """
    from subnets.pool import SubnetPool

    path = _copy_from_elsewhere(tmp_path)
    served: list[tuple[str, int, bool]] = []  # (subnet, batch, ran its traced graph)
    run = SubnetPool._run

    def spy(self, slot, x, resize):  # type: ignore[no-untyped-def]
        served.append((slot.id, int(x.shape[0]), slot.graph is not None and slot.graph.accepts(x)))
        return run(self, slot, x, resize)

    monkeypatch.setattr(SubnetPool, "_run", spy)
    config = dataclasses.replace(ModelConfig(), catalog=str(path), reprofile=True, graphs=True)
    runtime = ModelRuntime.load("demo", config, ["cpu"])
    try:
        measured = {e.id for e in runtime.catalog.entries if e.latency["cpu"].source == "measured"}
        assert len(measured) == 3
        at_one = {sid for sid, batch, graph in served if batch == 1 and graph}
        assert measured <= at_one, served  # every measured figure at batch 1 came from the traced graph
        for b in runtime.catalog.batch_sizes("cpu"):
            if b > 1:
                assert measured <= {sid for sid, batch, _ in served if batch == b}, (b, served)
        info = runtime.catalog.latency_models["cpu"]["reprofile"]
        assert info["clock"] == "thread" and info["repeats"] >= 5
    finally:
        runtime.close()


def test_reprofile_runs_on_the_pes_cpus(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Each PE is timed on its own CPUs (a big.LITTLE cluster's figures must come from that cluster)."""
    import os

    from subnets.pool import SubnetPool

    path = _copy_from_elsewhere(tmp_path)
    cpu = max(os.sched_getaffinity(0))
    where: list[set[int]] = []
    run = SubnetPool._run

    def spy(self, slot, x, resize):  # type: ignore[no-untyped-def]
        where.append(set(os.sched_getaffinity(0)))
        return run(self, slot, x, resize)

    monkeypatch.setattr(SubnetPool, "_run", spy)
    before = os.sched_getaffinity(0)
    config = dataclasses.replace(ModelConfig(), catalog=str(path), reprofile=True)
    runtime = ModelRuntime.load("demo", config, ["cpu"], pe_cpus={"cpu": [cpu, 10_000]})  # 10000: not ours
    try:
        assert where and all(w == {cpu} for w in where)
        assert os.sched_getaffinity(0) == before  # put back afterwards
    finally:
        runtime.close()
