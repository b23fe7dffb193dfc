"""Serve files made at run time by Dash callbacks and Flask views over plain HTTP."""

from importlib.metadata import PackageNotFoundError, version

from .caches import Bounds, CacheAbstract, CacheFile, CachePlain, CacheQueue, CacheRedis
from .entry import Entry
from .errors import BackendUnavailable, CacheProcessError, EntryGone, EntryNotFound
from .memoize import Memoized
from .service import ServiceData

try:
    __version__ = version("dash-file-cache")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "BackendUnavailable",
    "Bounds",
    "CacheAbstract",
    "CacheFile",
    "CachePlain",
    "CacheProcessError",
    "CacheQueue",
    "CacheRedis",
    "Entry",
    "EntryGone",
    "EntryNotFound",
    "Memoized",
    "ServiceData",
    "__version__",
]
