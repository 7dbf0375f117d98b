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
