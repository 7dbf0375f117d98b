"""The header grammar (docs/protocol.md): every input gets its documented code, never an exception.

These run :func:`dynofa.protocol.parse_request` in-process (fast, thousands of examples); the
daemon-level fuzz in test_fuzz_daemon.py sends the same grammar over ZeroMQ.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings

from dynofa import protocol
from dynofa.budget import Budget
from dynofa.errors import BudgetError
from dynofa.protocol import RequestError
from tests.service.grammar import EXPECTED_CODES, any_request, edge_numbers

MAX = 1 << 20


def parse(header: bytes, *extra: bytes) -> protocol.Request:
    return protocol.parse_request([header, *extra], MAX)


def refused(header: bytes, *extra: bytes) -> RequestError:
    with pytest.raises(RequestError) as err:
        parse(header, *extra)
    return err.value


@settings(max_examples=800, deadline=None, database=None)
@given(request=any_request())
def test_any_header_parses_or_gets_a_documented_code(request: tuple[list[bytes], Any]) -> None:
    frames, sent_id = request
    try:
        protocol.parse_request(frames, MAX)
    except RequestError as exc:
        assert exc.code in EXPECTED_CODES, exc
        assert exc.code != protocol.INTERNAL
        if sent_id is not None:
            assert exc.request_id == sent_id, (frames[0][:200], exc)


@settings(max_examples=400, deadline=None, database=None)
@given(value=edge_numbers())
def test_numbers_at_and_beyond_every_limit_in_a_budget(value: Any) -> None:
    for name in ("latency_ms", "min_accuracy", "power_cap_w", "priority"):
        budget = {"latency_ms": 5, name: value} if name != "latency_ms" else {"latency_ms": value}
        text = json.dumps({"v": 1, "op": "set_budget", "id": 9, "app": "a", "budget": budget})
        try:
            request = parse(text.encode())
        except RequestError as exc:
            assert exc.code in (protocol.BAD_BUDGET, protocol.BAD_REQUEST) and exc.request_id == 9
            continue
        try:
            Budget.from_dict(request.args["budget"])
        except BudgetError:
            continue


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ('{"v": 1, "op": "ping", "id": 1, "x": ' + "9" * 5000 + "}", protocol.BAD_REQUEST),
        ('{"v": 1, "op": "feedback", "id": 1, "app": "a", "qoe": 1e309}', protocol.BAD_REQUEST),
        ('{"v": 1, "op": "feedback", "id": 1, "app": "a", "qoe": NaN}', protocol.BAD_REQUEST),
        ('{"v": 1, "op": "set_budget", "id": 1, "app": "a", "budget": {"latency_ms": 1e309}}', protocol.BAD_BUDGET),
        ('{"v": 1, "op": "set_budget", "id": 1, "app": "a", "budget": {"latency_ms": 5, "priority": '
         + "1" * 4000 + "}}", protocol.BAD_BUDGET),  # fmt: skip
        ('{"v": 1, "op": "register", "id": 1, "app": "a", "app": "b"}', protocol.BAD_REQUEST),
        ('{"v": true, "op": "ping", "id": 1}', protocol.UNSUPPORTED_VERSION),
        ('{"v": 1.0, "op": "ping", "id": 1}', protocol.UNSUPPORTED_VERSION),
        ('{"v": 1, "op": "nope", "id": 1}', protocol.UNKNOWN_OP),
        ('{"v": 1, "op": "ping", "id": 1, "zzz": 0}', protocol.BAD_REQUEST),
        ('{"v": 1, "op": "feedback", "id": 1, "app": "a", "qoe": 0.5, "detail": ' + "[" * 40 + "]" * 40 + "}",
         protocol.BAD_REQUEST),  # fmt: skip
        ('{"v": 1, "op": "infer", "id": 1, "app": "a", "dtype": "bogus", "shape": [1]}', protocol.BAD_TENSOR),
    ],
)
def test_each_class_is_refused_with_its_code_and_the_id_echoed(text: str, code: str) -> None:
    err = refused(text.encode())
    assert err.code == code, err
    assert err.request_id == 1


def test_an_element_count_overflow_is_a_bad_tensor_not_an_empty_tensor() -> None:
    # 65536**4 == 2**64: np.prod wraps to 0 and an empty frame used to pass the byte-count check
    header = json.dumps({"v": 1, "op": "infer", "id": 3, "app": "a", "dtype": "float32", "shape": [65536] * 4})
    err = refused(header.encode(), b"")
    assert err.code == protocol.BAD_TENSOR and err.request_id == 3


def test_duplicate_or_invalid_id_is_refused_without_an_echo() -> None:
    assert refused(b'{"v": 1, "op": "ping", "id": 1, "id": 2}').request_id is None
    assert refused(b'{"v": 1, "op": "ping", "id": true}').request_id is None
    assert refused(b'{"v": 1, "op": "ping", "id": ' + b"1" * 30 + b"}").request_id is None


@pytest.mark.parametrize(
    "budget",
    [
        {"latency_ms": 5e-324}, {"latency_ms": 1e308}, {"latency_ms": True}, {"latency_ms": 0},
        {"latency_ms": 5, "power_cap_w": 1e-320}, {"latency_ms": 5, "power_cap_w": 1e6},
        {"latency_ms": 5, "priority": 10**4}, {"latency_ms": 5, "priority": -(10**4)},
        {"latency_ms": 5, "priority": 1.5},
        {"latency_ms": 5, "min_accuracy": True}, {"latency_ms": 5, "min_accuracy": 1.01},
    ],
)  # fmt: skip
def test_budget_values_outside_the_documented_ranges_are_refused(budget: dict[str, Any]) -> None:
    with pytest.raises(BudgetError):
        Budget.from_dict(budget)


def test_budget_values_at_the_documented_limits_are_accepted() -> None:
    Budget.from_dict({"latency_ms": 0.01, "min_accuracy": 1, "power_cap_w": 10_000, "priority": -1000})
    Budget.from_dict({"latency_ms": 3_600_000, "min_accuracy": 0, "power_cap_w": 0.01, "priority": 1000})


def test_too_large_echoes_the_id_of_a_small_header() -> None:
    header = json.dumps({"v": 1, "op": "infer", "id": "big", "app": "a", "dtype": "float32", "shape": [1]})
    with pytest.raises(RequestError) as err:
        protocol.parse_request([header.encode(), bytes(2048)], max_bytes=1024)
    assert err.value.code == protocol.TOO_LARGE and err.value.request_id == "big"


def test_rejections_log_one_line_each_then_go_quiet(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from service.server import RejectionLog
    from service.tenancy import NOBODY

    rejections = RejectionLog(burst=3, window_s=3600)
    with caplog.at_level(logging.DEBUG, logger="service.server"):
        for _ in range(10):
            rejections.record(RequestError(protocol.BAD_JSON, "nope"), NOBODY)
    levels = [r.levelno for r in caplog.records]
    assert levels == [logging.INFO] * 3 + [logging.DEBUG] * 7
    assert all(r.exc_info is None and "\n" not in r.getMessage() for r in caplog.records)
