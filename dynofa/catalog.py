"""The catalog: pre-sampled subnets with their latency, accuracy and provenance.

A catalog is one human-readable JSON file (schema ``dynofa.catalog/1``, documented in
``docs/catalog.md``). BN statistics, when a subnet carries its own, live in a sidecar
file named by ``bn_stats`` relative to the catalog file. Loading validates everything
and raises :class:`~dynofa.errors.CatalogError` naming the file and the field.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dynofa.errors import CatalogError, UnknownSubnetError
from dynofa.paths import write_json_atomic

SCHEMA = "dynofa.catalog/1"
LATENCY_SOURCES = ("measured", "predicted")
ACCURACY_SOURCES = ("measured", "predicted")


@dataclass(frozen=True)
class Latency:
    """Latency of one subnet on one processing element: ``ms`` for one image (batch 1).

    ``batch`` holds the latency of one forward of ``b`` images for other batch sizes ``b`` (each a
    :class:`Latency` of its own, measured or predicted); :meth:`at_batch` reads any batch size
    from them (see there). Catalogs without ``batch`` figures still load (batch 1 only).
    """

    ms: float
    source: str  # "measured" or "predicted"
    threads: int = 1
    freq_khz: int | None = None  # frequency the figure was taken (or predicted) at, if known
    batch: Mapping[int, Latency] = field(default_factory=dict, hash=False)  # batch size (>= 2) -> its latency

    def at_batch(self, batch: int = 1) -> float:
        """Milliseconds for one forward of ``batch`` images: the one batch-scaling rule of dynofa.

        A batch size with a figure returns it. Between two batch sizes with figures the latency is
        interpolated linearly in the batch size (per-batch overheads plus a per-image cost, which is
        what the measurements show piecewise); beyond the largest it grows by the per-image cost of
        the last interval (never less than the average per-image cost at the largest batch times
        0.5, so noise cannot make extra images free). With no batch figures at all: ``ms * batch``,
        the safe assumption that batching gains nothing.
        """
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch size must be an integer >= 1, got {batch!r}")
        points = self.batch_points()
        if batch in points:
            return points[batch]
        sizes = sorted(points)
        if len(sizes) == 1:
            return self.ms * batch
        for low, high in zip(sizes, sizes[1:], strict=False):
            if low < batch < high:
                t_low, t_high = points[low], points[high]
                return t_low + (t_high - t_low) * (batch - low) / (high - low)
        low, high = sizes[-2], sizes[-1]
        per_image = max((points[high] - points[low]) / (high - low), 0.5 * points[high] / high)
        return points[high] + per_image * (batch - high)

    def batch_points(self) -> dict[int, float]:
        """Every batch size with a figure (1 included) -> milliseconds."""
        points = {1: self.ms}
        points.update({int(b): lat.ms for b, lat in self.batch.items()})
        return points

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ms": self.ms, "source": self.source, "threads": self.threads, "freq_khz": self.freq_khz}
        if self.batch:
            out["batch"] = {str(b): lat.to_dict() for b, lat in sorted(self.batch.items())}
        return out


@dataclass(frozen=True)
class Accuracy:
    """Top-1 accuracy (a fraction) and how it was obtained."""

    top1: float
    source: str  # "measured" (on held-out data) or "predicted" (by a predictor fitted on measured ones)
    dataset: str = ""
    samples: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"top1": self.top1, "source": self.source, "dataset": self.dataset, "samples": self.samples}


@dataclass(frozen=True)
class CatalogEntry:
    """One pre-sampled subnet."""

    id: str
    config: dict[str, Any]
    resolution: int
    macs: int
    params: int
    latency: dict[str, Latency] = field(default_factory=dict)  # keyed by processing element
    accuracy: Accuracy | None = None
    bn_stats: str | None = None  # sidecar file, relative to the catalog file

    def latency_ms(self, pe: str, batch: int = 1) -> float | None:
        """Milliseconds for one inference of ``batch`` images on ``pe`` (None: no figure for ``pe``).

        At the frequency the figure was taken at (``latency[pe].freq_khz``); see :meth:`Latency.at_batch`.
        """
        lat = self.latency.get(pe)
        return None if lat is None else lat.at_batch(batch)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "config": self.config,
            "resolution": self.resolution,
            "macs": self.macs,
            "params": self.params,
            "latency": {pe: lat.to_dict() for pe, lat in sorted(self.latency.items())},
            "accuracy": None if self.accuracy is None else self.accuracy.to_dict(),
            "bn_stats": self.bn_stats,
        }


@dataclass
class Catalog:
    """A validated catalog. ``family`` names the model family and its construction arguments."""

    family: dict[str, Any]
    entries: list[CatalogEntry]
    weights: dict[str, Any] = field(default_factory=dict)  # {"path", "sha256"} or {"init": "random", "seed"}
    provenance: dict[str, Any] = field(default_factory=dict)
    latency_models: dict[str, Any] = field(default_factory=dict)  # per PE: fitted regression + its error
    path: Path | None = None

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for entry in self.entries:
            if entry.id in seen:
                raise CatalogError(f"{self._where()}: duplicate subnet id {entry.id!r}")
            seen.add(entry.id)

    def __iter__(self) -> Iterator[CatalogEntry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def ids(self) -> list[str]:
        return [e.id for e in self.entries]

    def get(self, subnet_id: str) -> CatalogEntry:
        for entry in self.entries:
            if entry.id == subnet_id:
                return entry
        raise UnknownSubnetError(
            f"unknown subnet {subnet_id!r}; this catalog has: {', '.join(self.ids) or '(none)'}"
        )

    def pes(self) -> list[str]:
        return sorted({pe for e in self.entries for pe in e.latency})

    def latency_ms(self, subnet_id: str, pe: str, batch: int = 1) -> float | None:
        """Milliseconds for one inference of ``batch`` images of ``subnet_id`` on ``pe`` (None: no figure)."""
        return self.get(subnet_id).latency_ms(pe, batch)

    def batch_sizes(self, pe: str) -> list[int]:
        """Batch sizes every subnet has a figure for on ``pe`` (always 1)."""
        sizes: set[int] | None = None
        for entry in self.entries:
            lat = entry.latency.get(pe)
            points = set(lat.batch_points()) if lat is not None else {1}
            sizes = points if sizes is None else sizes & points
        return sorted(sizes or {1})

    def bn_stats_path(self, entry: CatalogEntry) -> Path | None:
        if entry.bn_stats is None:
            return None
        base = self.path.parent if self.path is not None else Path.cwd()
        return base / entry.bn_stats

    def check_weights(self, sha256: str) -> None:
        """Refuse to pair this catalog with weights it was not built for."""
        expected = self.weights.get("sha256")
        if expected and expected != sha256:
            raise CatalogError(
                f"{self._where()} was built for weights with sha256 {expected[:12]}..., "
                f"but the weights given hash to {sha256[:12]}...; rebuild the catalog for these weights"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "family": self.family,
            "weights": self.weights,
            "provenance": self.provenance,
            "latency_models": self.latency_models,
            "subnets": [e.to_dict() for e in self.entries],
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write atomically (temp file + rename) so that a crash never leaves half a catalog."""
        target = Path(path)
        # 0644: the daemon may run as another user than the one who built the catalog
        write_json_atomic(target, self.to_dict(), mode=0o644, sort_keys=False)
        self.path = target
        return target

    def _where(self) -> str:
        return f"catalog {self.path}" if self.path is not None else "catalog"


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_catalog(path: str | os.PathLike[str]) -> Catalog:
    """Load and validate a catalog file."""
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CatalogError(f"catalog file {source} does not exist") from None
    except OSError as exc:
        raise CatalogError(f"cannot read catalog {source}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise CatalogError(
            f"catalog {source} is not UTF-8 text (byte {exc.start}); rebuild it with `dynofa catalog build`"
        ) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CatalogError(f"catalog {source} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    except (ValueError, RecursionError) as exc:  # an integer beyond int()'s digit limit, nesting too deep
        raise CatalogError(f"catalog {source} is not a catalog: {str(exc)[:200]}") from None
    catalog = catalog_from_dict(data, where=str(source))
    catalog.path = source
    return catalog


def catalog_from_dict(data: Any, where: str = "catalog") -> Catalog:
    v = _Validator(where)
    obj = v.mapping(data, "")
    schema = obj.get("schema")
    if schema != SCHEMA:
        raise CatalogError(f"{where}: unknown schema {schema!r}; this dynofa reads {SCHEMA!r}")
    family = v.mapping(obj.get("family"), "family")
    v.string(family.get("name"), "family.name")
    subnets = obj.get("subnets")
    if not isinstance(subnets, list) or not subnets:
        raise CatalogError(f"{where}: 'subnets' must be a non-empty list")
    entries = [_entry(v, item, f"subnets[{i}]") for i, item in enumerate(subnets)]
    try:
        return Catalog(
            family=family,
            entries=entries,
            weights=v.mapping(obj.get("weights", {}), "weights"),
            provenance=v.mapping(obj.get("provenance", {}), "provenance"),
            latency_models=v.mapping(obj.get("latency_models", {}), "latency_models"),
        )
    except CatalogError as exc:
        raise CatalogError(f"{where}: {exc}") from None


def _entry(v: _Validator, data: Any, at: str) -> CatalogEntry:
    obj = v.mapping(data, at)
    latency = {
        v.string(pe, f"{at}.latency key"): _latency(v, lat, f"{at}.latency.{pe}")
        for pe, lat in v.mapping(obj.get("latency", {}), f"{at}.latency").items()
    }
    acc = obj.get("accuracy")
    bn = obj.get("bn_stats")
    return CatalogEntry(
        id=v.string(obj.get("id"), f"{at}.id"),
        config=v.mapping(obj.get("config"), f"{at}.config"),
        resolution=v.integer(obj.get("resolution"), f"{at}.resolution", minimum=1),
        macs=v.integer(obj.get("macs"), f"{at}.macs", minimum=0),
        params=v.integer(obj.get("params"), f"{at}.params", minimum=0),
        latency=latency,
        accuracy=None if acc is None else _accuracy(v, acc, f"{at}.accuracy"),
        bn_stats=None if bn is None else v.string(bn, f"{at}.bn_stats"),
    )


def _latency(v: _Validator, data: Any, at: str, nested: bool = False) -> Latency:
    obj = v.mapping(data, at)
    freq = obj.get("freq_khz")
    batch: dict[int, Latency] = {}
    if "batch" in obj:
        if nested:
            raise CatalogError(f"{v.where}: {at} is already a batch figure; it cannot hold batch figures itself")
        for key, value in v.mapping(obj["batch"], f"{at}.batch").items():
            size = int(key) if isinstance(key, str) and key.isdigit() else 0
            if size < 2:
                raise v.fail(f"{at}.batch key", "a batch size >= 2 (batch 1 is the entry's own ms)", key)
            batch[size] = _latency(v, value, f"{at}.batch.{key}", nested=True)
    return Latency(
        ms=v.number(obj.get("ms"), f"{at}.ms", positive=True),
        source=v.choice(obj.get("source"), f"{at}.source", LATENCY_SOURCES),
        threads=v.integer(obj.get("threads", 1), f"{at}.threads", minimum=1),
        freq_khz=None if freq is None else v.integer(freq, f"{at}.freq_khz", minimum=1),
        batch=batch,
    )


def _accuracy(v: _Validator, data: Any, at: str) -> Accuracy:
    obj = v.mapping(data, at)
    top1 = v.number(obj.get("top1"), f"{at}.top1")
    if not 0.0 <= top1 <= 1.0:
        raise CatalogError(f"{v.where}: {at}.top1 must be a fraction in [0, 1], got {top1}")
    return Accuracy(
        top1=top1,
        source=v.choice(obj.get("source"), f"{at}.source", ACCURACY_SOURCES),
        dataset=str(obj.get("dataset", "")),
        samples=v.integer(obj.get("samples", 0), f"{at}.samples", minimum=0),
    )


class _Validator:
    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, at: str, expected: str, got: Any) -> CatalogError:
        return CatalogError(f"{self.where}: field {at or '(top level)'} must be {expected}, got {got!r}")

    def mapping(self, value: Any, at: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(at, "an object", value)
        return value

    def string(self, value: Any, at: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(at, "a non-empty string", value)
        return value

    def integer(self, value: Any, at: str, minimum: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
            raise self.fail(at, f"an integer >= {minimum}" if minimum is not None else "an integer", value)
        return value

    def number(self, value: Any, at: str, positive: bool = False) -> float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or (positive and value <= 0):
            raise self.fail(at, "a positive finite number" if positive else "a finite number", value)
        return float(value)

    def choice(self, value: Any, at: str, options: Iterable[str]) -> str:
        options = tuple(options)
        if value not in options:
            raise self.fail(at, "one of " + ", ".join(options), value)
        return str(value)
