"""Hypothesis strategies over the whole request grammar of docs/protocol.md, numbers at and beyond every limit.

Headers are built as JSON *text* (not through ``json.dumps``) so that they can hold what Python's
encoder never writes: integers of thousands of digits, ``1e309``, ``NaN``, repeated keys. Each
example comes with the ``id`` the daemon must echo (None when the header has no readable id).
Shared by the in-process grammar tests, the daemon fuzz test and ``benchmarks/fuzz.py``.
"""

from __future__ import annotations

import json
import math
import random
from typing import Any

import numpy as np
from hypothesis import strategies as st

from dynofa import protocol

EXPECTED_CODES = frozenset(protocol.ERROR_CODES) - {protocol.INTERNAL}
APPS = ("fz-a", "fz-b", "fz-c")
TOKEN = "fuzz-token-0123456789abcdef"

# raw JSON numbers at and beyond each documented limit (budget ranges, int digits, double range)
_EDGE_TEXTS = [
    "0", "1", "-1", "0.0", "-0.0", "5e-324", "1e-320", "0.01", "0.009999", "0.010001", "1", "0.5", "1.0",
    "1.0000001", "-0.0000001", "3600000", "3600000.0001", "10000", "10000.01", "1000", "1001", "-1000", "-1001",
    "65536", "65537", "9223372036854775807", "9999999999999999999", "10000000000000000000", "-9999999999999999999",
    "1e308", "1.7976931348623157e308", "1e309", "-1e309", "1e-400", "NaN", "Infinity", "-Infinity",
    "9" * 4301, "-" + "1" * 5000, "1" + "0" * 400 + ".5", "true", "false", "null", '"5"', "[]", "{}",
]  # fmt: skip


def edge_numbers() -> st.SearchStrategy[Any]:
    """Python values at/beyond the limits (for fields built with json.dumps)."""
    return st.sampled_from(
        [0, 1, -1, 5e-324, 1e-320, 0.01, 0.009999, 3_600_000, 3_600_000.0001, 10_000, 10_000.01, 1000, 1001, -1001,
         2**63 - 1, 10**19, -(10**19), 10**4000, 1e308, True, False, None, "5", 0.5, 1.0000001, -0.0000001]
    ) | st.floats(allow_nan=False, allow_infinity=False) | st.integers()  # fmt: skip


def _text(value: Any) -> str:
    return json.dumps(value)


_edge = st.sampled_from(_EDGE_TEXTS)
_small_text = st.text(max_size=12).map(_text)
_scalar = _edge | _small_text | st.integers().map(str) | st.floats(allow_nan=False, allow_infinity=False).map(_text)


def _object(pairs: list[tuple[str, str]]) -> str:
    return "{" + ",".join(f"{_text(k)}:{v}" for k, v in pairs) + "}"


_json = st.recursive(
    _scalar,
    lambda inner: st.lists(inner, max_size=3).map(lambda xs: "[" + ",".join(xs) + "]")
    | st.lists(st.tuples(st.text(max_size=6), inner), max_size=3).map(_object),
    max_leaves=12,
)
_deep = st.integers(10, 40).map(lambda n: "[" * n + "]" * n)

_budget = st.lists(
    st.tuples(
        st.sampled_from(["latency_ms", "min_accuracy", "power_cap_w", "priority", "objective", "latency_ms", "bogus"]),
        _edge | _scalar,
    ),
    max_size=5,
).map(_object) | _json

_FIELD_VALUES: dict[str, st.SearchStrategy[str]] = {
    "app": st.sampled_from([*APPS, "", "../x", "x" * 65, "a" * 64]).map(_text) | _scalar,
    "model": st.sampled_from(["tiny", "other", ""]).map(_text) | _scalar,
    "budget": _budget,
    "qoe": _edge | _scalar,
    "dtype": st.sampled_from(["float32", "float16", "float64", "int8", "bogus"]).map(_text) | _scalar,
    "shape": st.lists(st.sampled_from(["1", "3", "32", "0", "-1", "65536", "65537", "1e309", "true", "2.0"]),
                      max_size=5).map(lambda xs: "[" + ",".join(xs) + "]") | _scalar,  # fmt: skip
    "subnet": _small_text | _scalar,
    "detail": _json | _deep,
    "token": st.sampled_from([TOKEN, "short", "x" * 129, "bad token!"]).map(_text) | _scalar,
    "override": st.sampled_from(["true", "false", "1", '"yes"']),
    "zzz": _scalar,
}
_IDS = st.integers(-(10**19), 10**19).map(str) | st.text(max_size=130).map(_text) | _edge | _json


@st.composite
def any_request(draw: st.DrawFn) -> tuple[list[bytes], Any]:
    """(frames, id the reply must echo or None)."""
    pairs: list[tuple[str, str]] = []
    version = draw(st.sampled_from(["1", "1", "1", "1", "1.0", "true", '"1"', "2", "null", None]))
    if version is not None:
        pairs.append(("v", version))
    op = draw(st.sampled_from([*protocol.OPS, *protocol.OPS, "", "INFER", "shutdown", None]))
    if op is not None:
        pairs.append(("op", _text(op)))
    id_text = draw(st.none() | _IDS)
    if id_text is not None:
        pairs.append(("id", id_text))
    names = draw(st.lists(st.sampled_from(list(_FIELD_VALUES)), max_size=6))
    pairs.extend((name, draw(_FIELD_VALUES[name])) for name in names)
    if draw(st.integers(0, 9)) == 0 and pairs:  # a repeated key
        pairs.append(draw(st.sampled_from(pairs)))
    order = draw(st.permutations(range(len(pairs))))
    text = _object([pairs[i] for i in order])
    frames = [text.encode()]
    extra = draw(st.integers(0, 4))
    if extra == 1:  # a tensor frame that fits a small shape, or not
        frames.append(bytes(draw(st.sampled_from([0, 4, 12, 12288, 3 * 32 * 32 * 4, 7]))))
    elif extra == 2:
        frames.extend([b"", b"x"])
    return frames, readable_id(frames[0])


class _Digits(str):
    """An integer as written in the JSON text."""


class _Repeated:
    """A key given twice."""


def readable_id(header: bytes) -> Any:
    """The id a reply to ``header`` must echo, found without the daemon's parser (None: nothing to echo).

    The rule of docs/protocol.md: the header is UTF-8 JSON, an object, with exactly one ``id``
    that is a string or an integer (not a boolean) of at most 128 characters and 19 digits.
    """

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in items:
            out[key] = _Repeated() if key in out else value
        return out

    try:
        head = json.loads(header.decode("utf-8"), parse_int=_Digits, parse_constant=lambda _: math.nan,
                          object_pairs_hook=pairs)  # fmt: skip
    except (ValueError, RecursionError):
        return None
    if not isinstance(head, dict) or "id" not in head:
        return None
    value = head["id"]
    if isinstance(value, _Digits):
        if len(value.lstrip("-")) > protocol.MAX_INT_DIGITS:
            return None
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return None
    return value if len(str(value)) <= protocol.MAX_ID_CHARS else None


# --- random mutations of valid requests (the daemon fuzz test and benchmarks/fuzz.py) ---------------

_POOL: list[Any] = [
    None, True, False, -1, 0, 1, 2**63, 10**19, -(10**19), 1e308, 5e-324, -0.5, 0.01, 3_600_000.0001, 1001, -1001,
    65536, 65537, "", "tiny", "fz-a", "x" * 300, [], [65536] * 4, [1, 3, 32, 32], {}, {"a": 1}, {"latency_ms": 1e-9},
]  # fmt: skip
_RAW_EDGES = [b"1e309", b"-1e309", b"NaN", b"Infinity", b"9" * 5000, b"1" * 20, b"[" * 30 + b"]" * 30]


def _header(**fields: Any) -> bytes:
    return json.dumps({"v": 1, **fields}).encode()


def valid_corpus() -> list[list[bytes]]:
    """One valid request of each op (with ids), for :func:`mutate` to start from."""
    tensor = np.zeros((1, 3, 32, 32), np.float32).tobytes()
    infer = _header(op="infer", id=1, app="fz-a", dtype="float32", shape=[1, 3, 32, 32])
    return [
        [_header(op="hello", id=1, app="fz-a")], [_header(op="ping", id="p")],
        [_header(op="register", id=2, app="fz-a")],
        [_header(op="set_budget", id=3, app="fz-b", budget={"latency_ms": 5, "min_accuracy": 0.5, "priority": 2})],
        [_header(op="clear_budget", id=4, app="fz-b")], [_header(op="budgets", id=5)], [_header(op="state", id=6)],
        [_header(op="subnets", id=7, model="tiny")], [_header(op="feedback", id=8, app="fz-a", qoe=0.5)],
        [infer, tensor],
    ]  # fmt: skip


def mutate(rng: random.Random, frames: list[bytes]) -> list[bytes]:
    """A random damage to a request: flipped bytes, truncation, frames added or dropped, edge values spliced in."""
    frames = list(frames)
    kind = rng.randrange(8)
    if kind == 0:  # flip bytes
        i = rng.randrange(len(frames))
        data = bytearray(frames[i] or b"x")
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        frames[i] = bytes(data)
    elif kind == 1:  # truncate
        i = rng.randrange(len(frames))
        frames[i] = frames[i][: rng.randrange(len(frames[i]) + 1)] or b"{"
    elif kind == 2:  # add or drop frames
        frames = (frames[:-1] or [b"{}"]) if rng.random() < 0.5 else [*frames, rng.randbytes(rng.randrange(64))]
    elif kind == 3 and frames[0].endswith(b"}"):  # splice a raw edge value (not writable by json.dumps)
        key = rng.choice([b"id", b"v", b"qoe", b"zzz", b"budget", b"shape"])
        frames[0] = frames[0][:-1] + b', "' + key + b'": ' + rng.choice(_RAW_EDGES) + b"}"
    else:  # rewrite a JSON field (if the header is still a JSON object)
        try:
            head = json.loads(frames[0])
        except (ValueError, RecursionError):
            return frames
        if not isinstance(head, dict):
            return frames
        key = rng.choice([*head, "v", "op", "id", "app", "budget", "shape", "dtype", "token", "override", "zzz"])
        if kind == 4:
            head.pop(key, None)
        elif kind == 5 and isinstance(head.get("budget"), dict):
            head["budget"][rng.choice(["latency_ms", "min_accuracy", "power_cap_w", "priority", "objective"])] = (
                rng.choice(_POOL)
            )
        else:
            head[key] = rng.choice(_POOL)
        frames[0] = json.dumps(head).encode()
    return frames if frames[0] else [b"{}", *frames[1:]]
