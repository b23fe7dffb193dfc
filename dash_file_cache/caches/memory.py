"""CachePlain: entries kept in the memory of the serving process."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import BinaryIO

from .._process import in_child_process, is_inheriting
from .._streams import reader
from ..entry import Entry
from ..errors import CacheProcessError
from .base import Body, CacheAbstract, raise_missing

__all__ = ["CachePlain"]

# How many ids of removed entries are remembered, so that a late request for one
# gets 410 Gone rather than 404.
_GONE_MEMORY = 4096


def read_body(body: Body) -> bytes:
    """Return ``body`` as bytes, reading a stream to its end."""
    if isinstance(body, bytes):
        return body
    data = body.read()
    if not isinstance(data, bytes):
        raise TypeError("a body stream must be opened in binary mode")
    return data


class CachePlain(CacheAbstract):
    """An in-process LRU cache, thread-safe, bounded by item count.

    Bodies are immutable ``bytes`` held in this process, so it suits a single
    server process. Dash background callbacks run in child processes whose memory
    is thrown away: registering into a ``CachePlain`` there raises
    :class:`~dash_file_cache.errors.CacheProcessError`; use ``CacheQueue`` or
    ``CacheFile`` for them.
    """

    def __init__(self, cache_size: int) -> None:
        if not isinstance(cache_size, int) or isinstance(cache_size, bool):
            raise TypeError(f"cache_size must be an int, not {type(cache_size).__name__}")
        if cache_size < 1:
            raise ValueError(f"cache_size must be at least 1, got {cache_size}")
        self._cache_size = cache_size
        self._lock = threading.RLock()
        self._items: OrderedDict[str, tuple[Entry, bytes | bytearray]] = OrderedDict()
        self._gone: OrderedDict[str, None] = OrderedDict()
        self._claimed: set[str] = set()
        self._owner_pid = os.getpid()
        self._copied_into_child = is_inheriting()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} entries={len(self._items)} cache_size={self._cache_size}>"

    @property
    def cache_size(self) -> int:
        """The maximum number of entries; the least recently used is evicted first."""
        return self._cache_size

    def _check_process(self) -> None:
        if in_child_process() and (self._copied_into_child or os.getpid() != self._owner_pid):
            raise CacheProcessError(
                f"{type(self).__name__} keeps entries in the memory of the process that "
                f"serves the app, but this is a child process (pid {os.getpid()}), for "
                "example a Dash background callback: the entry would be lost and its "
                "address would answer 404. Use CacheQueue (entries sent to the server "
                "process) or CacheFile (entries on disk) for background callbacks."
            )

    def put(self, entry: Entry, body: Body | None) -> None:
        self._check_process()
        data = b"" if body is None else read_body(body)
        self._store(entry, data)

    def _store(self, entry: Entry, data: bytes | bytearray) -> None:
        with self._lock:
            self._items.pop(entry.key, None)
            self._gone.pop(entry.key, None)
            self._items[entry.key] = (entry, data)
            while len(self._items) > self._cache_size:
                old_key, _ = self._items.popitem(last=False)
                self._forget(old_key)

    def _forget(self, key: str) -> None:
        self._claimed.discard(key)
        self._gone[key] = None
        while len(self._gone) > _GONE_MEMORY:
            self._gone.popitem(last=False)

    def get(self, key: str) -> tuple[Entry, BinaryIO | None]:
        with self._lock:
            item = self._items.get(key)
            if item is None or key in self._claimed:
                raise raise_missing(key, key in self._gone or key in self._claimed)
            self._items.move_to_end(key)
        entry, data = item
        if entry.kind != "body":
            return entry, None
        return entry, reader(data)

    def delete(self, key: str, gone: bool = True) -> bool:
        with self._lock:
            found = self._items.pop(key, None) is not None
            self._claimed.discard(key)
            if gone and found:
                self._forget(key)
            return found

    def claim(self, key: str) -> bool:
        with self._lock:
            if key not in self._items or key in self._claimed:
                return False
            self._claimed.add(key)
            return True

    def release(self, key: str) -> None:
        with self._lock:
            self._claimed.discard(key)

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._items)
