"""Policies: choose operating points (subnet, PE, DVFS, threads) from budgets, catalog and monitors.

``make_policy(name, **options)`` builds one by name: ``model-based`` (default),
``dynamic-ofa``, ``bandit``, ``static``. See docs/policies.md. (The oracle is an evaluation
tool in ``benchmarks/sim``, not a policy a daemon can run.)
"""

from __future__ import annotations

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


def make_policy(name: str = DEFAULT_POLICY, **options: Any) -> Policy:
    """Build the policy called ``name`` with its options; a bad name or option raises PolicyError."""
    factory = POLICIES.get(name)
    if factory is None:
        raise PolicyError(f"unknown policy {name!r}; choose one of: {', '.join(POLICIES)}")
    try:
        return factory(**options)
    except TypeError as exc:
        raise PolicyError(f"bad option for policy {name!r}: {exc}") from None


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
    "make_policy",
    "pes_from_platform",
]
