"""The daemon's configuration: a YAML file whose every field has a default.

No file is needed: ``load_config(None)`` gives the embedded default (the bundled demo
catalog on the CPU, the model-based policy, IPC endpoints in the runtime directory).
Every field is validated; an unknown or wrong field raises
:class:`~dynofa.errors.ConfigError` naming the field (``limits.max_apps``) and the
expected value. The schema is documented in ``docs/configuration.md``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from dynofa import paths
from dynofa.budget import OBJECTIVES
from dynofa.errors import ConfigError

LOG_LEVELS = ("debug", "info", "warning", "error")
IPC_PATH_MAX = 107  # sun_path limit of AF_UNIX sockets, minus the NUL


@dataclass(frozen=True)
class ModelConfig:
    """One served model: a catalog (None = the bundled demo catalog) and where it runs."""

    catalog: str | None = None
    weights: str | None = None  # None = the weights the catalog names
    device: str = "cpu"  # torch device of CPU processing elements' pool
    gpu_device: str = "cuda"  # torch device used for the "gpu" processing element
    pes: tuple[str, ...] = ()  # processing elements to serve on; empty = every one the catalog and platform share
    reprofile: bool = True  # re-time a few subnets at start when the catalog was measured on another machine
    graphs: bool = True  # trace each subnet's forward into a graph that runs without the GIL (subnets.graphs)


@dataclass(frozen=True)
class PolicyConfig:
    name: str = "model-based"
    options: dict[str, Any] = field(default_factory=dict)
    objective: str = "accuracy"  # a budget's objective when it names none: accuracy | energy


@dataclass(frozen=True)
class CurveConfig:
    """CURVE keys for tcp:// endpoints (files written by ``zmq.auth.create_certificates``)."""

    server_secret_key: str | None = None  # the server's ``.key_secret`` file
    # directory of clients' ``.key`` files; None = any client that knows the server's public key
    authorized_clients: str | None = None


@dataclass(frozen=True)
class EndpointsConfig:
    control: str | None = None  # None = ipc://<runtime_dir>/control.sock
    telemetry: str | None = None  # None = ipc://<runtime_dir>/telemetry.sock
    socket_mode: int = 0o660
    socket_group: str | None = "dynofa"  # applied when the group exists
    curve: CurveConfig = field(default_factory=CurveConfig)


@dataclass(frozen=True)
class PathsConfig:
    runtime_dir: str | None = None  # None = $RUNTIME_DIRECTORY, $XDG_RUNTIME_DIR/dynofa or /tmp/dynofa-$UID
    state_dir: str | None = None  # None = $STATE_DIRECTORY or ~/.local/state/dynofa
    sysfs_root: str = "/"  # root of /sys and /proc for platform detection (tests use fake trees)


@dataclass(frozen=True)
class LimitsConfig:
    max_message_bytes: int = 16 * 1024 * 1024  # larger requests get a "too_large" error
    hard_message_bytes: int = 64 * 1024 * 1024  # zmq MAXMSGSIZE: a larger frame drops the connection
    max_frames: int = 4
    max_apps: int = 64
    max_apps_per_client: int = 16  # apps one client (uid, or CURVE key) may register; capped at max_apps
    request_timeout_s: float = 5.0  # an inference queued longer than this is answered "timeout"
    infer_queue: int = 64  # queued inferences per processing element before "busy"
    send_hwm: int = 1000  # replies queued per client before a slow client's replies are dropped


@dataclass(frozen=True)
class TelemetryConfig:
    period_s: float = 1.0  # periodic state on the PUB socket
    trace: str | None = None  # JSON-lines trace for `dynofa plot`; None = <state_dir>/trace.jsonl; "" = off
    trace_max_bytes: int = 8 * 1024 * 1024  # the trace is rotated to trace.jsonl.1 beyond this


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "info"


@dataclass(frozen=True)
class MetricsConfig:
    """Prometheus exposition over HTTP; off unless ``listen`` names an address."""

    # "HOST:PORT" ("127.0.0.1:9464", "[::1]:9464"; port 0: any free one, shown in `state`);
    # binding beyond localhost is the operator's call (the metrics carry app names and budgets)
    listen: str | None = None

    def address(self) -> tuple[str, int] | None:
        """``(host, port)`` to bind, or None when off (``listen`` is validated when the config loads)."""
        if self.listen is None:
            return None
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


@dataclass(frozen=True)
class Config:
    models: dict[str, ModelConfig] = field(default_factory=lambda: {"demo": ModelConfig()})
    default_model: str | None = None  # model an app gets when it names none; None = the first
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    control_interval_s: float = 0.5
    threads: int | None = None  # torch intra-op threads at start; None = leave torch's default
    # while apps are registered, keep CPU wake-ups within this many us (PM QoS); None = idle states untouched
    cpu_wakeup_latency_us: int | None = None
    endpoints: EndpointsConfig = field(default_factory=EndpointsConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    source: str | None = None  # the file it came from

    # resolved locations -------------------------------------------------
    def runtime_dir(self) -> Path:
        return Path(self.paths.runtime_dir) if self.paths.runtime_dir else paths.runtime_dir()

    def state_dir(self) -> Path:
        return Path(self.paths.state_dir) if self.paths.state_dir else paths.state_dir()

    def control_endpoint(self) -> str:
        return self.endpoints.control or f"ipc://{self.runtime_dir() / 'control.sock'}"

    def telemetry_endpoint(self) -> str:
        return self.endpoints.telemetry or f"ipc://{self.runtime_dir() / 'telemetry.sock'}"

    def trace_path(self) -> Path | None:
        if self.telemetry.trace == "":
            return None
        return Path(self.telemetry.trace) if self.telemetry.trace else self.state_dir() / "trace.jsonl"

    def app_model(self) -> str:
        return self.default_model or next(iter(self.models))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("source")
        for model in data["models"].values():
            model["pes"] = list(model["pes"])
        # a file mode reads as octal text, which the loader takes back ('0660', not 432)
        data["endpoints"]["socket_mode"] = f"0{self.endpoints.socket_mode:03o}"
        return data


# ---------------------------------------------------------------------------------------------
# loading and validation


SYSTEM_CONFIG = Path("/etc/dynofa/config.yaml")
CONFIG_ENV = "DYNOFA_CONFIG"


def default_config_path(env: Mapping[str, str] | None = None) -> Path | None:
    """``$DYNOFA_CONFIG``, else ``/etc/dynofa/config.yaml`` when it exists, else None (embedded default)."""
    env = os.environ if env is None else env
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV])
    return SYSTEM_CONFIG if SYSTEM_CONFIG.is_file() else None


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Load ``path`` (YAML), or the embedded default when ``path`` is None."""
    if path is None:
        return config_from_dict({})
    import yaml  # only the daemon and its CLI read config files

    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {source} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {source} is a directory; give the path of the YAML file") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {source}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {source} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    try:
        data = yaml.load(text, Loader=_unique_keys_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {source} is not valid YAML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"config file {source} nests too deeply to be a dynofa config") from None
    return config_from_dict({} if data is None else data, where=str(source))


def _unique_keys_loader() -> type:
    """A SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last, silently)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        "while reading a mapping", node.start_mark,
                        f"found the key {key!r} twice (first {seen[key]}); keep one", key_node.start_mark,
                    )  # fmt: skip
                seen[key] = f"on line {key_node.start_mark.line + 1}"
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def config_from_dict(data: Any, where: str = "config") -> Config:
    v = _Fields(where)
    top = v.section(data, "", Config)
    models_raw = top.get("models", None)
    if models_raw is None:
        models = {"demo": ModelConfig()}
    else:
        models_map = v.mapping(models_raw, "models")
        if not models_map:
            raise v.fail("models", "a non-empty mapping of model name -> model settings", models_raw)
        models = {v.name(name, "models"): _model(v, spec, f"models.{name}") for name, spec in models_map.items()}
    default_model = v.optional(top.get("default_model"), "default_model", v.string)
    if default_model is not None and default_model not in models:
        raise v.fail("default_model", f"one of the configured models ({', '.join(models)})", default_model)
    limits = _limits(v, top.get("limits", {}))
    config = Config(
        models=models,
        default_model=default_model,
        policy=_policy(v, top.get("policy", {})),
        control_interval_s=v.number(
            top.get("control_interval_s", Config.control_interval_s), "control_interval_s", low=0.01, high=60
        ),
        threads=v.optional(top.get("threads"), "threads", lambda x, at: v.integer(x, at, low=1, high=1024)),
        cpu_wakeup_latency_us=v.optional(
            top.get("cpu_wakeup_latency_us"), "cpu_wakeup_latency_us",
            lambda x, at: v.integer(x, at, low=0, high=2_000_000_000),  # the kernel's value is an s32
        ),  # fmt: skip
        endpoints=_endpoints(v, top.get("endpoints", {})),
        paths=_paths(v, top.get("paths", {})),
        limits=limits,
        telemetry=_telemetry(v, top.get("telemetry", {})),
        logging=_logging(v, top.get("logging", {})),
        metrics=_metrics(v, top.get("metrics", {})),
        source=None if where == "config" else where,
    )
    for name, endpoint in (("control", config.control_endpoint()), ("telemetry", config.telemetry_endpoint())):
        _check_endpoint(v, config, f"endpoints.{name}", endpoint)
    ephemeral = config.control_endpoint().startswith("tcp://") and config.control_endpoint().endswith(":0")
    if config.control_endpoint() == config.telemetry_endpoint() and not ephemeral:  # tcp port 0: two free ports
        raise ConfigError(
            f"{v.where}: endpoints.control and endpoints.telemetry are both {config.control_endpoint()}; "
            "requests and telemetry need two endpoints (a second bind steals the first): change one"
        )
    return config


def _model(v: _Fields, data: Any, at: str) -> ModelConfig:
    obj = v.section({} if data is None else data, at, ModelConfig)
    pes = obj.get("pes", [])
    if not isinstance(pes, list):
        raise v.fail(f"{at}.pes", "a list of processing element names (e.g. [cpu, gpu])", pes)
    return ModelConfig(
        catalog=v.optional(obj.get("catalog"), f"{at}.catalog", v.string),
        weights=v.optional(obj.get("weights"), f"{at}.weights", v.string),
        device=v.device(obj.get("device", ModelConfig.device), f"{at}.device"),
        gpu_device=v.device(obj.get("gpu_device", ModelConfig.gpu_device), f"{at}.gpu_device"),
        pes=tuple(v.string(pe, f"{at}.pes[{i}]") for i, pe in enumerate(pes)),
        reprofile=v.boolean(obj.get("reprofile", ModelConfig.reprofile), f"{at}.reprofile"),
        graphs=v.boolean(obj.get("graphs", ModelConfig.graphs), f"{at}.graphs"),
    )


def _policy(v: _Fields, data: Any) -> PolicyConfig:
    obj = v.section(data, "policy", PolicyConfig)
    options = v.mapping(obj.get("options", {}), "policy.options")
    objective = v.string(obj.get("objective", PolicyConfig.objective), "policy.objective")
    if objective not in OBJECTIVES:
        raise v.fail("policy.objective", f"one of {', '.join(OBJECTIVES)}", objective)
    return PolicyConfig(name=v.string(obj.get("name", PolicyConfig.name), "policy.name"), options=dict(options),
                        objective=objective)


def _endpoints(v: _Fields, data: Any) -> EndpointsConfig:
    obj = v.section(data, "endpoints", EndpointsConfig)
    curve_obj = v.section(obj.get("curve", {}), "endpoints.curve", CurveConfig)
    mode = obj.get("socket_mode", EndpointsConfig.socket_mode)
    if isinstance(mode, str):  # YAML reads 0660 as 432 but '0660' / '660' as text
        try:
            mode = int(mode, 8)
        except ValueError:
            raise v.fail("endpoints.socket_mode", "an octal file mode such as 0660", mode) from None
    socket_mode = v.integer(mode, "endpoints.socket_mode", low=0, high=0o777)
    if socket_mode & 0o007:
        # the socket's group is the access control (docs/protocol.md): a mode that lets every user in undoes it
        raise v.fail(
            "endpoints.socket_mode",
            "a mode without access for others, such as 0660 (add users to the socket group instead)",
            f"{socket_mode:04o}",
        )
    return EndpointsConfig(
        control=v.optional(obj.get("control"), "endpoints.control", v.string),
        telemetry=v.optional(obj.get("telemetry"), "endpoints.telemetry", v.string),
        socket_mode=socket_mode,
        socket_group=v.optional(
            obj.get("socket_group", EndpointsConfig.socket_group), "endpoints.socket_group", v.string
        ),
        curve=CurveConfig(
            server_secret_key=v.optional(
                curve_obj.get("server_secret_key"), "endpoints.curve.server_secret_key", v.string
            ),
            authorized_clients=v.optional(
                curve_obj.get("authorized_clients"), "endpoints.curve.authorized_clients", v.string
            ),
        ),
    )


def _paths(v: _Fields, data: Any) -> PathsConfig:
    obj = v.section(data, "paths", PathsConfig)
    return PathsConfig(
        runtime_dir=v.optional(obj.get("runtime_dir"), "paths.runtime_dir", v.string),
        state_dir=v.optional(obj.get("state_dir"), "paths.state_dir", v.string),
        sysfs_root=v.string(obj.get("sysfs_root", PathsConfig.sysfs_root), "paths.sysfs_root"),
    )


def _limits(v: _Fields, data: Any) -> LimitsConfig:
    obj = v.section(data, "limits", LimitsConfig)
    d = LimitsConfig()
    soft = v.integer(obj.get("max_message_bytes", d.max_message_bytes), "limits.max_message_bytes", low=1024)
    hard = v.integer(obj.get("hard_message_bytes", max(d.hard_message_bytes, soft)), "limits.hard_message_bytes", 1024)
    if hard < soft:
        raise v.fail("limits.hard_message_bytes", f"an integer >= limits.max_message_bytes ({soft})", hard)
    return LimitsConfig(
        max_message_bytes=soft,
        hard_message_bytes=hard,
        max_frames=v.integer(obj.get("max_frames", d.max_frames), "limits.max_frames", low=2, high=64),
        max_apps=v.integer(obj.get("max_apps", d.max_apps), "limits.max_apps", low=1, high=100000),
        max_apps_per_client=v.integer(
            obj.get("max_apps_per_client", d.max_apps_per_client), "limits.max_apps_per_client", low=1, high=100000
        ),
        request_timeout_s=v.number(
            obj.get("request_timeout_s", d.request_timeout_s), "limits.request_timeout_s", low=0.001, high=3600
        ),
        infer_queue=v.integer(obj.get("infer_queue", d.infer_queue), "limits.infer_queue", low=1, high=100000),
        send_hwm=v.integer(obj.get("send_hwm", d.send_hwm), "limits.send_hwm", low=1, high=1000000),
    )


def _telemetry(v: _Fields, data: Any) -> TelemetryConfig:
    obj = v.section(data, "telemetry", TelemetryConfig)
    trace = obj.get("trace")
    if trace is not None and not isinstance(trace, str):
        raise v.fail("telemetry.trace", "a file path, or an empty string to turn the trace off", trace)
    return TelemetryConfig(
        period_s=v.number(obj.get("period_s", TelemetryConfig.period_s), "telemetry.period_s", low=0.05, high=3600),
        trace=trace,
        trace_max_bytes=v.integer(
            obj.get("trace_max_bytes", TelemetryConfig.trace_max_bytes), "telemetry.trace_max_bytes", low=4096
        ),
    )


def _logging(v: _Fields, data: Any) -> LoggingConfig:
    obj = v.section(data, "logging", LoggingConfig)
    level = obj.get("level", LoggingConfig.level)
    if not isinstance(level, str) or level.lower() not in LOG_LEVELS:
        raise v.fail("logging.level", "one of " + ", ".join(LOG_LEVELS), level)
    return LoggingConfig(level=level.lower())


def _metrics(v: _Fields, data: Any) -> MetricsConfig:
    obj = v.section({} if data is None else data, "metrics", MetricsConfig)
    listen = v.optional(obj.get("listen"), "metrics.listen", v.string)
    if listen is not None:
        host, sep, port = listen.rpartition(":")
        bracketed = host.startswith("[") and host.endswith("]")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535 or (":" in host and not bracketed):
            raise v.fail("metrics.listen", 'HOST:PORT, e.g. "127.0.0.1:9464" or "[::1]:9464"', listen)
    return MetricsConfig(listen=listen)


def _check_endpoint(v: _Fields, config: Config, at: str, endpoint: str) -> None:
    scheme, sep, rest = endpoint.partition("://")
    if not sep or scheme not in ("ipc", "tcp", "inproc"):
        raise v.fail(at, "an ipc://PATH or tcp://HOST:PORT endpoint", endpoint)
    if scheme == "ipc" and len(rest.encode()) > IPC_PATH_MAX:
        raise v.fail(at, f"an ipc:// path of at most {IPC_PATH_MAX} bytes (a Unix socket limit)", endpoint)
    if scheme == "tcp" and config.endpoints.curve.server_secret_key is None:
        raise ConfigError(
            f"{v.where}: field {at} is a tcp:// endpoint ({endpoint}), which needs CURVE encryption: "
            "set endpoints.curve.server_secret_key to a secret key file (see docs/configuration.md)"
        )


class _Fields:
    """Typed field readers that name the field and the expected value on error."""

    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, at: str, expected: str, got: Any) -> ConfigError:
        return ConfigError(f"{self.where}: field {at or '(top level)'} must be {expected}, got {got!r}")

    def mapping(self, value: Any, at: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(at, "a mapping", value)
        return value

    def section(self, value: Any, at: str, schema: type) -> dict[str, Any]:
        obj = self.mapping(value, at)
        known = [f.name for f in fields(schema) if f.name != "source"]
        for key in obj:
            if key not in known:
                where = f"{at}.{key}" if at else str(key)
                raise ConfigError(f"{self.where}: unknown field {where}; expected one of: {', '.join(known)}")
        return obj

    def name(self, value: Any, at: str) -> str:
        if not isinstance(value, str) or not value or not value.replace("-", "").replace("_", "").isalnum():
            raise self.fail(at, "names made of letters, digits, '-' and '_'", value)
        return value

    def string(self, value: Any, at: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(at, "a non-empty string", value)
        return value

    def boolean(self, value: Any, at: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(at, "true or false", value)
        return value

    def device(self, value: Any, at: str) -> str:
        text = self.string(value, at)
        base, _, index = text.partition(":")
        if base not in ("cpu", "cuda") or (index and not index.isdigit()):
            raise self.fail(at, "a torch device: cpu, cuda or cuda:N", value)
        return text

    def integer(self, value: Any, at: str, low: int | None = None, high: int | None = None) -> int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        if not ok or (low is not None and value < low) or (high is not None and value > high):
            raise self.fail(at, _range("an integer", low, high), value)
        return int(value)

    def number(self, value: Any, at: str, low: float | None = None, high: float | None = None) -> float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or (low is not None and value < low) or (high is not None and value > high):
            raise self.fail(at, _range("a number", low, high), value)
        return float(value)

    def optional(self, value: Any, at: str, read: Callable[[Any, str], Any]) -> Any:
        return None if value is None else read(value, at)


def _range(kind: str, low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f"{kind} in [{low}, {high}]"
    if low is not None:
        return f"{kind} >= {low}"
    return kind
