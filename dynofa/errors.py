"""Exception types shared by every dynofa component.

Each error carries a message a user can act on: what is wrong, and where.
"""

from __future__ import annotations


class DynofaError(Exception):
    """Base class of every error dynofa raises on purpose."""


class CatalogError(DynofaError):
    """A catalog file is missing, corrupt, of an unknown schema, or built for other weights."""


class ConfigError(DynofaError):
    """A configuration file or value is invalid; the message names the field."""


class BudgetError(DynofaError):
    """A budget is malformed or impossible."""


class UnknownSubnetError(DynofaError, KeyError):
    """A subnet id was asked for that the catalog or pool does not hold."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "unknown subnet"


class WeightsNotFoundError(DynofaError, FileNotFoundError):
    """A model's local weight file is missing. dynofa never downloads weights."""

    def __init__(self, what: str, searched: list[str]) -> None:
        self.what = what
        self.searched = list(searched)
        where = ", ".join(self.searched) if self.searched else "(no path given)"
        super().__init__(
            f"weights for {what} not found; looked in: {where}. dynofa never downloads weights: "
            "pass the path of a local checkpoint file (official OFA format)."
        )

    def __str__(self) -> str:
        return str(self.args[0])


class PlatformError(DynofaError):
    """A platform capability could not be read or changed."""


class ProtocolError(DynofaError):
    """A ZeroMQ message does not follow the dynofa protocol."""


class DaemonUnavailableError(DynofaError):
    """The daemon did not answer (not running, wrong endpoint, or timed out)."""


class DatasetError(DynofaError):
    """A dataset file or directory is missing, corrupt, or not in a supported layout; the message names it."""


class CatalogBuildError(DynofaError):
    """A catalog cannot be built or re-profiled as asked (too few measurements, bad arguments, ...)."""


class CheckpointError(DynofaError):
    """A local weight file exists but cannot be read or does not fit the model family it was given to."""


class InputError(DynofaError, ValueError):
    """An inference input has the wrong rank, channel count or dtype; the message says what is expected."""
