"""``detect_platform(root)``: identify the board and build its platform description."""

from __future__ import annotations

import os

from dynofa.errors import PlatformError
from governors.platform import generic, jetson, odroid
from governors.platform.boards import identify_board
from governors.platform.model import Platform
from governors.sysfs import Sysfs, SysfsHook


def detect_platform(root: str = "/", hook: SysfsHook | None = None) -> Platform:
    """Detect the board under ``root`` (a real ``/`` or a fake tree) and describe it.

    Never raises for missing files: what cannot be found is reported as a missing capability.
    A ``root`` that is not a directory at all is a mistake, not a bare board: PlatformError.
    """
    if not os.path.isdir(root):
        raise PlatformError(f"sysfs root {root} is not a directory (give / or a copied tree holding sys/ and proc/)")
    sysfs = Sysfs(root, hook=hook)
    ident = identify_board(sysfs)
    if ident.family == "jetson":
        platform = jetson.build(sysfs, ident)
    elif ident.family == "odroid":
        platform = odroid.build(sysfs, ident)
    else:
        platform = generic.build(sysfs, ident)
    platform.info.setdefault("compatible", ident.compatible)
    return platform
