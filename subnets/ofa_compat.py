"""Make ``import ofa`` work where torchvision or PIL is missing or broken.

``ofa/utils/__init__.py`` star-imports ``ofa.utils.my_dataloader.my_random_resize_crop``,
which imports PIL and torchvision at import time although no network code uses them.
On x86 CPU setups no working torchvision exists (the PyPI wheel is a CUDA build that fails
with ``operator torchvision::nms does not exist``). When, and only when, PIL or
``torchvision.transforms`` cannot be imported, we register a stand-in for that one
data-loading module before ``ofa`` is imported. Its classes raise a clear error if used.
With a working torchvision (e.g. on a Jetson with NVIDIA's wheels) this does nothing.
"""

from __future__ import annotations

import importlib
import sys
import types

_RESIZE_CROP = "ofa.utils.my_dataloader.my_random_resize_crop"
_STANDIN_NAMES = ("MyRandomResizedCrop", "MyResizeRandomCrop", "MyResize")


def _vision_stack_works() -> bool:
    try:
        importlib.import_module("PIL.Image")
        importlib.import_module("torchvision.transforms")
    except Exception:  # noqa: BLE001 - a broken torchvision raises RuntimeError, not ImportError
        return False
    return True


def _unavailable(name: str) -> type:
    def __init__(self: object, *args: object, **kwargs: object) -> None:
        raise RuntimeError(
            f"ofa's {name} needs PIL and a working torchvision, which are not installed; "
            "dynofa does not use ofa's data loaders"
        )

    return type(name, (), {"__init__": __init__})


def install() -> bool:
    """Install the stand-in if needed. Returns True when it was installed (now or before)."""
    if _RESIZE_CROP in sys.modules:
        return getattr(sys.modules[_RESIZE_CROP], "__dynofa_standin__", False)
    if "ofa" in sys.modules or _vision_stack_works():
        return False
    standin = types.ModuleType(_RESIZE_CROP, "dynofa stand-in: PIL/torchvision unavailable")
    standin.__all__ = []  # type: ignore[attr-defined]  # star-import brings nothing in
    standin.__dynofa_standin__ = True  # type: ignore[attr-defined]
    for name in _STANDIN_NAMES:
        setattr(standin, name, _unavailable(name))
    sys.modules[_RESIZE_CROP] = standin
    return True


def import_ofa() -> types.ModuleType:
    """Import and return the ``ofa`` package, installing the stand-in first if needed."""
    install()
    return importlib.import_module("ofa")
