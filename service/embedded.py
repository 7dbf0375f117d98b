"""Embedded apps on the daemon's side: records, reports, and the decisions pushed to them.

An embedded app hosts its own weight-shared pool (``subnets.embedded.EmbeddedRuntime``); the
daemon keeps the same :class:`~service.apps.AppRecord` for it as for a served app, so the policy,
the control loop, ``state``/``status``/``top``/plots see both alike. What differs is the way in
and out: latencies arrive in batches (``report``, which also renews a lease), and a decided point
is pushed on the telemetry topic ``decision/<app>/`` instead of swapping a handle in the daemon.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from dynofa import protocol
from dynofa.budget import Budget
from dynofa.operating_point import OperatingPoint
from dynofa.protocol import RequestError
from service.apps import AppRecord, Embedded
from service.models import ModelRuntime
from service.tenancy import Owner


def new_record(
    name: str,
    runtime: ModelRuntime,
    subnets: Sequence[str],
    pes: Sequence[str] | None,
    lease_s: float,
    budget: Budget | None,
    owner: Owner,
    point: Mapping[str, Any] | None,
) -> AppRecord:
    """The record of an embedded app whose pool holds ``subnets`` of ``runtime``'s catalog."""
    unknown = [s for s in subnets if not runtime.has(s)]
    if unknown:
        raise RequestError(
            protocol.UNKNOWN_SUBNET,
            f"model {runtime.name!r} has no subnet {', '.join(map(repr, unknown))}; an embedded app's pool must "
            f"hold subnets of the catalog the daemon serves as {runtime.name!r} (see the subnets op)",
        )
    chosen = list(pes) if pes else list(runtime.pes)
    bad = [pe for pe in chosen if pe not in runtime.pes]
    if bad:
        raise RequestError(
            protocol.BAD_REQUEST,
            f"field 'pes': {', '.join(bad)} not served for model {runtime.name!r} (it is served on "
            f"{', '.join(runtime.pes)})",
        )
    wanted = set(subnets)
    record = AppRecord(
        name=name, model=runtime.name, budget=budget, owner=owner,
        entries=tuple(e for e in runtime.catalog.entries if e.id in wanted), pes=tuple(chosen),
        embedded=Embedded(lease_s=lease_s),
    )  # fmt: skip
    resumed = _point(point) if point is not None else None
    # an app re-registering (the daemon restarted) keeps the point it runs at; a new one starts at the best
    record.point = resumed if resumed is not None and record.can_run(resumed) else OperatingPoint(
        subnet=record.most_accurate(), pe=record.pes[0]
    )
    return record


def _point(data: Mapping[str, Any]) -> OperatingPoint | None:
    try:
        return OperatingPoint.from_dict(dict(data))
    except (KeyError, TypeError, ValueError):
        raise RequestError(
            protocol.BAD_REQUEST, "field 'point' must be an operating point: {\"subnet\": ..., \"pe\": ...}"
        ) from None


def observations(record: AppRecord, samples: Sequence[tuple[str, str, float]]) -> list[tuple[OperatingPoint, float]]:
    """Check a report's samples against what the app may run; (point, latency) for each."""
    if record.embedded is None:
        raise RequestError(
            protocol.BAD_REQUEST, f"app {record.name!r} is a served app; report is for embedded apps"
        )
    base = record.point or OperatingPoint(subnet=record.most_accurate(), pe=record.pes[0])
    out = []
    for i, (subnet, pe, latency_ms) in enumerate(samples):
        point = replace(base, subnet=subnet, pe=pe)
        if not record.can_run(point):
            raise RequestError(
                protocol.BAD_REQUEST,
                f"samples[{i}]: app {record.name!r} registered no subnet {subnet!r} on {pe!r}; it registered "
                f"{', '.join(e.id for e in record.entries)} on {', '.join(record.pes)}",
            )
        out.append((point, latency_ms))
    return out


def decision(record: AppRecord, cpus: Mapping[str, Sequence[int]], epoch: float) -> dict[str, Any]:
    """What is pushed to (and returned to) an embedded app: its decided point, numbered within ``epoch``
    (this daemon instance's start time: a restarted daemon numbers from 0 again)."""
    assert record.embedded is not None and record.point is not None
    return {
        "app": record.name,
        "epoch": epoch,
        "seq": record.embedded.seq,
        "point": record.point.to_dict(),
        "cpus": list(cpus.get(record.point.pe, ())),  # the PE's CPUs, for the app's thread affinity
    }


def refusal(record: AppRecord, point: OperatingPoint) -> str:
    return (
        f"policy chose {point.subnet} on {point.pe} for {record.name}, which its "
        f"{'pool' if record.embedded is not None else 'model ' + record.model} cannot run "
        f"(it has {', '.join(e.id for e in record.entries)} on {', '.join(record.pes)}); refused, it stays at "
        f"{record.point.subnet if record.point else '-'}"
    )
