"""Served models: a catalog loaded into weight-shared subnet pools, one pool per torch device.

CPU processing elements (``cpu``, ``cpu-big``, ``cpu-little``) share one pool on the CPU
device: which cluster runs an inference is task mapping (thread affinity), not a second
copy of the weights. The ``gpu`` processing element gets a pool on the CUDA device.

Each app holds a :class:`~subnets.pool.SubnetHandle` per pool: the control loop's decision swaps
it (:meth:`ModelRuntime.select`, one reference assignment) and the app's inferences read it
(:meth:`ModelRuntime.infer`), the same switching model an embedded app uses in its own process.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dynofa.catalog import Catalog, load_catalog
from dynofa.config import ModelConfig
from dynofa.errors import ConfigError
from dynofa.operating_point import OperatingPoint

log = logging.getLogger(__name__)

#: time per batch size the start-up re-profiling may spend on one PE's measured subnets (ms)
REPROFILE_BUDGET_MS = 1500.0


def default_catalog_path() -> Path:
    """The bundled demo catalog (``subnets.demo``): the OFA supernet's, else the group-pruned net's."""
    try:
        from subnets.demo import demo_catalog_path
    except ImportError as exc:
        raise ConfigError(
            "no catalog configured and the bundled demo catalog is not available "
            f"({exc}); set models.<name>.catalog in the config file"
        ) from None
    candidates = [Path(demo_catalog_path(kind)) for kind in ("ofa", "grouped")]
    for path in candidates:
        if path.is_file():
            return path
    raise ConfigError(
        f"no catalog configured and no bundled demo catalog at {' or '.join(map(str, candidates))}; "
        "set models.<name>.catalog in the config file"
    )


def _reprofile_here(catalog: Catalog, pools: dict[str, Any], devices: dict[str, str], name: str,
                    pe_cpus: Mapping[str, Sequence[int]] | None = None) -> Catalog:
    """Re-time a few subnets per PE when the catalog's latency was measured on another machine.

    A shipped catalog's figures are another machine's; policies act on latency, so they must be
    this machine's. Three measured subnets plus the catalog's regression take a second or two per batch size.
    Each PE is timed on its CPUs (``pe_cpus``), where its inference runs, as far as this process may run there.
    """
    from subnets.reprofile import measured_elsewhere, reprofile

    if not measured_elsewhere(catalog):
        return catalog
    for pe, device in sorted(devices.items()):
        if device != "cpu" and pe not in catalog.pes():
            continue  # no reference figure to scale: the policy's fallback applies
        try:
            # time what serves (the pool's graphs and modules), about a second and a half per batch size
            catalog = reprofile(catalog, pools[device].family, pe, measure=3, forward=pools[device].served,
                                budget_ms=REPROFILE_BUDGET_MS, cpus=_allowed((pe_cpus or {}).get(pe)))
        except Exception as exc:  # noqa: BLE001 - stale figures are better than no daemon
            log.warning("model %s: could not re-profile %s on %s (%s); keeping the catalog's figures", name, pe,
                        device, exc)  # fmt: skip
        else:
            log.info("model %s: latency on %s re-profiled on this machine", name, pe)
    return catalog


def _allowed(cpus: Sequence[int] | None) -> list[int] | None:
    """``cpus`` this process may run on (None: no pinning, also when it may run on none of them)."""
    if not cpus or not hasattr(os, "sched_getaffinity"):
        return None
    mine = os.sched_getaffinity(0)
    return [c for c in cpus if c in mine] or None


@dataclass(frozen=True)
class InferenceOutcome:
    output: np.ndarray
    subnet: str
    latency_ms: float


class ModelRuntime:
    """One model: its catalog, the processing elements it serves on, and its pools."""

    def __init__(self, name: str, catalog: Catalog, pools: dict[str, Any], pes: Sequence[str], devices: dict[str, str]):
        self.name = name
        self.catalog = catalog
        self.pools = pools  # torch device -> SubnetPool
        self.pes = list(pes)
        self._devices = devices  # PE -> torch device
        self._entries = {e.id: e for e in catalog.entries}
        self._handles: dict[tuple[str, str], Any] = {}  # (app, torch device) -> SubnetHandle
        self.in_channels = int(catalog.family.get("in_channels", 3) or 3)

    @classmethod
    def load(cls, name: str, config: ModelConfig, platform_pes: Sequence[str],
             pe_cpus: Mapping[str, Sequence[int]] | None = None) -> ModelRuntime:
        """Load ``config``'s catalog into pools for the PEs it serves; ``pe_cpus`` (PE -> CPUs) pins re-profiling."""
        from subnets.pool import SubnetPool

        path = Path(config.catalog) if config.catalog else default_catalog_path()
        catalog = load_catalog(path)
        pes = list(config.pes) or [pe for pe in platform_pes if pe != "gpu" or _cuda_available()]
        unknown = [pe for pe in pes if pe not in platform_pes]
        if unknown:
            raise ConfigError(
                f"field models.{name}.pes names {', '.join(unknown)}, which this platform lacks; "
                f"its processing elements are: {', '.join(platform_pes)}"
            )
        if not pes:
            raise ConfigError(f"model {name!r}: no processing element to serve on")
        if "gpu" in pes and not _cuda_available():
            raise ConfigError(
                f"field models.{name}.pes names gpu, but this torch cannot use CUDA (a CPU-only build, or no "
                "driver); install a CUDA build of torch or leave gpu out"
            )
        devices = {pe: (config.gpu_device if pe == "gpu" else config.device) for pe in pes}
        for pe, device in devices.items():
            if device.startswith("cuda") and not _cuda_available():
                setting = f"models.{name}.{'gpu_device' if pe == 'gpu' else 'device'}"
                fix = f"drop gpu from models.{name}.pes" if pe == "gpu" else "set it to 'cpu'"
                raise ConfigError(
                    f"field {setting} is {device!r}, but this torch cannot use CUDA (a CPU-only build, or no "
                    f"GPU visible): {fix}"
                )
        pools: dict[str, Any] = {}
        for device in sorted(set(devices.values())):
            # graphs: forwards that run without the GIL, so the daemon's other threads cannot stall them
            pools[device] = SubnetPool.from_catalog(catalog, weights=config.weights, device=device,
                                                   graphs=config.graphs)
        if config.reprofile:
            catalog = _reprofile_here(catalog, pools, devices, name, pe_cpus)
        missing = [pe for pe in pes if pe not in catalog.pes()]
        if missing:
            log.warning(
                "model %s: catalog %s has no latency figures for %s (it has: %s); policies fall back on "
                "scaled figures. Run `dynofa catalog build` on this machine for better decisions.",
                name, path, ", ".join(missing), ", ".join(catalog.pes()) or "none",
            )  # fmt: skip
        log.info("model %s: %d subnets from %s on %s", name, len(catalog), path, ", ".join(pes))
        return cls(name, catalog, pools, pes, devices)

    # queries -----------------------------------------------------------------------------
    @property
    def ids(self) -> list[str]:
        return self.catalog.ids

    def has(self, subnet: str) -> bool:
        return subnet in self._entries

    def device(self, pe: str) -> str:
        return self._devices[pe]

    def accuracy(self, subnet: str) -> float | None:
        entry = self._entries.get(subnet)
        return None if entry is None or entry.accuracy is None else entry.accuracy.top1

    def most_accurate(self) -> str:
        """The subnet an app without a budget gets."""
        return max(self.catalog.entries, key=lambda e: (e.accuracy.top1 if e.accuracy else 0.0, e.macs)).id

    def describe(self) -> list[dict[str, Any]]:
        return [
            {
                "id": e.id,
                "resolution": e.resolution,
                "macs": e.macs,
                "params": e.params,
                "accuracy": None if e.accuracy is None else e.accuracy.top1,
                "latency_ms": {pe: lat.ms for pe, lat in sorted(e.latency.items())},
            }
            for e in self.catalog.entries
        ]

    def check_input(self, shape: Sequence[int]) -> str | None:
        """Why an input of ``shape`` cannot be served, or None."""
        if len(shape) != 4 or shape[1] != self.in_channels:
            return f"model {self.name!r} takes float tensors of shape (N, {self.in_channels}, H, W), got {list(shape)}"
        if not 8 <= shape[2] <= 4096 or not 8 <= shape[3] <= 4096:
            return f"image height and width must be within [8, 4096], got {shape[2]}x{shape[3]}"
        return None

    # switching -----------------------------------------------------------------------------
    def select(self, app: str, point: OperatingPoint) -> None:
        """Make ``point.subnet`` the subnet of ``app``'s next inference on ``point.pe`` (a reference swap)."""
        device = self._devices[point.pe]
        handle = self._handles.get((app, device))
        if handle is None:
            self._handles[(app, device)] = self.pools[device].handle(point.subnet)
        else:
            handle.switch(point.subnet)

    def release(self, app: str) -> None:
        for key in [k for k in self._handles if k[0] == app]:
            del self._handles[key]

    # inference -----------------------------------------------------------------------------
    def infer(self, app: str, pe: str, x: np.ndarray, subnet: str | None = None) -> InferenceOutcome:
        """Run ``app``'s selected subnet (or the forced ``subnet``) on ``x``, resized to its resolution."""
        import torch

        device = self._devices[pe]
        pool = self.pools[device]
        tensor = torch.from_numpy(x if x.flags.writeable and x.dtype == np.float32 else x.astype(np.float32))
        if subnet is not None:
            result = pool.infer(tensor, subnet=subnet, resize=True)
        else:
            handle = self._handles.get((app, device))
            if handle is None:  # the app was decided onto another PE's pool: start at the best subnet here
                handle = self._handles[(app, device)] = pool.handle(self.most_accurate())
            result = handle.infer(tensor, resize=True)
        output = result.output
        if hasattr(output, "detach"):
            output = output.detach().to("cpu").numpy()
        return InferenceOutcome(np.asarray(output), str(result.subnet), float(result.latency_ms))

    def close(self) -> None:
        for pool in self.pools.values():
            close = getattr(pool, "close", None)
            if close is not None:
                close()


def _cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001 - a broken CUDA install must not stop a CPU daemon
        return False
