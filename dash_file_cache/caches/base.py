"""The backend contract that every cache implements.

A backend stores ``Entry`` records with their bodies, and a few small *marks*
(short strings with an optional lifetime) that every process sharing the backend
sees. Nine methods make a backend:

``write(entry, body)``
    Store ``body`` (``bytes``, or a binary stream read to its end; ``None`` for
    entries without a stored body) under ``entry.key``, replacing any entry of that
    key, and apply the bounds (evict least recently used entries, drop expired
    ones). The entry becomes visible atomically, once the whole body is stored.
``read(key)``
    Return ``(entry, stream)`` with a fresh, seekable, read-only binary stream for
    every call (``None`` when the entry has no stored body); raise
    ``EntryNotFound`` on a miss. An open stream stays readable to its end even if
    the entry is evicted meanwhile.
``erase(key)``
    Remove the entry; return whether it was stored.
``entries()``
    The entries currently stored.
``mark_get(name)``, ``mark_set(name, value, ttl)``, ``mark_add(name, value, ttl)``,
``mark_delete(name)``, ``mark_incr(name, amount)``
    A tiny key-value store for marks. ``mark_add`` sets only when absent and tells
    whether it did, atomically across processes; ``mark_incr`` adds to an integer.

Everything else is derived here once: one-time claims, ids remembered as gone
(410), expiry, names, statistics, locks, and the 0.2.0 names (``is_in``,
``remove``, ``dump``, ``load``, ``load_info``, ``load_data``). Nothing in ``caches``
knows about HTTP.
"""

from __future__ import annotations

import abc
import contextlib
import io
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, BinaryIO

from ..entry import Entry
from ..errors import EntryGone, EntryNotFound

__all__ = ["Body", "Bounds", "CacheAbstract"]

Body = bytes | BinaryIO

# How long a consumed, expired or deleted id answers 410 rather than 404.
GONE_SECONDS = 24 * 3600
# A claim outlives any sane download; it only guards against a crashed server.
CLAIM_SECONDS = 6 * 3600
STAT_NAMES = (
    "stored",
    "hits",
    "misses",
    "bytes_served",
    "evicted_count",
    "evicted_bytes",
    "expired",
    "consumed",
    "deleted",
)


class Bounds:
    """The limits of a backend: item count, total body bytes, default lifetime."""

    def __init__(
        self,
        cache_size: int | None,
        max_bytes: int | None,
        ttl: float | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        for name, value in (("cache_size", cache_size), ("max_bytes", max_bytes)):
            if value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be an int or None, not {type(value).__name__}")
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int | float)):
            raise TypeError(f"ttl must be a number of seconds or None, not {type(ttl).__name__}")
        if ttl is not None and ttl <= 0:
            raise ValueError(f"ttl must be positive, got {ttl}")
        self.cache_size = cache_size
        self.max_bytes = max_bytes
        self.ttl = ttl
        self.clock = clock

    def check_size(self, size: int) -> None:
        """Refuse an entry that could never fit."""
        if self.max_bytes is not None and size > self.max_bytes:
            raise ValueError(
                f"the entry is {size} bytes, more than this cache's max_bytes="
                f"{self.max_bytes}; register a smaller file or give the cache more room"
            )

    def stamp(self, entry: Entry) -> Entry:
        """Give ``entry`` the default lifetime when it has none of its own."""
        if entry.expires is None and self.ttl is not None:
            return entry.replace(expires=self.clock() + self.ttl)
        return entry

    def expired(self, entry: Entry) -> bool:
        return entry.expires is not None and entry.expires <= self.clock()


class _Tally:
    """Counts waiting to be written, per process and thread-safe."""

    def __init__(self, interval: float = 1.0) -> None:
        self.pid = os.getpid()
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._interval = interval
        self._last = time.monotonic()

    def add(self, counts: tuple[tuple[str, int], ...]) -> bool:
        """Count; tell whether it is time to write the counts out."""
        with self._lock:
            for name, amount in counts:
                self._counts[name] = self._counts.get(name, 0) + amount
            return time.monotonic() - self._last >= self._interval

    def discard(self, name: str) -> None:
        with self._lock:
            self._counts.pop(name, None)

    def take(self) -> dict[str, int]:
        with self._lock:
            counts, self._counts = self._counts, {}
            self._last = time.monotonic()
            return counts


class CacheAbstract(abc.ABC):
    """Base of every backend: implement the nine methods described in the module."""

    #: Backends set their own; a subclass without bounds gets none.
    bounds: Bounds = Bounds(None, None, None)

    # Storage -------------------------------------------------------------------

    @abc.abstractmethod
    def write(self, entry: Entry, body: Body | None) -> None:
        """Store ``body`` under ``entry.key``, visible only once complete."""

    @abc.abstractmethod
    def read(self, key: str) -> tuple[Entry, BinaryIO | None]:
        """Return the stored entry and a fresh stream of its body."""

    @abc.abstractmethod
    def erase(self, key: str) -> bool:
        """Remove the entry; return whether it was stored."""

    @abc.abstractmethod
    def entries(self) -> list[Entry]:
        """The entries currently stored."""

    # Marks ---------------------------------------------------------------------

    @abc.abstractmethod
    def mark_get(self, name: str) -> str | None:
        """The value of a mark, or ``None``."""

    @abc.abstractmethod
    def mark_set(self, name: str, value: str, ttl: float | None = None) -> None:
        """Set a mark, for ``ttl`` seconds or for ever."""

    @abc.abstractmethod
    def mark_add(self, name: str, value: str, ttl: float | None = None) -> bool:
        """Set a mark only if it is absent; tell whether it was set."""

    @abc.abstractmethod
    def mark_delete(self, name: str) -> None:
        """Remove a mark (idempotent)."""

    @abc.abstractmethod
    def mark_incr(self, name: str, amount: int = 1) -> int:
        """Add ``amount`` to an integer mark (absent counts as 0); return the sum."""

    # Derived: the entry life cycle ---------------------------------------------------

    def put(self, entry: Entry, body: Body | None, *, fresh: bool = False) -> None:
        """Store an entry, applying the bounds; the id is live again if it was gone.

        ``fresh`` tells that ``entry.key`` was drawn at random just now, so that no
        mark (gone, claimed) can be attached to it yet and none is looked up.
        """
        self.bounds.check_size(entry.size)
        # Cleared first: a backend may lay the gone mark of an expiring entry itself.
        # Reading is cheaper than deleting on shared stores.
        if not fresh:
            for mark in ("gone:" + entry.key, "claim:" + entry.key):
                if self.mark_get(mark) is not None:
                    self.mark_delete(mark)
        self.write(self.bounds.stamp(entry), body)
        if entry.name:
            self.mark_set("name:" + entry.name, entry.key)
        self.record("stored")

    def get(self, key: str) -> tuple[Entry, BinaryIO | None]:
        """Return a live entry and a fresh stream of its body.

        Raises ``EntryGone`` for an id known to be consumed, expired, deleted or
        being downloaded once, ``EntryNotFound`` for any other miss.
        """
        try:
            entry, stream = self.read(key)
        except EntryGone:
            raise
        except EntryNotFound:
            raise self._miss(key) from None
        if self.bounds.expired(entry) or (
            entry.one_time and self.mark_get("claim:" + key) is not None
        ):
            if stream is not None:
                stream.close()
            if self.bounds.expired(entry):
                self.delete(key, reason="expired")
            raise EntryGone(f"entry {key} is gone (expired, or being downloaded once)")
        return entry, stream

    def _miss(self, key: str) -> EntryNotFound:
        if self.mark_get("gone:" + key) is not None:
            return EntryGone(f"entry {key} is gone (consumed, expired or deleted)")
        return EntryNotFound(f"no entry {key} is stored")

    def delete(self, key: str, gone: bool = True, reason: str = "deleted") -> bool:
        """Remove an entry; with ``gone``, later requests for its id get 410.

        The gone mark is set before the body disappears, so that a reader that
        misses the entry always finds the mark.
        """
        marked = gone and self.mark_add("gone:" + key, reason, GONE_SECONDS)
        found = self.erase(key)
        if marked and not found:
            self.mark_delete("gone:" + key)
        self.mark_delete("claim:" + key)
        self._forget_hits(key)
        if found:
            self.record("evicted_count" if reason == "evicted" else reason)
        return found

    def claim(self, key: str) -> bool:
        """Reserve a one-time entry for a single download, across processes.

        The mark is taken first and the entry checked afterwards: a request that
        read the entry just before a complete download consumed it then finds it
        gone, instead of taking a claim that its consumer has just dropped.
        """
        if not self.mark_add("claim:" + key, str(os.getpid()), CLAIM_SECONDS):
            return False
        try:
            entry, stream = self.read(key)
        except EntryNotFound:
            self.release(key)
            return False
        if stream is not None:
            stream.close()
        if self.bounds.expired(entry) or self.mark_get("gone:" + key) is not None:
            self.release(key)
            return False
        return True

    def release(self, key: str) -> None:
        """Give a claimed entry back after a transfer that did not complete."""
        self.mark_delete("claim:" + key)

    def consume(self, key: str) -> None:
        """Delete a one-time entry after its complete download."""
        self.delete(key, reason="consumed")

    def evicted(self, entry: Entry) -> None:
        """Book-keeping after a backend evicted ``entry`` to respect its bounds."""
        self.mark_set("gone:" + entry.key, "evicted", GONE_SECONDS)
        self._forget_hits(entry.key)
        self.record("evicted_count")
        self.record("evicted_bytes", entry.size)

    def keys(self) -> list[str]:
        """The ids currently stored."""
        return [entry.key for entry in self.entries()]

    def clear(self) -> int:
        """Delete every entry; return how many there were."""
        count = 0
        for key in self.keys():
            count += self.delete(key, reason="deleted")
        return count

    # Derived: names, locks, statistics -----------------------------------------------

    def find(self, name: str) -> str | None:
        """The id of the live entry registered under ``name``, if any."""
        key = self.mark_get("name:" + name)
        if key is None:
            return None
        try:
            entry = self.info(key)
        except EntryNotFound:
            return None
        return key if entry.name == name else None

    def named(self, prefix: str = "") -> list[Entry]:
        """Entries registered with a name starting with ``prefix``."""
        return [e for e in self.entries() if e.name and e.name.startswith(prefix)]

    @contextlib.contextmanager
    def lock(self, name: str, timeout: float = 60.0, ttl: float = 600.0) -> Iterator[None]:
        """Hold a lock shared by every process that uses this backend."""
        token = secrets.token_hex(8)
        deadline = time.monotonic() + timeout
        delay = 0.001
        while not self.mark_add("lock:" + name, token, ttl):
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not take the lock {name!r} in {timeout} s")
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        try:
            yield
        finally:
            if self.mark_get("lock:" + name) == token:
                self.mark_delete("lock:" + name)

    def record(self, stat: str, amount: int = 1) -> None:
        """Add to a statistics counter shared by every process.

        Counts are gathered in the process and written at most once a second, so
        that serving a file does not cost a write to a shared store each time.
        """
        self._tally(("stat:" + stat, amount))

    def hit(self, key: str, size: int) -> None:
        """Count a served download of ``size`` bytes of entry ``key``."""
        self._tally(("hits:" + key, 1), ("stat:hits", 1), ("stat:bytes_served", size))

    def _pending(self, create: bool = False) -> _Tally | None:
        """The counts this process gathered and has not written yet.

        A forked child inherits its parent's: those are the parent's to write (and
        their lock may be held by a thread the child does not have), so it starts
        anew.
        """
        tally: _Tally | None = self.__dict__.get("_pending_tally")
        if tally is not None and tally.pid != os.getpid():
            tally = None
            self.__dict__.pop("_pending_tally", None)
        if tally is None and create:
            tally = self.__dict__.setdefault("_pending_tally", _Tally())
        return tally

    def _tally(self, *counts: tuple[str, int]) -> None:
        tally = self._pending(create=True)
        if tally is not None and tally.add(counts):
            self.flush_stats()

    def _forget_hits(self, key: str) -> None:
        tally = self._pending()
        if tally is not None:
            tally.discard("hits:" + key)
        self.mark_delete("hits:" + key)

    def flush_stats(self) -> None:
        """Write the counts gathered in this process to the backend."""
        tally = self._pending()
        if tally is not None:
            counts = tally.take()
            if counts:
                self.mark_incr_many(counts)

    def mark_incr_many(self, counts: Mapping[str, int]) -> None:
        """Add to several integer marks; a networked backend may send them at once."""
        for name, amount in counts.items():
            self.mark_incr(name, amount)

    def hits(self, key: str) -> int:
        """How many times the entry was served."""
        self.flush_stats()
        return int(self.mark_get("hits:" + key) or 0)

    def stats(self) -> dict[str, Any]:
        """Counters since the backend was created, plus what it holds now."""
        self.flush_stats()
        entries = self.entries()
        counters = {name: int(self.mark_get("stat:" + name) or 0) for name in STAT_NAMES}
        return {
            "entries": len(entries),
            "bytes": sum(e.size for e in entries),
            **counters,
            "cache_size": self.bounds.cache_size,
            "max_bytes": self.bounds.max_bytes,
            "ttl": self.bounds.ttl,
        }

    # Derived: reading ------------------------------------------------------------------

    def open(self, key: str) -> tuple[Entry, BinaryIO | None]:
        """Like ``get``, but also opens entries served in place from a path.

        A path removed or replaced by a non-file since registration is reported as
        ``EntryGone``. Remote (URL) entries come back with no stream.
        """
        entry, stream = self.get(key)
        if entry.path is None:
            return entry, stream
        try:
            fobj = open(entry.path, "rb")  # noqa: SIM115 - closed by the response
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise EntryGone(f"the file of entry {key} no longer exists") from exc
        stat = os.fstat(fobj.fileno())
        # The file may have changed since registration: describe what is there now.
        version = f"{entry.etag}.{stat.st_mtime_ns:x}.{stat.st_size:x}"
        return entry.replace(size=stat.st_size, created=stat.st_mtime, etag=version), fobj

    def info(self, key: str) -> Entry:
        """Return the metadata of an entry without keeping its body open."""
        entry, stream = self.get(key)
        if stream is not None:
            stream.close()
        return entry

    def is_in(self, key: str) -> bool:
        """Tell whether ``key`` is stored (the 0.2.0 name)."""
        try:
            self.info(key)
        except EntryNotFound:
            return False
        return True

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.is_in(key)

    def remove(self, key: str) -> Entry:
        """Delete an entry and return its metadata (the 0.2.0 name)."""
        entry = self.info(key)
        self.delete(key)
        return entry

    def __len__(self) -> int:
        return len(self.entries())

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    # dash-file-cache 0.2.0 names, for code that used a cache directly -------------

    def dump(self, key: str, info: Mapping[str, Any], data: Mapping[str, Any]) -> None:
        """Store an item described the 0.2.0 way (``info`` and ``data`` dicts)."""
        kind = data.get("type")
        body: Body | None = None
        path = url = None
        headers: dict[str, str] = {}
        if kind == "path":
            path = os.path.abspath(os.fspath(data["path"]))
        elif kind == "request":
            url, headers = str(data["url"]), dict(data.get("headers") or {})
        elif kind in ("str", "bytes"):
            value = data["data"]
            raw = value.getvalue() if hasattr(value, "getvalue") else value.read()
            body = raw.encode("utf-8") if isinstance(raw, str) else bytes(raw)
        else:
            raise ValueError(f"data['type'] must be path, str, bytes or request, not {kind!r}")
        mime = str(info.get("mime_type") or "application/octet-stream")
        entry = Entry(
            key=key,
            size=len(body) if isinstance(body, bytes) else int(info.get("data_size") or 0),
            mime_type=mime,
            content_type=str(info.get("content_type") or mime),
            file_name=str(info.get("file_name") or key),
            created=time.time(),
            one_time=bool(info.get("one_time_service")),
            path=path,
            url=url,
            url_headers=headers,
            etag=key,
        )
        self.put(entry, body)

    def load(self, key: str) -> tuple[dict[str, Any], Callable[[], dict[str, Any]]]:
        """Return the 0.2.0 ``(info, deferred data)`` pair of an entry."""
        entry = self.info(key)
        kind = {"path": "path", "url": "request"}.get(entry.kind, "bytes")
        info = {
            "type": kind,
            "data_size": entry.size,
            "file_name": entry.file_name,
            "content_type": entry.content_type,
            "mime_type": entry.mime_type,
            "one_time_service": entry.one_time,
        }

        def deferred() -> dict[str, Any]:
            if entry.path is not None:
                return {"type": "path", "path": entry.path}
            if entry.url is not None:
                return {"type": "request", "url": entry.url, "headers": dict(entry.url_headers)}
            _, stream = self.get(key)
            assert stream is not None
            with stream:
                return {"type": "bytes", "data": io.BytesIO(stream.read())}

        return info, deferred

    def load_info(self, key: str) -> dict[str, Any]:
        """The 0.2.0 metadata dict of an entry."""
        return self.load(key)[0]

    def load_data(self, key: str) -> dict[str, Any]:
        """The 0.2.0 data dict of an entry."""
        return self.load(key)[1]()
