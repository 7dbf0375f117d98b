from __future__ import annotations

import json
from pathlib import Path

import pytest

from dynofa.catalog import SCHEMA, Accuracy, Catalog, CatalogEntry, Latency, load_catalog
from dynofa.errors import CatalogError, UnknownSubnetError


def _catalog() -> Catalog:
    entries = [
        CatalogEntry(
            id=f"s{i}",
            config={"ks": [3] * 4, "e": [3] * 4, "d": [2]},
            resolution=128 + 32 * i,
            macs=1000 * (i + 1),
            params=500,
            latency={"cpu": Latency(ms=5.0 + i, source="measured" if i % 2 else "predicted", threads=1)},
            accuracy=Accuracy(top1=0.5 + i / 10, source="measured", dataset="digits-val", samples=360),
        )
        for i in range(3)
    ]
    return Catalog(family={"name": "test", "kind": "test"}, entries=entries, weights={"sha256": "ab" * 32})


def test_round_trip(tmp_path: Path) -> None:
    cat = _catalog()
    path = cat.save(tmp_path / "c.json")
    back = load_catalog(path)
    assert back.to_dict() == cat.to_dict()
    assert back.get("s1").latency["cpu"].source == "measured"
    assert back.pes() == ["cpu"]
    assert json.loads(path.read_text())["schema"] == SCHEMA


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.update(schema="dynofa.catalog/99"), "unknown schema"),
        (lambda d: d["subnets"][0].update(resolution="big"), "subnets[0].resolution"),
        (lambda d: d["subnets"][1]["latency"]["cpu"].update(ms=-1), "subnets[1].latency.cpu.ms"),
        (lambda d: d["subnets"][1]["latency"]["cpu"].update(source="guessed"), "latency.cpu.source"),
        (lambda d: d["subnets"][2]["accuracy"].update(top1=1.5), "accuracy.top1"),
        (lambda d: d["subnets"][2].update(id="s0"), "duplicate subnet id"),
        (lambda d: d.update(subnets=[]), "non-empty list"),
        (lambda d: d.pop("family"), "family"),
    ],
)
def test_rejects_corrupt(tmp_path: Path, mutate, message: str) -> None:
    data = _catalog().to_dict()
    mutate(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(CatalogError, match=message.replace("[", r"\[").replace("]", r"\]")) as info:
        load_catalog(path)
    assert str(path) in str(info.value)


def test_rejects_truncated_and_missing(tmp_path: Path) -> None:
    path = _catalog().save(tmp_path / "c.json")
    path.write_text(path.read_text()[:100])
    with pytest.raises(CatalogError, match="not valid JSON"):
        load_catalog(path)
    with pytest.raises(CatalogError, match="does not exist"):
        load_catalog(tmp_path / "nope.json")


def test_other_weights_and_unknown_subnet() -> None:
    cat = _catalog()
    with pytest.raises(CatalogError, match="rebuild the catalog"):
        cat.check_weights("cd" * 32)
    cat.check_weights("ab" * 32)
    with pytest.raises(UnknownSubnetError, match="s0, s1, s2"):
        cat.get("nope")


def _batched() -> Latency:
    return Latency(
        ms=2.0,
        source="measured",
        batch={8: Latency(ms=9.0, source="measured"), 32: Latency(ms=33.0, source="predicted")},
    )


def test_latency_at_a_batch_size_uses_the_figures_and_interpolates_between_them() -> None:
    lat = _batched()
    assert [lat.at_batch(b) for b in (1, 8, 32)] == [2.0, 9.0, 33.0]  # figures as they are
    assert lat.at_batch(4) == pytest.approx(2.0 + 7.0 * 3 / 7)  # linear between 1 and 8
    assert lat.at_batch(20) == pytest.approx(9.0 + 24.0 * 12 / 24)  # between 8 and 32
    assert lat.at_batch(64) == pytest.approx(33.0 + 1.0 * 32)  # beyond: the last interval's per-image cost
    flat = Latency(ms=5.0, source="measured", batch={16: Latency(ms=4.0, source="measured")})
    assert flat.at_batch(32) == pytest.approx(4.0 + 0.5 * 4.0 / 16 * 16)  # noise cannot make images free
    assert Latency(ms=3.0, source="measured").at_batch(4) == 12.0  # no batch figures: no batching gain assumed
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="batch size"):
            lat.at_batch(bad)  # type: ignore[arg-type]


def test_batch_figures_round_trip_and_are_validated(tmp_path: Path) -> None:
    cat = _catalog()
    first = cat.entries[0]
    cat.entries[0] = CatalogEntry(**{**first.__dict__, "latency": {"cpu": _batched()}})
    back = load_catalog(cat.save(tmp_path / "c.json"))
    assert back.to_dict() == cat.to_dict()
    assert back.latency_ms("s0", "cpu", 20) == pytest.approx(21.0)
    assert back.get("s0").latency_ms("gpu", 4) is None
    assert back.batch_sizes("cpu") == [1]  # only s0 has batch figures
    assert _catalog().entries[1].latency_ms("cpu", 3) == pytest.approx(18.0)
    data = cat.to_dict()
    for key, value, message in (
        ("1", {"ms": 1.0, "source": "measured"}, "batch size >= 2"),
        ("x", {"ms": 1.0, "source": "measured"}, "batch size >= 2"),
        ("4", {"ms": 0, "source": "measured"}, r"latency.cpu.batch.4.ms"),
        ("4", {"ms": 1.0, "source": "measured", "batch": {}}, "already a batch figure"),
    ):
        bad = json.loads(json.dumps(data))
        bad["subnets"][0]["latency"]["cpu"]["batch"] = {key: value}
        path = tmp_path / "bad.json"
        path.write_text(json.dumps(bad))
        with pytest.raises(CatalogError, match=message):
            load_catalog(path)


def test_bundled_catalogs_name_their_weights_relative_to_themselves() -> None:
    # a catalog built in one checkout once named its weights by that checkout's absolute path: every other
    # install then failed to find them (the file ships beside the catalog)
    import subnets

    demo = Path(subnets.__file__).parent / "data" / "demo"
    catalogs = sorted(demo.glob("catalog-*.json"))
    assert catalogs
    for path in catalogs:
        weights = json.loads(path.read_text()).get("weights") or {}
        if "path" in weights:
            assert not Path(weights["path"]).is_absolute(), (path.name, weights["path"])
            assert (demo / weights["path"]).is_file(), (path.name, weights["path"])
