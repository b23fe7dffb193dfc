"""CachePlain: entries kept in the memory of the serving process."""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, BinaryIO

from .._process import in_celery_task, in_child_process, is_inheriting
from .._streams import reader
from ..entry import Entry
from ..errors import CacheProcessError, EntryNotFound
from .base import Body, Bounds, CacheAbstract

__all__ = ["CachePlain", "Marks"]

# At most this many marks (mostly ids remembered as gone) are kept; the oldest go
# first. About 200 bytes each: a few MB on top of the bodies at most.
_MAX_MARKS = 20_000


def read_body(body: Body | bytearray) -> bytes | bytearray:
    """Return ``body`` as bytes, reading a stream to its end."""
    if isinstance(body, bytes | bytearray):
        return body
    data = body.read()
    if not isinstance(data, bytes):
        raise TypeError("a body stream must be opened in binary mode")
    return data


class Marks:
    """The mark store of the in-memory backends.

    Marks with a lifetime (ids remembered as gone, claims, locks) sit in a bounded
    dict whose oldest entries go first; counters (statistics, hits) are kept apart,
    so that a flood of gone marks can never reset them.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._items: OrderedDict[str, tuple[str, float | None]] = OrderedDict()
        self._counters: dict[str, int] = {}

    def _live(self, name: str) -> str | None:
        item = self._items.get(name)
        if item is None:
            return None
        value, expires = item
        if expires is not None and expires <= self._clock():
            del self._items[name]
            return None
        return value

    def _put(self, name: str, value: str, ttl: float | None) -> None:
        self._items.pop(name, None)
        self._items[name] = (value, None if ttl is None else self._clock() + ttl)
        while len(self._items) > _MAX_MARKS:
            self._items.popitem(last=False)

    def get(self, name: str) -> str | None:
        with self._lock:
            if name in self._counters:
                return str(self._counters[name])
            return self._live(name)

    def set(self, name: str, value: str, ttl: float | None) -> None:
        with self._lock:
            self._counters.pop(name, None)
            self._put(name, value, ttl)

    def add(self, name: str, value: str, ttl: float | None) -> bool:
        with self._lock:
            if name in self._counters or self._live(name) is not None:
                return False
            self._put(name, value, ttl)
            return True

    def delete(self, name: str) -> None:
        with self._lock:
            self._items.pop(name, None)
            self._counters.pop(name, None)

    def incr(self, name: str, amount: int) -> int:
        with self._lock:
            total = self._counters.get(name, 0) + amount
            self._counters[name] = total
            return total


class CachePlain(CacheAbstract):
    """An in-process LRU cache, thread-safe, bounded by count, bytes and age.

    ``cache_size`` is the most entries kept (as in 0.2.0), ``max_bytes`` the most
    body bytes (paths served in place count their size but are never deleted), and
    ``ttl`` the default lifetime in seconds; the least recently used entries are
    evicted first. A download in progress keeps its body even if the entry is
    evicted meanwhile. ``clock`` (seconds, like ``time.time``) is for tests.

    Bodies are immutable ``bytes`` held in this process, so it suits a single
    server process. Dash background callbacks run in child processes whose memory
    is thrown away: registering into a ``CachePlain`` there raises
    ``CacheProcessError``; use ``CacheQueue`` or ``CacheFile`` for them.
    """

    def __init__(
        self,
        cache_size: int,
        *,
        max_bytes: int | None = None,
        ttl: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(cache_size, int) or isinstance(cache_size, bool):
            raise TypeError(f"cache_size must be an int, not {type(cache_size).__name__}")
        self.bounds = Bounds(cache_size, max_bytes, ttl, clock)
        self._cache_size = cache_size
        self._lock = threading.RLock()
        self._items: OrderedDict[str, tuple[Entry, bytes | bytearray]] = OrderedDict()
        self._bytes = 0
        self._marks = Marks(clock)
        self._next_sweep = 0.0
        self._expiring = False
        self._owner_pid = os.getpid()
        self._copied_into_child = is_inheriting()

    def __getstate__(self) -> dict[str, Any]:
        # A copy in another process starts empty and refuses to register (its
        # entries would never be served); it carries only its settings.
        return {
            "cache_size": self._cache_size,
            "max_bytes": self.bounds.max_bytes,
            "ttl": self.bounds.ttl,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        CachePlain.__init__(
            self, state["cache_size"], max_bytes=state["max_bytes"], ttl=state["ttl"]
        )
        self._copied_into_child = True

    def __repr__(self) -> str:
        return f"<{type(self).__name__} entries={len(self._items)} cache_size={self._cache_size}>"

    @property
    def cache_size(self) -> int:
        """The maximum number of entries; the least recently used is evicted first."""
        return self._cache_size

    def _check_process(self) -> None:
        if in_celery_task():
            raise CacheProcessError(
                f"{type(self).__name__} keeps entries in the memory of the process that "
                "serves the app, but this is a Celery task in a worker process: the entry "
                "would be lost and its address would answer 404. Use CacheRedis (or "
                "CacheFile when the worker runs on the same host as the app)."
            )
        if in_child_process() and (self._copied_into_child or os.getpid() != self._owner_pid):
            raise CacheProcessError(
                f"{type(self).__name__} keeps entries in the memory of the process that "
                f"serves the app, but this is a child process (pid {os.getpid()}), for "
                "example a Dash background callback: the entry would be lost and its "
                "address would answer 404. Use CacheQueue (entries sent to the server "
                "process) or CacheFile (entries on disk) for background callbacks."
            )

    def put(self, entry: Entry, body: Body | None, *, fresh: bool = False) -> None:
        self._check_process()
        super().put(entry, body, fresh=fresh)

    def write(self, entry: Entry, body: Body | None) -> None:
        data = b"" if body is None else read_body(body)
        evicted: list[Entry] = []
        with self._lock:
            old = self._items.pop(entry.key, None)
            if old is not None:
                self._bytes -= old[0].size
            self._items[entry.key] = (entry, data)
            self._bytes += entry.size
            # Sweeping is needed only once some entry can expire.
            self._expiring = self._expiring or entry.expires is not None
            evicted += self._sweep_expired()
            while len(self._items) > self._cache_size or (
                self.bounds.max_bytes is not None and self._bytes > self.bounds.max_bytes
            ):
                _, (gone, _) = self._items.popitem(last=False)
                self._bytes -= gone.size
                evicted.append(gone)
        for gone in evicted:
            if self.bounds.expired(gone):
                self.mark_set("gone:" + gone.key, "expired", 24 * 3600)
                self.record("expired")
            else:
                self.evicted(gone)

    def _sweep_expired(self) -> list[Entry]:
        """Drop expired entries, at most once a second (called with the lock held)."""
        now = self.bounds.clock()
        if now < self._next_sweep or not self._expiring:
            return []
        self._next_sweep = now + 1.0
        expired = [key for key, (e, _) in self._items.items() if self.bounds.expired(e)]
        dropped = []
        for key in expired:
            entry, _ = self._items.pop(key)
            self._bytes -= entry.size
            dropped.append(entry)
        return dropped

    def read(self, key: str) -> tuple[Entry, BinaryIO | None]:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                raise EntryNotFound(f"no entry {key} is stored")
            self._items.move_to_end(key)
        entry, data = item
        if entry.kind != "body" or entry.lazy:
            return entry, None
        return entry, reader(data)

    def erase(self, key: str) -> bool:
        with self._lock:
            item = self._items.pop(key, None)
            if item is None:
                return False
            self._bytes -= item[0].size
            return True

    def entries(self) -> list[Entry]:
        with self._lock:
            return [entry for entry, _ in self._items.values()]

    def mark_get(self, name: str) -> str | None:
        return self._marks.get(name)

    def mark_set(self, name: str, value: str, ttl: float | None = None) -> None:
        self._marks.set(name, value, ttl)

    def mark_add(self, name: str, value: str, ttl: float | None = None) -> bool:
        return self._marks.add(name, value, ttl)

    def mark_delete(self, name: str) -> None:
        self._marks.delete(name)

    def mark_incr(self, name: str, amount: int = 1) -> int:
        return self._marks.incr(name, amount)
