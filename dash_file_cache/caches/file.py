"""CacheFile: entries on disk in a ``diskcache.Cache``, shared by processes on one host."""

from __future__ import annotations

import atexit
import contextlib
import io
import os
import shutil
import sqlite3
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO

import diskcache
from diskcache.core import EVICTION_POLICY, MODE_RAW, UNKNOWN

from .._process import BuildSites, inherited_from_parent, is_inheriting, publish_for_children
from .._streams import reader
from ..entry import Entry
from ..errors import BackendUnavailable, CacheProcessError, EntryNotFound
from .base import Body, Bounds, CacheAbstract

__all__ = ["CacheFile", "EntryDisk"]

_sites = BuildSites()
_LEAST_RECENTLY_USED = EVICTION_POLICY["least-recently-used"]["cull"].format(
    fields="key, tag", now=0
)
# A read, without the access-time update that diskcache's own get() makes in a
# write transaction: reads here write nothing, and uses are noted apart.
_SELECT = (
    "SELECT tag, mode, filename, value FROM Cache WHERE key = ? AND raw = ?"
    " AND (expire_time IS NULL OR expire_time > ?)"
)
_TOUCH = "UPDATE Cache SET access_time = ? WHERE key = ? AND raw = ? AND access_time < ?"
# Uses noted by reads reach the index at most this often (seconds), and before any
# eviction of the same process.
_TOUCH_SECONDS = 0.1
# Bodies below this many bytes are stored under the process's write lock; larger
# ones take long to write and go without it (SQLite still serialises the writes).
_LOCKED_BODY_BYTES = 1 << 20

# One lock per database and process: threads of one process take turns at writing
# instead of meeting in SQLite's busy handler, which sleeps up to 100 ms at a time.
_write_locks: dict[str, threading.RLock] = {}
_write_locks_guard = threading.Lock()


def _write_lock(directory: str) -> threading.RLock:
    key = os.path.realpath(directory)
    with _write_locks_guard:
        lock = _write_locks.get(key)
        if lock is None:
            lock = _write_locks[key] = threading.RLock()
        return lock


def _forget_write_locks() -> None:
    # A lock held by another thread at fork time would never be released in the
    # child (a background callback forked from a threaded server): the child starts
    # with fresh locks, in the table and in every cache it inherited.
    global _write_locks_guard
    _write_locks_guard = threading.Lock()
    _write_locks.clear()
    for cache in list(_open_caches):
        cache._make_locks()


_open_caches: weakref.WeakSet[CacheFile] = weakref.WeakSet()
os.register_at_fork(after_in_child=_forget_write_locks)


def _remove_tree_if_owner(directory: str, pid: int) -> None:
    # atexit handlers are inherited by forked children (gunicorn workers run them):
    # only the process that made the temporary directory may remove it.
    if os.getpid() == pid:
        shutil.rmtree(directory, ignore_errors=True)


class _InPlace:
    """The stored value of an entry served from its own path: nothing but its size."""

    def __init__(self, size: int) -> None:
        self.size = size


class EntryDisk(diskcache.Disk):  # type: ignore[misc]
    """diskcache's disk, with entries served in place counted at their file's size.

    diskcache then bounds bodies and in-place files together (``max_bytes``) and
    evicting an in-place entry removes nothing from disk.
    """

    def store(self, value: Any, read: bool, key: Any = UNKNOWN) -> tuple[int, int, Any, Any]:
        if isinstance(value, _InPlace):
            return value.size, MODE_RAW, None, b""
        result: tuple[int, int, Any, Any] = super().store(value, read, key=key)
        return result


class CacheFile(CacheAbstract):
    """A disk cache built on ``diskcache``: process-safe, shared by every process on a host.

    ``cache_dir=None`` makes a temporary directory that the creating process removes
    at exit (never a child process or a sibling worker). A directory you name is
    never deleted by this package, so several gunicorn workers, background-callback
    children and restarts share it. Bodies are stored as files and streamed from
    them; metadata is stored as JSON, never pickled. ``chunk_size`` (MiB) is kept for
    0.2.0 compatibility; diskcache copies bodies in its own chunks.

    Bounds map onto diskcache: ``max_bytes`` is its ``size_limit`` (bodies, files
    served in place, and the index itself), ``ttl`` its per-item expiry (expired
    bodies are removed from disk at the next registration), and both ``max_bytes``
    and ``cache_size`` (entries) evict in its least-recently-used order.
    ``clock`` (like ``time.time``) is for tests.
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike[str] | None = None,
        chunk_size: int = 1,
        *,
        cache_size: int | None = None,
        max_bytes: int | None = None,
        ttl: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be an int of at least 1 (MiB), got {chunk_size!r}")
        self.bounds = Bounds(cache_size, max_bytes, ttl, clock)
        self._chunk_size = chunk_size
        self._site = _sites.name()
        self._owner_pid: int | None = None
        self._orphan = False
        self._open(self._choose_directory(cache_dir))

    def _choose_directory(self, cache_dir: str | os.PathLike[str] | None) -> str:
        if cache_dir is not None:
            return os.fspath(cache_dir)
        if is_inheriting():
            found = inherited_from_parent("dirs", self._site)
            if found is not None:
                return found[1]
            # A spawned child that cannot find its parent's directory: whatever it
            # registered into a directory of its own would vanish with it.
            self._orphan = True
        directory = tempfile.mkdtemp(prefix="dash-file-cache-")
        self._owner_pid = os.getpid()
        atexit.register(_remove_tree_if_owner, directory, self._owner_pid)
        publish_for_children("dirs", self._site, directory)
        return directory

    def _open(self, directory: str) -> None:
        # diskcache's own culling on set is off (cull_limit=0): the bounds are applied
        # after each write, so evictions can be counted.
        self._cache = diskcache.Cache(
            directory,
            disk=EntryDisk,
            size_limit=self.bounds.max_bytes or 2**62,
            eviction_policy="least-recently-used",
            cull_limit=0,
        )
        self._marks = diskcache.Cache(
            os.path.join(directory, "marks"), size_limit=2**62, eviction_policy="none"
        )
        self._make_locks()
        _open_caches.add(self)

    def _make_locks(self) -> None:
        """The locks of this process, and no uses noted yet (again after a fork)."""
        directory = self._cache.directory
        self._writing = _write_lock(directory)
        self._marking = _write_lock(os.path.join(directory, "marks"))
        self._touched: dict[str, float] = {}
        self._touched_lock = threading.Lock()
        self._touched_at = time.monotonic()

    def __getstate__(self) -> dict[str, Any]:
        bounds = self.bounds
        return {
            "directory": self._cache.directory,
            "chunk_size": self._chunk_size,
            "bounds": (bounds.cache_size, bounds.max_bytes, bounds.ttl),
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.bounds = Bounds(*state["bounds"])
        self._chunk_size = state["chunk_size"]
        self._site = ""
        self._owner_pid = None
        self._orphan = False
        self._open(state["directory"])

    def __repr__(self) -> str:
        return f"<{type(self).__name__} dir={self._cache.directory!r}>"

    @property
    def directory(self) -> str:
        """The directory holding the entries."""
        return str(self._cache.directory)

    @property
    def cache(self) -> diskcache.Cache:
        """The underlying ``diskcache.Cache`` of the bodies."""
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

    def close(self) -> None:
        """Close the database connections of this process (reopened when used)."""
        self._cache.close()
        self._marks.close()

    # Storage -----------------------------------------------------------------------

    def write(self, entry: Entry, body: Body | None) -> None:
        if self._orphan:
            raise CacheProcessError(
                "this CacheFile was rebuilt in a child process that cannot find the "
                "directory of the serving process, so its entries would be lost; name "
                "the directory (CacheFile('/some/dir')) or build the cache at module "
                "level in the app"
            )
        value: Any
        if entry.kind == "path":
            value = _InPlace(entry.size)
        elif body is None:
            value = b""
        elif isinstance(body, bytes) and len(body) < self._cache.disk_min_file_size:
            value = body
        elif isinstance(body, bytes):
            value = io.BytesIO(body)
        else:
            value = body
        expire = None
        if entry.expires is not None:
            # diskcache adds time.time() to this: its expiry time is then exactly
            # entry.expires, on the same time line as the clock that expire() is given.
            expire = max(entry.expires - time.time(), 0.001)
        small = not hasattr(value, "read") or entry.size < _LOCKED_BODY_BYTES
        with _available():
            # Writing the body file and the row with its JSON tag is one diskcache
            # set: readers never see a partial entry.
            with self._writing if small else contextlib.nullcontext():
                self._cache.set(
                    entry.key,
                    value,
                    read=hasattr(value, "read"),
                    tag=entry.to_json(),
                    expire=expire,
                )
            with self._writing:
                self._apply_bounds()

    def _apply_bounds(self) -> None:
        self._flush_touches()
        expired = self._cache.expire(now=self.bounds.clock())
        if expired:
            self.record("expired", expired)
        limit = self.bounds.cache_size
        while (limit is not None and len(self._cache) > limit) or (
            self.bounds.max_bytes is not None and self._cache.volume() > self._cache.size_limit
        ):
            if not self._evict_one():
                break

    def _evict_one(self) -> bool:
        """Evict the least recently used entry, in diskcache's own order."""
        # diskcache's cull() drops ten entries at a time and does not say which;
        # its eviction query, one row at a time, keeps the bound tight and lets each
        # evicted id answer 410.
        rows = self._cache._sql(_LEAST_RECENTLY_USED, (1,)).fetchall()
        if not rows:
            return False
        key, tag = rows[0]
        if self._cache.delete(key) and tag is not None:
            self.evicted(Entry.from_json(tag))
        return True

    def _fetch(self, key: str) -> tuple[Any, str] | None:
        """The stored value (a file for bodies on disk) and JSON tag of ``key``."""
        db_key, raw = self._cache._disk.put(key)
        rows = self._cache._sql(_SELECT, (db_key, raw, time.time())).fetchall()
        if not rows:
            return None
        ((tag, mode, filename, stored),) = rows
        try:
            value = self._cache._disk.fetch(mode, filename, stored, True)
        except OSError:
            return None  # evicted between the query and the opening of its file
        return value, tag

    def _touch(self, key: str) -> None:
        """Note a use of ``key`` for the least-recently-used order."""
        now = time.monotonic()
        with self._touched_lock:
            self._touched[key] = time.time()
            due = now - self._touched_at >= _TOUCH_SECONDS
        if due:
            # Best effort: a read that found its entry is not failed by the index.
            with contextlib.suppress(BackendUnavailable), _available():
                self._flush_touches()

    def _flush_touches(self) -> None:
        """Write the uses noted since the last flush, in one transaction."""
        with self._touched_lock:
            touched, self._touched = self._touched, {}
            self._touched_at = time.monotonic()
        if not touched:
            return
        rows = []
        for key, at in touched.items():
            db_key, raw = self._cache._disk.put(key)
            rows.append((at, db_key, raw, at))
        with self._writing, self._cache.transact(retry=True):
            self._cache._con.executemany(_TOUCH, rows)

    def read(self, key: str) -> tuple[Entry, BinaryIO | None]:
        with _available():
            found = self._fetch(key)
        if found is None or found[0] is None:
            raise EntryNotFound(f"no entry {key} is stored")
        self._touch(key)
        value, tag = found
        entry = Entry.from_json(tag)
        if entry.kind != "body" or entry.lazy:
            _close(value)
            return entry, None
        if isinstance(value, bytes):
            return entry, reader(value)
        return entry, value

    def erase(self, key: str) -> bool:
        with _available(), self._writing:
            return bool(self._cache.delete(key))

    def entries(self) -> list[Entry]:
        found = []
        with _available():
            for key in list(self._cache):
                # Listing is not a use: it leaves the least-recently-used order alone.
                item = self._fetch(key)
                if item is None or item[0] is None:
                    continue
                _close(item[0])
                found.append(Entry.from_json(item[1]))
        return found

    # Marks -----------------------------------------------------------------------------

    def mark_get(self, name: str) -> str | None:
        with _available():
            value = self._marks.get(name)
        return None if value is None else str(value)

    def mark_set(self, name: str, value: str, ttl: float | None = None) -> None:
        with _available(), self._marking:
            self._marks.set(name, value, expire=ttl)

    def mark_add(self, name: str, value: str, ttl: float | None = None) -> bool:
        with _available(), self._marking:
            return bool(self._marks.add(name, value, expire=ttl))

    def mark_delete(self, name: str) -> None:
        with _available(), self._marking:
            self._marks.delete(name)

    def mark_incr(self, name: str, amount: int = 1) -> int:
        with _available(), self._marking:
            return int(self._marks.incr(name, amount, default=0))


def _close(value: object) -> None:
    close = getattr(value, "close", None)
    if close is not None:
        close()


@contextmanager
def _available() -> Iterator[None]:
    """Turn the disk cache's lock and I/O failures into ``BackendUnavailable``."""
    try:
        yield
    except (diskcache.Timeout, sqlite3.OperationalError) as exc:
        raise BackendUnavailable(f"the disk cache is unavailable: {exc}") from exc
