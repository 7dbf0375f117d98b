"""``dynofa check``: every start-up step of the daemon, without serving.

It runs the same functions ``dynofa serve`` runs before it binds its sockets (config parsing and
validation, platform detection, policy construction, catalog + weights + BN statistics loading,
directories and endpoints) and collects every problem instead of stopping at the first. It never
changes the board: a pending rollback from a crashed daemon is reported, not applied, and no
frequency is touched. Each step is independent where it can be: a broken catalog does not hide a
broken policy.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dynofa.config import Config, load_config
from dynofa.errors import DynofaError


@dataclass(frozen=True)
class Finding:
    """One line of the report: which part of the start-up (``config``, ``model demo``, ...) and what."""

    part: str
    message: str

    def __str__(self) -> str:
        return f"{self.part}: {self.message}"


@dataclass
class CheckReport:
    source: str  # the config file checked, or "(embedded defaults)"
    problems: list[Finding] = field(default_factory=list)  # each would stop `dynofa serve`
    notes: list[Finding] = field(default_factory=list)  # the daemon would run, with less
    summary: list[tuple[str, str]] = field(default_factory=list)  # (label, text) when all is well

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "config": self.source,
            "problems": [dataclasses.asdict(p) for p in self.problems],
            "notes": [dataclasses.asdict(n) for n in self.notes],
            "summary": dict(self.summary),
        }


def build_policy(config: Config) -> Any:
    """The configured policy (the daemon's and the check's one way to build it)."""
    from governors.policies import configured_policy

    try:
        return configured_policy(config.policy.name, dict(config.policy.options))
    except DynofaError as exc:
        raise DynofaError(f"policy.name / policy.options: {exc}") from None


def check(config_path: str | os.PathLike[str] | None) -> CheckReport:
    """Check the config at ``config_path`` (None: the embedded defaults) the way ``serve`` would use it."""
    report = CheckReport(str(config_path) if config_path else "(embedded defaults)")
    try:
        config = load_config(config_path)
    except DynofaError as exc:
        report.problems.append(Finding("config", str(exc)))
        return report  # nothing below can be checked without a configuration
    platform = _step(report, "platform", lambda: _platform(config, report))
    _step(report, "policy", lambda: _policy(config, report))
    _step(report, "paths", lambda: _runtime_dir(config, report))
    _step(report, "paths", lambda: _state_dir(config, report))
    _step(report, "telemetry", lambda: _trace(config, report))
    _step(report, "endpoints", lambda: _endpoints(config, report))
    _step(report, "metrics", lambda: _metrics(config, report))
    import subnets.ofa_compat

    subnets.ofa_compat.install()  # before anything imports ofa, as the daemon does
    for name, model in config.models.items():
        # without a platform the catalog, weights and BN statistics are still worth checking
        pes = platform.pe_names() if platform is not None else list(model.pes) or ["cpu"]
        _step(report, f"model {name}", lambda n=name, m=model, p=pes: _model(n, m, p, report))  # type: ignore[misc]
    return report


def _step(report: CheckReport, part: str, run: Callable[[], Any]) -> Any:
    try:
        return run()
    except DynofaError as exc:
        report.problems.append(Finding(part, str(exc)))
    except OSError as exc:
        report.problems.append(Finding(part, f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")))
    except Exception as exc:  # noqa: BLE001 - a check reports what serve would die of, it does not die of it
        report.problems.append(Finding(part, f"unexpected {type(exc).__name__}: {exc}"))
    return None


def _platform(config: Config, report: CheckReport) -> Any:
    from governors.platform import detect_platform

    platform = detect_platform(config.paths.sysfs_root)
    report.summary.append(("platform", f"{platform.board} ({platform.model}), processing elements "
                                       f"{', '.join(platform.pe_names()) or 'none'}"))  # fmt: skip
    who = "root" if os.geteuid() == 0 else f"user {os.geteuid()}"
    missing = {k: v for k, v in platform.capabilities().items() if not v.usable}
    usable = sorted(k for k, v in platform.capabilities().items() if v.usable)
    report.summary.append(("capabilities", f"as {who}: {', '.join(usable) or 'none usable'}"))
    for name, cap in sorted(missing.items()):
        report.notes.append(Finding("platform", f"without {name} ({cap.status}): {cap.reason or 'not available'}"))
    return platform


def _policy(config: Config, report: CheckReport) -> None:
    policy = build_policy(config)
    options = ", ".join(f"{k}={v!r}" for k, v in sorted(config.policy.options.items()))
    report.summary.append(("policy", f"{policy.name}" + (f" ({options})" if options else "")))


def _runtime_dir(config: Config, report: CheckReport) -> None:
    from service.daemon import DaemonLockedError, RuntimeLock

    runtime_dir = _writable_dir(config.runtime_dir(), "paths.runtime_dir")
    report.summary.append(("runtime directory", str(runtime_dir)))
    lock = RuntimeLock(runtime_dir / "dynofa.lock")
    try:
        lock.acquire()
    except DaemonLockedError as exc:
        report.notes.append(Finding("paths", f"{exc} (`dynofa serve` would refuse to start now)"))
    else:
        lock.release()


def _state_dir(config: Config, report: CheckReport) -> None:
    from governors.state import StateStore

    state_dir = _writable_dir(config.state_dir(), "paths.state_dir")
    report.summary.append(("state directory", str(state_dir)))
    pending = StateStore(str(state_dir)).load()
    if pending is not None:
        report.notes.append(Finding("paths", f"{len(pending.settings)} DVFS setting(s) left changed by pid "
                                             f"{pending.pid}; `dynofa serve` restores them first"))  # fmt: skip


def _trace(config: Config, report: CheckReport) -> None:
    trace = config.trace_path()
    report.summary.append(("trace", str(trace) if trace else "off"))
    if trace is None or (config.telemetry.trace is None and not config.state_dir().is_dir()):
        return  # the default trace lives in the state directory: its own step reports it
    parent = trace.parent
    if trace.is_dir() or not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise DynofaError(f"telemetry.trace: cannot write {trace} ({parent} is missing or not writable)")


def _writable_dir(path: Path, field_name: str) -> Path:
    from dynofa.paths import ensure_private_dir

    if path.exists() and not path.is_dir():
        raise DynofaError(f"{field_name}: {path} exists and is not a directory")
    try:
        ensure_private_dir(path)
    except OSError as exc:
        raise DynofaError(f"{field_name}: cannot create {path}: {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise DynofaError(f"{field_name}: {path} is not writable by uid {os.geteuid()}")
    return path


def _endpoints(config: Config, report: CheckReport) -> None:
    from service.server import load_curve_keys

    endpoints = {"control": config.control_endpoint(), "telemetry": config.telemetry_endpoint()}
    report.summary.append(("endpoints", ", ".join(f"{k} {v}" for k, v in endpoints.items())))
    if any(e.startswith("tcp://") for e in endpoints.values()):
        load_curve_keys(config.endpoints.curve)
    for name, endpoint in endpoints.items():
        if endpoint.startswith("ipc://"):
            parent = Path(endpoint[len("ipc://"):]).parent
            if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
                raise DynofaError(f"endpoints.{name}: cannot create a socket in {parent} (missing or not writable)")


def _metrics(config: Config, report: CheckReport) -> None:
    import errno
    import socket

    address = config.metrics.address()
    report.summary.append(("metrics", f"http://{config.metrics.listen}/metrics" if address else "off"))
    if address is None:
        return
    host, port = address
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                report.notes.append(Finding("metrics", f"{config.metrics.listen} is in use now (by a running daemon?)"))
                return
            why = exc.strerror or exc
            raise DynofaError(f"metrics.listen: cannot listen on {config.metrics.listen}: {why}") from None


def _model(name: str, model: Any, platform_pes: list[str], report: CheckReport) -> None:
    from service.models import ModelRuntime

    # re-profiling times subnets on this machine: it is a measurement, not a validation
    runtime = ModelRuntime.load(name, dataclasses.replace(model, reprofile=False), platform_pes)
    try:
        catalog = runtime.catalog
        report.summary.append((f"model {name}", f"{len(catalog)} subnets of {catalog.family.get('name', '?')} "
                                                f"from {catalog.path or 'the bundled demo catalog'} on "
                                                f"{', '.join(runtime.pes)}"))  # fmt: skip
        missing = [pe for pe in runtime.pes if pe not in catalog.pes()]
        if missing:
            report.notes.append(Finding(f"model {name}", f"the catalog has no latency figures for {', '.join(missing)}"
                                                         "; policies fall back on scaled figures"))  # fmt: skip
    finally:
        runtime.close()
