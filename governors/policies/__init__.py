"""Policies: choose operating points (subnet, PE, DVFS, threads) from budgets, catalog and monitors.

``make_policy(name, **options)`` builds one by name: ``model-based`` (default),
``dynamic-ofa``, ``bandit``, ``static``. See docs/policies.md. (The oracle is an evaluation
tool in ``benchmarks/sim``, not a policy a daemon can run.)
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

from governors.policies.bandit import BanditPolicy
from governors.policies.base import (
    AppOutcome,
    AppRequest,
    Decision,
    DecisionInput,
    PeInfo,
    Policy,
    PolicyError,
    pes_from_platform,
)
from governors.policies.dynamic_ofa import DynamicOfaPolicy
from governors.policies.model_based import ModelBasedPolicy
from governors.policies.static import StaticPolicy

DEFAULT_POLICY = "model-based"

POLICIES: dict[str, Callable[..., Policy]] = {
    "model-based": ModelBasedPolicy,
    "dynamic-ofa": DynamicOfaPolicy,
    "bandit": BanditPolicy,
    "static": StaticPolicy,
}


SCALARS = {"bool": (bool,), "int": (int,), "float": (int, float), "str": (str,)}


def policy_options(name: str) -> dict[str, tuple[str, Any]]:
    """The options a config file may give policy ``name``: option -> (type, default).

    Only scalar parameters count; objects (latency model, estimator) are for code, not YAML.
    """
    factory = POLICIES.get(name)
    if factory is None:
        raise PolicyError(f"unknown policy {name!r}; choose one of: {', '.join(POLICIES)}")
    options: dict[str, tuple[str, Any]] = {}
    for param in inspect.signature(factory).parameters.values():
        kinds = [k.strip() for k in str(param.annotation).split("|")]
        if param.default is inspect.Parameter.empty or not kinds or not all(k in SCALARS or k == "None" for k in kinds):
            continue
        options[param.name] = (" | ".join(kinds), param.default)
    return options


def _check_option(name: str, option: str, kind: str, value: Any) -> None:
    accepted = [t for k in kind.split(" | ") for t in SCALARS.get(k, ())]
    ok = (value is None and "None" in kind) or (
        isinstance(value, tuple(accepted)) and not (isinstance(value, bool) and bool not in accepted)
    )
    if ok and isinstance(value, float) and not math.isfinite(value):
        ok = False
    if not ok:
        raise PolicyError(f"policy {name!r} option {option} must be {kind.replace('None', 'null')}, got {value!r}")


def _unknown_options(name: str, unknown: list[str]) -> PolicyError:
    known = policy_options(name)
    takes = ", ".join(f"{k} ({t}, default {d!r})" for k, (t, d) in known.items()) or "no options"
    return PolicyError(f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} for policy {name!r}; "
                       f"it takes: {takes}")  # fmt: skip


def make_policy(name: str = DEFAULT_POLICY, **options: Any) -> Policy:
    """Build the policy called ``name`` with its options; a bad name or option raises PolicyError."""
    factory = POLICIES.get(name)
    if factory is None:
        raise PolicyError(f"unknown policy {name!r}; choose one of: {', '.join(POLICIES)}")
    unknown = sorted(set(options) - set(inspect.signature(factory).parameters))
    if unknown:
        raise _unknown_options(name, unknown)
    try:
        return factory(**options)
    except (TypeError, ValueError) as exc:
        raise PolicyError(f"bad option for policy {name!r}: {exc}") from None


def configured_policy(name: str, options: dict[str, Any]) -> Policy:
    """The policy a config file names: only its scalar options (objects are for code), each of its declared type."""
    known = policy_options(name)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise _unknown_options(name, unknown)
    for option, value in options.items():
        _check_option(name, option, known[option][0], value)
    return make_policy(name, **options)


__all__ = [
    "DEFAULT_POLICY",
    "POLICIES",
    "AppOutcome",
    "AppRequest",
    "BanditPolicy",
    "Decision",
    "DecisionInput",
    "DynamicOfaPolicy",
    "ModelBasedPolicy",
    "PeInfo",
    "Policy",
    "PolicyError",
    "StaticPolicy",
    "configured_policy",
    "make_policy",
    "policy_options",
    "pes_from_platform",
]
