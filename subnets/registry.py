"""Rebuild a model family from a catalog's ``family`` object.

Families are registered by name prefix with the module that implements them, imported
only when asked for (torch and ofa are heavy).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from dynofa.errors import CatalogError
from subnets.family import ModelFamily

#: family kind -> "module:factory"; a factory takes the catalog's family object (and weights path)
FACTORIES: dict[str, str] = {
    "grouped": "subnets.grouped:grouped_family",
    "ofa-mbv3": "subnets.ofa_family:mbv3_from_description",
    "ofa-proxyless": "subnets.ofa_family:proxyless_from_description",
    "ofa-resnet50": "subnets.ofa_family:resnet50_from_description",
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
