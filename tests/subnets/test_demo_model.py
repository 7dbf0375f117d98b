"""The shipped demo artefacts: they load, their catalogs' measured accuracy is reproduced, and the
training entry points run end to end on a tiny budget."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cli.main import main as cli_main
from dynofa.catalog import load_catalog
from subnets.checkpoint import load_bn_stats
from subnets.demo import (
    DIGITS_SEED,
    demo_catalog_path,
    demo_dir,
    demo_weights_path,
    grouped_demo_family,
    ofa_demo_family,
)
from subnets.grouped import GroupedFamily, load_grouped
from subnets.offline.accuracy import evaluate
from subnets.offline.datasets import digits_dataset

#: re-measured accuracy may differ from the catalog by at most 2 test images (a different BLAS on
#: another machine may flip a near-tie); the OFA demo's test set is 1080 images, the grouped one's 360
TOLERANCE_IMAGES = 2
TEST_IMAGES = {"ofa": 1080, "grouped": 360}
SIZE_LIMIT_BYTES = 10 * 1024 * 1024
#: the accuracy spread (most accurate minus fastest subnet) each shipped catalog shows, at least
MIN_SPREAD = {"ofa": 0.05, "grouped": 0.05}


def _test_split(kind: str, resolution: int) -> object:
    if kind == "ofa":
        from subnets.offline.demo_build import TEST_COPIES

        return digits_dataset("test", resolution, DIGITS_SEED, distorted=True, copies=TEST_COPIES)
    return digits_dataset("test", resolution, DIGITS_SEED)


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_artefacts_are_shipped_and_small() -> None:
    assert demo_catalog_path() == demo_catalog_path("ofa") and demo_catalog_path().is_file()
    for kind in ("ofa", "grouped"):
        assert demo_weights_path(kind).is_file() and demo_catalog_path(kind).is_file()
    assert sum(p.stat().st_size for p in _files(demo_dir())) <= SIZE_LIMIT_BYTES
    with pytest.raises(ValueError):
        demo_catalog_path("resnet")


@pytest.mark.parametrize("kind", ["ofa", "grouped"])
def test_catalogs_claim_measured_held_out_accuracy(kind: str) -> None:
    catalog = load_catalog(demo_catalog_path(kind))
    assert catalog.family["kind"] == ("ofa-mbv3" if kind == "ofa" else "grouped")
    for entry in catalog:
        assert entry.accuracy is not None and entry.accuracy.source == "measured"
        assert entry.accuracy.samples == TEST_IMAGES[kind] and "test split" in entry.accuracy.dataset
        assert entry.latency["cpu"].ms > 0
    # a real trade-off: the fastest subnet is clearly less accurate than the most accurate one
    by_latency = sorted(catalog, key=lambda e: e.latency["cpu"].ms)
    best = max(e.accuracy.top1 for e in catalog if e.accuracy)
    assert by_latency[0].accuracy is not None and best - by_latency[0].accuracy.top1 >= MIN_SPREAD[kind]


def test_grouped_levels_rise_monotonically_and_reproduce() -> None:
    catalog = load_catalog(demo_catalog_path("grouped"))
    family = grouped_demo_family()
    assert isinstance(family, GroupedFamily)
    test = digits_dataset("test", family.resolution, DIGITS_SEED)
    by_level = sorted(catalog, key=lambda e: e.config["level"])
    assert [e.config["level"] for e in by_level] == family.levels()
    measured = []
    for entry in by_level:
        top1 = evaluate(family.materialize(family.spec(entry.config["level"])), test).top1
        assert entry.accuracy is not None and abs(top1 - entry.accuracy.top1) <= TOLERANCE_IMAGES / len(test)
        measured.append(top1)
    assert measured == sorted(measured) and measured[-1] > measured[0]
    net = load_grouped(demo_weights_path("grouped"))
    assert net.trained_levels == net.groups
    assert catalog.weights["path"] == demo_weights_path("grouped").name


def test_ofa_demo_catalog_accuracy_reproduces() -> None:
    catalog = load_catalog(demo_catalog_path("ofa"))
    family = ofa_demo_family()
    test = _test_split("ofa", max(family.resolutions()))
    ordered = sorted(catalog, key=lambda e: e.macs)
    for entry in (ordered[0], ordered[-1]):
        spec = family.spec_from_dict({"config": entry.config, "resolution": entry.resolution})
        bn_path = catalog.bn_stats_path(entry)
        bn = load_bn_stats(bn_path) if bn_path is not None else None
        top1 = evaluate(family.materialize(spec, bn), test, resolution=spec.resolution).top1  # type: ignore[arg-type]
        assert entry.accuracy is not None and abs(top1 - entry.accuracy.top1) <= TOLERANCE_IMAGES / TEST_IMAGES["ofa"]


def test_ofa_demo_front_is_worth_switching_along() -> None:
    """At least 8 Pareto-optimal subnets, 5x apart in latency and 5 points in top-1 (issue 11), at every
    batch size the demo and the benchmarks send, every figure measured."""
    from subnets import pareto

    catalog = load_catalog(demo_catalog_path("ofa"))
    entries = list(catalog)
    front = pareto.pareto_front(
        entries, lambda e: e.accuracy.top1 if e.accuracy else 0.0, lambda e: e.latency["cpu"].ms
    )
    assert len(front) == len(entries) >= 8
    for batch in (1, 32):
        ms = [e.latency_ms("cpu", batch) or 0.0 for e in entries]
        assert min(ms) > 0 and max(ms) / min(ms) >= 5.0
    top1 = [e.accuracy.top1 for e in entries if e.accuracy is not None]
    assert max(top1) - min(top1) >= 0.05
    # Pareto-optimal at batch 1: no subnet is both slower and less accurate than another
    by_ms = [e.accuracy.top1 for e in sorted(entries, key=lambda e: e.latency["cpu"].ms) if e.accuracy]
    assert all(faster < slower for faster, slower in zip(by_ms, by_ms[1:], strict=False))
    assert catalog.batch_sizes("cpu") == [1, 8, 32]
    assert all(e.latency["cpu"].source == "measured" for e in entries)
    assert all(b.source == "measured" for e in entries for b in e.latency["cpu"].batch.values())


def test_shipped_demo_weights_are_what_the_default_command_trains() -> None:
    from dataclasses import asdict

    from subnets.offline.train_demo import DemoTrainConfig

    meta = torch.load(demo_weights_path("ofa"), map_location="cpu", weights_only=True)["dynofa"]
    default = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(DemoTrainConfig()).items()}
    assert meta["config"] == default


def test_short_demo_training_runs_end_to_end(tmp_path: Path) -> None:
    from subnets.ofa_family import OFAMobileNetV3Family
    from subnets.offline.train_demo import DemoTrainConfig, save_demo_weights, train_demo

    lines: list[str] = []
    train = digits_dataset("train", 40, DIGITS_SEED).head(96)
    val = digits_dataset("val", 40, DIGITS_SEED).head(64)
    config = DemoTrainConfig(width_mult=0.2, depth_list=(1, 2), resolutions=(32, 40), epochs=1, batch_size=32,
                             max_steps=2, eval_every=1)
    result = train_demo(config, log=lines.append, train=train, val=val)
    assert result.steps == 2 and any("epoch 1" in line for line in lines)
    path = save_demo_weights(result, tmp_path / "demo.pt", config)
    family = OFAMobileNetV3Family(weights=path, **{k: v for k, v in result.family.describe().items()
                                                    if k not in ("kind",)})
    module = family.materialize(family.largest())
    with torch.inference_mode():
        assert module(torch.zeros(1, 3, 40, 40)).shape == (1, 10)


def test_demo_training_is_deterministic_for_a_seed() -> None:
    """What makes the documented command reproduce the shipped weights: same seed, same tensors."""
    from subnets.offline.train_demo import DemoTrainConfig, train_demo

    train = digits_dataset("train", 32, DIGITS_SEED).head(64)
    val = digits_dataset("val", 32, DIGITS_SEED).head(32)
    states = []
    for _ in range(2):
        config = DemoTrainConfig(width_mult=0.2, depth_list=(1, 2), resolutions=(24, 32), epochs=1, batch_size=32,
                                 max_steps=2, eval_every=0)
        result = train_demo(config, log=lambda _m: None, train=train, val=val)
        states.append(result.family.supernet().state_dict())
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_cli_trains_grouped_on_a_tiny_budget(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "g.pt"
    code = cli_main(["train", "grouped", "--epochs-per-level", "1", "--groups", "4", "--resolution", "16",
                     "--out", str(out)])
    assert code == 0 and out.is_file()
    text = capsys.readouterr().out
    assert "level 4/4" in text and "held-out top-1" in text
    family = GroupedFamily.from_weights(out)
    assert family.resolution == 16 and family.supernet().trained_levels == 4
