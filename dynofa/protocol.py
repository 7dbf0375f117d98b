"""The dynofa wire protocol (version 1), shared by the daemon and every client.

A request is one ZeroMQ multipart message: a UTF-8 JSON header object, plus (only for
``infer``) one frame of raw tensor bytes. The header carries the protocol version
``"v"``, the operation ``"op"``, an optional ``"id"`` echoed in the reply, and the
operation's arguments. A reply is a JSON header ``{"v": 1, "ok": true, ...}`` or
``{"v": 1, "ok": false, "error": {"code": ..., "message": ...}}``, plus one frame of
output bytes for a successful ``infer``. Telemetry is published as two frames:
a topic (``op``, ``budget``, ``state``, ``event``) and a JSON object.

The full specification, with every field, is ``docs/protocol.md``. This module only
uses the standard library and numpy, so apps that import :mod:`dynofa.client` stay light.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dynofa.errors import ProtocolError

PROTOCOL_VERSION = 1
# embedded apps (docs/protocol.md, "Embedded apps")
MIN_LEASE_S = 1.0
MAX_LEASE_S = 3600.0
DEFAULT_LEASE_S = 10.0
MAX_SAMPLES = 4096
TOPIC_DECISION = "decision/"  # + app + "/": operating points pushed to one embedded app


def decision_topic(app: str) -> str:
    """The telemetry topic that carries ``app``'s decisions (the trailing '/' keeps prefixes exact)."""
    return f"{TOPIC_DECISION}{app}/"


# error codes (docs/protocol.md lists when each is sent)
BAD_JSON = "bad_json"
BAD_REQUEST = "bad_request"
UNKNOWN_OP = "unknown_op"
UNSUPPORTED_VERSION = "unsupported_version"
TOO_LARGE = "too_large"
BAD_TENSOR = "bad_tensor"
UNKNOWN_APP = "unknown_app"
UNKNOWN_MODEL = "unknown_model"
UNKNOWN_SUBNET = "unknown_subnet"
TOO_MANY_APPS = "too_many_apps"
BAD_BUDGET = "bad_budget"
BUSY = "busy"
TIMEOUT = "timeout"
SHUTTING_DOWN = "shutting_down"
INFERENCE_FAILED = "inference_failed"
FORBIDDEN = "forbidden"
INTERNAL = "internal"
# shared-memory extension (docs/protocol.md, "Shared memory")
UNKNOWN_REGION = "unknown_region"
BAD_REGION = "bad_region"
REGION_BOUNDS = "region_bounds"
REGION_TRUNCATED = "region_truncated"
ERROR_CODES = (
    BAD_JSON, BAD_REQUEST, UNKNOWN_OP, UNSUPPORTED_VERSION, TOO_LARGE, BAD_TENSOR, UNKNOWN_APP, UNKNOWN_MODEL,
    UNKNOWN_SUBNET, TOO_MANY_APPS, BAD_BUDGET, BUSY, TIMEOUT, SHUTTING_DOWN, INFERENCE_FAILED, FORBIDDEN, INTERNAL,
    UNKNOWN_REGION, BAD_REGION, REGION_BOUNDS, REGION_TRUNCATED,
)  # fmt: skip

#: protocol extensions and their versions, advertised by ``hello``
EXTENSIONS = {"shm": 1, "embedded": 1, "direct": 2}

# telemetry topics
TOPIC_OPERATING_POINT = "op"
TOPIC_BUDGET = "budget"
TOPIC_STATE = "state"
TOPIC_EVENT = "event"
TOPICS = (TOPIC_OPERATING_POINT, TOPIC_BUDGET, TOPIC_STATE, TOPIC_EVENT)

#: dtypes an ``infer`` tensor may have; the daemon converts to the model's float32
INPUT_DTYPES = ("float32", "float16", "float64")
MAX_DIMS = 4
MAX_DIM = 1 << 16  # largest shape element
MAX_BATCH = 64
_APP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,128}$")

# The header grammar's limits (docs/protocol.md, "Header grammar"). They are checked while the
# JSON is parsed, so no later step can meet a value Python cannot handle (an int beyond the
# int-string limit, a float that overflowed to inf, NaN).
MAX_INT_DIGITS = 19  # integers fit in a signed 64-bit value (C clients); more digits are refused
MAX_DEPTH = 16  # nesting of arrays and objects in a header
MAX_ID_CHARS = 128
MAX_HEADER_PEEK = 64 * 1024  # a too_large message's header is still read for its id up to this size


class RequestError(ProtocolError):
    """A request the daemon refuses; ``code`` is one of :data:`ERROR_CODES`.

    ``request_id`` is the request's ``id`` once it was read (the reply echoes it).
    """

    def __init__(self, code: str, message: str, request_id: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


class RemoteError(ProtocolError):
    """The daemon answered with a structured error (client side)."""

    def __init__(self, code: str, message: str, op: str = "") -> None:
        super().__init__(f"{op + ': ' if op else ''}{message} [{code}]")
        self.code = code
        self.message = message
        self.op = op


# ---------------------------------------------------------------------------------------------
# argument checkers: each takes (value, field name) and returns the value or raises RequestError


def _bad(name: str, expected: str, value: Any) -> RequestError:
    return RequestError(BAD_REQUEST, f"field {name!r} must be {expected}, got {_shown(value)}")


def app_name(value: Any, name: str = "app") -> str:
    if not isinstance(value, str) or not _APP_NAME.match(value):
        raise _bad(name, "an app name: 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit", value)
    return value


def text(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 256:
        raise _bad(name, "a non-empty string of at most 256 characters", value)
    return value


def finite(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _bad(name, "a finite number", value)
    return float(value)


def flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise _bad(name, "true or false", value)
    return value


def token(value: Any, name: str = "token") -> str:
    if not isinstance(value, str) or not _TOKEN.match(value):
        raise _bad(name, "a secret of 16-128 letters, digits, '_' or '-'", value)
    return value


def unit_fraction(value: Any, name: str) -> float:
    number = finite(value, name)
    if not 0.0 <= number <= 1.0:
        raise _bad(name, "a number in [0, 1]", value)
    return number


def obj(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad(name, "an object", value)
    return value


def any_json(value: Any, name: str) -> Any:
    return value


def shape(value: Any, name: str) -> tuple[int, ...]:
    ok = isinstance(value, list) and 1 <= len(value) <= MAX_DIMS
    ok = ok and all(isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= MAX_DIM for d in value)
    if not ok:
        raise _bad(name, f"a list of 1 to {MAX_DIMS} integers in [1, {MAX_DIM}]", value)
    return tuple(value)


def dtype(value: Any, name: str) -> str:
    if value not in INPUT_DTYPES:
        raise RequestError(BAD_TENSOR, f"field {name!r} must be one of {', '.join(INPUT_DTYPES)}, got {value!r}")
    return str(value)


_SHM_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}$")
_REGION_ID = re.compile(r"^r[0-9]{1,12}$")
MAX_OFFSET = 1 << 40


def shm_name(value: Any, name: str = "name") -> str:
    if not isinstance(value, str) or not _SHM_NAME.match(value):
        raise _bad(name, "a POSIX shared-memory name: 1-200 letters, digits, '.', '_' or '-', no '/'", value)
    return value


def region_id(value: Any, name: str = "region") -> str:
    if not isinstance(value, str) or not _REGION_ID.match(value):
        raise _bad(name, "a region id from shm_register (e.g. 'r1')", value)
    return value


def _offset(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < MAX_OFFSET:
        raise _bad(name, "an integer in [0, 2**40)", value)
    return value


def input_slice(value: Any, name: str) -> dict[str, Any]:
    """``{"offset", "dtype", "shape"}``: where in the region the input tensor lies."""
    fields = obj(value, name)
    unknown = sorted(set(fields) - {"offset", "dtype", "shape"})
    if unknown:
        raise _bad(name, "an object with offset, dtype and shape only", value)
    for key in ("offset", "dtype", "shape"):
        if key not in fields:
            raise RequestError(BAD_REQUEST, f"field {name!r} needs {key!r}")
    return {"offset": _offset(fields["offset"], f"{name}.offset"), "dtype": dtype(fields["dtype"], f"{name}.dtype"),
            "shape": shape(fields["shape"], f"{name}.shape")}  # fmt: skip


def output_slice(value: Any, name: str) -> dict[str, Any]:
    """``{"offset", "bytes"}``: where in the region the output may be written, and how much room there is."""
    fields = obj(value, name)
    if set(fields) != {"offset", "bytes"}:
        raise _bad(name, "an object with offset and bytes", value)
    room = _offset(fields["bytes"], f"{name}.bytes")
    if room == 0:
        raise _bad(f"{name}.bytes", "a positive integer", room)
    return {"offset": _offset(fields["offset"], f"{name}.offset"), "bytes": room}


def names(value: Any, name: str) -> list[str]:
    """A list of 1-256 distinct non-empty strings (subnet ids, processing element names)."""
    ok = isinstance(value, list) and 1 <= len(value) <= 256 and len(set(map(str, value))) == len(value)
    if not ok or not all(isinstance(v, str) and 0 < len(v) <= 256 for v in value):
        raise _bad(name, "a list of 1 to 256 distinct non-empty strings", value)
    return list(value)


def lease(value: Any, name: str) -> float:
    number = finite(value, name)
    if not MIN_LEASE_S <= number <= MAX_LEASE_S:
        raise _bad(name, f"a number of seconds in [{MIN_LEASE_S:g}, {MAX_LEASE_S:g}]", value)
    return number


def counter(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 53:
        raise _bad(name, "a non-negative integer", value)
    return value


def samples(value: Any, name: str) -> list[tuple[str, str, float]]:
    """An embedded app's observed inferences: ``[[subnet, pe, latency_ms], ...]``, at most MAX_SAMPLES."""
    if not isinstance(value, list) or len(value) > MAX_SAMPLES:
        raise _bad(name, f"a list of at most {MAX_SAMPLES} [subnet, pe, latency_ms] triples", value)
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, list) or len(item) != 3:
            raise _bad(f"{name}[{i}]", "a [subnet, pe, latency_ms] triple", item)
        subnet, pe, latency = item
        named = isinstance(subnet, str) and bool(subnet) and isinstance(pe, str) and bool(pe)
        number = not isinstance(latency, bool) and isinstance(latency, (int, float))
        if not named or not number or not (math.isfinite(latency) and 0 <= latency <= 3.6e6):
            raise _bad(f"{name}[{i}]", "[subnet, pe, latency_ms] with a latency in [0, 3600000] ms", item)
        out.append((subnet, pe, float(latency)))
    return out


Checker = Callable[[Any, str], Any]


@dataclass(frozen=True)
class OpSpec:
    """One operation's fields. Every field of every op is checked here, before the daemon acts.

    ``owned``: the op acts on the app named by ``app`` and only its owner may send it (or an operator
    with ``override``); it then also takes the optional ``token`` and ``override`` fields.
    """

    required: dict[str, Checker] = field(default_factory=dict)
    optional: dict[str, Checker] = field(default_factory=dict)
    tensor: bool = False  # a second frame with raw tensor bytes follows the header
    owned: bool = False
    doc: str = ""

    def fields(self) -> dict[str, Checker]:
        """The optional fields, with the owner's token and override on ops on an app."""
        return self._fields

    @functools.cached_property
    def _fields(self) -> dict[str, Checker]:  # read on every request: built once
        extra: dict[str, Checker] = {"token": token, "override": flag} if self.owned else {}
        return {**self.optional, **extra}


OPS: dict[str, OpSpec] = {
    "hello": OpSpec(optional={"app": app_name}, doc="protocol and daemon versions, models, processing elements"),
    "ping": OpSpec(doc="cheapest round trip"),
    "register": OpSpec(
        required={"app": app_name},
        optional={"model": text, "budget": obj},
        owned=True,
        doc="register an app (idempotent for its owner)",
    ),
    "unregister": OpSpec(required={"app": app_name}, owned=True, doc="forget an app and its budget"),
    "set_budget": OpSpec(required={"app": app_name, "budget": obj}, owned=True, doc="set or replace an app's budget"),
    "clear_budget": OpSpec(required={"app": app_name}, owned=True, doc="remove an app's budget"),
    "budgets": OpSpec(doc="every app's budget"),
    "state": OpSpec(doc="operating point per app and per PE, frequencies, monitors"),
    "subnets": OpSpec(optional={"model": text}, doc="the catalog's subnets per model"),
    "infer": OpSpec(
        required={"app": app_name, "dtype": dtype, "shape": shape},
        optional={"subnet": text},
        tensor=True,
        owned=True,
        doc="run one inference on the app's current operating point",
    ),
    "shm_register": OpSpec(
        required={"app": app_name, "name": shm_name},
        owned=True,
        doc="register a shared-memory region of this client (POSIX shm name) for infer_shm",
    ),
    "shm_unregister": OpSpec(
        required={"app": app_name, "region": region_id}, owned=True, doc="release a shared-memory region"
    ),
    "infer_shm": OpSpec(
        required={"app": app_name, "region": region_id, "input": input_slice, "output": output_slice},
        optional={"subnet": text},
        owned=True,
        doc="run one inference whose input and output lie in a registered shared-memory region",
    ),
    "register_embedded": OpSpec(
        required={"app": app_name, "subnets": names},
        optional={"model": text, "budget": obj, "pes": names, "lease_s": lease, "point": obj},
        owned=True,
        doc="register an embedded app: it hosts its pool of these subnets, the daemon pushes its operating points",
    ),
    "report": OpSpec(
        required={"app": app_name, "samples": samples},
        optional={"seq": counter, "refused": obj},
        owned=True,
        doc="an embedded app's observed latencies since its last report; renews its lease",
    ),
    "feedback": OpSpec(
        required={"app": app_name, "qoe": unit_fraction},
        optional={"detail": any_json},
        owned=True,
        doc="quality-of-experience feedback in [0, 1] for the app's last results",
    ),
}
_ENVELOPE = {"v", "op", "id"}


@dataclass
class Request:
    op: str
    args: dict[str, Any]
    id: Any = None
    tensor: np.ndarray | None = None
    token: str | None = None  # the app's secret, when the client registered it with one
    override: bool = False  # an operator acting on an app it does not own


def _as_bytes(frame: Any) -> bytes | memoryview:
    # zmq.Frame (copy=False) exposes .buffer; plain bytes pass through
    buffer = getattr(frame, "buffer", None)
    return buffer if buffer is not None else frame


def frame_len(frame: Any) -> int:
    return len(_as_bytes(frame))


def parse_request(frames: Sequence[Any], max_bytes: int, max_frames: int = 4) -> Request:
    """Validate a request (the frames after the ROUTER envelope). Raises :class:`RequestError`.

    Once the header is an object with a valid ``id``, every error raised carries that id.
    """
    if not frames:
        raise RequestError(BAD_REQUEST, "empty message: expected a JSON header frame")
    total = sum(frame_len(f) for f in frames)
    if total > max_bytes:
        message = f"message of {total} bytes exceeds the limit of {max_bytes} bytes"
        raise RequestError(TOO_LARGE, message, _id_of_small_header(frames[0]))
    header = decode_json(frames[0])
    if not isinstance(header, dict):
        raise RequestError(BAD_REQUEST, f"the header must be a JSON object, got {_json_type(header)}")
    request_id = _read_id(header)
    try:
        return _parse_header(header, request_id, frames, max_frames)
    except RequestError as exc:
        exc.request_id = request_id
        raise


#: how a header whose id is written last ends: ``,"id":N}``
ID_LAST = b',"id":'


class RepeatMemo:
    """``parse_request`` for one connection's stream of requests, remembering the last that parsed.

    A client that sends the same request again (the same app, region, slices and subnet) with only
    its id changed, the id written last (``...,"id":42}``), is served the checked request it sent
    before under the new id: no JSON decoding and none of the field checks, which cost 80-110 us
    after a forward has evicted the caches and 12 us when they are warm (2-core VM, 224 px). The
    result is the same as :func:`parse_request` by construction: a header is only remembered after
    it parsed in full, and a later one is taken from the memo only when its bytes equal that one's
    up to the id and the id is a plain JSON integer. Anything else (a tensor frame, another layout,
    an id that is not a small non-negative integer) is parsed in full.
    """

    __slots__ = ("_prefix", "_request")

    def __init__(self) -> None:
        self._prefix: bytes | None = None
        self._request: Request | None = None

    def parse(self, frames: Sequence[Any], max_bytes: int, max_frames: int = 4) -> Request:
        if len(frames) == 1 and self._prefix is not None:
            raw = _as_bytes(frames[0])
            cut = trailing_id_start(raw)
            if cut > 0 and len(raw) <= max_bytes and raw[:cut] == self._prefix:
                known = self._request
                assert known is not None
                return Request(known.op, dict(known.args), int(raw[cut + len(ID_LAST) : -1]), None,
                               known.token, known.override)  # fmt: skip
        request = parse_request(frames, max_bytes, max_frames)
        self._remember(frames, request)
        return request

    def _remember(self, frames: Sequence[Any], request: Request) -> None:
        if len(frames) != 1 or request.tensor is not None or type(request.id) is not int:
            return
        raw = _as_bytes(frames[0])
        cut = trailing_id_start(raw)
        if cut > 0 and int(raw[cut + len(ID_LAST) : -1]) == request.id:  # the trailing id is the request's id
            self._prefix, self._request = bytes(raw[:cut]), request


def trailing_id_start(raw: bytes | bytearray | memoryview) -> int:
    """Where ``,"id":N}`` starts in a header that ends with it (N: digits, no leading zero, at most 18
    of them: an integer JSON and Python read alike); -1 for any other header."""
    if not isinstance(raw, (bytes, bytearray)) or raw[-1:] != b"}":
        return -1
    cut = raw.rfind(ID_LAST, max(0, len(raw) - 26))
    if cut < 0:
        return -1
    digits = raw[cut + len(ID_LAST) : -1]
    if not digits.isdigit() or (len(digits) > 1 and digits[:1] == b"0"):
        return -1
    return cut


def _id_of_small_header(frame: Any) -> Any:
    """The id of a message refused as too large, when its header alone is small enough to read."""
    if frame_len(frame) > MAX_HEADER_PEEK:
        return None
    try:
        header = decode_json(frame)
        return _read_id(header) if isinstance(header, dict) else None
    except RequestError:
        return None


def _read_id(header: dict[str, Any]) -> Any:
    value = header.get("id")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)) or len(str(value)) > MAX_ID_CHARS:
        raise _bad("id", f"a string or integer of at most {MAX_ID_CHARS} characters", value)
    return value


def _parse_header(header: dict[str, Any], request_id: Any, frames: Sequence[Any], max_frames: int) -> Request:
    if len(frames) > max_frames:
        raise RequestError(BAD_REQUEST, f"too many frames ({len(frames)}); at most {max_frames}")
    version = header.get("v")
    if type(version) is not int or version != PROTOCOL_VERSION:  # true and 1.0 are not the integer 1
        raise RequestError(
            UNSUPPORTED_VERSION,
            f"protocol version {_shown(version)} is not supported; this daemon speaks v{PROTOCOL_VERSION} "
            '(the integer 1: "v": 1)',
        )
    op = header.get("op")
    spec = OPS.get(op) if isinstance(op, str) else None
    if spec is None:
        raise RequestError(UNKNOWN_OP, f"unknown op {_shown(op)}; known ops: {', '.join(OPS)}")
    optional = spec.fields()
    for name in header:
        if name not in _ENVELOPE and name not in spec.required and name not in optional:
            allowed = [*spec.required, *optional]
            raise RequestError(
                BAD_REQUEST, f"op {op!r} takes no field {_shown(name)}; it takes: {', '.join(allowed) or '(nothing)'}"
            )
    _refuse_out_of_range(header)
    args: dict[str, Any] = {}
    for name, check in spec.required.items():
        if name not in header:
            raise RequestError(BAD_REQUEST, f"op {op!r} needs field {name!r}")
        args[name] = check(header[name], name)
    for name, check in optional.items():
        if header.get(name) is not None:
            args[name] = check(header[name], name)
    request = Request(
        op=str(op), args=args, id=request_id, token=args.pop("token", None), override=args.pop("override", False)
    )
    if spec.tensor:
        if len(frames) != 2:
            raise RequestError(
                BAD_TENSOR, f"op {op!r} needs 2 frames (JSON header + raw tensor bytes), got {len(frames)}"
            )
        request.tensor = decode_tensor(frames[1], args["dtype"], args["shape"])
    elif len(frames) != 1:
        raise RequestError(BAD_REQUEST, f"op {op!r} takes a single JSON frame, got {len(frames)} frames")
    return request


# ---------------------------------------------------------------------------------------------
# JSON: strict numbers, no duplicate keys, bounded nesting


@dataclass(frozen=True)
class Unreadable:
    """A JSON value the daemon refuses to hold (too many digits, overflow, NaN, a repeated key).

    The parser keeps it in place of the value so that the rest of the header (its ``id``) still
    reads; :func:`_refuse_out_of_range` then refuses the request naming the field.
    """

    why: str


def _parse_int(text: str) -> int | Unreadable:
    digits = len(text) - (text[0] == "-")
    if digits > MAX_INT_DIGITS:
        return Unreadable(f"an integer of {digits} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _parse_float(text: str) -> float | Unreadable:
    if len(text) > 400:  # a double needs at most ~330 characters, even written without an exponent
        return Unreadable(f"a number written with {len(text)} characters (at most 400)")
    number = float(text)
    return number if math.isfinite(number) else Unreadable(f"{text[:20]} is beyond the range of a double")


def _parse_constant(text: str) -> Unreadable:
    return Unreadable(f"{text} is not a JSON number")


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        result[key] = Unreadable(f"key {key[:40]!r} appears twice in one object") if key in result else value
    return result


_DECODER = json.JSONDecoder(
    object_pairs_hook=_object, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_parse_constant
)


def decode_json(frame: Any) -> Any:
    """A header frame as JSON, with out-of-range values replaced by :class:`Unreadable` markers."""
    try:
        text = bytes(_as_bytes(frame)).decode("utf-8")
    except UnicodeDecodeError:
        raise RequestError(BAD_JSON, "the header frame is not UTF-8 text") from None
    try:
        return _DECODER.decode(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise RequestError(BAD_JSON, f"the header frame is not valid JSON: {exc}") from None


def _refuse_out_of_range(header: dict[str, Any]) -> None:
    """Refuse a header nested too deep or holding an :class:`Unreadable` value anywhere, naming where."""
    if _readable(header.values(), 1):
        return  # the usual case, checked without building a path for every field
    stack: list[tuple[str, str, Any, int]] = [(k, k, v, 1) for k, v in header.items()]
    while stack:
        top, where, value, depth = stack.pop()
        code = BAD_BUDGET if top == "budget" else BAD_REQUEST
        if isinstance(value, Unreadable):
            raise RequestError(code, f"field {where[:120]!r} is out of range: {value.why}")
        if isinstance(value, (dict, list)) and depth >= MAX_DEPTH:
            raise RequestError(code, f"field {top!r} nests arrays/objects deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            stack.extend((top, f"{where}.{k}", v, depth + 1) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((top, f"{where}[{i}]", v, depth + 1) for i, v in enumerate(value))


def _readable(values: Any, depth: int) -> bool:
    """Whether ``values`` (at nesting ``depth``) hold no :class:`Unreadable` and nest no deeper than allowed."""
    for value in values:
        kind = type(value)
        if kind is dict or kind is list:
            if depth >= MAX_DEPTH or not _readable(value.values() if kind is dict else value, depth + 1):
                return False
        elif kind is Unreadable:
            return False
    return True


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _shown(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 80 else shown[:77] + "..."


def decode_tensor(frame: Any, dtype_name: str, dims: Sequence[int]) -> np.ndarray:
    """The tensor frame as a numpy array (a view of the frame's buffer, read-only)."""
    data = _as_bytes(frame)
    dt = np.dtype(dtype_name)
    expected = math.prod(dims) * dt.itemsize  # Python ints: np.prod would wrap around at 2**63
    if len(data) != expected:
        raise RequestError(
            BAD_TENSOR,
            f"tensor frame has {len(data)} bytes; dtype {dtype_name} with shape {list(dims)} needs {expected}",
        )
    return np.frombuffer(data, dtype=dt.newbyteorder("<")).reshape(dims)


def encode_tensor(array: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
    """Header fields and the little-endian, C-contiguous array whose buffer is the tensor frame."""
    out = np.ascontiguousarray(array)
    if out.dtype.byteorder == ">":
        out = out.astype(out.dtype.newbyteorder("<"))
    return {"dtype": dtype_name(out.dtype), "shape": list(out.shape)}, out


#: numpy computes a dtype's name in Python (microseconds, on every request and reply): the usual ones looked up
_DTYPE_NAMES = {np.dtype(name): name for name in ("float32", "float16", "float64", "int64", "int32", "uint8", "bool")}


def dtype_name(dtype: np.dtype[Any]) -> str:
    """``str(dtype)`` ("float32"), without numpy's Python-level formatting for the common dtypes."""
    return _DTYPE_NAMES.get(dtype) or str(dtype)


def encode(message: dict[str, Any]) -> bytes:
    return _ENCODER.encode(message).encode()


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


#: built once: json.dumps with arguments other than its defaults builds a new encoder on every call
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False, default=_jsonable)


def request(op: str, id: Any = None, **args: Any) -> dict[str, Any]:
    message: dict[str, Any] = {"v": PROTOCOL_VERSION, "op": op}
    message.update({k: v for k, v in args.items() if v is not None})
    if id is not None:
        message["id"] = id  # last: a repeated request then differs only in its last bytes (RepeatMemo)
    return message


def ok(request_id: Any = None, **fields: Any) -> dict[str, Any]:
    reply: dict[str, Any] = {"v": PROTOCOL_VERSION, "ok": True}
    reply.update(fields)
    if request_id is not None:
        reply["id"] = request_id  # last, as in a request: see InferenceReplies
    return reply


#: how an inference reply ends: the numbers that change with every inference, then the id
_JSON_NUMBER = rb"(-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)"
_REPLY_TAIL = re.compile(
    rb',"latency_ms":' + _JSON_NUMBER + rb',"queue_ms":' + _JSON_NUMBER + rb',"id":(0|[1-9][0-9]{0,17})\}\Z'
)
_LATENCY_AT = b',"latency_ms":'
_TAIL_KEYS = ["latency_ms", "queue_ms", "id"]


class InferenceReplies:
    """Encodes a worker's inference replies (daemon side): what repeats from one inference of an
    app to the next (its subnet, PE, output slice, endpoint) is encoded once, and ``latency_ms``,
    ``queue_ms`` and the id are written after it (~30 us of JSON encoding saved per reply after a
    forward has evicted the caches). The bytes are those ``encode(ok(...))`` writes."""

    __slots__ = ("_known",)

    def __init__(self) -> None:
        self._known: dict[Any, tuple[dict[str, Any], bytes]] = {}  # app -> (its last fields, their encoding)

    def encode(self, request_id: Any, latency_ms: float, queue_ms: float, **fields: Any) -> bytes:
        if not (type(request_id) is int and request_id >= 0 and _plain_float(latency_ms) and _plain_float(queue_ms)):
            return encode(ok(request_id, **fields, latency_ms=latency_ms, queue_ms=queue_ms))
        app = fields.get("app")
        known = self._known.get(app)
        if known is None or known[0] != fields:
            if len(self._known) >= 256:
                self._known.clear()
            known = self._known[app] = (fields, encode(ok(None, **fields))[:-1])
        return b"%s,\"latency_ms\":%r,\"queue_ms\":%r,\"id\":%d}" % (known[1], latency_ms, queue_ms, request_id)


class ReplyMemo:
    """JSON decoding of a connection's replies (client side), remembering the last inference reply:
    one that repeats it up to its ``latency_ms``, ``queue_ms`` and id (written last, as
    :class:`InferenceReplies` does) is read from the memo and those three numbers (~65 us of JSON
    decoding saved per reply after a forward). The result is what ``json.loads`` gives: a reply is
    remembered only after it decoded in full and its ending read the same numbers, and a later one is
    taken from the memo only when its bytes equal that one's up to the numbers and they match the
    JSON number grammar; values are fresh copies, never shared between replies."""

    __slots__ = ("_prefix", "_fields")

    def __init__(self) -> None:
        self._prefix: bytes | None = None
        self._fields: dict[str, Any] = {}

    def decode(self, raw: bytes | bytearray, full: Callable[[bytes | bytearray], dict[str, Any]]) -> dict[str, Any]:
        """``raw`` as a JSON object; ``full`` decodes one the memo does not know (and raises what it raises)."""
        cut = raw.rfind(_LATENCY_AT, max(0, len(raw) - 128))
        tail = _REPLY_TAIL.match(raw, cut) if cut > 0 else None
        if tail is not None and self._prefix is not None and raw[:cut] == self._prefix:
            reply = {k: _fresh(v) for k, v in self._fields.items()}
            reply["latency_ms"], reply["queue_ms"], reply["id"] = _numbers(tail)
            return reply
        reply = full(raw)
        self._prefix = None
        if tail is None or [reply.get(k) for k in _TAIL_KEYS] != _numbers(tail):
            return reply
        if list(reply)[-3:] != _TAIL_KEYS:
            return reply  # one of them given twice too (JSON keeps the last value, the first place)
        self._prefix = bytes(raw[:cut])
        self._fields = {k: _fresh(v) for k, v in reply.items() if k not in _TAIL_KEYS}
        return reply


def _plain_float(value: Any) -> bool:
    return type(value) is float and math.isfinite(value)  # %r writes it as JSON does


def _numbers(tail: re.Match[bytes]) -> list[Any]:
    return [_number(tail[1]), _number(tail[2]), int(tail[3])]


def _number(text: bytes) -> int | float:
    return float(text) if b"." in text or b"e" in text or b"E" in text else int(text)


def _fresh(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _fresh(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_fresh(v) for v in value]
    return value


def error(code: str, message: str, request_id: Any = None) -> dict[str, Any]:
    reply: dict[str, Any] = {"v": PROTOCOL_VERSION, "ok": False, "error": {"code": code, "message": message}}
    if request_id is not None:
        reply["id"] = request_id
    return reply


def check_reply(reply: Any, op: str = "") -> dict[str, Any]:
    """Return a successful reply, raise :class:`RemoteError` for an error reply (client side)."""
    if not isinstance(reply, dict) or "ok" not in reply:
        raise ProtocolError(f"malformed reply from the daemon: {reply!r:.200}")
    if reply["ok"] is True:
        return reply
    err = reply.get("error") or {}
    raise RemoteError(str(err.get("code", INTERNAL)), str(err.get("message", "unknown error")), op)
