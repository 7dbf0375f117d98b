"""End to end with the real OFA MobileNetV3 family: ``dynofa catalog build`` at low resolution, a tiny
budget (N=8, M=4, K=3), a synthetic validation set and BN calibration; then the catalog serves a pool."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cli.main import main
from dynofa.catalog import load_catalog
from subnets.checkpoint import load_bn_stats
from subnets.offline.accuracy import evaluate
from subnets.offline.datasets import load_dataset
from subnets.registry import family_for_catalog

FAMILY_ARGS = json.dumps({"resolutions": [32, 40], "n_classes": 10})


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("ofa-catalog")
    rng = np.random.default_rng(0)
    val = tmp / "val.npz"
    np.savez(val, x=rng.integers(0, 256, size=(24, 32, 32, 3), dtype=np.uint8), y=rng.integers(0, 10, 24))
    out = tmp / "ofa.json"
    rc = main(
        ["catalog", "build", "--family", "ofa-mbv3-w1.0", "--family-args", FAMILY_ARGS, "--random-init",
         "--val", str(val), "--calib", str(val), "--candidates", "8", "--measure", "4", "--keep", "3",
         "--repeats", "2", "--warmup", "1", "--seed", "1", "--fill-dominated", "--out", str(out)]
    )
    assert rc == 0
    return out, val


def test_catalog_of_real_ofa_subnets(built: tuple[Path, Path]) -> None:
    out, _ = built
    cat = load_catalog(out)
    assert len(cat) == 3
    assert cat.family["kind"] == "ofa-mbv3" and cat.family["n_classes"] == 10
    assert cat.weights["init"] == "random"
    assert cat.provenance["build"]["distinct_candidates"] == 8
    assert cat.latency_models["cpu"]["error"]["held_out"]["method"] == "held-out"
    for e in cat:
        assert set(e.config) == {"ks", "e", "d"} and e.resolution in (32, 40)
        assert e.macs > 0 and e.params > 0
        assert e.latency["cpu"].source == "measured" and e.latency["cpu"].ms > 0
        assert e.accuracy is not None and e.accuracy.source == "measured" and e.accuracy.samples == 24
        assert e.bn_stats is not None and cat.bn_stats_path(e).is_file()  # type: ignore[union-attr]
    # kept subnets span the latency range: strictly increasing MACs vs latency front
    lat = [e.latency["cpu"].ms for e in sorted(cat, key=lambda e: e.latency["cpu"].ms)]
    assert lat[0] < lat[-1]


def test_stored_accuracy_is_reproducible_from_the_sidecar_bn_stats(built: tuple[Path, Path]) -> None:
    out, val = built
    cat = load_catalog(out)
    family = family_for_catalog(cat)
    data = load_dataset(val, normalize="imagenet")
    entry = cat.entries[0]
    spec = family.spec_from_dict({"config": entry.config, "resolution": entry.resolution})
    module = family.materialize(spec, load_bn_stats(cat.bn_stats_path(entry)))  # type: ignore[arg-type]
    result = evaluate(module, data, resolution=entry.resolution)
    assert entry.accuracy is not None and result.top1 == entry.accuracy.top1


def test_a_pool_serves_the_catalog(built: tuple[Path, Path]) -> None:
    from subnets.pool import SubnetPool

    cat = load_catalog(built[0])
    with SubnetPool.from_catalog(cat) as pool:
        assert sorted(pool.ids) == sorted(cat.ids)
        for sid in cat.ids:
            pool.switch(sid)
            res = cat.get(sid).resolution
            out = pool.infer(torch.randn(1, 3, res, res))
            assert out.subnet == sid and tuple(out.output.shape) == (1, 10)


def test_subnets_json_lists_the_catalog(built: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["subnets", "--catalog", str(built[0]), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [s["id"] for s in data["subnets"]] == load_catalog(built[0]).ids
    assert all(s["latency"]["cpu"]["source"] == "measured" for s in data["subnets"])
