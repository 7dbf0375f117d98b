"""Board identification from the device tree and ``/etc/nv_tegra_release``."""

from __future__ import annotations

from dataclasses import dataclass, field

from governors.sysfs import Sysfs

MODEL_PATHS = ("/sys/firmware/devicetree/base/model", "/proc/device-tree/model")
COMPATIBLE_PATHS = ("/sys/firmware/devicetree/base/compatible", "/proc/device-tree/compatible")
TEGRA_RELEASE = "/etc/nv_tegra_release"

JETSON_BOARDS = (
    "jetson-nano",
    "jetson-tx1",
    "jetson-xavier-nx",
    "jetson-agx-xavier",
    "jetson-agx-orin",
    "jetson-orin-nx",
    "jetson-orin-nano",
    "jetson-unknown",
)
ODROID_BOARDS = ("odroid-xu3", "odroid-xu4")
GENERIC = "generic-linux"


@dataclass
class BoardId:
    board: str
    model: str
    compatible: list[str] = field(default_factory=list)
    tegra_release: str | None = None

    @property
    def family(self) -> str:
        if self.board in JETSON_BOARDS:
            return "jetson"
        if self.board in ODROID_BOARDS:
            return "odroid"
        return "generic"


def _read_dt(sysfs: Sysfs, paths: tuple[str, ...]) -> bytes | None:
    for p in paths:
        try:
            return sysfs.read_bytes(p)
        except OSError:
            continue
    return None


def _jetson_board(model: str, compat: list[str]) -> str | None:
    m = model.lower()
    c = " ".join(compat).lower()
    if "tegra210" in c or "jetson nano" in m or "jetson-nano" in c:
        return "jetson-tx1" if "tx1" in m else "jetson-nano"
    if "tegra194" in c or "xavier" in m:
        if "xavier nx" in m or "p3668" in c or "jetson-xavier-nx" in c:
            return "jetson-xavier-nx"
        return "jetson-agx-xavier"
    if "tegra234" in c or "orin" in m:
        if "orin nx" in m:
            return "jetson-orin-nx"
        if "orin nano" in m:
            return "jetson-orin-nano"
        return "jetson-agx-orin"
    return None


def _odroid_board(model: str, compat: list[str]) -> str | None:
    m = model.lower().replace("-", " ")
    c = " ".join(compat).lower()
    if "hardkernel,odroid-xu4" in c or "odroid xu4" in m or "odroid hc1" in m or "odroid mc1" in m:
        return "odroid-xu4"
    if "hardkernel,odroid-xu3" in c or "odroid xu3" in m:
        return "odroid-xu3"
    return None


def identify_board(sysfs: Sysfs) -> BoardId:
    raw_model = _read_dt(sysfs, MODEL_PATHS)
    raw_compat = _read_dt(sysfs, COMPATIBLE_PATHS)
    model = raw_model.replace(b"\x00", b" ").decode("utf-8", "replace").strip() if raw_model else ""
    compat = [s.decode("utf-8", "replace") for s in (raw_compat or b"").split(b"\x00") if s.strip()]
    tegra = sysfs.try_read(TEGRA_RELEASE)

    board = _odroid_board(model, compat) or _jetson_board(model, compat)
    if board is None and tegra is not None:
        board = "jetson-unknown"  # an L4T system whose device tree we could not read
    if board is None:
        board = GENERIC
    if not model:
        model = _cpu_model_name(sysfs) or "unknown"
    return BoardId(board=board, model=model, compatible=compat, tegra_release=tegra)


def _cpu_model_name(sysfs: Sysfs) -> str | None:
    text = sysfs.try_read("/proc/cpuinfo")
    if not text:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Hardware", "Model"):
            return value.strip()
    return None


def l4t_release(text: str | None) -> str | None:
    """``# R35 (release), REVISION: 4.1, ...`` -> ``35.4.1``."""
    if not text:
        return None
    try:
        major = text.split("R", 1)[1].split()[0]
        rev = text.split("REVISION:", 1)[1].split(",")[0].strip()
        return f"{major}.{rev}"
    except IndexError:
        return None
