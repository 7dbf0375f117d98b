"""Rebuild a model family from a catalog's ``family`` object, and with the catalog's weights.

Families are registered by name prefix with the module that implements them, imported
only when asked for (torch and ofa are heavy). :func:`family_for_catalog` is the one place
that resolves a catalog's weight file and checks it against the catalog's hash (the pool, the
CLI and re-profiling all go through it).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dynofa.errors import CatalogError, WeightsNotFoundError
from subnets.family import ModelFamily

if TYPE_CHECKING:
    from dynofa.catalog import Catalog

#: family kind -> "module:factory"; a factory takes the catalog's family object (and weights path)
FACTORIES: dict[str, str] = {
    "grouped": "subnets.grouped:grouped_family",
    "ofa-mbv3": "subnets.ofa_family:mbv3_from_description",
    "ofa-proxyless": "subnets.ofa_family:proxyless_from_description",
    "ofa-resnet50": "subnets.ofa_resnet:resnet50_from_description",
}


def family_from_description(description: Mapping[str, Any], weights: str | None = None) -> ModelFamily:
    kind = description.get("kind")
    target = FACTORIES.get(str(kind))
    if target is None:
        raise CatalogError(
            f"unknown model family kind {kind!r}; known kinds: {', '.join(sorted(FACTORIES)) or '(none)'}"
        )
    module_name, factory = target.split(":")
    module = importlib.import_module(module_name)
    family: ModelFamily = getattr(module, factory)(description, weights)
    return family


def catalog_weights_path(catalog: Catalog, weights: str | os.PathLike[str] | None = None) -> Path | None:
    """The weight file a catalog's family needs: ``weights`` if given, else the catalog's ``weights.path``
    (a relative one is relative to the catalog file); None for a catalog built on random initialisation.

    Raises :class:`WeightsNotFoundError` when the file is missing, or when the catalog was built for
    hashed weights but names no file.
    """
    what = f"family {catalog.family.get('name')}"
    recorded = catalog.weights.get("path")
    path: Path | None = None
    if weights is not None:
        path = Path(weights).expanduser()
    elif recorded:
        path = Path(str(recorded)).expanduser()
        if not path.is_absolute() and catalog.path is not None:
            path = catalog.path.parent / path
    if path is None:
        if catalog.weights.get("sha256"):
            raise WeightsNotFoundError(what, [])
        return None
    if not path.is_file():
        raise WeightsNotFoundError(what, [str(path.absolute())])
    return path


def family_for_catalog(catalog: Catalog, weights: str | os.PathLike[str] | None = None) -> ModelFamily:
    """Rebuild the family a catalog was built for, with its weights (checked against the catalog's hash).

    ``weights`` overrides the path recorded in the catalog (see :func:`catalog_weights_path`). A catalog
    built on random initialisation needs no weights: torch is seeded with the catalog's seed first.
    """
    from dynofa.catalog import sha256_file

    path = catalog_weights_path(catalog, weights)
    if path is None:
        if catalog.weights.get("init") == "random":
            import torch

            torch.manual_seed(int(catalog.weights.get("seed", 0)))
        return family_from_description(catalog.family, None)
    catalog.check_weights(sha256_file(path))
    return family_from_description(catalog.family, str(path))
