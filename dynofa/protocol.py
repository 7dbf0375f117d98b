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

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dynofa.errors import ProtocolError

PROTOCOL_VERSION = 1

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
INTERNAL = "internal"
ERROR_CODES = (
    BAD_JSON, BAD_REQUEST, UNKNOWN_OP, UNSUPPORTED_VERSION, TOO_LARGE, BAD_TENSOR, UNKNOWN_APP, UNKNOWN_MODEL,
    UNKNOWN_SUBNET, TOO_MANY_APPS, BAD_BUDGET, BUSY, TIMEOUT, SHUTTING_DOWN, INFERENCE_FAILED, INTERNAL,
)  # fmt: skip

# telemetry topics
TOPIC_OPERATING_POINT = "op"
TOPIC_BUDGET = "budget"
TOPIC_STATE = "state"
TOPIC_EVENT = "event"
TOPICS = (TOPIC_OPERATING_POINT, TOPIC_BUDGET, TOPIC_STATE, TOPIC_EVENT)

#: dtypes an ``infer`` tensor may have; the daemon converts to the model's float32
INPUT_DTYPES = ("float32", "float16", "float64")
MAX_DIMS = 4
MAX_BATCH = 64
_APP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class RequestError(ProtocolError):
    """A request the daemon refuses; ``code`` is one of :data:`ERROR_CODES`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


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
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return RequestError(BAD_REQUEST, f"field {name!r} must be {expected}, got {shown}")


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
    ok = ok and all(isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= 1 << 16 for d in value)
    if not ok:
        raise _bad(name, f"a list of 1 to {MAX_DIMS} positive integers", value)
    return tuple(value)


def dtype(value: Any, name: str) -> str:
    if value not in INPUT_DTYPES:
        raise RequestError(BAD_TENSOR, f"field {name!r} must be one of {', '.join(INPUT_DTYPES)}, got {value!r}")
    return str(value)


Checker = Callable[[Any, str], Any]


@dataclass(frozen=True)
class OpSpec:
    required: dict[str, Checker] = field(default_factory=dict)
    optional: dict[str, Checker] = field(default_factory=dict)
    tensor: bool = False  # a second frame with raw tensor bytes follows the header
    doc: str = ""


OPS: dict[str, OpSpec] = {
    "hello": OpSpec(optional={"app": app_name}, doc="protocol and daemon versions, models, processing elements"),
    "ping": OpSpec(doc="cheapest round trip"),
    "register": OpSpec(
        required={"app": app_name}, optional={"model": text, "budget": obj}, doc="register an app (idempotent)"
    ),
    "unregister": OpSpec(required={"app": app_name}, doc="forget an app and its budget"),
    "set_budget": OpSpec(required={"app": app_name, "budget": obj}, doc="set or replace an app's budget"),
    "clear_budget": OpSpec(required={"app": app_name}, doc="remove an app's budget"),
    "budgets": OpSpec(doc="every app's budget"),
    "state": OpSpec(doc="operating point per app and per PE, frequencies, monitors"),
    "subnets": OpSpec(optional={"model": text}, doc="the catalog's subnets per model"),
    "infer": OpSpec(
        required={"app": app_name, "dtype": dtype, "shape": shape},
        optional={"subnet": text},
        tensor=True,
        doc="run one inference on the app's current operating point",
    ),
    "feedback": OpSpec(
        required={"app": app_name, "qoe": unit_fraction},
        optional={"detail": any_json},
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


def _as_bytes(frame: Any) -> bytes | memoryview:
    # zmq.Frame (copy=False) exposes .buffer; plain bytes pass through
    buffer = getattr(frame, "buffer", None)
    return buffer if buffer is not None else frame


def frame_len(frame: Any) -> int:
    return len(_as_bytes(frame))


def parse_request(frames: Sequence[Any], max_bytes: int, max_frames: int = 4) -> Request:
    """Validate a request (the frames after the ROUTER envelope). Raises :class:`RequestError`."""
    if not frames:
        raise RequestError(BAD_REQUEST, "empty message: expected a JSON header frame")
    if len(frames) > max_frames:
        raise RequestError(BAD_REQUEST, f"too many frames ({len(frames)}); at most {max_frames}")
    total = sum(frame_len(f) for f in frames)
    if total > max_bytes:
        raise RequestError(TOO_LARGE, f"message of {total} bytes exceeds the limit of {max_bytes} bytes")
    header = decode_json(frames[0])
    if not isinstance(header, dict):
        raise RequestError(BAD_REQUEST, f"the header must be a JSON object, got {type(header).__name__}")
    version = header.get("v")
    if version != PROTOCOL_VERSION:
        raise RequestError(
            UNSUPPORTED_VERSION,
            f"protocol version {version!r} is not supported; this daemon speaks v{PROTOCOL_VERSION}",
        )
    op = header.get("op")
    spec = OPS.get(op) if isinstance(op, str) else None
    if spec is None:
        raise RequestError(UNKNOWN_OP, f"unknown op {op!r}; known ops: {', '.join(OPS)}")
    args: dict[str, Any] = {}
    for name in header:
        if name not in _ENVELOPE and name not in spec.required and name not in spec.optional:
            allowed = [*spec.required, *spec.optional]
            raise RequestError(
                BAD_REQUEST, f"op {op!r} takes no field {name!r}; it takes: {', '.join(allowed) or '(nothing)'}"
            )
    for name, check in spec.required.items():
        if name not in header:
            raise RequestError(BAD_REQUEST, f"op {op!r} needs field {name!r}")
        args[name] = check(header[name], name)
    for name, check in spec.optional.items():
        if header.get(name) is not None:
            args[name] = check(header[name], name)
    request = Request(op=str(op), args=args, id=header.get("id"))
    if spec.tensor:
        if len(frames) != 2:
            raise RequestError(
                BAD_TENSOR, f"op {op!r} needs 2 frames (JSON header + raw tensor bytes), got {len(frames)}"
            )
        request.tensor = decode_tensor(frames[1], args["dtype"], args["shape"])
    elif len(frames) != 1:
        raise RequestError(BAD_REQUEST, f"op {op!r} takes a single JSON frame, got {len(frames)} frames")
    _check_id(request.id)
    return request


def _check_id(value: Any) -> None:
    if value is None or isinstance(value, (int, str)) and not isinstance(value, bool) and len(str(value)) <= 128:
        return
    raise _bad("id", "a string or integer of at most 128 characters", value)


def decode_json(frame: Any) -> Any:
    try:
        return json.loads(bytes(_as_bytes(frame)).decode("utf-8"))
    except UnicodeDecodeError:
        raise RequestError(BAD_JSON, "the header frame is not UTF-8 text") from None
    except (json.JSONDecodeError, RecursionError) as exc:
        raise RequestError(BAD_JSON, f"the header frame is not valid JSON: {exc}") from None


def decode_tensor(frame: Any, dtype_name: str, dims: Sequence[int]) -> np.ndarray:
    """The tensor frame as a numpy array (a view of the frame's buffer, read-only)."""
    data = _as_bytes(frame)
    dt = np.dtype(dtype_name)
    expected = int(np.prod(dims)) * dt.itemsize
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
    return {"dtype": str(out.dtype), "shape": list(out.shape)}, out


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), allow_nan=False, default=_jsonable).encode()


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def request(op: str, id: Any = None, **args: Any) -> dict[str, Any]:
    message: dict[str, Any] = {"v": PROTOCOL_VERSION, "op": op}
    if id is not None:
        message["id"] = id
    message.update({k: v for k, v in args.items() if v is not None})
    return message


def ok(request_id: Any = None, **fields: Any) -> dict[str, Any]:
    reply: dict[str, Any] = {"v": PROTOCOL_VERSION, "ok": True}
    if request_id is not None:
        reply["id"] = request_id
    reply.update(fields)
    return reply


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
