"""Local weight files: OFA checkpoints and per-subnet BatchNorm statistics.

dynofa never downloads weights. A checkpoint is a local file in the official OFA format:
either ``{"state_dict": {...}, ...}`` (what the OFA model zoo ships) or a bare state dict.
Files are read with ``torch.load(weights_only=True)`` so a checkpoint cannot run code, and
mapped to the CPU first (the pool moves tensors to its processing element afterwards).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dynofa.catalog import sha256_file
from dynofa.errors import CheckpointError, WeightsNotFoundError

if TYPE_CHECKING:
    import torch

__all__ = ["load_state_dict", "weights_sha256", "save_bn_stats", "load_bn_stats", "resolve_weights_path"]


def resolve_weights_path(path: str | os.PathLike[str], what: str) -> Path:
    """The absolute path of an existing weight file, or WeightsNotFoundError naming where we looked."""
    candidate = Path(path).expanduser()
    absolute = candidate if candidate.is_absolute() else Path.cwd() / candidate
    if not absolute.is_file():
        raise WeightsNotFoundError(what, [str(absolute)])
    return absolute


def _torch_load(path: Path) -> Any:
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises pickle, zip and runtime errors alike
        raise CheckpointError(
            f"cannot read weight file {path}: {exc.__class__.__name__}: {exc}. "
            "Expected a torch checkpoint (official OFA format: a dict with 'state_dict', or a bare state dict)."
        ) from None


def load_state_dict(path: str | os.PathLike[str], what: str = "the model") -> dict[str, torch.Tensor]:
    """Read an OFA-format checkpoint and return its state dict (CPU tensors).

    ``module.`` prefixes left by ``DataParallel`` training are removed.
    """
    import torch

    source = resolve_weights_path(path, what)
    data = _torch_load(source)
    if isinstance(data, Mapping) and "state_dict" in data:
        data = data["state_dict"]
    if not isinstance(data, Mapping) or not data:
        raise CheckpointError(f"weight file {source} holds no state dict (got {type(data).__name__})")
    state: dict[str, torch.Tensor] = {}
    for key, value in data.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"weight file {source}: entry {key!r} is not a tensor ({type(value).__name__})")
        state[key[len("module.") :] if key.startswith("module.") else key] = value
    return state


def weights_sha256(path: str | os.PathLike[str], what: str = "the model") -> str:
    """SHA-256 of a weight file, so that catalogs can refuse weights they were not built for."""
    return sha256_file(resolve_weights_path(path, what))


def save_bn_stats(path: str | os.PathLike[str], stats: Mapping[str, torch.Tensor]) -> Path:
    """Write one subnet's BatchNorm statistics (a small state-dict fragment) as a sidecar file."""
    import torch

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    torch.save({key: value.detach().cpu().contiguous() for key, value in stats.items()}, tmp)
    os.replace(tmp, target)
    return target


def load_bn_stats(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a sidecar written by :func:`save_bn_stats`."""
    import torch

    source = resolve_weights_path(path, "per-subnet BatchNorm statistics")
    data = _torch_load(source)
    if not isinstance(data, Mapping) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(f"BN statistics file {source} must hold a mapping of names to tensors")
    return {str(k): v for k, v in data.items()}
