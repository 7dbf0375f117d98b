"""An app's own latency against the catalog (its correction), learnt on a quiet PE, apart from contention."""

from __future__ import annotations

import pytest

from dynofa.budget import Budget
from dynofa.catalog import Accuracy, CatalogEntry, Latency
from dynofa.operating_point import OperatingPoint
from governors.contention import LoadView
from governors.latency_model import AppCorrection, LatencyModelError, scaled
from governors.policies import AppRequest, DecisionInput, ModelBasedPolicy, PeInfo
from service.inbox import ControlInbox

CPU = PeInfo("cpu", "cpu", (), cpus=2)
QUIET = LoadView(other_util={"cpu": 0.0})
BUSY = LoadView(other_util={"cpu": 1.0})  # both cores taken by others: the contention model's prior is 1.5


def entry(sid: str, acc: float, ms: float, ms32: float) -> CatalogEntry:
    lat = Latency(ms=ms, source="measured", batch={32: Latency(ms=ms32, source="measured")})
    return CatalogEntry(id=sid, config={}, resolution=32, macs=1, params=0, latency={"cpu": lat},
                        accuracy=Accuracy(top1=acc, source="measured"))


ENTRIES = (entry("small", 0.6, 2.0, 20.0), entry("large", 0.8, 4.0, 40.0))


def test_the_correction_is_the_median_of_quiet_ratios_once_enough_were_seen() -> None:
    c = AppCorrection(window=16, min_samples=4)
    for _ in range(3):
        c.observe("a", "cpu", 1, 13.0, 10.0, quiet=True)
    assert c.factor("a", "cpu", 1) == 1.0  # not yet known: the catalog figure as it is
    c.observe("a", "cpu", 1, 13.0, 10.0, quiet=True)
    assert c.factor("a", "cpu", 1) == pytest.approx(1.3)
    c.observe("a", "cpu", 1, 1e6, 10.0, quiet=True)  # one wild forward: clamped, and outvoted
    assert c.factor("a", "cpu", 1) == pytest.approx(1.3)
    for _ in range(20):  # other load on the PE: contention, not the app's own latency
        c.observe("a", "cpu", 1, 40.0, 10.0, quiet=False)
    assert c.factor("a", "cpu", 1) == pytest.approx(1.3)
    assert c.factor("a", "cpu", 32) == 1.0 and c.factor("b", "cpu", 1) == 1.0  # per app and batch size
    assert c.to_dict("a") == {"cpu": {"1": {"factor": 1.3, "samples": 5, "held": 20}}}
    for _ in range(16):  # a broken figure cannot take it past its bounds
        c.observe("a", "cpu", 1, 1e6, 10.0, quiet=True)
    assert c.factor("a", "cpu", 1) == c.bounds[1]
    c.forget("a")
    assert c.factor("a", "cpu", 1) == 1.0 and c.to_dict("a") == {}
    with pytest.raises(LatencyModelError):
        AppCorrection(window=4, min_samples=5)


def test_scaled_entry_scales_every_batch_figure_on_that_pe_only() -> None:
    e = scaled(ENTRIES[1], "cpu", 1.5)
    assert e.latency["cpu"].ms == 6.0 and e.latency["cpu"].at_batch(32) == 60.0
    assert ENTRIES[1].latency["cpu"].ms == 4.0  # the catalog's entry is left alone
    assert scaled(ENTRIES[1], "gpu", 1.5) is ENTRIES[1]


def _serve(inbox: ControlInbox, apps: dict[str, tuple[int, float]], load: LoadView, rounds: int) -> None:
    """``rounds`` control steps; in each, every app runs 8 forwards taking ``slow`` x its catalog figure."""
    for _ in range(rounds):
        requests = tuple(AppRequest(a, Budget(latency_ms=1000.0), ENTRIES, batch=b) for a, (b, _) in apps.items())
        decision = inbox.decide(DecisionInput(apps=requests, pes=(CPU,), load=load))
        inbox.decided(decision)
        for _ in range(8):
            for a, (batch, slow) in apps.items():
                point = decision.points[a]
                ms = next(e for e in ENTRIES if e.id == point.subnet).latency["cpu"].at_batch(batch) * slow
                inbox.observe(a, OperatingPoint(subnet=point.subnet, pe="cpu"), ms)


def test_two_apps_with_their_own_bias_are_both_predicted_and_contention_reads_contention() -> None:
    """At batch 1 an app's forwards take 1.3x the figure (idle gaps between its requests), at batch 32
    0.8x: one contention estimate per PE cannot be right for both; each app's correction is."""
    policy = ModelBasedPolicy()
    inbox = ControlInbox(policy)
    apps = {"one": (1, 1.3), "batched": (32, 0.8)}
    _serve(inbox, apps, QUIET, 40)
    pred = inbox.predictions()
    for name, (batch, slow) in apps.items():
        assert pred[name]["correction"]["cpu"][str(batch)]["factor"] == pytest.approx(slow), pred[name]
        assert pred[name]["measured_over_predicted"]["median"] == pytest.approx(1.0, abs=0.02), pred[name]
        assert pred[name]["measured_over_catalog"]["median"] == pytest.approx(slow), pred[name]
    assert policy.state()["contention"]["cpu"]["slowdown"] == pytest.approx(1.0, abs=0.02)  # a quiet machine

    # others take both cores and every forward takes twice as long: the contention estimate says so,
    # the corrections hold (they are the apps' own latency, not the load)
    _serve(inbox, {a: (b, 2.0 * s) for a, (b, s) in apps.items()}, BUSY, 20)
    pred = inbox.predictions()
    assert policy.state()["contention"]["cpu"]["slowdown"] == pytest.approx(2.0, rel=0.05)
    for name, (batch, slow) in apps.items():
        assert pred[name]["correction"]["cpu"][str(batch)]["factor"] == pytest.approx(slow), pred[name]
        assert pred[name]["correction"]["cpu"][str(batch)]["held"] == 160
        assert pred[name]["measured_over_predicted"]["median"] == pytest.approx(1.0, abs=0.05), pred[name]


def test_without_the_correction_the_per_pe_estimate_is_wrong_for_both_apps() -> None:
    """The same two apps with the correction switched off (it never learns): the failure it exists for."""
    inbox = ControlInbox(ModelBasedPolicy(), correction=AppCorrection(window=1, min_samples=1, bounds=(1.0, 1.0)))
    apps = {"one": (1, 1.3), "batched": (32, 0.8)}
    _serve(inbox, apps, QUIET, 40)
    pred = inbox.predictions()
    errors = [abs(pred[a]["measured_over_predicted"]["median"] - 1.0) for a in apps]
    assert max(errors) > 0.1, pred  # one estimate per PE: right for one app at best
