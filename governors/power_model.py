"""Power and energy per inference: measured where the board has rails, else a documented model.

The model, per processing element (PE) at clock ``f`` and supply voltage ``V(f)``::

    P_active(f) = P_static * V/V_max + C_eff * V^2 * f          (CMOS dynamic power)
    P_idle(f)   = P_static * V/V_max + idle_fraction * C_eff * V^2 * f

Energy of one frame of period ``T`` with an inference of latency ``t``::

    E = P_active(f) * t + P_idle(f) * (T - t)

``V(f)`` is interpolated linearly in a per-board voltage table. The per-board constants
below are approximations assembled from public material (each cited next to it); the
ones marked GUESS were not read from a source. When a monitor snapshot reports measured
power, :class:`PowerModel` rescales its figures by the measured/modelled ratio at the
operating point in use (an exponentially weighted calibration), and every estimate says
which of the two it is (``source``: ``"model"`` or ``"measured-calibrated"``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dynofa.errors import DynofaError


class PowerModelError(DynofaError):
    """A power model is malformed (empty voltage table, non-positive constants)."""


@dataclass(frozen=True)
class PePower:
    """Power constants of one PE. Frequencies in kHz (a GPU's Hz / 1000)."""

    pe: str
    static_w: float  # leakage + uncore at V_max, scaled by V/V_max
    ceff_f: float  # effective switched capacitance (farad) for the PE as used by inference
    volt_table: tuple[tuple[int, float], ...]  # (kHz, volts), ascending kHz
    idle_fraction: float = 0.1  # dynamic power left when idle (clock gating is imperfect); GUESS
    source: str = ""

    def __post_init__(self) -> None:
        if not self.volt_table:
            raise PowerModelError(f"power model for {self.pe}: the voltage table is empty")
        if self.static_w < 0 or self.ceff_f <= 0:
            raise PowerModelError(f"power model for {self.pe}: need static_w >= 0 and ceff_f > 0")

    @property
    def v_max(self) -> float:
        return max(v for _, v in self.volt_table)

    def voltage(self, khz: float) -> float:
        table = sorted(self.volt_table)
        if khz <= table[0][0]:
            return table[0][1]
        for (f0, v0), (f1, v1) in zip(table, table[1:], strict=False):
            if khz <= f1:
                return v0 + (v1 - v0) * (khz - f0) / (f1 - f0)
        return table[-1][1]

    def max_khz(self) -> int:
        return max(f for f, _ in self.volt_table)

    def active_w(self, khz: float) -> float:
        v = self.voltage(khz)
        return self.static_w * v / self.v_max + self.ceff_f * v * v * khz * 1e3

    def idle_w(self, khz: float) -> float:
        v = self.voltage(khz)
        return self.static_w * v / self.v_max + self.idle_fraction * self.ceff_f * v * v * khz * 1e3


def _volts(pairs: Iterable[tuple[int, float]]) -> tuple[tuple[int, float], ...]:
    return tuple(sorted(pairs))


# --- Odroid XU3 (Samsung Exynos 5422) -------------------------------------------------
# Voltages: approximate typical-bin values of the Exynos 5422 ASV tables in Hardkernel's
# 3.10 kernel (arch/arm/mach-exynos asv-exynos5422 tables: A15 ~0.9 V at <=500 MHz to
# ~1.36 V at 2.0 GHz; A7 ~0.9 V to ~1.25 V at 1.4 GHz). Power: whole-cluster figures
# measured with the XU3's INA231 sensors in the literature (Walker et al., "Accurate and
# stable run-time power modeling for mobile and embedded CPUs", IEEE TCAD 2017, Odroid XU3):
# A15 cluster with four busy cores ~5 W at 2.0 GHz, A7 cluster ~0.6 W at 1.4 GHz. C_eff is
# chosen so that the model reproduces those totals; static shares are GUESSes.
ODROID_XU3 = {
    "cpu-big": PePower(
        pe="cpu-big",
        static_w=0.40,  # GUESS
        ceff_f=4.6 / (1.3625**2 * 2.0e9),  # -> ~4.6 W dynamic at 2.0 GHz, 1.3625 V
        volt_table=_volts([(200000, 0.9), (500000, 0.9), (800000, 0.9625), (1000000, 1.0125), (1200000, 1.0625),
                           (1400000, 1.1125), (1600000, 1.175), (1800000, 1.2625), (2000000, 1.3625)]),
        source="Exynos 5422 ASV table (Hardkernel 3.10 kernel); Walker et al. TCAD 2017 (A15 ~5 W @ 2 GHz)",
    ),
    "cpu-little": PePower(
        pe="cpu-little",
        static_w=0.05,  # GUESS
        ceff_f=0.55 / (1.25**2 * 1.4e9),  # -> ~0.55 W dynamic at 1.4 GHz, 1.25 V
        volt_table=_volts([(200000, 0.9), (500000, 0.9), (800000, 0.975), (1000000, 1.05), (1200000, 1.15),
                           (1400000, 1.25)]),
        source="Exynos 5422 ASV table (Hardkernel 3.10 kernel); Walker et al. TCAD 2017 (A7 ~0.6 W @ 1.4 GHz)",
    ),
}

# --- Jetson Xavier NX -------------------------------------------------------------------
# The module's power modes are 10 W and 15 W (NVIDIA Jetson Xavier NX data sheet); under a
# DNN load most of it goes to the VDD_CPU_GPU_CV rail. Split and voltages are GUESSes
# consistent with that budget: GPU (384-core Volta) ~5.5 W at 1.1 GHz, six Carmel cores
# ~5 W at 1.9 GHz, both at ~1.0 V at the top of the ladder and ~0.6 V at the bottom.
XAVIER_NX = {
    "gpu": PePower(
        pe="gpu",
        static_w=0.6,  # GUESS
        ceff_f=4.9 / (1.0**2 * 1.109e9),
        volt_table=_volts([(114750, 0.6), (510000, 0.72), (803250, 0.84), (1109250, 1.0)]),
        source="GUESS within the 15 W module budget (NVIDIA Xavier NX data sheet)",
    ),
    "cpu": PePower(
        pe="cpu",
        static_w=0.5,  # GUESS
        ceff_f=4.5 / (1.0**2 * 1.9072e9),
        volt_table=_volts([(115200, 0.6), (729600, 0.7), (1267200, 0.82), (1907200, 1.0)]),
        source="GUESS within the 15 W module budget (NVIDIA Xavier NX data sheet)",
    ),
}

BOARD_MODELS: dict[str, dict[str, PePower]] = {
    "odroid-xu3": ODROID_XU3,
    "odroid-xu4": ODROID_XU3,  # same SoC; the XU4 has no sensors, so the model is all it has
    "jetson-xavier-nx": XAVIER_NX,
}


def generic_pe_power(pe: str, kind: str, top_khz: int | None) -> PePower:
    """A neutral model for a PE the tables do not cover (GUESS: 2 W CPU cluster, 5 W GPU at the top).

    It only has to rank operating points on the same PE sensibly (V rising with f); its
    absolute figures are not to be quoted, and energies built on it say ``source: model``.
    """
    top = top_khz or 2_000_000
    peak = 5.0 if kind == "gpu" else 2.0
    return PePower(
        pe=pe,
        static_w=0.1 * peak,
        ceff_f=0.9 * peak / (1.0 * top * 1e3),
        volt_table=_volts([(max(1, top // 10), 0.65), (top // 2, 0.8), (top, 1.0)]),
        source="generic GUESS",
    )


@dataclass(frozen=True)
class EnergyEstimate:
    joules: float
    power_w: float
    source: str  # "model" or "measured-calibrated"


@dataclass
class PowerModel:
    """Energy per frame for operating points on a board; calibrated by measured power when available."""

    board: str
    pes: dict[str, PePower] = field(default_factory=dict)
    calibration: float = 1.0
    calibrated: bool = False
    alpha: float = 0.2

    @classmethod
    def for_board(cls, board: str, pe_specs: Sequence[tuple[str, str, int | None]] = ()) -> PowerModel:
        """Model for ``board``; ``pe_specs`` = (name, kind, top kHz) of PEs to cover with the generic model."""
        table = dict(BOARD_MODELS.get(board, {}))
        for name, kind, top in pe_specs:
            if name not in table:
                table[name] = generic_pe_power(name, kind, top)
        return cls(board=board, pes=table)

    def pe(self, name: str) -> PePower:
        found = self.pes.get(name)
        if found is None:
            found = generic_pe_power(name, "gpu" if name == "gpu" else "cpu", None)
            self.pes[name] = found
        return found

    @property
    def source(self) -> str:
        return "measured-calibrated" if self.calibrated else "model"

    def active_w(self, pe: str, khz: float | None) -> float:
        p = self.pe(pe)
        return self.calibration * p.active_w(p.max_khz() if khz is None else khz)

    def idle_w(self, pe: str, khz: float | None) -> float:
        p = self.pe(pe)
        return self.calibration * p.idle_w(p.max_khz() if khz is None else khz)

    def frame_energy(self, pe: str, khz: float | None, latency_ms: float, period_ms: float) -> EnergyEstimate:
        """Energy of one frame (inference + idle until the next frame) on ``pe`` at ``khz``."""
        busy = min(latency_ms, period_ms) if period_ms > 0 else latency_ms
        idle = max(0.0, period_ms - latency_ms)
        active = self.active_w(pe, khz)
        joules = (active * busy + self.idle_w(pe, khz) * idle) / 1e3
        return EnergyEstimate(joules=joules, power_w=active, source=self.source)

    def calibrate(self, measured_w: float, modelled_w: float) -> None:
        """Fold one measured power reading (W) at the operating point in use into the scale factor."""
        if not (measured_w > 0 and modelled_w > 0):
            return
        ratio = measured_w / (modelled_w / self.calibration)
        self.calibration = ratio if not self.calibrated else (1 - self.alpha) * self.calibration + self.alpha * ratio
        self.calibrated = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "board": self.board,
            "source": self.source,
            "calibration": round(self.calibration, 4),
            "pes": {name: {"static_w": p.static_w, "ceff_f": p.ceff_f, "source": p.source}
                    for name, p in sorted(self.pes.items())},
        }


def total_power_w(model: PowerModel, busy: Mapping[str, tuple[float | None, float]]) -> float:
    """Average power of PEs given ``{pe: (kHz, utilisation 0..1)}``."""
    total = 0.0
    for pe, (khz, util) in busy.items():
        u = min(1.0, max(0.0, util))
        total += model.active_w(pe, khz) * u + model.idle_w(pe, khz) * (1.0 - u)
    return total
