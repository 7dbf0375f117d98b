"""RepeatMemo: a connection's repeated request is served from the memo, with exactly what a full parse gives."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dynofa import protocol
from dynofa.protocol import RepeatMemo, RequestError
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
