"""RepeatMemo: a connection's repeated request is served from the memo, with exactly what a full parse gives."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dynofa import protocol
from dynofa.protocol import RepeatMemo, ReplyMemo, RequestError
from tests.service.grammar import any_request

MAX = 1 << 20
SHM = (b'{"v":1,"op":"infer_shm","app":"a","region":"r1","input":{"offset":0,"dtype":"float32","shape":[1,3,8,8]},'
       b'"output":{"offset":1024,"bytes":4096},"subnet":"s1"')  # fmt: skip
# what may follow a header's last field: ids JSON and Python read alike, and every near miss of one
_TAILS = st.sampled_from(["0", "7", "42", "007", "-1", "1e3", "1.0", "123456789012345678", "1234567890123456789",
                          '"x"', " 5", "5 ", "true", "null", "[1]", "", "99999999999999999999999"])  # fmt: skip


def outcome(parse: Any, frames: list[bytes]) -> tuple[Any, ...]:
    try:
        r = parse(frames, MAX)
    except RequestError as exc:
        return ("refused", exc.code, exc.request_id, str(exc))
    return ("ok", r.op, r.args, r.id, r.token, r.override, None if r.tensor is None else r.tensor.tobytes())


def with_id(header: bytes, tail: str) -> bytes:
    return header.rstrip()[:-1] + b',"id":' + tail.encode() + b"}" if header.rstrip().endswith(b"}") else header


@settings(max_examples=600, deadline=None, database=None)
@given(request=any_request(), first=_TAILS, then=st.lists(_TAILS, min_size=1, max_size=4))
def test_the_memo_answers_every_header_as_a_full_parse_does(request: tuple[list[bytes], Any], first: str,
                                                            then: list[str]) -> None:  # fmt: skip
    frames, _ = request
    memo = RepeatMemo()
    sequence = [frames, [with_id(frames[0], first), *frames[1:]]]
    sequence += [[with_id(frames[0], tail), *frames[1:]] for tail in then]
    for sent in sequence:
        assert outcome(memo.parse, sent) == outcome(protocol.parse_request, sent), sent[0][:300]


@pytest.mark.parametrize("tail", ["8", "123456789012345678"])
def test_a_repeated_request_is_not_parsed_again(monkeypatch: pytest.MonkeyPatch, tail: str) -> None:
    memo, parsed = RepeatMemo(), []
    full = protocol.parse_request
    monkeypatch.setattr(protocol, "parse_request", lambda *a: parsed.append(a) or full(*a))
    first = memo.parse([SHM + b',"id":7}'], MAX)
    again = memo.parse([bytearray(SHM + b',"id":' + tail.encode() + b"}")], MAX)  # what direct.Reader gives
    assert len(parsed) == 1
    assert (again.op, again.args, again.id) == (first.op, first.args, int(tail))
    again.args["app"] = "changed"  # a request's fields are its own: the memo's stay as parsed
    assert memo.parse([SHM + b',"id":9}'], MAX).args["app"] == "a"


@pytest.mark.parametrize("changed", [
    SHM.replace(b'"s1"', b'"s2"') + b',"id":8}',  # another subnet
    SHM + b',"id":8,"id":9}',  # a second id after the first
    SHM + b',"id":08}',  # not JSON
    SHM + b',"id":-8}',  # parsed in full (the memo takes plain digits only)
])  # fmt: skip
def test_anything_but_the_same_bytes_and_a_plain_id_is_parsed_in_full(monkeypatch: pytest.MonkeyPatch,
                                                                      changed: bytes) -> None:  # fmt: skip
    memo, parsed = RepeatMemo(), []
    full = protocol.parse_request
    monkeypatch.setattr(protocol, "parse_request", lambda *a: parsed.append(a) or full(*a))
    memo.parse([SHM + b',"id":7}'], MAX)
    assert outcome(memo.parse, [changed]) == outcome(full, [changed])
    assert len(parsed) == 2


def test_a_header_that_is_too_large_is_refused_from_the_memo_too() -> None:
    memo = RepeatMemo()
    memo.parse([SHM + b',"id":7}'], MAX)
    with pytest.raises(RequestError) as err:
        memo.parse([SHM + b',"id":8}'], len(SHM) + 5)
    assert err.value.code == protocol.TOO_LARGE


def test_the_client_reuses_a_repeated_inference_header_byte_for_byte(monkeypatch: pytest.MonkeyPatch) -> None:
    from dynofa.client import Client

    encoded: list[str] = []
    full = protocol.encode
    monkeypatch.setattr(protocol, "encode", lambda m: encoded.append(m["op"]) or full(m))
    fields = {"app": "a", "region": "r1", "input": {"offset": 0, "dtype": "float32", "shape": [1, 3, 8, 8]},
              "output": {"offset": 1024, "bytes": 4096}, "subnet": "s1"}  # fmt: skip
    client = Client("ipc:///nonexistent/dynofa.sock")
    try:
        sent = []
        other = {**fields, "subnet": "s2"}
        asked = [("infer_shm", fields), ("infer_shm", dict(fields)), ("infer_shm", other), ("infer_shm", dict(other)),
                 ("ping", {}), ("ping", {})]  # fmt: skip
        for n, (op, args) in enumerate(asked, start=7):
            client._next_id = n
            sent.append(client._header(op, args))
            assert sent[-1] == full(protocol.request(op, id=n, **args))
            memo_request = RepeatMemo().parse([sent[-1]], MAX)
            assert memo_request.id == n
        assert encoded == ["infer_shm", "infer_shm", "ping", "ping"]  # the repeats of an inference reused its bytes
    finally:
        client.close()


# replies -----------------------------------------------------------------------------------------
_FIELDS = {"app": "a", "subnet": "s1", "pe": "cpu", "output": {"offset": 1024, "bytes": 40, "dtype": "float32",
           "shape": [1, 10]}, "endpoint": "unix:///run/dynofa/infer-cpu.sock"}  # fmt: skip
_NUMBER_TEXTS = ["0", "1", "-1", "01", "-0", "1.5", "1.", ".5", "1e5", "1E-5", "1.25e+3", " 1", "NaN", "Infinity",
                 "1.2345678901234567e-05", "123456789012345678", "1234567890123456789", '"1"', "true"]  # fmt: skip


@settings(max_examples=300, deadline=None, database=None)
@given(request_id=st.one_of(st.integers(), st.text(max_size=4), st.booleans(), st.none()),
       latency=st.one_of(st.floats(), st.integers()), queue=st.floats(allow_nan=False),
       subnet=st.text(max_size=6), endpoint=st.booleans())  # fmt: skip
def test_inference_replies_are_the_bytes_a_full_encoding_writes(request_id: Any, latency: Any, queue: float,
                                                                 subnet: str, endpoint: bool) -> None:  # fmt: skip
    replies = protocol.InferenceReplies()
    fields = {**_FIELDS, "subnet": subnet}
    if not endpoint:
        del fields["endpoint"]
    for _ in range(2):  # encoded, then from what it kept
        try:
            want = protocol.encode(protocol.ok(request_id, **fields, latency_ms=latency, queue_ms=queue))
        except ValueError:  # NaN or infinity: JSON has no such number
            with pytest.raises(ValueError):
                replies.encode(request_id, latency, queue, **fields)
            return
        assert replies.encode(request_id, latency, queue, **fields) == want


def decoded(raw: bytes | bytearray) -> dict[str, Any]:
    return json.loads(bytes(raw))  # type: ignore[no-any-return]


# prefixes that repeat, and ones that hold a key of the tail, a string that looks like one, an open list
_PREFIXES = [protocol.encode(protocol.ok(None, **_FIELDS))[:-1], b'{"ok":true,"id":3', b'{"ok":true,"latency_ms":2',
             b'{"ok":true,"x":"\\",\\"latency_ms\\":1', b'{"a":[1']  # fmt: skip


def reply_bytes(prefix: bytes, latency: str, queue: str, request_id: str) -> bytes:
    return prefix + f',"latency_ms":{latency},"queue_ms":{queue},"id":{request_id}}}'.encode()


@settings(max_examples=600, deadline=None, database=None)
@given(texts=st.lists(st.tuples(st.sampled_from(_NUMBER_TEXTS), st.sampled_from(_NUMBER_TEXTS),
                                st.sampled_from(_NUMBER_TEXTS)), min_size=1, max_size=5),
       prefix=st.sampled_from(_PREFIXES))  # fmt: skip
def test_the_reply_memo_reads_every_reply_as_json_does(texts: list[tuple[str, str, str]], prefix: bytes) -> None:
    memo = ReplyMemo()
    for latency, queue, request_id in [("1.5", "0.01", "7"), *texts]:
        raw = bytearray(reply_bytes(prefix, latency, queue, request_id))
        try:
            want: Any = decoded(raw)
        except ValueError as exc:
            want = type(exc)
        try:
            got: Any = memo.decode(raw, decoded)
        except ValueError as exc:
            got = type(exc)
        assert repr(got) == repr(want), raw  # the same keys in the same order, the same values of the same types


def test_a_repeated_reply_is_not_decoded_again_and_shares_nothing() -> None:
    memo, calls = ReplyMemo(), []
    prefix = protocol.encode(protocol.ok(None, **_FIELDS))[:-1]
    full = lambda raw: calls.append(raw) or decoded(raw)  # noqa: E731
    first = memo.decode(reply_bytes(prefix, "1.5", "0.01", "7"), full)
    first["output"]["shape"].append(99)  # the caller's to change
    again = memo.decode(bytearray(reply_bytes(prefix, "2.25", "0", "8")), full)
    again["output"]["shape"].append(98)
    third = memo.decode(bytearray(reply_bytes(prefix, "2.5", "0", "9")), full)
    assert len(calls) == 1
    assert repr(third) == repr({**decoded(prefix + b"}"), "latency_ms": 2.5, "queue_ms": 0, "id": 9})
    assert memo.decode(reply_bytes(prefix.replace(b'"s1"', b'"s2"'), "1.0", "0.0", "9"), full)["subnet"] == "s2"
    assert len(calls) == 2


@pytest.mark.parametrize("latency", [float("nan"), float("inf"), np.float64(1.5), np.float32(1.5), 3, 2.5])
def test_a_reply_with_any_number_is_written_as_json_writes_it(latency: Any) -> None:
    replies = protocol.InferenceReplies()
    for subnet in ("s1", "s1", "s2", "s1"):  # what it kept is for the fields it was given
        fields = {**_FIELDS, "subnet": subnet}
        try:
            want = protocol.encode(protocol.ok(5, **fields, latency_ms=latency, queue_ms=0.5))
        except ValueError:
            with pytest.raises(ValueError):
                replies.encode(5, latency, 0.5, **fields)
            continue
        assert replies.encode(5, latency, 0.5, **fields) == want
