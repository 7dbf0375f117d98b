"""Catalog building, re-profiling and the catalog CLI, on a tiny real weight-shared family."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from cli.main import main
from dynofa.catalog import Catalog, load_catalog
from dynofa.errors import CatalogBuildError, CatalogError
from subnets import registry
from subnets.checkpoint import load_bn_stats
from subnets.family import ModelFamily
from subnets.offline.accuracy import evaluate
from subnets.offline.build import BuildOptions, build_catalog
from subnets.offline.datasets import ArrayDataset
from subnets.offline.regression import RegressionModel
from subnets.registry import family_for_catalog
from subnets.reprofile import reprofile
from subnets.timing import cpu_freq_khz, cpu_model, measure_interleaved, measure_latency, provenance
from tests.subnets.fake_family import FakeFamily

FAST: dict[str, Any] = {"warmup": 1, "repeats": 2}


def build(
    family: ModelFamily, pes: Any = ("cpu",), *, val: Any = None, calib: Any = None, progress: Any = None,
    **options: Any,
) -> Catalog:
    """``build_catalog`` with its options given as keywords (as the tests read best)."""
    return build_catalog(family, BuildOptions(pes=tuple(pes), **options), val=val, calib=calib, progress=progress)


@pytest.fixture(autouse=True)
def fake_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.FACTORIES, "fake", "tests.subnets.fake_family:from_description")


def _data(n: int = 48, seed: int = 0) -> ArrayDataset:
    rng = np.random.default_rng(seed)
    return ArrayDataset(rng.normal(size=(n, 3, 16, 16)).astype(np.float32), rng.integers(0, 4, n), name="synthetic")


def test_measure_latency_records_and_restores_threads() -> None:
    before = torch.get_num_threads()
    module = torch.nn.Conv2d(3, 4, 3)
    rec = measure_latency(module, (1, 3, 8, 8), warmup=1, repeats=5, threads=1)
    assert rec.threads == 1 and rec.repeats == 5 and len(rec.samples) == 5
    assert 0 < rec.median_ms <= rec.p90_ms <= max(rec.samples)
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="repeats"):
        measure_latency(module, (1, 3, 8, 8), repeats=0)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            measure_latency(module, (1, 3, 8, 8), device="cuda")


def test_measure_interleaved_times_every_module() -> None:
    before = torch.get_num_threads()
    small, big = torch.nn.Conv2d(3, 2, 1), torch.nn.Sequential(*[torch.nn.Conv2d(3, 3, 3, padding=1)] * 8)
    recs = measure_interleaved({"small": (small, (1, 3, 8, 8)), "big": (big, (1, 3, 32, 32))}, warmup=1, repeats=4)
    assert set(recs) == {"small", "big"}
    assert all(len(r.samples) == 4 and r.median_ms > 0 for r in recs.values())
    assert recs["big"].input_shape == (1, 3, 32, 32)
    assert torch.get_num_threads() == before


def test_provenance_names_the_machine(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Test CPU 3000\n")
    assert cpu_model(info) == "Test CPU 3000"
    info.write_text("processor\t: 0\nCPU part\t: 0xd03\nHardware\t: ODROID-XU4\n")
    assert cpu_model(info) == "ODROID-XU4"
    prov = provenance(threads=2)
    assert prov["threads"] == 2 and prov["torch"] == torch.__version__ and prov["date"]


def test_evaluate_counts_correct_predictions() -> None:
    class Oracle(torch.nn.Module):  # predicts the label stored in pixel [0, 0, 0]
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.one_hot(x[:, 0, 0, 0].long(), 4).float()

    x = np.zeros((10, 3, 4, 4), np.float32)
    y = np.arange(10) % 4
    x[:, 0, 0, 0] = y
    x[7:, 0, 0, 0] = 0  # three wrong (labels 3, 0, 1 -> 0 only right for label 0)
    result = evaluate(Oracle(), ArrayDataset(x, y), batch_size=3)
    assert result.count == 10
    assert result.correct == 8
    assert result.top1 == pytest.approx(0.8)


def test_build_with_validation_and_calibration(tmp_path: Path) -> None:
    family = FakeFamily()
    out = tmp_path / "cat.json"
    messages: list[str] = []
    stale = tmp_path / "cat.json.bn" / "from-an-earlier-build.pt"
    stale.parent.mkdir()
    stale.write_bytes(b"old")
    cat = build(
        family, ["cpu"], candidates=16, measure=6, keep=4, val=_data(), calib=_data(seed=1), seed=3,
        progress=messages.append, out=out, weights={"init": "random", "seed": 0}, fill_dominated=True, **FAST,
    )
    assert len(cat) == 4
    assert any("latency model [cpu]" in m and "held-out" in m for m in messages)
    assert [e.latency["cpu"].ms for e in cat] == sorted(e.latency["cpu"].ms for e in cat)  # fastest first
    # refine: every kept subnet carries measured figures
    for e in cat:
        assert e.latency["cpu"].source == "measured"
        assert e.accuracy is not None and e.accuracy.source == "measured" and e.accuracy.samples == 48
        assert e.bn_stats == f"cat.json.bn/{e.id}.pt"
    cat.save(out)
    back = load_catalog(out)
    assert back.to_dict() == cat.to_dict()
    entry = back.entries[0]
    bn_path = back.bn_stats_path(entry)
    assert bn_path is not None
    stats = load_bn_stats(bn_path)
    assert set(stats) == {"stem_bn.running_mean", "stem_bn.running_var"}
    assert stats["stem_bn.running_mean"].shape == (entry.config["width"],)
    model = RegressionModel.from_dict(back.latency_models["cpu"])
    assert model.error["held_out"]["method"] == "held-out"
    spec = family.spec_from_dict(entry.to_dict())
    assert model.predict_one(family.features(spec)) > 0
    assert back.provenance["build"]["distinct_candidates"] == 16
    assert back.provenance["cpu_model"]
    assert not stale.exists()
    assert sorted(p.name for p in stale.parent.iterdir()) == sorted(f"{e.id}.pt" for e in cat)


def test_without_validation_no_accuracy_is_claimed_and_predictions_are_marked() -> None:
    family = FakeFamily()
    # keep more than were measured (filled past the front): some kept figures must be predictions
    cat = build(family, ["cpu"], candidates=20, measure=4, keep=8, seed=1, refine=False, fill_dominated=True, **FAST)
    assert all(e.accuracy is None for e in cat)
    sources = [e.latency["cpu"].source for e in cat]
    assert sources.count("predicted") >= 4
    assert cat.provenance["build"]["accuracy"].startswith("not claimed")
    # selection by MACs vs latency keeps the biggest subnet (the most MACs is never dominated)
    largest = family.largest()
    assert largest.short_id("fake") in cat.ids


def test_accuracy_predictor_marks_predicted_accuracy() -> None:
    family = FakeFamily()
    cat = build(
        family, ["cpu"], candidates=20, measure=4, keep=8, val=_data(), seed=2, refine=False,
        fill_dominated=True, **FAST,
    )  # fmt: skip
    sources = {e.accuracy.source for e in cat if e.accuracy is not None}
    assert sources <= {"measured", "predicted"}
    assert all(e.accuracy is not None for e in cat)
    assert "predicted" in sources


def test_data_the_family_cannot_take_is_refused_up_front() -> None:
    family = FakeFamily(num_classes=4)
    wrong_labels = ArrayDataset(np.zeros((4, 3, 8, 8), np.float32), np.array([0, 1, 2, 9]), name="v")
    with pytest.raises(CatalogBuildError, match="labels go up to 9, but fake-tiny predicts 4 classes"):
        build(family, candidates=4, measure=2, keep=2, val=wrong_labels)
    gray = ArrayDataset(np.zeros((4, 1, 8, 8), np.float32), np.array([0, 1, 2, 3]), name="v")
    with pytest.raises(CatalogBuildError, match=r"takes \[N, 3, H, W\]"):
        build(family, candidates=4, measure=2, keep=2, val=gray)
    assert family.materialized == 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"candidates": 1}, "--candidates"),
        ({"measure": 1}, "--measure"),
        ({"measure": 30, "candidates": 10}, "cannot exceed"),
        ({"keep": 0}, "--keep"),
        ({"calib": "x"}, "output path"),
        ({"pes": []}, "processing element"),
    ],
)
def test_bad_build_arguments(kwargs: dict, message: str) -> None:
    args = {"candidates": 10, "measure": 4, "keep": 3, **kwargs}
    with pytest.raises(CatalogBuildError, match=message):
        build(FakeFamily(), **args)


def test_reprofile_measures_a_few_and_predicts_the_rest() -> None:
    family = FakeFamily()
    # fill_dominated: six entries whatever timing noise does to the front
    cat = build(family, ["cpu"], candidates=16, measure=6, keep=6, seed=4, fill_dominated=True, **FAST)
    before = cat.to_dict()
    new = reprofile(cat, family, "cpu", measure=3, repeats=2)
    assert cat.to_dict() == before  # the input is untouched
    sources = [e.latency["cpu"].source for e in new]
    assert sources.count("measured") == 3 and sources.count("predicted") == 3
    info = new.latency_models["cpu"]["reprofile"]
    assert info["reference"] == "catalog_ms_cpu" and len(info["measured"]) == 3
    assert info["method"] in ("ratio", "affine") and info["loo"]["n"] == 3
    assert new.latency_models["cpu"]["build"] == cat.latency_models["cpu"]  # the build model kept for the record
    assert "cpu" in new.provenance["reprofiled"]
    # the fastest and slowest (by catalog latency) are among the re-measured
    by_latency = sorted(cat, key=lambda e: e.latency["cpu"].ms)
    assert {by_latency[0].id, by_latency[-1].id} <= set(info["measured"])
    with pytest.raises(CatalogBuildError, match="not 'other'"):
        other = FakeFamily()
        other.name = "other"
        reprofile(cat, other, "cpu")


def _cli_build(tmp_path: Path, *extra: str) -> Path:
    out = tmp_path / "cli.json"
    rc = main(
        ["catalog", "build", "--family", "fake", "--candidates", "10", "--measure", "4", "--keep", "3",
         "--repeats", "2", "--warmup", "1", "--out", str(out), *extra]
    )
    assert rc == 0
    return out


def test_cli_build_show_and_subnets_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    np.savez(tmp_path / "val.npz", x=_data().x, y=_data().y)
    # random weights: accuracy is noise, so the front alone may be one subnet; fill up to K
    out = _cli_build(
        tmp_path, "--random-init", "--val", str(tmp_path / "val.npz"), "--normalize", "none", "--fill-dominated"
    )
    captured = capsys.readouterr()
    assert "sampled 10 distinct candidate subnets" in captured.err
    assert "RANDOM weights" in captured.out
    assert main(["catalog", "show", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "latency model [cpu]" in shown and "held-out" in shown
    assert main(["subnets", "--catalog", str(out), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["pes"] == ["cpu"] and len(data["subnets"]) == 3
    for sub in data["subnets"]:
        assert sub["accuracy"]["source"] == "measured" and sub["accuracy"]["dataset"] == "val.npz"
        assert sub["latency"]["cpu"]["source"] in ("measured", "predicted")
    assert main(["subnets", "--catalog", str(out), "--reprofile", "--measure", "2", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["reprofiled"] is True
    assert [s["latency"]["cpu"]["source"] for s in data["subnets"]].count("measured") == 2


def test_cli_without_val_says_how_to_provide_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = _cli_build(tmp_path, "--random-init")
    err = capsys.readouterr().err
    assert "claim no accuracy" in err and "--val DATA" in err
    assert all(e.accuracy is None for e in load_catalog(out))
    assert main(["subnets", "--catalog", str(out)]) == 0
    assert "no accuracy" in capsys.readouterr().out


def test_cli_weights_rules(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["catalog", "build", "--family", "fake", "--out", str(tmp_path / "c.json")]
    assert main(base) == 1
    assert "--random-init" in capsys.readouterr().err
    assert main([*base, "--weights", str(tmp_path / "missing.pth")]) == 1
    err = capsys.readouterr().err
    assert "not found" in err and "missing.pth" in err and "never downloads" in err
    # a catalog built for one weights file refuses another
    (tmp_path / "a.pth").write_bytes(b"weights A")
    (tmp_path / "b.pth").write_bytes(b"weights B")
    out = _cli_build(tmp_path, "--weights", str(tmp_path / "a.pth"))
    capsys.readouterr()
    cat = load_catalog(out)
    assert cat.weights["path"] == str((tmp_path / "a.pth").resolve())
    family_for_catalog(cat)  # its own weights: accepted
    assert main(["subnets", "--catalog", str(out), "--reprofile", "--weights", str(tmp_path / "b.pth")]) == 1
    assert "rebuild the catalog" in capsys.readouterr().err


def test_cli_rejects_corrupt_and_unknown_catalogs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{ not json")
    assert main(["subnets", "--catalog", str(bad)]) == 1
    assert "not valid JSON" in capsys.readouterr().err
    good = Catalog(family={"name": "fake-tiny", "kind": "fake"}, entries=[]).to_dict()
    good["schema"] = "dynofa.catalog/99"
    bad.write_text(json.dumps(good))
    assert main(["catalog", "show", str(bad)]) == 1
    assert "unknown schema" in capsys.readouterr().err
    with pytest.raises(CatalogError, match="does not exist"):
        load_catalog(tmp_path / "nothing.json")


def test_missing_recorded_weights_and_missing_demo_catalog(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from dynofa.errors import WeightsNotFoundError

    (tmp_path / "w.pth").write_bytes(b"weights")
    out = _cli_build(tmp_path, "--weights", str(tmp_path / "w.pth"))
    (tmp_path / "w.pth").unlink()
    with pytest.raises(WeightsNotFoundError, match="w.pth"):
        family_for_catalog(load_catalog(out))
    capsys.readouterr()
    monkeypatch.setitem(__import__("sys").modules, "subnets.demo", None)  # as if not installed
    assert main(["subnets"]) == 1
    assert "pass --catalog FILE" in capsys.readouterr().err


def test_subnets_reprofiles_a_catalog_measured_elsewhere(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = _cli_build(tmp_path, "--random-init")
    capsys.readouterr()
    assert main(["subnets", "--catalog", str(out), "--json"]) == 0  # built here: shown as is
    assert json.loads(capsys.readouterr().out)["reprofiled"] is False
    data = json.loads(out.read_text())
    data["provenance"]["host"] = "another-board"
    out.write_text(json.dumps(data))
    assert main(["subnets", "--catalog", str(out), "--json", "--measure", "2"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["reprofiled"] is True and "measured on another machine" in captured.err
    assert main(["subnets", "--catalog", str(out), "--json", "--no-reprofile"]) == 0
    assert json.loads(capsys.readouterr().out)["reprofiled"] is False


def test_cli_processing_elements(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cli.commands.catalog import processing_elements
    from governors.platform import detect_platform

    pes, affinity = processing_elements(None)
    assert pes[0] in detect_platform("/").pe_names()
    assert processing_elements(["cpu", "cpu"]) == (["cpu"], {})
    base = ["catalog", "build", "--family", "fake", "--random-init", "--out", str(tmp_path / "c.json")]
    assert main([*base, "--pe", "npu"]) == 1
    assert "unknown processing element 'npu'" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main([*base, "--pe", "gpu"]) == 1
        assert "needs CUDA" in capsys.readouterr().err


def test_cpu_frequency_is_recorded_with_the_latency(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for cpu, khz in ((0, "1400000"), (1, "2000000"), (2, "garbage")):
        folder = tmp_path / "sys/devices/system/cpu" / f"cpu{cpu}" / "cpufreq"
        folder.mkdir(parents=True)
        (folder / "scaling_cur_freq").write_text(khz + "\n")
    assert cpu_freq_khz([0], root=tmp_path) == 1400000
    assert cpu_freq_khz(None, root=tmp_path) == 2000000
    assert cpu_freq_khz([2, 7], root=tmp_path) is None
    import subnets.offline.measuring as measuring
    import subnets.reprofile as reprofiling

    for module in (measuring, reprofiling):
        monkeypatch.setattr(module, "cpu_freq_khz", lambda cpus=None, root="/": 1800000)
    cat = build(FakeFamily(), ["cpu"], candidates=10, measure=3, keep=4, refine=False, **FAST)
    assert {e.latency["cpu"].freq_khz for e in cat} == {1800000}
    assert {e.latency["cpu"].freq_khz for e in reprofile(cat, FakeFamily(), "cpu", 2, repeats=1)} == {1800000}


def test_build_on_two_processing_elements() -> None:
    cat = build(FakeFamily(), ["cpu-big", "cpu-little"], candidates=12, measure=4, keep=4, seed=5, **FAST)
    assert cat.pes() == ["cpu-big", "cpu-little"]
    assert all(set(e.latency) == {"cpu-big", "cpu-little"} for e in cat)
    assert set(cat.latency_models) == {"cpu-big", "cpu-little"}
    assert cat.provenance["build"]["primary_pe"] == "cpu-big"


def test_saved_catalogs_are_readable_by_other_users(tmp_path: Path) -> None:
    import os
    import stat

    old = os.umask(0o022)
    try:
        path = build(FakeFamily(), candidates=4, measure=2, keep=2, **FAST).save(tmp_path / "c.json")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # not mkstemp's 0600: the daemon's user reads it


def _dominated(cat: Catalog) -> list[str]:
    def fig(e: Any) -> tuple[float, float]:
        return (e.accuracy.top1, e.latency["cpu"].ms)

    return [
        e.id
        for e in cat.entries
        for o in cat.entries
        if o is not e and fig(o)[0] >= fig(e)[0] and fig(o)[1] <= fig(e)[1] and fig(o) != fig(e)
    ]


def test_only_the_pareto_front_is_kept_unless_asked_to_fill() -> None:
    family = FakeFamily()
    front_only = build(family, ["cpu"], candidates=20, measure=20, keep=12, val=_data(), seed=3, **FAST)
    assert _dominated(front_only) == []
    filled = build(
        family, ["cpu"], candidates=20, measure=20, keep=12, val=_data(), seed=3, fill_dominated=True, **FAST
    )
    assert len(filled) == 12
    assert len(front_only) <= len(filled)


def test_kept_subnets_are_timed_per_batch_size_and_the_rule_is_checked() -> None:
    from subnets.offline.measuring import check_batch

    assert check_batch([1, 4]) == 2 and check_batch([1, 8, 32]) == 20 and check_batch([1, 2]) == 3
    cat = build(FakeFamily(), ["cpu"], candidates=12, measure=4, keep=4, seed=2, batch_sizes=(1, 4, 8), **FAST)
    for e in cat:
        lat = e.latency["cpu"]
        assert sorted(lat.batch) == [4, 8] and all(b.source == "measured" for b in lat.batch.values())
        assert e.latency_ms("cpu", 8) == lat.batch[8].ms and e.latency_ms("cpu", 1) == lat.ms
    assert cat.batch_sizes("cpu") == [1, 4, 8]
    record = cat.provenance["build"]["batch"]
    assert record["sizes"] == [1, 4, 8]
    check = record["check"]["cpu"]
    assert check["batch"] == 6 and len(check["subnets"]) == min(3, len(cat)) and check["mape_pct"] >= 0
    # without extra batch sizes the catalog says so, and has batch-1 figures only
    plain = build(FakeFamily(), ["cpu"], candidates=6, measure=2, keep=2, refine=False, **FAST)
    assert plain.provenance["build"]["batch"] == {"sizes": [1]} and all(not e.latency["cpu"].batch for e in plain)


def test_reprofile_re_times_every_batch_size_of_the_catalog() -> None:
    family = FakeFamily()
    cat = build(family, ["cpu"], candidates=12, measure=6, keep=5, seed=3, fill_dominated=True,
                batch_sizes=(1, 4), **FAST)  # fmt: skip
    new = reprofile(cat, family, "cpu", measure=2, repeats=2)
    sources = [e.latency["cpu"].batch[4].source for e in new]
    assert sources.count("measured") == 2 and sources.count("predicted") == len(cat) - 2
    info = new.latency_models["cpu"]["reprofile"]
    assert info["batch"]["4"]["reference"] == "catalog_ms_cpu_b4" and len(info["batch"]["4"]["measured"]) == 2
    measured_at_1 = {e.id for e in new if e.latency["cpu"].source == "measured"}
    assert measured_at_1 == {e.id for e in new if e.latency["cpu"].batch[4].source == "measured"}


def test_the_thread_clock_leaves_out_time_the_thread_does_not_run() -> None:
    import time

    class Sleeper(torch.nn.Module):  # waits without using the CPU, like a preempted inference
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            time.sleep(0.02)
            return x

    shape = (1, 3, 4, 4)
    wall = measure_interleaved({"s": (Sleeper(), shape)}, warmup=0, repeats=3, threads=1)["s"]
    cpu = measure_interleaved({"s": (Sleeper(), shape)}, warmup=0, repeats=3, threads=1, clock="thread")["s"]
    assert wall.median_ms >= 20.0 and cpu.median_ms < 10.0 and cpu.clock == "thread"
    with pytest.raises(ValueError, match="clock must be one of"):
        measure_interleaved({"s": (Sleeper(), shape)}, repeats=1, clock="sundial")
    with pytest.raises(ValueError, match="one torch thread"):
        measure_interleaved({"s": (Sleeper(), shape)}, repeats=1, threads=2, clock="thread")


def test_a_figure_follows_the_quiet_runs_and_reports_its_repeatability() -> None:
    """A pass slowed by interference (here: a sleep) barely moves the figure but shows as poor repeatability."""
    import time

    from subnets.timing import FIGURE_PERCENTILE, measure_figures, percentile

    class Loaded(torch.nn.Module):  # the second pass runs under "load": 5x slower
        calls = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            Loaded.calls += 1
            time.sleep(0.002 if Loaded.calls <= 5 else 0.01)
            return x

    fig = measure_figures({"m": (Loaded(), (1, 3, 4, 4))}, warmup=0, repeats=5, passes=2, threads=1)["m"]
    assert len(fig.passes) == 2 and all(len(p) == 5 for p in fig.passes)
    assert fig.ms == percentile(fig.samples, FIGURE_PERCENTILE) and 2.0 <= fig.ms < 5.0
    assert fig.repeatability > 0.5  # even pass ~2 ms, odd pass ~10 ms
    single = measure_figures({"m": (torch.nn.Identity(), (1, 3, 4, 4))}, warmup=0, repeats=1)["m"]
    assert single.repeatability != single.repeatability  # NaN: one run cannot be split
    with pytest.raises(ValueError, match="passes"):
        measure_figures({"m": (torch.nn.Identity(), (1, 3, 4, 4))}, passes=0)


def test_the_build_records_how_its_figures_were_taken_and_how_well_they_repeat() -> None:
    cat = build(FakeFamily(), ["cpu"], candidates=6, measure=3, keep=2, seed=1, batch_sizes=(1, 4),
                **{**FAST, "repeats": 2, "passes": 2})  # fmt: skip
    timing = cat.provenance["build"]["timing"]
    assert timing["passes"] == 2 and timing["figure"].startswith("10th percentile")
    assert set(timing["repeatability_pct"]["cpu"]) == {"1", "2", "4"}  # 2: where the batch rule is checked
    assert all(v is not None and v >= 0 for v in timing["repeatability_pct"]["cpu"].values())


def test_blended_candidates_reach_both_ends_of_the_space() -> None:
    """Uniform draws pile up in the middle of an OFA space; blends towards the ends cover the extremes."""
    import random

    from subnets.demo import ofa_demo_family
    from subnets.family import SubnetSpec
    from subnets.offline.candidates import blended, sample

    a = SubnetSpec({"ks": [3, 5], "d": [1, 2]}, 16)
    b = SubnetSpec({"ks": [7, 7], "d": [4, 4]}, 32)
    rng = random.Random(0)
    assert blended(a, b, 1.0, rng) == b and blended(a, b, 0.0, rng) == a
    mixed = [blended(a, b, 0.5, rng) for _ in range(50)]
    assert any(m.config["ks"] == [3, 7] or m.config["ks"] == [7, 5] for m in mixed)  # item by item
    family = ofa_demo_family()
    macs = {}
    for fraction in (0.0, 1.0):
        macs[fraction] = [c.macs for c in sample(family, 120, random.Random(1), lambda _m: None, blend=fraction)]
    low, high = min(macs[0.0]), max(macs[0.0])  # the ends (largest and smallest are always in)

    def near_ends(values: list[int]) -> int:
        return sum(v < low + 0.15 * (high - low) or v > high - 0.15 * (high - low) for v in values)

    assert near_ends(macs[1.0]) > 2 * near_ends(macs[0.0])
    with pytest.raises(CatalogBuildError, match="--blend"):
        BuildOptions(blend=1.5).check()
