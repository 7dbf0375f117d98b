"""The catalog builder's options (one record instead of two dozen keyword arguments)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dynofa.errors import CatalogBuildError


@dataclass(frozen=True)
class BuildOptions:
    """How :func:`subnets.offline.build.build_catalog` samples, profiles and selects.

    ``out`` is where the catalog will be saved (needed for the BN statistics sidecar files; the
    caller saves the catalog itself). ``weights`` becomes the catalog's ``weights`` object
    (``{"path", "sha256"}`` or ``{"init": "random", "seed"}``); None asks the family. ``affinity``
    pins the measuring thread to a PE's CPUs (e.g. ``{"cpu-big": [4, 5, 6, 7]}``).
    ``fill_dominated`` tops a short front up to ``keep`` with the best dominated subnets (e.g. to
    keep every level of a group-pruned net whatever timing noise says). ``batch_sizes`` are the
    batch sizes the kept subnets are also timed at (selection is on batch 1); between and beyond
    them :meth:`dynofa.catalog.Latency.at_batch` interpolates, and the build checks that rule on a
    batch size it did not measure.
    """

    pes: Sequence[str] = ("cpu",)
    candidates: int = 100  # distinct subnets sampled (largest and smallest always in)
    #: fraction of the candidates blended towards the largest or smallest subnet (candidates.sample)
    blend: float = 0.0
    measure: int = 20  # of those, materialised and timed (spread over the MACs range)
    keep: int = 10  # at most this many Pareto-optimal subnets kept
    seed: int = 0
    out: str | os.PathLike[str] | None = None
    weights: Mapping[str, Any] | None = None
    threads: int = 1
    warmup: int = 3
    repeats: int = 10  # interleaved rounds per pass
    passes: int = 1  # passes of interleaved rounds (a figure pools them; even vs odd: its repeatability)
    refine: bool = True  # measure kept subnets whose figures were only predicted, select again
    affinity: Mapping[str, Sequence[int]] = field(default_factory=dict)
    val_name: str = ""
    val_limit: int | None = None  # validation images used (None: all)
    calib_limit: int = 2000  # calibration images per subnet for its BN statistics
    batch_size: int = 64  # images per batch when evaluating and calibrating
    fill_dominated: bool = False
    #: batch sizes every kept subnet is timed at (1 always): the catalog's per-batch figures
    batch_sizes: Sequence[int] = (1,)
    #: "wall" or "thread" (CPU time of the measuring thread; for one thread on a shared machine)
    clock: str = "wall"

    def extra_batch_sizes(self) -> list[int]:
        """The batch sizes above 1 to time, sorted, without repeats."""
        return sorted({int(b) for b in self.batch_sizes} - {1})

    def check(self) -> None:
        """Raise :class:`CatalogBuildError` naming the first option out of range."""
        if not self.pes:
            raise CatalogBuildError("give at least one processing element to profile on (e.g. cpu)")
        if self.candidates < 2:
            raise CatalogBuildError(
                f"--candidates must be >= 2 (largest and smallest are always in), got {self.candidates}"
            )
        if not 0.0 <= self.blend <= 1.0:
            raise CatalogBuildError(f"--blend must be a fraction in [0, 1], got {self.blend}")
        if self.measure < 2:
            raise CatalogBuildError(
                f"--measure must be >= 2 so that a latency regression can be fitted, got {self.measure}"
            )
        if self.measure > self.candidates:
            raise CatalogBuildError(f"--measure ({self.measure}) cannot exceed --candidates ({self.candidates})")
        if self.keep < 1 or self.keep > self.candidates:
            raise CatalogBuildError(f"--keep must be between 1 and --candidates ({self.candidates}), got {self.keep}")
        if any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in self.batch_sizes):
            raise CatalogBuildError(f"--batch-sizes must be integers >= 1, got {list(self.batch_sizes)}")
        if self.clock not in ("wall", "thread"):
            raise CatalogBuildError(f"--clock must be wall or thread, got {self.clock!r}")
        if self.clock == "thread" and (self.threads != 1 or any(pe == "gpu" for pe in self.pes)):
            raise CatalogBuildError("--clock thread times one CPU thread: use --threads 1 and CPU PEs only")
        if self.threads < 1 or self.repeats < 1 or self.passes < 1 or self.warmup < 0 or self.batch_size < 1:
            raise CatalogBuildError(
                f"threads, repeats, passes and batch size must be >= 1 and warmup >= 0, got threads={self.threads}, "
                f"repeats={self.repeats}, passes={self.passes}, batch_size={self.batch_size}, warmup={self.warmup}"
            )
