"""The ZeroMQ side of the daemon: a ROUTER for requests, a PUB for telemetry, inference workers.

Only the main thread touches the control ROUTER and the PUB socket. Control requests are
answered on the main thread at once; inference requests that arrive there go to a worker
thread per torch device (bounded queue: "busy" when full, "timeout" when one waited longer
than ``limits.request_timeout_s``), whose replies and the control loop's telemetry come back
through an outbox and a wake-up pipe that the main loop polls with the sockets, so an idle
daemon sleeps in ``poll`` (no busy polling) and a control request never waits behind an
inference.

On the same machine each worker also owns an inference endpoint of its own (extension
``direct``, docs/protocol.md): a Unix stream socket beside the control socket (framing in
``dynofa.direct``), which the worker accepts and polls itself. A request there is read, checked,
run and answered by the thread that runs the forward: no hand-off between threads and no ZeroMQ
I/O thread on the hot path. An inference there whose app
was decided onto another device's PE goes to that device's worker, which hands the reply back.

A slow or vanished client never blocks the daemon: replies use non-blocking sends,
ROUTER_MANDATORY is off (replies to a gone peer are dropped) and each peer's queue is capped by
SNDHWM.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import logging
import os
import queue
import select
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import zmq

from dynofa import direct, protocol
from dynofa.config import Config, CurveConfig
from dynofa.protocol import Request, RequestError
from service.engine import Engine, InferenceDone, InferenceJob
from service.shm import RegionTable, Transfer
from service.tenancy import ANONYMOUS, Caller, caller_of
from service.threads import INFERENCE_THREAD_PREFIX, InferenceFirst, name_os_thread

log = logging.getLogger(__name__)

SWEEP_INTERVAL_MS = 1000
#: ops an inference endpoint serves; everything else belongs on the control endpoint
DIRECT_OPS = ("infer", "infer_shm", "ping")
MAX_CONNECTIONS = 256  # per inference endpoint: a client opening sockets in a loop cannot exhaust descriptors


class Outbox:
    """Thread-safe hand-over to a thread that polls: items plus a byte on a pipe that wakes ``poll``."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self.write_fd, False)
        self._items: queue.SimpleQueue[tuple[str, Any, Any]] = queue.SimpleQueue()

    def put(self, kind: str, a: Any, b: Any) -> None:
        self._items.put((kind, a, b))
        self.wake()

    def wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):  # a full pipe already means "wake up"
            os.write(self.write_fd, b"\0")

    def drain(self) -> list[tuple[str, Any, Any]]:
        with contextlib.suppress(BlockingIOError, OSError):
            while os.read(self.read_fd, 4096):
                pass
        items = []
        while True:
            try:
                items.append(self._items.get_nowait())
            except queue.Empty:
                return items

    def close(self) -> None:
        for fd in (self.read_fd, self.write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


@dataclass
class Pending:
    envelope: list[Any]
    request_id: Any
    job: InferenceJob
    transfer: Transfer | None = None  # infer_shm: input and output lie in a shared-memory region
    reply_to: Outbox | None = None  # whose socket the reply leaves on (None: the control endpoint's outbox)
    local: bool = False  # the client is on this machine (ipc): its reply names the worker's inference endpoint


@dataclass
class Front:
    """What turning frames into a checked request needs, on the control and the inference endpoints."""

    engine: Engine
    regions: RegionTable
    max_message_bytes: int
    max_frames: int
    ipc: bool  # the socket is ipc://: the kernel's peer credentials identify the caller
    rejections: RejectionLog

    def answer(
        self, frames: list[Any], dispatch: Callable[[Request, list[Any], Caller], list[Any] | None]
    ) -> tuple[list[Any], list[Any] | None]:
        """(envelope, reply frames) for a ROUTER's message; None when the reply comes later (another thread)."""
        # envelope: the peer identity, plus the empty delimiter a REQ socket adds
        if len(frames) >= 2 and len(frames[1].buffer) == 0:
            envelope, body = frames[:2], frames[2:]
        else:
            envelope, body = frames[:1], frames[1:]
        return envelope, self.respond(envelope, body, dispatch)

    def respond(
        self,
        envelope: list[Any],
        body: list[Any],
        dispatch: Callable[[Request, list[Any], Caller], list[Any] | None],
        caller: Caller | None = None,
        memo: protocol.RepeatMemo | None = None,
    ) -> list[Any] | None:
        """The reply frames to a request's ``body`` (``caller``: who the transport says sent it, else
        read from the frames' properties; ``memo``: the connection's last request); None when the
        reply comes later."""
        request_id = None
        try:
            parse = protocol.parse_request if memo is None else memo.parse
            request = parse(body, self.max_message_bytes, self.max_frames)
            request_id = request.id
            if caller is None:
                caller = caller_of(body[0], ipc=self.ipc)
            if protocol.OPS[request.op].owned:  # every op on an app: only its owner (or an operator's override)
                self.engine.authorize(request.args["app"], caller, request.token, request.override)
            return dispatch(request, envelope, caller)
        except RequestError as exc:
            self.rejections.record(exc, caller)
            return [_encode_error(exc, request_id if exc.request_id is None else exc.request_id)]
        except Exception as exc:  # noqa: BLE001 - nothing a client sends may kill the daemon
            log.exception("unexpected error while handling a request")
            return [_encode_error(RequestError(protocol.INTERNAL, f"internal error: {exc}"), request_id)]

    def pending(self, request: Request, envelope: list[Any], reply_to: Outbox | None) -> Pending:
        """An ``infer`` or ``infer_shm`` request checked and decided (its point read now), ready to run."""
        args, now = request.args, time.monotonic()
        if request.op == "infer":
            assert request.tensor is not None
            job = self.engine.prepare_inference(args["app"], request.tensor, args.get("subnet"), now)
            return Pending(envelope, request.id, job, reply_to=reply_to, local=self.ipc)
        transfer = self.regions.transfer(args["app"], args["region"], args["input"], args["output"])
        try:
            job = self.engine.prepare_inference(args["app"], transfer.buffer(), args.get("subnet"), now)
        except BaseException:
            transfer.release()
            raise
        return Pending(envelope, request.id, job, transfer, reply_to, self.ipc)


class Connection:
    """One client of an inference endpoint: its socket, the kernel's word on who it is, what is left to send."""

    def __init__(self, sock: socket.socket, caller: Caller, max_bytes: int, max_frames: int) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.caller = caller
        self.reader = direct.Reader(max_bytes, max_frames)
        self.memo = protocol.RepeatMemo()  # an app's repeated infer_shm is not parsed again
        self.out: list[memoryview] = []  # a reply the socket did not take at once
        self.closing = False  # close once ``out`` is sent (the framing broke: nothing more can be read)
        self.waiting = False  # its request runs on another device's worker: read on once the reply is sent
        self.open = True
        self.priority = 0  # the budget priority of the app its last request was for: who is served first


def _peer(sock: socket.socket) -> Caller:
    try:
        pid, uid, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    except OSError:
        return Caller(identity=ANONYMOUS)
    return Caller(identity=f"uid:{uid}", uid=uid, pid=pid)


class InferenceWorker(threading.Thread):
    """Runs inferences for one torch device, in arrival order.

    Jobs come from the control endpoint (through :meth:`submit`) and, once :meth:`attach` gave it
    one, from the worker's own inference endpoint: a Unix socket it accepts, reads, answers and
    closes itself, between forwards (never blocking on a client: every socket is non-blocking).
    """

    def __init__(
        self,
        device: str,
        engine: Engine,
        outbox: Outbox,
        queue_size: int,
        timeout_s: float,
        on_start: Callable[[], None] | None = None,
        map_task: Callable[[str, int], None] | None = None,
        priority: InferenceFirst | None = None,
    ) -> None:
        super().__init__(name=f"{INFERENCE_THREAD_PREFIX}{device}", daemon=True)
        self.device = device
        self.engine = engine
        self.outbox = outbox  # the control endpoint's: replies to requests that came in there
        self.timeout_s = timeout_s
        self.queue_size = queue_size
        self.mailbox = Outbox()  # jobs for this worker, and replies to send on its own endpoint
        self._queued = 0
        self._count = threading.Lock()
        self._on_start = on_start
        self._map_task = map_task
        self.priority = priority or InferenceFirst()  # shared with the server and the control loop
        self.endpoint: str | None = None  # this worker's inference endpoint, once attached
        self._listener: socket.socket | None = None
        self._connections: dict[int, Connection] = {}
        self._poller = select.poll()  # plain file descriptors only: lighter than zmq.Poller per wake-up
        self._front: Front | None = None
        self._peers: dict[str, InferenceWorker] = {}
        self._unrecorded: InferenceDone | None = None  # the forward whose reply is being sent
        self._replies = protocol.InferenceReplies()  # the repeated part of each app's reply, encoded once
        self._stopping = False

    def attach(self, listener: socket.socket, endpoint: str, front: Front, peers: dict[str, InferenceWorker]) -> None:
        """Give the worker its inference endpoint (listening, not yet polled); call before :meth:`start`."""
        self._listener, self.endpoint, self._front, self._peers = listener, endpoint, front, peers

    def submit(self, pending: Pending) -> None:
        """Queue one job; raises ``busy`` when ``queue_size`` are already waiting. A job that is not
        queued will not run: its shared-memory transfer is released here, for every caller."""
        try:
            with self._count:
                if self._queued >= self.queue_size:
                    raise RequestError(
                        protocol.BUSY,
                        f"{self.queue_size} inferences are already queued on {pending.job.pe} (limits.infer_queue); "
                        "retry later",
                    )
                self._queued += 1
            self.mailbox.put("job", pending, None)
        except BaseException:
            if pending.transfer is not None:
                pending.transfer.release()
            raise

    def stop(self) -> None:
        self.mailbox.put("stop", None, None)  # after the queued jobs: in-flight work finishes

    def run(self) -> None:
        name_os_thread(self.name)
        if self._on_start is not None:
            self._on_start()
        self._poller.register(self.mailbox.read_fd, select.POLLIN)
        listener = self._listener
        if listener is not None:
            self._poller.register(listener.fileno(), select.POLLIN)
        try:
            while not self._stopping:
                events = self._poller.poll()  # EINTR is retried by Python (PEP 475)
                if len(events) > 1:
                    events.sort(key=self._order)
                for fd, event in events:
                    if fd == self.mailbox.read_fd:
                        self._take_mail()
                    elif listener is not None and fd == listener.fileno():
                        self._accept()
                    elif fd in self._connections:
                        self._on_event(self._connections[fd], event)
        finally:
            self._close_endpoint()

    def _order(self, fd_event: tuple[int, int]) -> tuple[int, int]:
        """Serving order when several are ready after a forward: the mailbox, new connections, then
        the connections by their apps' budget priority, higher first (as the planner assumes of
        apps that share this worker); poll's order among equals."""
        conn = self._connections.get(fd_event[0])
        return (2, -conn.priority) if conn is not None else (0 if fd_event[0] == self.mailbox.read_fd else 1, 0)

    def _take_mail(self) -> None:
        for kind, item, frames in self.mailbox.drain():
            if kind == "job":
                with self._count:
                    self._queued -= 1
                try:
                    self._reply(item, self._serve(item))
                finally:
                    self._record()
            elif kind == "reply":  # another worker ran an inference that came in on this endpoint
                self._send(item, frames)
                self._resume(item[0])
            elif kind == "stop":
                self._stopping = True

    def _reply(self, pending: Pending, frames: list[Any]) -> None:
        if pending.reply_to is None:
            self.outbox.put("reply", pending.envelope, frames)
        elif pending.reply_to is self.mailbox:
            self._send(pending.envelope, frames)
        else:
            pending.reply_to.put("reply", pending.envelope, frames)

    # the inference endpoint ------------------------------------------------------------------
    def _accept(self) -> None:
        assert self._listener is not None and self._front is not None
        while True:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. out of file descriptors: the others keep being served
                log.warning("inference endpoint %s: cannot accept a connection: %s", self.endpoint, exc)
                return
            if len(self._connections) >= MAX_CONNECTIONS:
                log.info("inference endpoint %s: %d connections already; one refused", self.endpoint, MAX_CONNECTIONS)
                sock.close()
                continue
            sock.setblocking(False)
            conn = Connection(sock, _peer(sock), self._front.max_message_bytes, self._front.max_frames)
            self._connections[conn.fd] = conn
            self._poller.register(conn.fd, select.POLLIN)

    def _on_event(self, conn: Connection, event: int) -> None:
        if event & select.POLLOUT:
            self._flush(conn)
            self._resume(conn)
        if event & select.POLLHUP:  # both directions closed: no reply can reach the client any more
            self._drop(conn)
        elif event & (select.POLLIN | select.POLLERR) and conn.open and not conn.out and not conn.waiting:
            self._read(conn)

    def _resume(self, conn: Any) -> None:
        """Serve a request that is already read (it came with the previous one) once the reply to
        that one is out: the socket will not poll readable for it."""
        if isinstance(conn, Connection) and conn.open and not conn.out and not conn.waiting and conn.reader.buffered():
            self._read(conn)

    def _read(self, conn: Connection) -> None:
        assert self._front is not None
        # lockstep per connection: one reply at a time, in order
        while conn.open and not conn.out and not conn.closing and not conn.waiting:
            try:
                frames = conn.reader.feed(conn.sock)
            except direct.FramingError as exc:
                self._front.rejections.record(RequestError(exc.code, exc.message), conn.caller)
                conn.closing = True
                self._send([conn], [_encode_error(RequestError(exc.code, exc.message), None)])
                return
            except (EOFError, OSError):
                self._drop(conn)
                return
            if frames is None:
                return
            try:
                reply = self._front.respond([conn], frames, self._dispatch_direct, conn.caller, conn.memo)
                if reply is None:
                    conn.waiting = True
                    self._poller.modify(conn.fd, 0)  # nothing to do for it until the reply: no wake-ups meanwhile
                    return
                self._send([conn], reply)
            finally:
                self._record()  # the inference it ran, now that its reply is out
            if not conn.reader.buffered():
                return  # the next request wakes the poll (no read that would only find the socket empty)

    def _dispatch_direct(self, request: Request, envelope: list[Any], caller: Caller) -> list[Any] | None:
        assert self._front is not None
        if self._stopping:
            raise RequestError(protocol.SHUTTING_DOWN, "the daemon is shutting down")
        if request.op not in DIRECT_OPS:
            raise RequestError(
                protocol.UNKNOWN_OP,
                f"op {request.op!r} is not served on an inference endpoint (only {', '.join(DIRECT_OPS)}); "
                "send it to the control endpoint",
            )
        if request.op == "ping":
            return [protocol.encode(protocol.ok(request.id))]
        pending = self._front.pending(request, envelope, self.mailbox)
        envelope[0].priority = pending.job.priority  # read with the app's point: no second lookup per request
        device = self.engine.models[pending.job.model].device(pending.job.pe)
        if device == self.device:
            return self._serve(pending)  # here, on this thread: no hand-off
        self._peers[device].submit(pending)  # decided onto another device: its worker runs it
        return None

    def _send(self, envelope: list[Any], frames: list[Any]) -> None:
        conn = envelope[0]
        if not isinstance(conn, Connection) or not conn.open:
            return  # the client left meanwhile: drop the reply
        conn.waiting = False
        conn.out = direct.pack(frames)
        self._flush(conn)

    def _flush(self, conn: Connection) -> None:
        try:
            while conn.out:
                conn.out = direct.advance(conn.out, conn.sock.sendmsg(conn.out))
        except (BlockingIOError, InterruptedError):
            self._poller.modify(conn.fd, select.POLLOUT)  # the rest when the client reads
            return
        except OSError:  # the client left
            self._drop(conn)
            return
        if conn.closing:
            self._drop(conn)
            return
        self._poller.modify(conn.fd, select.POLLIN)  # a request that came meanwhile is read at the next poll

    def _drop(self, conn: Connection) -> None:
        if not conn.open:
            return
        conn.open = False
        self._connections.pop(conn.fd, None)
        with contextlib.suppress(KeyError):
            self._poller.unregister(conn.fd)
        conn.sock.close()

    def _close_endpoint(self) -> None:
        """Close the endpoint and its connections (this thread owns them): a client then goes to the
        control endpoint, which answers ``shutting_down``."""
        for conn in list(self._connections.values()):
            self._drop(conn)
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def close(self) -> None:
        """Free what a worker that is not running holds (its thread closed its endpoint when it ran)."""
        self._close_endpoint()
        self.mailbox.close()

    # running one job --------------------------------------------------------------------------
    def _serve(self, pending: Pending) -> list[Any]:
        try:
            with self.priority.forward():  # housekeeping holds back its Python meanwhile
                return self._serve_one(pending)
        finally:
            if pending.transfer is not None:
                pending.transfer.release()

    def _record(self) -> None:
        done, self._unrecorded = self._unrecorded, None
        if done is not None:
            self.engine.book(done)

    def _serve_one(self, pending: Pending) -> list[Any]:
        self._record()  # (never left over: the callers record after each reply)
        job = pending.job
        waited = time.monotonic() - job.received
        if waited > self.timeout_s:
            return [_encode_error(RequestError(
                protocol.TIMEOUT,
                f"the request waited {waited:.2f} s for {job.pe}, more than limits.request_timeout_s "
                f"({self.timeout_s:g} s); the daemon is overloaded",
            ), pending.request_id)]  # fmt: skip
        try:
            if self._map_task is not None:
                self._map_task(job.pe, job.threads)
            if pending.transfer is not None:
                pending.transfer.read_into(job.x)  # here, not at request time: the forward sees the latest bytes
            done = self._unrecorded = self.engine.run_inference(job)  # recorded once the reply is sent
            if pending.transfer is not None:
                fields = pending.transfer.write_output(done.output)
                out = None
            else:
                fields, out = protocol.encode_tensor(done.output)
            # endpoint: where this app's next inference goes without a hand-off
            endpoint = self.endpoint if pending.local else None
            header = self._replies.encode(
                pending.request_id,
                round(done.latency_ms, 4),
                round(done.queue_ms, 4),
                app=job.app,
                subnet=done.subnet,
                pe=done.pe,
                output=fields,
                **({} if endpoint is None else {"endpoint": endpoint}),
            )
            return [header] if out is None else [header, out]
        except RequestError as exc:
            return [_encode_error(exc, pending.request_id)]
        except Exception as exc:  # noqa: BLE001 - one bad inference must not kill the worker
            log.exception("inference worker %s: unexpected error", self.device)
            return [_encode_error(RequestError(protocol.INTERNAL, f"internal error: {exc}"), pending.request_id)]


def _encode_error(exc: RequestError, request_id: Any) -> bytes:
    return protocol.encode(protocol.error(exc.code, exc.message, request_id))


class RejectionLog:
    """One log line per refused request: at info up to ``burst`` per ``window_s``, beyond that at debug.

    A client sending garbage in a loop must not fill the journal (and never with tracebacks).
    """

    def __init__(self, burst: int = 20, window_s: float = 60.0) -> None:
        self.burst = burst
        self.window_s = window_s
        self._window_start = time.monotonic()
        self._in_window = 0
        self._quiet = 0  # refusals logged at debug in the current window

    def record(self, exc: RequestError, caller: Caller | None) -> None:
        now = time.monotonic()
        if now - self._window_start >= self.window_s:
            if self._quiet:
                log.info("%d more request(s) refused in the last %.0f s (logged at debug level)",
                         self._quiet, now - self._window_start)  # fmt: skip
            self._window_start, self._in_window, self._quiet = now, 0, 0
        self._in_window += 1
        who = caller.identity if caller is not None else "?"
        if self._in_window <= self.burst:
            log.info("refused a request from %s: %s: %s", who, exc.code, exc.message[:200])
        else:
            self._quiet += 1
            log.debug("refused a request from %s: %s: %s", who, exc.code, exc.message[:200])


def load_curve_keys(curve: CurveConfig) -> tuple[bytes, bytes]:
    """The server's CURVE key pair from ``endpoints.curve``; a missing or wrong file raises ConfigError."""
    from zmq.auth import load_certificate

    from dynofa.errors import ConfigError

    if curve.server_secret_key is None:
        raise ConfigError("endpoints.curve.server_secret_key is required for tcp:// endpoints")
    try:
        public, secret = load_certificate(curve.server_secret_key)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"endpoints.curve.server_secret_key: cannot load {curve.server_secret_key}: {exc}") from None
    if secret is None:
        raise ConfigError(
            f"endpoints.curve.server_secret_key: {curve.server_secret_key} holds no secret key "
            "(give the .key_secret file made by zmq.auth.create_certificates)"
        )
    if curve.authorized_clients is not None and not Path(curve.authorized_clients).is_dir():
        raise ConfigError(
            f"endpoints.curve.authorized_clients: {curve.authorized_clients} is not a directory of clients' .key files"
        )
    return public, secret


class Server:
    """Binds the sockets and runs the main loop until :meth:`request_stop`."""

    def __init__(
        self,
        config: Config,
        engine: Engine,
        outbox: Outbox,
        workers: dict[str, InferenceWorker],
        describe_control: Callable[[], dict[str, Any]] = dict,
        priority: InferenceFirst | None = None,
    ) -> None:
        self.config = config
        self.priority = priority or InferenceFirst()  # the workers' forwards come before requests
        self.engine = engine
        self._describe_control = describe_control  # the control loop's view, for the state op
        self.outbox = outbox
        self.workers = workers
        self.context = zmq.Context()
        self.router: zmq.Socket[Any] | None = None
        self.pub: zmq.Socket[Any] | None = None
        self._auth: Any = None
        self._stopping = False
        self._ipc_files: list[Path] = []
        self._ipc_control = config.control_endpoint().startswith("ipc://")
        self.rejections = RejectionLog()
        self.regions = RegionTable()
        self._last_sweep = 0.0
        limits = config.limits
        self.front = Front(engine, self.regions, limits.max_message_bytes, limits.max_frames, self._ipc_control,
                           self.rejections)  # fmt: skip

    # setup ------------------------------------------------------------------------------
    def bind(self) -> None:
        limits = self.config.limits
        curve = self._curve_keys()
        self.router = self.context.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.setsockopt(zmq.SNDHWM, limits.send_hwm)
        self.router.setsockopt(zmq.RCVHWM, limits.send_hwm)
        self.router.setsockopt(zmq.MAXMSGSIZE, limits.hard_message_bytes)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 0)  # a reply to a vanished peer is dropped, never blocks
        self.pub = self.context.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.setsockopt(zmq.SNDHWM, 100)  # a slow subscriber loses telemetry, not the daemon's memory
        pairs = ((self.router, self.config.control_endpoint()), (self.pub, self.config.telemetry_endpoint()))
        for sock, endpoint in pairs:
            if endpoint.startswith("tcp://") and curve is not None:
                sock.curve_server = True
                sock.curve_publickey, sock.curve_secretkey = curve
            sock.bind(endpoint)
            if endpoint.startswith("ipc://"):
                self._secure_ipc(Path(endpoint[len("ipc://") :]))
        log.info("serving requests on %s, telemetry on %s", self.config.control_endpoint(),
                 self.config.telemetry_endpoint())  # fmt: skip
        if self._ipc_control:
            for worker in self.workers.values():
                self._bind_inference_endpoint(worker)

    def _bind_inference_endpoint(self, worker: InferenceWorker) -> None:
        """A Unix socket beside the control socket that ``worker`` accepts, reads and answers itself
        (extension direct): no thread between the client and the forward."""
        path = Path(self.config.control_endpoint()[len("ipc://") :]).parent / (
            "infer-" + "".join(ch for ch in worker.device if ch.isalnum()) + ".sock"
        )
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # left by a daemon that was killed (the runtime dir is this daemon's)
            listener.bind(str(path))
            listener.listen(64)
            listener.setblocking(False)
        except OSError as exc:  # e.g. a path over the 107 bytes of sun_path: the control endpoint still serves
            log.warning("no inference endpoint for %s (%s): its inferences go through %s", worker.device, exc,
                        self.config.control_endpoint())  # fmt: skip
            listener.close()
            return
        self._secure_ipc(path)
        front = replace(self.front, rejections=RejectionLog())  # each thread counts its own refusals
        worker.attach(listener, f"{direct.SCHEME}{path}", front, self.workers)
        log.info("inferences on %s served directly on %s", worker.device, path)

    def _curve_keys(self) -> tuple[bytes, bytes] | None:
        endpoints = (self.config.control_endpoint(), self.config.telemetry_endpoint())
        if not any(e.startswith("tcp://") for e in endpoints):
            return None
        from zmq.auth import CURVE_ALLOW_ANY
        from zmq.auth.thread import ThreadAuthenticator

        curve = self.config.endpoints.curve
        keys = load_curve_keys(curve)
        self._auth = ThreadAuthenticator(self.context)
        self._auth.start()
        self._auth.configure_curve(domain="*", location=curve.authorized_clients or CURVE_ALLOW_ANY)
        return keys

    def _secure_ipc(self, path: Path) -> None:
        # the socket file's mode follows the umask: set it explicitly (0660, group dynofa)
        self._ipc_files.append(path)
        try:
            os.chmod(path, self.config.endpoints.socket_mode)
        except OSError as exc:
            log.warning("cannot chmod %s: %s", path, exc)
        group = self.config.endpoints.socket_group
        if not group:
            return
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            log.debug("group %s does not exist; %s keeps group %d", group, path, os.getgid())
            return
        try:
            os.chown(path, -1, gid)
        except OSError as exc:
            log.warning("cannot give %s to group %s: %s", path, group, exc)

    # main loop ----------------------------------------------------------------------------
    def request_stop(self) -> None:
        self._stopping = True
        self.outbox.wake()

    def serve_forever(self) -> None:
        assert self.router is not None
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(self.outbox.read_fd, zmq.POLLIN)
        old_fd = signal.set_wakeup_fd(self.outbox.write_fd, warn_on_full_buffer=False) if _main_thread() else None
        try:
            while not self._stopping:
                try:
                    # while regions exist, wake up now and then to close those of vanished clients
                    events = dict(poller.poll(SWEEP_INTERVAL_MS if len(self.regions) else None))
                except zmq.ZMQError as exc:
                    if exc.errno == errno.EINTR:
                        continue
                    raise
                if self.outbox.read_fd in events:
                    self._flush_outbox()
                if self.router in events:
                    self._read_requests()
                self._sweep_regions()
        finally:
            if old_fd is not None:
                signal.set_wakeup_fd(old_fd)

    def _sweep_regions(self) -> None:
        now = time.monotonic()
        if now - self._last_sweep >= SWEEP_INTERVAL_MS / 1000 and len(self.regions):
            self._last_sweep = now
            self.regions.sweep()

    def _read_requests(self, budget: int = 256) -> None:
        assert self.router is not None
        # drain what is queued, but bounded so the outbox is served between bursts
        for _ in range(budget):
            self.priority.yield_to_inference("server")  # a request's Python would stall a running forward
            try:
                frames = self.router.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            self._handle(frames)

    def _handle(self, frames: list[Any]) -> None:
        envelope, reply = self.front.answer(frames, self._dispatch)
        if reply is not None:
            self._send(envelope, reply)

    def _dispatch(self, request: Request, envelope: list[Any], caller: Caller) -> list[Any] | None:
        if self._stopping:
            raise RequestError(protocol.SHUTTING_DOWN, "the daemon is shutting down")
        op, args, engine = request.op, request.args, self.engine
        if op in ("infer", "infer_shm"):
            self._submit(self.front.pending(request, envelope, None))
            return None  # the worker replies
        if op == "unregister":
            self.regions.forget_app(args["app"])
        handlers: dict[str, Callable[[], dict[str, Any]]] = {
            "hello": lambda: {**engine.hello(args.get("app")), "extensions": protocol.EXTENSIONS},
            "shm_register": lambda: self._register_region(args["app"], args["name"], caller),
            "shm_unregister": lambda: self.regions.unregister(args["app"], args["region"]),
            "ping": lambda: {},
            "register": lambda: engine.register(
                args["app"], args.get("model"), args.get("budget"), caller, None if request.override else request.token
            ),
            "register_embedded": lambda: engine.register_embedded(
                args["app"], args["subnets"], args.get("model"), args.get("budget"), args.get("pes"),
                args.get("lease_s"), args.get("point"), caller, None if request.override else request.token,
            ),
            "report": lambda: engine.report(args["app"], args["samples"], args.get("seq"), args.get("refused")),
            "unregister": lambda: engine.unregister(args["app"]),
            "set_budget": lambda: engine.set_budget(args["app"], args["budget"], caller, request.token),
            "clear_budget": lambda: engine.clear_budget(args["app"]),
            "budgets": lambda: engine.budgets(),
            "state": self.state,
            "subnets": lambda: engine.subnets(args.get("model")),
            "feedback": lambda: engine.feedback(args["app"], args["qoe"], args.get("detail")),
        }
        result = handlers[op]()
        return [protocol.encode(protocol.ok(request.id, **result))]

    def _register_region(self, app: str, name: str, caller: Caller) -> dict[str, Any]:
        if app not in self.engine.app_names():
            raise RequestError(protocol.UNKNOWN_APP, f"app {app!r} is not registered (send the register op first)")
        return self.regions.register(app, name, caller.uid, caller.pid)

    def _submit(self, pending: Pending) -> None:
        job = pending.job
        self.workers[self.engine.models[job.model].device(job.pe)].submit(pending)

    def state(self) -> dict[str, Any]:
        """The engine's apps with the control loop's view (pes, monitor, policy, predictions): the ``state`` op."""
        state = self.engine.state()
        control = self._describe_control()
        state["daemon"]["trace"] = control.get("trace")
        # extension direct: where local clients' inferences go, per device (None: this worker has none)
        state["daemon"]["inference_endpoints"] = {d: w.endpoint for d, w in self.workers.items()}
        state["daemon"]["inference_first"] = self.priority.to_dict()
        state["daemon"]["wakeup_latency"] = control.get("wakeup_latency")
        for key, default in (("pes", {}), ("monitor", None), ("policy", None), ("capabilities", {})):
            state[key] = control.get(key, default)
        for name, app in state["apps"].items():
            app["prediction"] = control.get("predictions", {}).get(name)
        return state

    def _send(self, envelope: list[Any], frames: list[Any]) -> None:
        assert self.router is not None
        try:
            self.router.send_multipart([*envelope, *frames], zmq.NOBLOCK, copy=False)
        except zmq.ZMQError as exc:  # peer gone or over its HWM: drop the reply, keep serving
            log.debug("reply dropped: %s", exc)

    def _flush_outbox(self) -> None:
        for kind, a, b in self.outbox.drain():
            if kind == "reply":
                self._send(a, b)
            elif kind == "pub":
                self._publish_now(a, b)

    def _publish_now(self, topic: str, message: dict[str, Any]) -> None:
        if self.pub is None:
            return
        try:
            self.pub.send_multipart([topic.encode(), protocol.encode(message)], zmq.NOBLOCK)
        except (zmq.ZMQError, TypeError, ValueError) as exc:
            log.debug("telemetry dropped: %s", exc)

    def finish(self, drain_timeout_s: float) -> None:
        """Let workers finish in-flight inferences, send their replies, close the sockets.

        Requests that arrived but were not read yet are answered ``shutting_down`` (a clear
        answer instead of silence); inferences already queued on a worker run to completion.
        """
        self._stopping = True
        self._drain_router(quiet_s=0.2, limit_s=2.0)
        for worker in self.workers.values():
            worker.stop()
        deadline = time.monotonic() + drain_timeout_s
        for worker in self.workers.values():
            worker.join(timeout=max(0.0, deadline - time.monotonic()))
        self._flush_outbox()
        self.close()

    def _drain_router(self, quiet_s: float, limit_s: float) -> None:
        """Answer requests still arriving (sent before the stop) until the socket stays quiet."""
        if self.router is None:
            return
        end = time.monotonic() + limit_s
        while time.monotonic() < end and self.router.poll(int(quiet_s * 1000), zmq.POLLIN):
            self._read_requests(budget=100_000)

    def close(self, linger_ms: int = 1000) -> None:
        # a short linger lets the last replies leave; it also bounds how long a vanished peer can delay exit
        for sock in (self.router, self.pub):
            if sock is not None:
                sock.close(linger=linger_ms)
        self.router = self.pub = None
        if self._auth is not None:
            self._auth.stop()
        self.context.term()
        for worker in self.workers.values():
            if not worker.is_alive():  # else its thread still uses the mailbox (a daemon thread, gone at exit)
                worker.close()
        self.regions.close()
        for path in self._ipc_files:
            with contextlib.suppress(OSError):
                path.unlink()
        self.outbox.close()


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()
