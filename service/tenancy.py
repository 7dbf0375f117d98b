"""Who sent a request, and whether that client may act on an app (docs/protocol.md, "Ownership").

An app belongs to the client that registered it. A client is named by what the transport proves:

* on ``ipc://`` the peer's uid, read by the kernel when it connected (``SO_PEERCRED``, which
  libzmq exposes as the message property ``Peer-Address`` = ``":uid:gid:pid"``);
* on ``tcp://`` (always CURVE) the client's public key, as the ZAP handler reports it (``User-Id``).

A client may also bind an app to a secret ``token`` at registration; the daemon keeps only its
SHA-256. Then every request on that app must carry the token, which separates two processes of
one user and lets a tcp client whose key changes keep its app. An operator (root, or the user
the daemon runs as, on the ipc socket) may act on any app with ``override: true``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Any

from dynofa import protocol
from dynofa.protocol import RequestError

ANONYMOUS = "anonymous"
_PEER_CREDS = re.compile(r":(\d+):(\d+):(\d+)$")


@dataclass(frozen=True)
class Caller:
    """The client behind a request: ``identity`` owns apps; ``uid`` only when the kernel vouched for it."""

    identity: str
    uid: int | None = None
    pid: int | None = None  # the connecting process, on ipc (shared-memory regions live as long as it does)

    def is_operator(self, daemon_uid: int) -> bool:
        return self.uid is not None and self.uid in (0, daemon_uid)


NOBODY = Caller(identity=ANONYMOUS)  # a caller the transport named nothing about (in-process callers, tests)


def caller_of(frame: Any, ipc: bool) -> Caller:
    """The caller of a request, from the properties libzmq attached to its first body frame.

    ``ipc``: the frame came in on an ipc:// socket. Only there is Peer-Address the kernel's
    credentials (on tcp it is an address, and an IPv6 one could look like ``:0:0:1``).
    """
    user = _property(frame, "User-Id")
    if user and user != ANONYMOUS:  # set by the ZAP handler: the CURVE public key
        return Caller(identity=f"curve:{user}")
    match = _PEER_CREDS.search(_property(frame, "Peer-Address") or "") if ipc else None
    if match is not None:
        uid = int(match.group(1))
        return Caller(identity=f"uid:{uid}", uid=uid, pid=int(match.group(3)))
    return Caller(identity=ANONYMOUS)


def _property(frame: Any, name: str) -> str | None:
    get = getattr(frame, "get", None)
    if get is None:  # plain bytes (tests calling the server directly)
        return None
    try:
        value = get(name)
    except Exception:  # noqa: BLE001 - zmq raises ZMQError (EINVAL) for a property the message lacks
        return None
    return value if isinstance(value, str) else None


def token_hash(token: str) -> str:
    # tokens are >= 16 random characters chosen by the client: a plain hash is enough (no password stretching)
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Owner:
    """Who owns an app, as persisted: the registering identity and the hash of its token (if any)."""

    identity: str | None  # None: an app restored from an older budgets file; the next register claims it
    token_sha256: str | None = None


def check_access(app: str, owner: Owner, caller: Caller, token: str | None, override: bool, daemon_uid: int) -> None:
    """Raise ``forbidden`` unless ``caller`` may act on ``app``."""
    if override:
        if caller.is_operator(daemon_uid):
            return
        raise RequestError(
            protocol.FORBIDDEN,
            f"override is for operators: root or uid {daemon_uid} (the daemon's user) on the ipc socket; "
            f"{caller.identity} is neither",
        )
    if owner.identity is None:
        return
    if owner.token_sha256 is not None:
        if token is not None and hmac.compare_digest(token_hash(token), owner.token_sha256):
            return
        raise RequestError(
            protocol.FORBIDDEN,
            f"app {app!r} is bound to a token: send the token it was registered with "
            "(or an operator removes it: `dynofa budget remove APP --override`)",
        )
    if caller.identity != owner.identity:
        raise RequestError(
            protocol.FORBIDDEN,
            f"app {app!r} belongs to another client ({owner.identity}); register under another name "
            "(or an operator removes it: `dynofa budget remove APP --override`)",
        )
