"""CacheFile: entries on disk in a ``diskcache.Cache``, shared by processes on one host."""

from __future__ import annotations

import atexit
import io
import os
import shutil
import sqlite3
import tempfile
from typing import Any, BinaryIO

import diskcache

from .._process import Counter, inherited_from_parent, is_inheriting, publish_for_children
from .._streams import reader
from ..entry import Entry
from ..errors import BackendUnavailable
from .base import Body, CacheAbstract, raise_missing

__all__ = ["CacheFile"]

_GONE_PREFIX = "gone:"
_CLAIM_PREFIX = "claim:"
# How long a consumed or deleted id answers 410 rather than 404.
_GONE_SECONDS = 24 * 3600
# A claim outlives any sane download; it only guards against a crashed server.
_CLAIM_SECONDS = 6 * 3600
_counter = Counter()


def _remove_tree_if_owner(directory: str, pid: int) -> None:
    # atexit handlers are inherited by forked children (gunicorn workers run them):
    # only the process that made the temporary directory may remove it.
    if os.getpid() == pid:
        shutil.rmtree(directory, ignore_errors=True)


class CacheFile(CacheAbstract):
    """A disk cache built on ``diskcache``: process-safe, shared by every process on a host.

    ``cache_dir=None`` makes a temporary directory that the creating process removes
    at exit (never a child process or a sibling worker). A directory you name is
    never deleted by this package, so several gunicorn workers, background-callback
    children and restarts share it. Bodies are stored as files and streamed from
    them; metadata is stored as JSON, never pickled. ``chunk_size`` (MiB) is kept for
    0.2.0 compatibility; diskcache copies bodies in its own chunks.

    ``cache`` may also be an existing ``diskcache.Cache`` to share its settings.
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike[str] | None = None,
        chunk_size: int = 1,
        *,
        cache: diskcache.Cache | None = None,
    ) -> None:
        if not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be an int of at least 1 (MiB), got {chunk_size!r}")
        self._chunk_size = chunk_size
        self._index = _counter.next()
        self._owner_pid: int | None = None
        if cache is not None:
            self._cache = cache
        else:
            directory = self._choose_directory(cache_dir)
            self._cache = self._open(directory)

    def _choose_directory(self, cache_dir: str | os.PathLike[str] | None) -> str:
        if cache_dir is not None:
            return os.fspath(cache_dir)
        if is_inheriting():
            found = inherited_from_parent("dirs", self._index)
            if found is not None:
                return found[1]
        directory = tempfile.mkdtemp(prefix="dash-file-cache-")
        self._owner_pid = os.getpid()
        atexit.register(_remove_tree_if_owner, directory, self._owner_pid)
        publish_for_children("dirs", self._index, directory)
        return directory

    @staticmethod
    def _open(directory: str) -> diskcache.Cache:
        # Eviction is left to the cache's own bounds; diskcache's default 1 GB limit
        # would silently drop large entries.
        return diskcache.Cache(directory, size_limit=2**62, eviction_policy="least-recently-stored")

    def __getstate__(self) -> dict[str, Any]:
        return {"directory": self._cache.directory, "chunk_size": self._chunk_size}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._chunk_size = state["chunk_size"]
        self._index = 0
        self._owner_pid = None
        self._cache = self._open(state["directory"])

    def __repr__(self) -> str:
        return f"<{type(self).__name__} dir={self._cache.directory!r}>"

    @property
    def directory(self) -> str:
        """The directory holding the entries."""
        return str(self._cache.directory)

    @property
    def cache(self) -> diskcache.Cache:
        """The underlying ``diskcache.Cache``."""
        return self._cache

    @property
    def chunk_size(self) -> int:
        """Chunk size in MiB (0.2.0 compatibility)."""
        return self._chunk_size

    @chunk_size.setter
    def chunk_size(self, value: int) -> None:
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"chunk_size must be an int of at least 1 (MiB), got {value!r}")
        self._chunk_size = value

    def put(self, entry: Entry, body: Body | None) -> None:
        value: bytes | BinaryIO
        if body is None:
            value = b""
        elif isinstance(body, bytes) and len(body) < self._cache.disk_min_file_size:
            value = body
        elif isinstance(body, bytes):
            value = io.BytesIO(body)
        else:
            value = body
        with _available():
            # Writing the body file and the row with its JSON tag is one diskcache
            # set: readers never see a partial entry.
            self._cache.set(
                entry.key, value, read=not isinstance(value, bytes), tag=entry.to_json()
            )
            self._cache.delete(_GONE_PREFIX + entry.key)
            self._cache.delete(_CLAIM_PREFIX + entry.key)

    def get(self, key: str) -> tuple[Entry, BinaryIO | None]:
        with _available():
            found = self._cache.get(key, default=None, read=True, tag=True)
            if found is None or found[0] is None:
                raise raise_missing(key, _GONE_PREFIX + key in self._cache)
            value, tag = found
            entry = Entry.from_json(tag)
            if entry.one_time and _CLAIM_PREFIX + key in self._cache:
                _close(value)
                raise raise_missing(key, True)
        if entry.kind != "body":
            _close(value)
            return entry, None
        if isinstance(value, bytes):
            return entry, reader(value)
        return entry, value

    def delete(self, key: str, gone: bool = True) -> bool:
        with _available():
            # The gone mark is committed before the body disappears: a reader that
            # misses the entry then always finds the mark and answers 410, not 404.
            # (Inside one diskcache transaction the body file is removed before the
            # commit, which would open exactly that window.)
            if gone and key in self._cache:
                self._cache.set(_GONE_PREFIX + key, b"", expire=_GONE_SECONDS)
            found = bool(self._cache.delete(key))
            self._cache.delete(_CLAIM_PREFIX + key)
            return found

    def claim(self, key: str) -> bool:
        with _available(), self._cache.transact():
            if key not in self._cache:
                return False
            return bool(self._cache.add(_CLAIM_PREFIX + key, os.getpid(), expire=_CLAIM_SECONDS))

    def release(self, key: str) -> None:
        with _available():
            self._cache.delete(_CLAIM_PREFIX + key)

    def keys(self) -> list[str]:
        with _available():
            return [
                k
                for k in self._cache.iterkeys()
                if isinstance(k, str) and not k.startswith((_GONE_PREFIX, _CLAIM_PREFIX))
            ]


def _close(value: object) -> None:
    close = getattr(value, "close", None)
    if close is not None:
        close()


class _available:
    """Turn the disk cache's lock and I/O failures into :class:`BackendUnavailable`."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            return
        if isinstance(exc, (diskcache.Timeout, sqlite3.OperationalError)):
            raise BackendUnavailable(f"the disk cache is unavailable: {exc}") from exc
