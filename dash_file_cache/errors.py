"""Exceptions raised by the package; all derive from builtins callers already catch."""

from __future__ import annotations

__all__ = [
    "BackendUnavailable",
    "CacheProcessError",
    "EntryGone",
    "EntryNotFound",
]


class EntryNotFound(KeyError):
    """No entry is stored under this id, and the backend cannot tell whether one was."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "entry not found"


class EntryGone(EntryNotFound):
    """The entry existed but is gone for good: consumed once, expired, or deleted."""


class BackendUnavailable(ConnectionError):
    """The storage behind a cache cannot be reached right now; retry later."""


class CacheProcessError(RuntimeError):
    """The cache was used from a process where its entries would be lost."""
