"""A small Python client for the dynofa daemon (numpy + pyzmq only; never imports torch).

>>> from dynofa.client import Client
>>> with Client() as dyn:                                   # doctest: +SKIP
...     dyn.register("camera", budget={"latency_ms": 30, "min_accuracy": 0.8})
...     result = dyn.infer("camera", image)                 # float32 NCHW numpy array
...     result.output, result.subnet, result.latency_ms

Requests go over a REQ socket with a timeout; when the daemon does not answer in time
the socket is closed and reopened and the request is sent again ("Lazy Pirate"), up to
``retries`` times, then :class:`~dynofa.errors.DaemonUnavailableError` is raised. Every
request of the protocol is idempotent (register, set_budget, infer, ...), so a retry is safe.

An app belongs to the client that registered it (docs/protocol.md, "Ownership"): the daemon knows
this process by its uid, so nothing is needed for that. ``register(app, token=new_token())``
binds the app to a secret as well; the client then sends it with every request on that app.

On the same machine (an ``ipc://`` endpoint) ``infer`` passes tensors through shared memory
(docs/protocol.md, "Shared memory"): no tensor bytes on the socket. ``InferenceReply.transport``
and ``Client.transport`` say which transport served; ``Client(shm=False)`` (or
``$DYNOFA_SHM=0``) keeps frames, ``shm=True`` refuses to fall back to them. An app that fills
``x = dyn.input_array("camera", (1, 3, 224, 224))`` in place and sends ``dyn.infer("camera", x)``
saves the one copy left: its frame already lies where the daemon reads it.

On the same machine an app's inferences go, after its first one, straight to the inference
endpoint the daemon's reply names (extension ``direct``): a Unix socket of the thread that runs
the forward, so no hand-off between the daemon's threads and no ZeroMQ I/O thread on either side
(``InferenceReply.via`` names it; unreachable, the request goes to the control endpoint). ``Client(direct=False)`` (or
``$DYNOFA_DIRECT=0``) keeps every request on the control endpoint.
"""

from __future__ import annotations

import errno
import functools
import json
import math
import os
import secrets
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from dynofa import direct, paths, protocol
from dynofa.direct import Connection as DirectConnection
from dynofa.errors import DaemonUnavailableError, ProtocolError
from dynofa.protocol import RemoteError
from dynofa.shm import SHM_DIR, ClientRegion

ENDPOINT_ENV = "DYNOFA_ENDPOINT"
SHM_ENV = "DYNOFA_SHM"  # "0": never use shared memory
DIRECT_ENV = "DYNOFA_DIRECT"  # "0": inferences stay on the control endpoint
TELEMETRY_ENV = "DYNOFA_TELEMETRY"
_REPEATED_OPS = ("infer", "infer_shm")  # sent again and again with the same fields: their header bytes are reused


def _candidate_dirs() -> list[Path]:
    dirs = [paths.runtime_dir()]
    # the system service, then a user daemon's directories
    for extra in (Path("/run/dynofa"), paths.runtime_dir(euid=1), paths.runtime_dir({}, euid=1)):
        if extra not in dirs:
            dirs.append(extra)
    return dirs


def default_endpoint(name: str = "control") -> str:
    """``$DYNOFA_ENDPOINT`` (or ``$DYNOFA_TELEMETRY``), else the first runtime dir holding a daemon socket."""
    env = os.environ.get(ENDPOINT_ENV if name == "control" else TELEMETRY_ENV)
    if env:
        return env
    for directory in _candidate_dirs():
        if (directory / f"{name}.sock").exists():
            return f"ipc://{directory / f'{name}.sock'}"
    return f"ipc://{paths.runtime_dir() / f'{name}.sock'}"


def check_endpoint(endpoint: str, what: str = "endpoint") -> str:
    """``endpoint`` when it is a ZeroMQ endpoint the daemon can serve, else ProtocolError naming it."""
    scheme, sep, rest = endpoint.partition("://")
    if not sep or scheme not in ("ipc", "tcp", "inproc") or not rest:
        raise ProtocolError(
            f"{what} {endpoint!r} is not a daemon endpoint; give ipc:///PATH/control.sock or tcp://HOST:PORT"
        )
    if scheme == "tcp":
        host, _, port = rest.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ProtocolError(f"{what} {endpoint!r} needs tcp://HOST:PORT with a port in 1..65535")
    return endpoint


def _nobody_listens(path: str) -> bool:
    """Whether connecting to the Unix socket at ``path`` is refused (a socket file nobody serves)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except OSError as exc:
        return exc.errno == errno.ECONNREFUSED
    finally:
        probe.close()
    return False


def telemetry_endpoint_for(control: str) -> str:
    """The telemetry endpoint beside a control endpoint (ipc:// only; else ``$DYNOFA_TELEMETRY``)."""
    if control.startswith("ipc://") and control.endswith("control.sock"):
        return control[: -len("control.sock")] + "telemetry.sock"
    return default_endpoint("telemetry")


def new_token() -> str:
    """A fresh app token (32 URL-safe characters, 192 random bits) for ``register(..., token=...)``."""
    return secrets.token_urlsafe(24)


@dataclass(frozen=True)
class InferenceReply:
    output: np.ndarray
    subnet: str
    pe: str
    latency_ms: float  # the forward pass in the daemon
    queue_ms: float  # time the request waited for the processing element
    round_trip_ms: float  # seen by this client, transport included
    transport: str = "frames"  # "shm" when the tensors went through shared memory
    via: str | None = None  # the inference endpoint it went to (extension direct); None: the control endpoint


@dataclass(frozen=True)
class CurveKeys:
    """CURVE keys for a tcp:// daemon: the server's public key and this client's key pair (Z85)."""

    server_public: bytes
    public: bytes
    secret: bytes

    @classmethod
    def load(cls, server_public_file: str, client_secret_file: str | None = None) -> CurveKeys:
        from zmq.auth import load_certificate

        server_public, _ = load_certificate(server_public_file)
        if client_secret_file is None:
            public, secret = zmq.curve_keypair()  # an anonymous client; the daemon must allow any client
        else:
            public, secret_opt = load_certificate(client_secret_file)
            if secret_opt is None:
                raise ProtocolError(f"{client_secret_file} holds no secret key (use the .key_secret file)")
            secret = secret_opt
        return cls(server_public=server_public, public=public, secret=secret)


class Client:
    """A connection to the daemon's control endpoint."""

    def __init__(
        self,
        endpoint: str | None = None,
        timeout_s: float = 5.0,
        retries: int = 1,
        curve: CurveKeys | None = None,
        context: zmq.Context[Any] | None = None,
        shm: bool | None = None,
        direct: bool | None = None,
    ) -> None:
        self.endpoint = check_endpoint(endpoint or default_endpoint(), "endpoint" if endpoint else "$DYNOFA_ENDPOINT")
        self.timeout_ms = max(1, int(timeout_s * 1000))
        self.retries = max(0, int(retries))
        self.curve = curve
        self._context = context or zmq.Context.instance()
        self._socket: zmq.Socket[Any] | None = None
        self._sockets: dict[str, DirectConnection] = {}  # inference endpoints (extension direct) -> connections
        # the inference endpoint each app's last reply named; used only for an ipc:// daemon (this machine)
        self.direct = (direct if direct is not None else os.environ.get(DIRECT_ENV) != "0") and (
            self.endpoint.startswith("ipc://") and curve is None
        )
        self._direct: dict[str, str] = {}
        self.answered_via: str | None = None  # the inference endpoint that answered the last request, if any
        self._next_id = 0
        self._last_header: tuple[str, dict[str, Any], bytes] | None = None  # (op, fields, bytes up to the id)
        self._replies = protocol.ReplyMemo()  # a repeated inference reply is not decoded again
        self.tokens: dict[str, str] = {}  # app -> the token it was registered with (sent on every request on it)
        # shared memory: None = when the daemon offers it on this machine; False = frames; True = required
        self.shm = shm if shm is not None else (False if os.environ.get(SHM_ENV) == "0" else None)
        self.transport: str | None = None  # the transport the last inference used
        self.shm_problem: str | None = None  # why shared memory is not used, when it was wanted
        self._shm_offered: bool | None = None
        self._regions: dict[str, ClientRegion] = {}  # app -> its region

    # lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release this client's shared-memory regions and close the socket."""
        regions, self._regions = self._regions, {}
        for app, region in regions.items():
            if self._socket is None:  # nothing was ever sent on this client: no daemon to tell
                region.close()
            else:
                region.close(functools.partial(self._unregister_region, app))
        self._reset()

    def _unregister_region(self, app: str, region_id: str) -> None:
        saved = self.timeout_ms, self.retries
        self.timeout_ms, self.retries = min(self.timeout_ms, 500), 0  # never hold up close() for long
        try:
            self.call("shm_unregister", app=app, region=region_id)
        finally:
            self.timeout_ms, self.retries = saved

    def _reset(self, endpoint: str | None = None) -> None:
        if endpoint is not None:
            conn = self._sockets.pop(endpoint, None)
            if conn is not None:
                conn.close()
            return
        for conn in self._sockets.values():
            conn.close()
        self._sockets.clear()
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

    def _open(self) -> zmq.Socket[Any]:
        if self._socket is None:
            self._socket = self._new_socket(self.endpoint)
        return self._socket

    def _new_socket(self, endpoint: str) -> zmq.Socket[Any]:
        sock = self._context.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, self.timeout_ms)
        sock.setsockopt(zmq.SNDTIMEO, self.timeout_ms)
        if self.curve is not None:
            sock.curve_serverkey = self.curve.server_public
            sock.curve_publickey = self.curve.public
            sock.curve_secretkey = self.curve.secret
        sock.connect(endpoint)
        return sock

    def _check_socket_file(self) -> None:
        if not self.endpoint.startswith("ipc://"):
            return
        path = self.endpoint[len("ipc://") :]
        hint = "(start it with `dynofa serve` or `systemctl start dynofa`, or set $DYNOFA_ENDPOINT)"
        if not Path(path).exists():
            raise DaemonUnavailableError(f"the dynofa daemon is not running: no socket at {path} {hint}")
        # a daemon killed with SIGKILL leaves its socket file behind; probed once per connection, not per request
        if self._socket is None and _nobody_listens(path):
            raise DaemonUnavailableError(
                f"the dynofa daemon is not running: nothing listens on {path} (a stale socket left by a "
                f"daemon that was killed) {hint}"
            )

    # transport ---------------------------------------------------------------------------
    def request(
        self, op: str, *, tensor: np.ndarray | None = None, via: str | None = None, **args: Any
    ) -> tuple[dict[str, Any], list[Any]]:
        """Send one request (to the inference endpoint ``via``, else the control endpoint); return the
        checked reply header and any extra frames."""
        self._next_id += 1
        spec = protocol.OPS.get(op)
        if spec is not None and spec.owned and args.get("token") is None and args.get("app") in self.tokens:
            args["token"] = self.tokens[args["app"]]
        frames: list[Any] = [self._header(op, args)]
        if tensor is not None:
            frames.append(tensor.data.cast("B"))
        reply_frames = None
        if via is not None:
            reply_frames = self._exchange_direct(via, frames, op)
        self.answered_via = via if reply_frames is not None else None
        if reply_frames is None:
            self._check_socket_file()
            reply_frames = self._exchange(frames, op)
        reply = self._replies.decode(_raw(reply_frames[0]), self._decode)
        if reply.get("id") not in (None, self._next_id):
            raise ProtocolError(f"reply id {reply.get('id')!r} does not match request id {self._next_id}")
        return protocol.check_reply(reply, op), list(reply_frames[1:])

    def _header(self, op: str, args: dict[str, Any]) -> bytes:
        """The request's header bytes, its id written last. An inference asked again with the same
        fields reuses the previous header's bytes up to the id: the JSON encoding costs ~30 us after a
        forward has evicted the caches, and the daemon's RepeatMemo recognises the same bytes."""
        last = self._last_header
        if last is not None and last[0] == op and last[1] == args:
            return last[2] + b"%d}" % self._next_id
        raw = protocol.encode(protocol.request(op, id=self._next_id, **args))
        cut = protocol.trailing_id_start(raw) if op in _REPEATED_OPS else -1
        self._last_header = (op, args, raw[: cut + len(protocol.ID_LAST)]) if cut > 0 else None
        return raw

    def _exchange(self, frames: list[Any], op: str) -> list[Any]:
        for attempt in range(self.retries + 1):
            sock = self._open()
            try:
                sock.send_multipart(frames, copy=False)
                return list(sock.recv_multipart(copy=False))
            except zmq.Again:
                self._reset()  # Lazy Pirate: a REQ socket that timed out is stuck; start over
                if attempt == self.retries:
                    raise DaemonUnavailableError(
                        f"the dynofa daemon at {self.endpoint} did not answer {op!r} within "
                        f"{self.timeout_ms / 1000:g} s ({attempt + 1} attempt(s))"
                    ) from None
        raise AssertionError("unreachable")

    def _exchange_direct(self, endpoint: str, frames: list[Any], op: str) -> list[Any] | None:
        """The reply from an inference endpoint, or None when it cannot be reached (the caller then
        sends to the control endpoint: every request is idempotent, and it says why if the daemon is gone)."""
        try:
            conn = self._sockets.get(endpoint)
            if conn is None:  # the daemon is trusted with the size of its replies
                path = endpoint[len(direct.SCHEME) :]
                conn = self._sockets[endpoint] = direct.Connection(path, self.timeout_ms / 1000)
            return list(conn.exchange(frames))
        except TimeoutError:
            self._reset(endpoint)
            raise DaemonUnavailableError(
                f"the dynofa daemon at {endpoint} did not answer {op!r} within {self.timeout_ms / 1000:g} s"
            ) from None
        except (OSError, EOFError, direct.FramingError):
            # gone (a daemon restarted without it, or stopping): forget it for every app
            self._reset(endpoint)
            self._direct = {app: e for app, e in self._direct.items() if e != endpoint}
            return None

    def _via(self, app: str) -> str | None:
        """The inference endpoint for ``app``'s next inference, or None (the control endpoint)."""
        return self._direct.get(app)

    def _learn_endpoint(self, app: str, reply: dict[str, Any]) -> None:
        endpoint = reply.get("endpoint")
        if self.direct and isinstance(endpoint, str) and endpoint.startswith(direct.SCHEME):
            self._direct[app] = endpoint

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        reply, _ = self.request(op, **args)
        return reply

    @staticmethod
    def _decode(frame: bytes | bytearray) -> dict[str, Any]:
        try:
            data = json.loads(frame)  # the bytes _raw took from the frame
        except (ValueError, UnicodeDecodeError) as exc:
            raise ProtocolError(f"the daemon sent a reply that is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ProtocolError("the daemon sent a reply that is not a JSON object")
        return data

    # operations --------------------------------------------------------------------------
    def hello(self, app: str | None = None) -> dict[str, Any]:
        return self.call("hello", app=app)

    def ping(self) -> dict[str, Any]:
        return self.call("ping")

    def register(
        self,
        app: str,
        model: str | None = None,
        budget: Mapping[str, Any] | Any | None = None,
        token: str | None = None,
    ) -> dict[str, Any]:
        """Register ``app``; with ``token`` (see :func:`new_token`) the app is bound to that secret too."""
        reply = self.call("register", app=app, model=model, budget=_budget_dict(budget), token=token)
        if token is not None:
            self.tokens[app] = token
        return reply

    def unregister(self, app: str, override: bool = False) -> dict[str, Any]:
        """Forget ``app``; ``override`` lets an operator remove another client's app."""
        reply = self.call("unregister", app=app, override=override or None)
        self.tokens.pop(app, None)
        self._direct.pop(app, None)
        return reply

    def set_budget(
        self, app: str, budget: Mapping[str, Any] | Any | None = None, override: bool = False, **fields: Any
    ) -> dict[str, Any]:
        """Set or replace ``app``'s budget: a mapping, a :class:`dynofa.budget.Budget`, or keyword fields."""
        data = _budget_dict(budget) or {}
        data.update(fields)
        return self.call("set_budget", app=app, budget=data, override=override or None)

    def clear_budget(self, app: str, override: bool = False) -> dict[str, Any]:
        return self.call("clear_budget", app=app, override=override or None)

    def budgets(self) -> dict[str, Any]:
        return dict(self.call("budgets")["budgets"])

    def state(self) -> dict[str, Any]:
        return self.call("state")

    def subnets(self, model: str | None = None) -> dict[str, Any]:
        return dict(self.call("subnets", model=model)["models"])

    def feedback(self, app: str, qoe: float, detail: Any = None) -> dict[str, Any]:
        return self.call("feedback", app=app, qoe=float(qoe), detail=detail)

    def infer(self, app: str, x: np.ndarray, subnet: str | None = None) -> InferenceReply:
        """Run one inference of ``x`` (float32 NCHW; a CHW image is batched) for ``app``."""
        array = np.asarray(x)
        if array.ndim == 3:
            array = array[None]
        if array.dtype.name not in protocol.INPUT_DTYPES:
            array = array.astype(np.float32)
        fields, array = protocol.encode_tensor(array)
        if self._use_shm():
            try:
                return self._infer_shm(app, array, subnet)
            except RemoteError as exc:
                self._region_refused(exc)
        via = self._via(app)
        started = time.perf_counter()
        reply, frames = self.request("infer", tensor=array, via=via, app=app, subnet=subnet, **fields)
        rtt = (time.perf_counter() - started) * 1000.0
        self._learn_endpoint(app, reply)
        out = reply.get("output") or {}
        if len(frames) != 1:
            raise ProtocolError(f"an infer reply needs one output frame, got {len(frames)}")
        buffer = frames[0].buffer if hasattr(frames[0], "buffer") else frames[0]
        output = np.frombuffer(buffer, dtype=np.dtype(out.get("dtype", "float32"))).reshape(out.get("shape", [-1]))
        self.transport = "frames"
        return _reply(reply, output, rtt, "frames", self.answered_via)

    def input_array(self, app: str, shape: Sequence[int], dtype: Any = np.float32) -> np.ndarray:
        """A writable array for ``app``'s next input (NCHW): fill it in place, then pass it to :meth:`infer`.

        With shared memory it lies in the region the daemon reads, so :meth:`infer` copies nothing
        (the zero-copy path); with tensor frames it is an ordinary array. It is reused by every
        inference: write the next frame into it after :meth:`infer` returns, not while it runs.
        Ask again when the shape changes (or after the daemon restarted): an older array still
        works, through one copy.
        """
        kind = np.dtype(dtype)
        if kind.name not in protocol.INPUT_DTYPES:
            raise ValueError(f"input dtype {kind.name!r} is not one of {sorted(protocol.INPUT_DTYPES)}")
        dims = tuple(int(d) for d in shape)
        if not dims or min(dims) < 1:
            raise ValueError(f"an input shape needs positive dimensions, got {list(shape)}")
        if self._use_shm():
            try:
                return self._region(app, math.prod(dims) * kind.itemsize).input_view(dims, kind)
            except RemoteError as exc:
                self._region_refused(exc)
        return np.empty(dims, dtype=kind)

    # shared memory -----------------------------------------------------------------------
    def _region_refused(self, exc: RemoteError) -> None:
        """Fall back to frames when the daemon refuses the region itself (unless shm=True asked for it)."""
        if self.shm or exc.code not in (protocol.BAD_REGION, protocol.UNKNOWN_OP):
            raise exc
        self._shm_refused(f"the daemon refused the shared-memory region: {exc.message}")

    def _use_shm(self) -> bool:
        if self.shm is False:
            return False
        if self._shm_offered:  # checked once, on the first inference: the endpoint and /dev/shm stay what they were
            return True
        problem = None
        if not self.endpoint.startswith("ipc://") or self.curve is not None:
            problem = f"shared memory needs the daemon on this machine (an ipc:// endpoint), not {self.endpoint}"
        elif not SHM_DIR.is_dir():
            problem = f"no {SHM_DIR} on this system"
        else:
            if self._shm_offered is None:
                self._shm_offered = "shm" in (self.hello().get("extensions") or {})
            if not self._shm_offered:
                problem = "the daemon does not offer the shm extension (an older daemon)"
        if problem is None:
            return True
        if self.shm:
            raise ProtocolError(f"shm=True: {problem}")
        self._shm_refused(problem)
        return False

    def _shm_refused(self, problem: str) -> None:
        self.shm, self.shm_problem = False, f"{problem}; sending tensor frames"

    def _region(self, app: str, nbytes: int) -> ClientRegion:
        region = self._regions.get(app)
        if region is not None and region.fits(nbytes) and region.region is not None:
            return region
        if region is not None:
            self._regions.pop(app)
            region.close(lambda rid: self._unregister_region(app, rid))
        region = ClientRegion(nbytes)
        try:
            region.region = str(self.call("shm_register", app=app, name=region.name)["region"])
        except BaseException:
            region.close()
            raise
        finally:
            region.unlink()  # the daemon holds the file open: nothing is left in /dev/shm if either side dies
        self._regions[app] = region
        return region

    def _infer_shm(self, app: str, array: np.ndarray, subnet: str | None) -> InferenceReply:
        for attempt in range(2):
            region = self._region(app, array.nbytes)
            source = region.write_input(array)
            via = self._via(app)
            started = time.perf_counter()
            try:
                reply, _ = self.request("infer_shm", via=via, app=app, region=region.region, input=source,
                                        output=region.output_slice(), subnet=subnet)  # fmt: skip
            except RemoteError as exc:
                if exc.code != protocol.UNKNOWN_REGION or attempt:
                    raise
                region.region = None  # the daemon restarted (or dropped it): register again, once
                continue
            rtt = (time.perf_counter() - started) * 1000.0
            self._learn_endpoint(app, reply)
            self.transport = "shm"
            return _reply(reply, region.read_output(reply.get("output") or {}), rtt, "shm", self.answered_via)
        raise AssertionError("unreachable")


def _raw(frame: Any) -> bytes | bytearray:
    """A reply frame's bytes: a direct connection's as they are, a ZeroMQ frame's copied (it is small)."""
    if isinstance(frame, (bytes, bytearray)):
        return frame
    return bytes(frame.buffer if hasattr(frame, "buffer") else frame)


def _reply(reply: dict[str, Any], output: np.ndarray, rtt: float, transport: str, via: str | None) -> InferenceReply:
    return InferenceReply(
        output=output,
        subnet=str(reply.get("subnet")),
        pe=str(reply.get("pe")),
        latency_ms=float(reply.get("latency_ms", 0.0)),
        queue_ms=float(reply.get("queue_ms", 0.0)),
        round_trip_ms=rtt,
        transport=transport,
        via=via,
    )


def _budget_dict(budget: Mapping[str, Any] | Any | None) -> dict[str, Any] | None:
    if budget is None:
        return None
    if hasattr(budget, "to_dict"):
        return dict(budget.to_dict())
    return dict(budget)


class Telemetry:
    """A subscriber to the daemon's telemetry (PUB) endpoint.

    PUB/SUB drops messages for slow or late subscribers: telemetry is a live view, not a log
    (the daemon's trace file is the log).
    """

    def __init__(
        self,
        endpoint: str | None = None,
        topics: tuple[str, ...] = (),
        curve: CurveKeys | None = None,
        context: zmq.Context[Any] | None = None,
    ) -> None:
        self.endpoint = endpoint or default_endpoint("telemetry")
        self._context = context or zmq.Context.instance()
        self._socket = self._context.socket(zmq.SUB)
        self._socket.setsockopt(zmq.LINGER, 0)
        if curve is not None:
            self._socket.curve_serverkey = curve.server_public
            self._socket.curve_publickey = curve.public
            self._socket.curve_secretkey = curve.secret
        for topic in topics or (b"",):
            self._socket.setsockopt(zmq.SUBSCRIBE, topic.encode() if isinstance(topic, str) else topic)
        self._socket.connect(self.endpoint)

    def __enter__(self) -> Telemetry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._socket.close(linger=0)

    def receive(self, timeout_s: float) -> tuple[str, dict[str, Any]] | None:
        """The next (topic, message), or None after ``timeout_s``."""
        if not self._socket.poll(int(timeout_s * 1000)):
            return None
        frames = self._socket.recv_multipart()
        if len(frames) != 2:
            return None
        try:
            return frames[0].decode(), json.loads(frames[1])
        except (ValueError, UnicodeDecodeError):
            return None

    def __iter__(self) -> Iterator[tuple[str, dict[str, Any]]]:
        while True:
            item = self.receive(3600.0)
            if item is not None:
                yield item
