"""Fuzz, load and crash figures against a real ``dynofa serve`` (tiny catalog, private dirs). Prints ONE JSON object.

* **fuzz**: N messages over the whole header grammar (tests/service/grammar.py: Hypothesis-drawn
  headers with numbers at and beyond every limit, repeated keys, deep nesting) plus random
  mutations of valid requests (flipped bytes, truncation, extra frames, fields replaced by edge
  values). Reports every reply code, ``internal`` replies, replies that do not echo the id the
  request carried (the expected id is found by an independent reader), tracebacks and bytes in the
  daemon's log, and whether the daemon still answers.
* **load**: 32 and 64 concurrent clients, each on its own app (register, infer, state, feedback,
  set_budget); counts replies lost (a REQ that timed out) and errors.
* **crash**: K rounds of set_budget (acknowledged), SIGKILL at once, restart; counts acknowledged
  budgets the restarted daemon lost.

    python -m benchmarks.fuzz [--messages 100000] [--clients 32 64] [--requests 100] [--kills 5]

Goals: 0 internal, 0 tracebacks, id echoed for 100 % of the requests that carry a readable id,
0 lost replies, 0 lost budgets.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from dynofa import protocol


def _drawn_corpus(n: int, seed: int) -> list[list[bytes]]:
    """``n`` requests drawn by Hypothesis over the whole grammar."""
    from hypothesis import HealthCheck, given, settings

    from tests.service.grammar import any_request

    drawn: list[list[bytes]] = []

    @settings(max_examples=n, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(request=any_request())
    def collect(request: tuple[list[bytes], Any]) -> None:
        frames = [f for f in request[0]]
        drawn.append(frames if frames[0] else [b"{}", *frames[1:]])

    collect()
    random.Random(seed).shuffle(drawn)
    return drawn


def fuzz(endpoint: str, log_path: Path, messages: int, seed: int) -> dict[str, Any]:
    from tests.service.grammar import mutate, readable_id, valid_corpus

    rng = random.Random(seed)
    drawn = _drawn_corpus(min(20_000, max(100, messages // 3)), seed)
    valid = valid_corpus()
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 30_000)
    sock.connect(endpoint)
    codes: Counter[str] = Counter()
    sent = answered = malformed = id_expected = id_echoed = id_wrong = 0
    internal_examples: list[str] = []
    started = time.perf_counter()
    try:
        for i in range(messages):
            if i % 3 == 0:
                frames = drawn[(i // 3) % len(drawn)]
            else:
                frames = rng.choice(valid if i % 3 == 1 else drawn)
                for _ in range(rng.randint(1, 3)):
                    frames = mutate(rng, frames)
            expected = readable_id(frames[0])
            sock.send_multipart(frames)
            sent += 1
            try:
                raw = sock.recv_multipart()
            except zmq.Again:
                break
            answered += 1
            try:
                reply = json.loads(raw[0])
                ok = reply["ok"]
            except (ValueError, KeyError, TypeError):
                malformed += 1
                continue
            code = "ok" if ok else str(reply.get("error", {}).get("code"))
            codes[code] += 1
            if code == protocol.INTERNAL and len(internal_examples) < 5:
                internal_examples.append(f"{frames[0][:160]!r} -> {reply['error']['message'][:160]}")
            if expected is not None:
                id_expected += 1
                id_echoed += reply.get("id") == expected
            elif "id" in reply:
                id_wrong += 1  # an id echoed where none was readable
    finally:
        sock.close()
    wall = time.perf_counter() - started
    log = log_path.read_text(errors="replace")
    documented = set(protocol.ERROR_CODES) | {"ok"}
    return {
        "messages": sent,
        "answered": answered,
        "wall_s": round(wall, 1),
        "messages_per_s": round(sent / wall, 1),
        "codes": dict(codes.most_common()),
        "internal": codes.get(protocol.INTERNAL, 0),
        "undocumented_codes": sum(n for c, n in codes.items() if c not in documented),
        "malformed_replies": malformed,
        "id_expected": id_expected,
        "id_echoed": id_echoed,
        "id_echo_rate": round(id_echoed / id_expected, 6) if id_expected else None,
        "id_echoed_unreadable": id_wrong,
        "tracebacks_in_log": log.count("Traceback"),
        "log_bytes": len(log.encode()),
        "internal_examples": internal_examples,
    }


def load(endpoint: str, n_clients: int, n_requests: int) -> dict[str, Any]:
    from dynofa.client import Client
    from dynofa.errors import DaemonUnavailableError

    lost = errors = done = 0
    lock = threading.Lock()
    image = np.random.default_rng(0).random((1, 3, 32, 32), dtype=np.float32)

    def run(i: int) -> None:
        nonlocal lost, errors, done
        app = f"load-{n_clients}-{i}"
        with Client(endpoint, timeout_s=60, retries=0) as c:
            for k in range(n_requests):
                try:
                    if k == 0:
                        c.register(app, budget={"latency_ms": 50})
                    elif k % 4 == 0:
                        c.infer(app, image)
                    elif k % 4 == 1:
                        c.state()
                    elif k % 4 == 2:
                        c.feedback(app, (k % 10) / 10)
                    else:
                        c.set_budget(app, latency_ms=20 + k % 30)
                    with lock:
                        done += 1
                except DaemonUnavailableError:
                    with lock:
                        lost += 1
                    c.close()
                except Exception:  # noqa: BLE001 - counted
                    with lock:
                        errors += 1
            with contextlib.suppress(Exception):
                c.unregister(app)

    started = time.perf_counter()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    total = n_clients * n_requests
    return {"clients": n_clients, "requests": total, "answered": done, "lost_replies": lost, "errors": errors,
            "wall_s": round(wall, 1), "requests_per_s": round(total / wall, 1)}  # fmt: skip


def _lost(acknowledged: dict[str, float], saved: dict[str, Any]) -> list[str]:
    budgets = {app: (item or {}).get("budget") or {} for app, item in saved.items()}
    return [app for app, ms in acknowledged.items() if budgets.get(app, {}).get("latency_ms") != ms]


def crash(config: Path, kills: int) -> dict[str, Any]:
    from tests.service.harness import start_daemon

    acknowledged: dict[str, float] = {}
    lost: list[str] = []
    for k in range(kills):
        daemon = start_daemon(config, log_name=f"crash-{k}.log")
        try:
            c = daemon.client()
            saved = c.budgets()
            lost += _lost(acknowledged, saved)
            app, ms = f"crash-{k}", 10.0 + k
            c.set_budget(app, latency_ms=ms)  # acknowledged: must survive the SIGKILL right after
            acknowledged[app] = ms
        finally:
            daemon.stop(signal.SIGKILL)
    final = start_daemon(config, log_name="crash-final.log")
    try:
        saved = final.client().budgets()
        lost += _lost(acknowledged, saved)
    finally:
        final.stop()
    return {"sigkills": kills, "acknowledged_budgets": len(acknowledged), "lost_budgets": len(set(lost))}


def main(argv: list[str] | None = None) -> int:
    from tests.service.harness import start_daemon, write_config
    from tests.service.tiny import make_catalog

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--clients", type=int, nargs="*", default=[32, 64])
    parser.add_argument("--requests", type=int, default=100, help="requests per load client")
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--seed", type=int, default=12)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="dynofa-fuzz-"))
    result: dict[str, Any] = {"benchmark": "fuzz"}
    try:
        catalog = make_catalog(work / "catalog")
        limits = {"max_apps": 256, "max_apps_per_client": 256, "infer_queue": 256, "max_message_bytes": 1 << 20}
        config = write_config(work, catalog, limits=limits, logging={"level": "info"})
        daemon = start_daemon(config)
        try:
            result["fuzz"] = fuzz(daemon.endpoint, daemon.log_path, args.messages, args.seed)
            result["fuzz"]["alive_after"] = daemon.client().ping()["ok"] is True
            result["load"] = [load(daemon.endpoint, n, args.requests) for n in args.clients]
            result["daemon_alive_at_end"] = daemon.proc.poll() is None
        finally:
            daemon.stop()
        if args.kills:
            (work / "crash").mkdir()
            models = {"tiny": {"catalog": str(catalog), "reprofile": False}}
            crash_config = write_config(work / "crash", catalog, models=models)
            result["crash"] = crash(crash_config, args.kills)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    json.dump(result, sys.stdout, indent=1)
    sys.stdout.write("\n")
    fz = result["fuzz"]
    good = fz["internal"] == 0 and fz["tracebacks_in_log"] == 0 and fz["id_echo_rate"] in (1.0, None)
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
