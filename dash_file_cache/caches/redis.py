"""CacheRedis: entries in Redis, shared by every worker on every host that reaches it.

Key layout, all under ``<namespace>:``. ``<id>`` is an id made by the service
(checked with :func:`~dash_file_cache._keys.is_valid_key`) or, for a key chosen by
code through the 0.2.0 names (``dump("k1", ...)``), ``.`` and the hex of its UTF-8:
no other text reaches a key, and the two forms cannot collide.

``entry:<id>``
    A hash: ``entry`` (the :class:`~dash_file_cache.entry.Entry` as JSON), ``body``
    (the version of the body, ``""`` when there is none), ``length``, ``segment``
    (bytes per full body segment) and ``layout`` (how the rest is cut; absent in
    entries written before the rest was cut, where it is one last piece).
``body:<id>:<version>:<n>``
    The body, in pieces each sent whole in one SET: Redis grows a string that is
    appended to greedily (to twice its length up to 1 MB, then by 1 MB), while a
    string set whole is allocated once. jemalloc, Redis' allocator, rounds every
    allocation up to a size class (four per power of two: ``2**k + i * 2**(k-2)``),
    so a string of arbitrary length may take a quarter more than its length. Each
    piece is therefore cut to fill a size class exactly, 64 bytes being left for
    the string's header: first full segments of just under ``chunk_bytes`` bytes,
    then the rest in pieces of decreasing classes, down to one last piece under
    2 KiB or nearly filling its own class (see :func:`_layout`). The layout follows
    from the length and the segment alone, so readers and deleters recompute it.
``tmp:<id>:<version>:<n>``
    A body being written. It carries an expiry, so a writer that dies leaves
    nothing behind for long.
``reading:<id>:<version>``
    The lease of the streams reading that version of the body: a hash with a field
    per open stream, removed when the stream is closed, and expiring
    ``linger_seconds`` after the last read of any of them.
``gone``
    A sorted set of the ids remembered as gone (tombstones of consumed, deleted,
    evicted or expired entries: 410 rather than 404), scored by the time in
    milliseconds at which each mark expires, and capped to ``max_gone_marks`` ids,
    those that expire first being dropped first. One key for every mark keeps a busy
    cache from piling up millions of keys. It expires with its last mark.
``mark:<kind>:<id or hex>``
    The other marks of the backend contract: ``claim`` (the reservation of a
    one-time entry), ``name``, ``hits``, ``stat`` and ``lock``. Gone marks written
    as ``mark:gone:<id>`` keys by earlier versions are still honoured until they
    expire.
``lru``
    A sorted set of the ids by last use, which the count and byte bounds evict from.
``sizes``
    A hash of the size of every entry, and ``bytes`` their running total.

A body is written segment by segment into its ``tmp`` keys and published by one
MULTI/EXEC that renames them and writes the entry hash: a reader finds either no
entry or a complete one. Each publication uses a fresh version. The body an entry
no longer points to (replaced, deleted, evicted) is deleted at once, unless a
stream holds a lease on it: then it lingers, with an expiry of ``linger_seconds``
that every chunk read extends, so that the download under way completes. The
transaction that retires a body watches its lease, and a stream takes its lease in
the MULTI that checks that the entry still points to the version it opens, so a
body is never deleted under a stream that has just opened it.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import io
import itertools
import os
import re
import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from .._keys import is_valid_key
from .._streams import reader, seek_position
from ..entry import Entry
from ..errors import BackendUnavailable, EntryGone, EntryNotFound
from .base import GONE_SECONDS, Body, Bounds, CacheAbstract

if TYPE_CHECKING:
    import redis
    from redis.client import Pipeline

__all__ = ["CacheRedis"]

# How long a body being written may sit between two chunks before Redis drops it.
_WRITE_SECONDS = 3600
# Room left in a piece for the header and terminator of a Redis string: a piece of
# a size class less this fills that class of jemalloc exactly, where the class itself
# would round up to the next one, a quarter more.
_STRING_HEADROOM = 64
# The rest of a body is cut into pieces of decreasing size classes while it is at
# least this long (headroom included); below, classes are at most 256 bytes apart, so
# the last piece wastes less than another key would cost.
_TAIL_FLOOR = 2048
# About what one more key costs Redis (its name, object and table entry): a rest that
# fills its size class to within this is not worth cutting.
_KEY_BYTES = 128
# The value of the entry hash's "layout" field when the rest is cut to size classes.
_LAYOUT = "classes"
# Tries to open a body while the entry keeps being replaced under the reader.
_OPEN_ATTEMPTS = 50
# Letters that cannot make a SCAN pattern match more than the namespace itself.
_NAMESPACE = re.compile(r"[A-Za-z0-9_.:/@{}+-]{1,200}")
_HASH_FIELDS = ("entry", "body", "length", "segment", "layout")
# Gone marks: KEYS are the sorted set and the mark key of earlier versions, ARGV the
# member, the operation (get, set or add), how the expiry is given ("in" ms from now,
# "at" an epoch in ms, "never"), the expiry, and the cap. Redis' own clock decides,
# as for the expiry of every other mark.
_GONE_SCRIPT = """
local marks, single, id, op = KEYS[1], KEYS[2], ARGV[1], ARGV[2]
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local function live()
  local at = redis.call('ZSCORE', marks, id)
  return (at and tonumber(at) > now) or redis.call('EXISTS', single) == 1
end
if op == 'get' then return live() and 1 or 0 end
if op == 'add' and live() then return 0 end
local at = 'inf'
if ARGV[3] == 'in' then
  at = string.format('%d', now + tonumber(ARGV[4]))
elseif ARGV[3] == 'at' then
  at = ARGV[4]
end
redis.call('ZREMRANGEBYSCORE', marks, '-inf', string.format('%d', now))
redis.call('ZADD', marks, at, id)
redis.call('DEL', single)
redis.call('ZREMRANGEBYRANK', marks, 0, -1 - tonumber(ARGV[5]))
local last = redis.call('ZRANGE', marks, -1, -1, 'WITHSCORES')[2]
if last == 'inf' then
  redis.call('PERSIST', marks)
elseif last then
  redis.call('PEXPIREAT', marks, string.format('%d', tonumber(last)))
end
return 1
"""
_GONE_SHA = hashlib.sha1(_GONE_SCRIPT.encode(), usedforsecurity=False).hexdigest()


def _import_redis() -> Any:
    try:
        import redis
    except ImportError as exc:
        raise ImportError(
            'CacheRedis needs the redis package: pip install "dash-file-cache[redis]"'
        ) from exc
    return redis


class CacheRedis(CacheAbstract):
    """A cache in Redis, shared by every process and host that can reach the server.

    ``client_or_url`` is a ``redis://``, ``rediss://`` or ``unix://`` URL (timeouts
    and the like go in its query string, as redis-py reads them), or a configured
    ``redis.Redis`` client whose responses are not decoded. Nothing connects until
    the first call, so the cache can be built at import time.

    Keys live under ``namespace``; several apps may share one Redis database with
    different namespaces. Bodies are written and read in pieces of at most
    ``chunk_bytes`` bytes, so a large file never travels in one command nor sits
    whole in the memory of a web worker; a stream seeks without reading and fetches
    only the bytes asked for. ``linger_seconds`` is how long a download may pause
    between two reads and still complete when its entry is replaced, deleted or
    evicted meanwhile; a body that no open stream reads leaves Redis as soon as its
    entry does. ``cache_size``, ``max_bytes`` and ``ttl`` bound the cache as for every
    backend: the least recently used entries are evicted first, and entries expire
    with Redis' own key expiry.

    Ids of entries consumed, deleted, evicted or expired are remembered for a day,
    to answer 410 rather than 404, in one sorted set of at most ``max_gone_marks``
    ids; the marks closest to expiry are dropped first when it is full. An id costs
    about 140 bytes there (the id, a skip-list node, a table entry), so the default
    of 100,000 takes at most about 14 MB: a day of marks for an app that evicts or
    deletes about one entry a second on average, the last quarter of an hour of them
    at 100 a second. An id whose mark was dropped answers 404.

    The cache pickles as its settings (the URL, or the client's connection class
    and plain connection settings, such as host, port, database, credentials,
    timeouts and TLS file names; objects such as a credential provider or a retry
    policy stay behind) and reconnects in the process that unpickles it, for Dash
    background callbacks, Celery workers and spawned children. The pickle therefore
    holds the password, if any. A process forked from one that
    built the cache from a URL opens its own connections on first use; a client
    you pass in stays in use across fork (redis-py resets its pool in the child).

    When Redis cannot be reached, every method raises
    :class:`~dash_file_cache.errors.BackendUnavailable` (a ``ConnectionError``),
    which the route answers with 503; calls succeed again as soon as Redis is back.
    Redis' eviction policy applies: keep ``maxmemory-policy`` at ``noeviction`` (or
    size the server) if entries must not vanish before they are downloaded.
    """

    def __init__(
        self,
        client_or_url: redis.Redis | str = "redis://127.0.0.1:6379/0",
        *,
        namespace: str = "dash-file-cache",
        chunk_bytes: int = 1 << 20,
        linger_seconds: int = 300,
        cache_size: int | None = None,
        max_bytes: int | None = None,
        ttl: float | None = None,
        clock: Callable[[], float] = time.time,
        max_gone_marks: int = 100_000,
    ) -> None:
        redis_py = _import_redis()
        self.bounds = Bounds(cache_size, max_bytes, ttl, clock)
        if not isinstance(namespace, str) or not _NAMESPACE.fullmatch(namespace):
            raise ValueError(
                "namespace must be 1 to 200 characters among letters, digits and "
                f"_.:/@{{}}+-, got {namespace!r}"
            )
        _check_positive_int("chunk_bytes", chunk_bytes)
        _check_positive_int("linger_seconds", linger_seconds)
        _check_positive_int("max_gone_marks", max_gone_marks)
        self._namespace = namespace
        self._chunk_bytes = chunk_bytes
        self._segment_bytes = _segment_bytes(chunk_bytes)
        self._linger_seconds = linger_seconds
        self._max_gone_marks = max_gone_marks
        self._lock = threading.Lock()
        self._url: str | None = None
        self._settings: tuple[type[Any], dict[str, Any]] | None = None
        self._client: redis.Redis | None = None
        self._pool: redis.ConnectionPool | None = None
        self._pid = os.getpid()
        if isinstance(client_or_url, str):
            self._url = client_or_url
            # Parsing now reports a malformed URL here rather than at the first call.
            self._connect()
        elif isinstance(client_or_url, redis_py.Redis):
            pool = client_or_url.connection_pool
            if pool.connection_kwargs.get("decode_responses"):
                raise ValueError(
                    "the redis.Redis client decodes responses to str, but bodies are bytes; "
                    "build it with decode_responses=False (the default) or pass a URL"
                )
            self._client = client_or_url
            self._settings = (pool.connection_class, _plain(pool.connection_kwargs))
        else:
            raise TypeError(
                "client_or_url must be a redis.Redis client or a redis:// URL, not "
                f"{type(client_or_url).__name__}"
            )

    # Connections ---------------------------------------------------------------

    def _connect(self) -> redis.Redis:
        """Build a client of our own for this process; redis-py connects on first use."""
        redis_py = _import_redis()
        pool: redis.ConnectionPool
        if self._url is not None:
            pool = redis_py.ConnectionPool.from_url(self._url)
        else:
            assert self._settings is not None
            connection_class, settings = self._settings
            pool = redis_py.ConnectionPool(connection_class=connection_class, **settings)
        client: redis.Redis = redis_py.Redis(connection_pool=pool)
        self._client, self._pool, self._pid = client, pool, os.getpid()
        return client

    def _redis(self) -> redis.Redis:
        client = self._client
        if client is not None and (self._pid == os.getpid() or self._pool is None):
            return client
        with self._lock:
            client = self._client
            if client is None or (self._pool is not None and self._pid != os.getpid()):
                # A fresh pool in a new process: the parent's sockets and locks are
                # never touched again here.
                client = self._connect()
            return client

    def close(self) -> None:
        """Close the connections this cache opened (a client passed in is left open)."""
        with self._lock:
            pool, self._pool = self._pool, None
            if pool is None:
                return
            self._client = None
            if self._pid == os.getpid():
                pool.disconnect()

    def __getstate__(self) -> dict[str, Any]:
        return {
            "url": self._url,
            "settings": self._settings,
            "namespace": self._namespace,
            "chunk_bytes": self._chunk_bytes,
            "linger_seconds": self._linger_seconds,
            "max_gone_marks": self._max_gone_marks,
            "bounds": (self.bounds.cache_size, self.bounds.max_bytes, self.bounds.ttl),
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._url = state["url"]
        self._settings = state["settings"]
        self._namespace = state["namespace"]
        self._chunk_bytes = state["chunk_bytes"]
        self._segment_bytes = _segment_bytes(self._chunk_bytes)
        self._linger_seconds = state["linger_seconds"]
        self._max_gone_marks = state.get("max_gone_marks", 100_000)
        self.bounds = Bounds(*state["bounds"])
        self._lock = threading.Lock()
        self._client = None
        self._pool = None
        self._pid = os.getpid()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._where()} namespace={self._namespace!r}>"

    def _where(self) -> str:
        """Where Redis is, without credentials."""
        if self._url is not None:
            parts = urllib.parse.urlsplit(self._url)
            host = parts.hostname or ""
            if ":" in host:
                host = f"[{host}]"
            netloc = f"{host}:{parts.port}" if parts.port else host
            return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))
        assert self._settings is not None
        settings = self._settings[1]
        if "path" in settings:
            return f"unix://{settings['path']}"
        return f"{settings.get('host', '?')}:{settings.get('port', '?')}/{settings.get('db', 0)}"

    @contextlib.contextmanager
    def _reaching(self) -> Iterator[redis.Redis]:
        """Yield the client; turn "Redis is not there" into :class:`BackendUnavailable`."""
        client = self._redis()
        try:
            yield client
        except Exception as exc:
            import redis.exceptions as errors

            if isinstance(exc, (errors.ConnectionError, errors.TimeoutError)):
                raise BackendUnavailable(
                    f"Redis at {self._where()} cannot be reached ({exc}); check that it "
                    "runs and the URL is right. Entries it keeps are served again once "
                    "it is back."
                ) from exc
            refused = (errors.ReadOnlyError, errors.OutOfMemoryError, errors.NoPermissionError)
            if isinstance(exc, refused) or (
                isinstance(exc, errors.ResponseError) and str(exc).startswith(("MISCONF", "BUSY"))
            ):
                raise BackendUnavailable(
                    f"Redis at {self._where()} refuses the command ({exc}): it is a replica, "
                    "full, failing to persist, busy, or this user lacks the permission. Fix "
                    "that and the cache works again."
                ) from exc
            raise

    # Keys ------------------------------------------------------------------------

    def _key(self, kind: str, key: str) -> str:
        return f"{self._namespace}:{kind}:{_encode(key)}"

    def _book(self, name: str) -> str:
        """A key of the bound bookkeeping: ``lru``, ``expiry``, ``sizes``, ``bytes``."""
        return f"{self._namespace}:{name}"

    def _mark(self, name: str) -> str:
        kind, _, rest = name.partition(":")
        return f"{self._namespace}:mark:{kind}:{_encode(rest)}"

    def _gone_args(self, key: str, op: str, expiry: str, value: int) -> tuple[Any, ...]:
        """The keys and arguments of the gone-mark script for entry ``key``."""
        return (
            self._book("gone"),
            self._mark("gone:" + key),
            _encode(key),
            op,
            expiry,
            value,
            self._max_gone_marks,
        )

    def _gone(self, key: str, op: str, expiry: str = "never", value: int = 0) -> int:
        """Run the gone-mark script for entry ``key``: its digest, the script if need be."""
        import redis.exceptions

        args = self._gone_args(key, op, expiry, value)
        with self._reaching() as client:
            try:
                return int(client.evalsha(_GONE_SHA, 2, *args))
            except redis.exceptions.NoScriptError:
                return int(client.eval(_GONE_SCRIPT, 2, *args))

    def _segment(self, kind: str, key: str, version: str, index: int) -> str:
        return f"{self._namespace}:{kind}:{_encode(key)}:{version}:{index}"

    def _segments(self, kind: str, key: str, version: str, count: int) -> list[str]:
        return [self._segment(kind, key, version, n) for n in range(count)]

    def _lease(self, key: str, version: str) -> str:
        return f"{self._namespace}:reading:{_encode(key)}:{version}"

    @property
    def namespace(self) -> str:
        """The prefix of every key this cache writes."""
        return self._namespace

    @property
    def chunk_bytes(self) -> int:
        """The largest piece of a body sent or fetched in one command, in bytes."""
        return self._chunk_bytes

    @property
    def client(self) -> redis.Redis:
        """The ``redis.Redis`` client of this process."""
        return self._redis()

    # The contract --------------------------------------------------------------

    def write(self, entry: Entry, body: Body | None) -> None:
        key = entry.key
        version = secrets.token_hex(8)
        written: list[str] = []
        with self._reaching() as client:
            try:
                length = self._write(client, key, version, body, written)
                self._publish(client, entry, version, written, length)
            except BaseException:
                if written:
                    # Best effort: if Redis is gone too, the expiry cleans up.
                    with contextlib.suppress(Exception):
                        client.delete(*written)
                raise
        self._apply_bounds()

    def _apply_bounds(self) -> None:
        """Evict least recently used entries while the count or byte bound is exceeded."""
        limit, room = self.bounds.cache_size, self.bounds.max_bytes
        lru, total = self._book("lru"), self._book("bytes")
        with self._reaching() as client:
            self._forget_expired(client)
            while True:
                pipe = client.pipeline(transaction=False)
                pipe.zcard(lru)
                pipe.get(total)
                count, used = pipe.execute()
                if (limit is None or count <= limit) and (room is None or int(used or 0) <= room):
                    return
                popped = client.zpopmin(lru)
                if not popped:
                    return
                key = _decode(_text(cast(bytes, popped[0][0])))
                if key is None:
                    continue
                raw = client.hget(self._key("entry", key), "entry")
                if self.erase(key) and raw is not None:
                    self.evicted(Entry.from_json(cast(bytes, raw)))
                else:  # Redis expired it by itself: only its bookkeeping is left
                    self._unbook(client, key)

    def _forget_expired(self, client: redis.Redis) -> None:
        """Drop the bookkeeping of entries that Redis expired by itself."""
        expiry = self._book("expiry")
        now = self.bounds.clock()
        names = cast(list[bytes], client.zrangebyscore(expiry, "-inf", now, start=0, num=1000))
        for name in names:
            key = _decode(_text(name))
            if key is not None and not client.exists(self._key("entry", key)):
                self._unbook(client, key)
            client.zrem(expiry, name)

    def _write(
        self, client: redis.Redis, key: str, version: str, body: Body | None, written: list[str]
    ) -> int:
        """Store ``body`` in ``tmp`` pieces, one SET of a whole piece each.

        A full segment goes in one round trip, and all the pieces cut from the rest
        of the body (less than a segment in all) in one more.
        """
        length = 0
        if body is None:
            return length
        renewed = time.monotonic()
        for parts in _pieces(body, self._segment_bytes):
            pipe = client.pipeline(transaction=False)
            for part in parts:
                name = self._segment("tmp", key, version, len(written))
                written.append(name)
                pipe.set(name, part, ex=_WRITE_SECONDS)
                length += len(part)
            pipe.execute()
            if time.monotonic() - renewed > _WRITE_SECONDS / 2:
                # A slow producer: keep the first segments as long as the last one.
                pipe = client.pipeline(transaction=False)
                for done in written:
                    pipe.expire(done, _WRITE_SECONDS)
                pipe.execute()
                renewed = time.monotonic()
        return length

    def _publish(
        self, client: redis.Redis, entry: Entry, version: str, tmp: list[str], length: int
    ) -> None:
        key = entry.key
        entry_key = self._key("entry", key)
        bodies = self._segments("body", key, version, len(tmp))
        sizes, total = self._book("sizes"), self._book("bytes")

        def publish(pipe: Pipeline) -> None:
            old = pipe.hmget(entry_key, _HASH_FIELDS)
            old_size = int(pipe.hget(sizes, _encode(key)) or 0)
            read = self._being_read(pipe, key, old)
            if tmp and pipe.exists(*tmp) != len(tmp):
                raise BackendUnavailable(
                    f"Redis at {self._where()} dropped part of entry {key} before it was "
                    "published (maxmemory eviction?); register it again"
                )
            pipe.multi()
            for source, target in zip(tmp, bodies, strict=True):
                pipe.rename(source, target)
            if entry.expires is None:
                # RENAME keeps the expiry of the tmp key.
                for target in bodies:
                    pipe.persist(target)
                pipe.zrem(self._book("gone"), _encode(key))
                pipe.delete(self._mark("gone:" + key))
            else:
                at_ms = int(entry.expires * 1000)
                for target in bodies:
                    pipe.pexpireat(target, at_ms)
                # The tombstone is laid now, to outlive the entry: 410 once it expired.
                # The script goes whole: a missing digest would fail inside EXEC.
                gone_at = int((entry.expires + GONE_SECONDS) * 1000)
                pipe.eval(_GONE_SCRIPT, 2, *self._gone_args(key, "set", "at", gone_at))
            pipe.delete(entry_key, self._mark("claim:" + key))
            pipe.zadd(self._book("lru"), {_encode(key): time.time()})
            pipe.hset(sizes, _encode(key), entry.size)
            pipe.incrby(total, entry.size - old_size)
            if entry.expires is not None:
                pipe.zadd(self._book("expiry"), {_encode(key): entry.expires})
            pipe.hset(
                entry_key,
                mapping={
                    "entry": entry.to_json(),
                    "body": version if tmp else "",
                    "length": length,
                    "segment": self._segment_bytes,
                    "layout": _LAYOUT,
                },
            )
            if entry.expires is not None:
                pipe.pexpireat(entry_key, int(entry.expires * 1000))
            self._retire(pipe, key, old, read)

        # Watching the tmp segments aborts the publication if Redis drops one of them
        # between the check above and EXEC.
        client.transaction(publish, entry_key, sizes, *tmp)

    def _being_read(self, pipe: Pipeline, key: str, fields: list[Any]) -> bool:
        """Whether a stream holds a lease on the body of ``fields`` (the entry hash).

        Called under the WATCH of the transaction that retires the body, before its
        MULTI: the lease is watched too, so a stream that takes one between this
        check and EXEC makes the transaction start over and see it.
        """
        version = fields[1]
        if not version:
            return False
        lease = self._lease(key, _text(version))
        # redis-py leaves Pipeline.watch untyped.
        cast(Any, pipe).watch(lease)
        return bool(pipe.exists(lease))

    def _retire(self, pipe: Pipeline, key: str, fields: list[Any], read: bool) -> None:
        """Queue the removal of a body no entry points to any more.

        A body that a stream is reading lingers instead, for ``linger_seconds`` after
        the stream's last read; any other is deleted at once.
        """
        version, length, segment = fields[1], fields[2], fields[3]
        if not version or not length or not segment:
            return
        count = len(_sizes(int(length), int(segment), fields[4]))
        names = self._segments("body", key, _text(version), count)
        if not read:
            pipe.delete(*names)
            return
        for name in names:
            pipe.expire(name, self._linger_seconds)

    def read(self, key: str) -> tuple[Entry, BinaryIO | None]:
        with self._reaching() as client:
            for _ in range(_OPEN_ATTEMPTS):
                pipe = client.pipeline(transaction=True)
                pipe.hmget(self._key("entry", key), _HASH_FIELDS)
                pipe.zadd(self._book("lru"), {_encode(key): time.time()}, xx=True)
                fields, _ = pipe.execute()
                raw, version, length_text, segment_text, layout = fields
                if raw is None:
                    raise EntryNotFound(f"no entry {key} is stored")
                entry = Entry.from_json(raw)
                length = int(length_text or 0)
                if entry.kind != "body" or entry.lazy:
                    return entry, None
                if not version or length == 0:
                    return entry, reader(b"")
                sizes = _sizes(length, int(segment_text), layout)
                stream = self._open(client, key, _text(version), sizes, int(segment_text))
                if stream is not None:
                    return entry, stream
        raise BackendUnavailable(
            f"entry {key} was replaced {_OPEN_ATTEMPTS} times while it was being opened; "
            "it changes faster than it can be read, try again"
        )

    def _open(
        self, client: redis.Redis, key: str, version: str, sizes: list[int], segment: int
    ) -> BinaryIO | None:
        """A stream of body ``version`` of ``key``; ``None`` if the entry has moved on.

        One MULTI checks that the entry still points to ``version`` and reads the
        body, or takes the lease of a stream on it: a body cannot be deleted between
        the two, as its retirement would have changed the entry first.
        """
        length = sum(sizes)
        names = self._segments("body", key, version, len(sizes))
        pipe = client.pipeline(transaction=True)
        pipe.hget(self._key("entry", key), "body")
        if length <= self._chunk_bytes:
            # Small (at most a segment and the pieces of its rest): one read, and
            # the stream no longer depends on Redis.
            for name in names:
                pipe.get(name)
            current, *parts = pipe.execute()
            if current is None or _text(current) != version:
                return None
            if not all(isinstance(part, bytes) for part in parts):
                raise _lost(key)
            data = b"".join(parts)
            if len(data) != length:
                raise _lost(key)
            return reader(data)
        lease, token = self._lease(key, version), secrets.token_hex(8)
        # If the entry has moved on, this lease is on a body that may be gone; it is
        # dropped below.
        pipe.hset(lease, token, b"1")
        pipe.pexpire(lease, self._linger_seconds * 1000)
        for name in names:
            pipe.strlen(name)
        current, _, _, *found = pipe.execute()
        if current is None or _text(current) != version or found != sizes:
            self._release(key, version, token, names)
            if current is None or _text(current) != version:
                return None
            raise _lost(key)
        stream = RedisBodyReader(self, key, version, names, segment, sizes, token)
        return cast(BinaryIO, stream)

    def _fetch(
        self, ranges: list[tuple[str, int, int]], lease: str | None, token: str
    ) -> list[bytes]:
        """Bytes ``start:stop`` of each body segment in ``ranges``, in one round trip.

        Extends the expiry of a lingering segment it reads, and renews the stream's
        lease when ``lease`` is given.
        """
        linger_ms = self._linger_seconds * 1000
        with self._reaching() as client:
            pipe = client.pipeline(transaction=False)
            for name, start, stop in ranges:
                pipe.getrange(name, start, stop - 1)
                pipe.pttl(name)
            if lease is not None:
                pipe.hset(lease, token, b"1")
                pipe.pexpire(lease, linger_ms)
            replies = pipe.execute()[: 2 * len(ranges)]
            fading = [
                name
                for (name, _, _), ttl_ms in zip(ranges, replies[1::2], strict=True)
                if 0 <= ttl_ms < linger_ms // 2
            ]
            if fading:
                pipe = client.pipeline(transaction=False)
                for name in fading:
                    pipe.pexpire(name, linger_ms)
                pipe.execute()
        return [bytes(data) for data in replies[::2]]

    def _release(self, key: str, version: str, token: str, names: list[str]) -> None:
        """Drop the lease of a closed stream; delete the body if it was the last reader.

        A body its entry no longer points to can never be opened again, so once the
        lease of its last stream is gone nothing needs it. A transaction retiring
        the body meanwhile watches the lease and starts over when this removes it.
        """
        lease = self._lease(key, version)
        with self._reaching() as client:
            pipe = client.pipeline(transaction=True)
            pipe.hdel(lease, token)
            pipe.exists(lease)
            pipe.hget(self._key("entry", key), "body")
            _, leased, current = pipe.execute()
            if not leased and (current is None or _text(current) != version):
                client.delete(*names)

    def erase(self, key: str) -> bool:
        entry_key = self._key("entry", key)

        sizes = self._book("sizes")

        def drop(pipe: Pipeline) -> bool:
            fields = pipe.hmget(entry_key, _HASH_FIELDS)
            size = pipe.hget(sizes, _encode(key))
            if fields[0] is None:
                pipe.multi()
                return False
            read = self._being_read(pipe, key, fields)
            pipe.multi()
            pipe.delete(entry_key)
            self._unbook(pipe, key, size)
            self._retire(pipe, key, fields, read)
            return True

        with self._reaching() as client:
            # redis-py types the callable as returning None; the value comes back as is.
            found = client.transaction(cast(Any, drop), entry_key, sizes, value_from_callable=True)
        return bool(found)

    def _unbook(self, pipe: Any, key: str, size: Any = None) -> None:
        """Remove ``key`` from the bound bookkeeping (in a pipeline or directly).

        ``size`` is the booked size, read under the caller's WATCH; without it the
        size is read here.
        """
        sizes, total = self._book("sizes"), self._book("bytes")
        encoded = _encode(key)
        if size is None:
            size = self._redis().hget(sizes, encoded)
        pipe.zrem(self._book("lru"), encoded)
        pipe.zrem(self._book("expiry"), encoded)
        pipe.hdel(sizes, encoded)
        if size is not None:
            pipe.decrby(total, int(size))

    def entries(self) -> list[Entry]:
        prefix = f"{self._namespace}:entry:"
        found: list[Entry] = []
        with self._reaching() as client:
            # The pattern holds the namespace only, whose letters are not glob syntax.
            names = [
                name
                for name in client.scan_iter(match=prefix + "*", count=1000)
                if _decode(_text(name)[len(prefix) :]) is not None
            ]
            pipe = client.pipeline(transaction=False)
            for name in names:
                pipe.hget(name, "entry")
            # A key of another kind under our prefix is skipped, not fatal.
            for raw in pipe.execute(raise_on_error=False):
                if isinstance(raw, bytes):
                    found.append(Entry.from_json(raw))
        return found

    # Gone marks (names "gone:<id>") live in the sorted set, which keeps no value:
    # mark_get answers "1" for any of them. The base class only tests them for None.

    def mark_get(self, name: str) -> str | None:
        if name.startswith("gone:"):
            return "1" if self._gone(name[len("gone:") :], "get") else None
        with self._reaching() as client:
            value = client.get(self._mark(name))
        return None if value is None else _text(value)

    def mark_set(self, name: str, value: str, ttl: float | None = None) -> None:
        if name.startswith("gone:"):
            self._gone(name[len("gone:") :], "set", *_expiry(ttl))
            return
        with self._reaching() as client:
            client.set(self._mark(name), value, px=None if ttl is None else int(ttl * 1000))

    def mark_add(self, name: str, value: str, ttl: float | None = None) -> bool:
        if name.startswith("gone:"):
            return bool(self._gone(name[len("gone:") :], "add", *_expiry(ttl)))
        with self._reaching() as client:
            px = None if ttl is None else int(ttl * 1000)
            return bool(client.set(self._mark(name), value, nx=True, px=px))

    def mark_delete(self, name: str) -> None:
        with self._reaching() as client:
            if name.startswith("gone:"):
                pipe = client.pipeline(transaction=True)
                pipe.zrem(self._book("gone"), _encode(name[len("gone:") :]))
                pipe.delete(self._mark(name))
                pipe.execute()
                return
            client.delete(self._mark(name))

    def mark_incr(self, name: str, amount: int = 1) -> int:
        with self._reaching() as client:
            return int(client.incrby(self._mark(name), amount))


class RedisBodyReader(io.RawIOBase):
    """A read-only, seekable stream over a body in Redis, fetched piece by piece.

    Each read sends ``GETRANGE`` for at most the cache's ``chunk_bytes`` in all, in
    one round trip, so memory stays flat whatever the size, and a seek costs nothing.
    The stream holds a lease on its body until it is closed, renewed as it reads, so
    that the body outlives its entry for as long as it is being read. A body that
    vanished while being read (evicted by Redis itself, or lingered out) raises
    ``OSError`` instead of returning fewer bytes than the entry has.
    """

    def __init__(
        self,
        cache: CacheRedis,
        key: str,
        version: str,
        names: list[str],
        segment: int,
        sizes: list[int],
        token: str,
    ) -> None:
        super().__init__()
        self._cache = cache
        self._key = key
        self._names = names
        self._segment = segment
        # Full segments first (found by division), then the pieces of the rest (by
        # bisection over where each one starts).
        self._full = sum(sizes) // segment
        self._rest = sizes[self._full :]
        self._starts = list(itertools.accumulate(self._rest[:-1], initial=self._full * segment))
        self._length = sum(sizes)
        self._pos = 0
        self._version = version
        self._lease = cache._lease(key, version)
        self._token = token
        # The lease was just taken with its full lifetime.
        self._renew_every = cache._linger_seconds / 4
        self._renew_at = time.monotonic() + self._renew_every
        self._finalizing = False

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if self.closed:
            raise ValueError("read from a closed body stream")
        end = self._length if size is None or size < 0 else min(self._length, self._pos + size)
        parts: list[bytes] = []
        while self._pos < end:
            stop = min(end, self._pos + self._cache.chunk_bytes)
            ranges: list[tuple[str, int, int]] = []
            at = self._pos
            while at < stop:
                index, offset, size = self._locate(at)
                count = min(stop - at, size - offset)
                ranges.append((self._names[index], offset, offset + count))
                at += count
            renew = time.monotonic() >= self._renew_at
            fetched = self._cache._fetch(ranges, self._lease if renew else None, self._token)
            if renew:
                self._renew_at = time.monotonic() + self._renew_every
            for (_, start, stop_at), data in zip(ranges, fetched, strict=True):
                if len(data) != stop_at - start:
                    raise OSError(
                        f"the body of entry {self._key} vanished from Redis while being read, "
                        f"at byte {self._pos} of {self._length}"
                    )
                parts.append(data)
                self._pos += len(data)
        if len(parts) == 1:
            return parts[0]
        return b"".join(parts)

    def _locate(self, at: int) -> tuple[int, int, int]:
        """The piece holding byte ``at``: its index, the offset in it, its length."""
        index, offset = divmod(at, self._segment)
        if index < self._full:
            return index, offset, self._segment
        n = bisect.bisect_right(self._starts, at) - 1
        return self._full + n, at - self._starts[n], self._rest[n]

    def close(self) -> None:
        if not self.closed and not self._finalizing:
            # Closing must not fail: if Redis is gone, the lease expires by itself.
            with contextlib.suppress(Exception):
                self._cache._release(self._key, self._version, self._token, self._names)
        super().close()

    def __del__(self) -> None:
        # No round trip from a finalizer, which may run in the middle of redis-py's
        # own code in this thread; a lease left behind expires by itself.
        self._finalizing = True
        super().__del__()

    def readall(self) -> bytes:
        return self.read()

    def readinto(self, target: Any) -> int:
        view = memoryview(target).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._pos = seek_position(self._pos, self._length, offset, whence)
        return self._pos

    def tell(self) -> int:
        return self._pos


def _encode(key: str) -> str:
    """The part of a Redis key that names the entry ``key``."""
    if is_valid_key(key):
        return key
    if not isinstance(key, str):
        raise TypeError(f"an entry key must be a str, not {type(key).__name__}")
    return "." + key.encode("utf-8", "surrogatepass").hex()


def _decode(part: str) -> str | None:
    """The entry key named by ``part``, or ``None`` if no key of ours makes it."""
    if is_valid_key(part):
        return part
    if not part.startswith("."):
        return None
    try:
        key = bytes.fromhex(part[1:]).decode("utf-8", "surrogatepass")
    except ValueError:
        return None
    # Only the exact spelling _encode makes (fromhex also takes spaces, upper case).
    return key if _encode(key) == part else None


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _lost(key: str) -> EntryGone:
    return EntryGone(f"the body of entry {key} is no longer in Redis (evicted or expired)")


def _size_class_below(size: int) -> int:
    """The largest size class of jemalloc of at most ``size`` bytes (``size`` >= 4)."""
    step = 1 << (size.bit_length() - 3)
    return size // step * step


def _size_class_above(size: int) -> int:
    """The smallest size class of jemalloc of at least ``size`` bytes (``size`` >= 5)."""
    step = 1 << ((size - 1).bit_length() - 3)
    return -(-size // step) * step


def _tail(rest: int) -> list[int]:
    """The lengths of the pieces that the last ``rest`` bytes of a body are cut into.

    Each piece but the last fills the largest size class that the bytes left fill,
    its headroom included: what is left is then less than a quarter of what was,
    so a rest of up to a MiB takes at most five or six pieces. The bytes left make
    the last piece once they are under 2 KiB, or fill their own class nearly.
    """
    pieces: list[int] = []
    while rest + _STRING_HEADROOM >= _TAIL_FLOOR:
        whole = rest + _STRING_HEADROOM
        if _size_class_above(whole) - whole < _KEY_BYTES:
            break
        piece = _size_class_below(whole) - _STRING_HEADROOM
        pieces.append(piece)
        rest -= piece
    if rest:
        pieces.append(rest)
    return pieces


def _layout(length: int, segment: int) -> list[int]:
    """The lengths of the pieces a body of ``length`` bytes is stored in.

    Full segments of ``segment`` bytes, then the rest cut by :func:`_tail`. Writer,
    readers and deleters all derive it from these two numbers.
    """
    full, rest = divmod(length, segment)
    return [segment] * full + _tail(rest)


def _sizes(length: int, segment: int, layout: bytes | str | None) -> list[int]:
    """The piece lengths of a stored body, by the ``layout`` field of its entry hash.

    Entries written before the field existed hold full segments and one last piece.
    """
    if layout is not None:
        return _layout(length, segment)
    full, rest = divmod(length, segment)
    return [segment] * full + ([rest] if rest else [])


def _pieces(body: Body, segment: int) -> Iterator[Sequence[bytes | memoryview]]:
    """``body`` in the pieces of :func:`_layout`, without copying ``bytes``.

    Yields each full segment alone, then the pieces of the rest together (less than
    a segment in all). A stream is read until a segment is full or the stream ends,
    so short reads still make full segments; a segment that is not full is the
    rest of the body. At most one segment (and what one read gave beyond it) is held
    at a time.
    """
    if isinstance(body, bytes):
        view = memoryview(body)
        sizes = _layout(len(view), segment)
        starts = [0, *itertools.accumulate(sizes)]
        full = len(view) // segment
        for n in range(full):
            yield (view[starts[n] : starts[n + 1]],)
        if len(sizes) > full:
            yield [view[starts[n] : starts[n + 1]] for n in range(full, len(sizes))]
        return
    left = b""
    while True:
        parts = [left] if left else []
        have = len(left)
        while have < segment:
            data = body.read(segment - have)
            if not data:
                break
            if not isinstance(data, (bytes, bytearray)):
                raise TypeError("a body stream must be opened in binary mode")
            parts.append(bytes(data))
            have += len(data)
        chunk = parts[0] if len(parts) == 1 else b"".join(parts)
        if have >= segment:
            # A stream may return more than it was asked for: the excess starts
            # the next segment.
            yield (memoryview(chunk)[:segment],)
            left = chunk[segment:]
            continue
        if not have:
            return
        view, start = memoryview(chunk), 0
        cut: list[bytes | memoryview] = []
        for size in _tail(have):
            cut.append(view[start : start + size])
            start += size
        yield cut
        return


def _expiry(ttl: float | None) -> tuple[str, int]:
    """How the gone-mark script is told a lifetime of ``ttl`` seconds (``None``: for ever)."""
    return ("never", 0) if ttl is None else ("in", int(ttl * 1000))


def _plain(settings: dict[str, Any]) -> dict[str, Any]:
    """The connection settings that make sense in another process.

    Objects (retry policies, credential providers, redis-py's own bookkeeping) stay
    behind; the receiving process uses redis-py's defaults for them.
    """
    return {
        name: value
        for name, value in settings.items()
        if isinstance(value, (str, bytes, int, float, bool, type(None)))
        and not name.startswith("orig_")
    }


def _segment_bytes(chunk_bytes: int) -> int:
    """Body bytes per full segment: one SET of at most ``chunk_bytes`` bytes each.

    The largest size class within ``chunk_bytes``, less the headroom: just under
    ``chunk_bytes`` when it is a power of two.
    """
    # Below a few kilobytes the key of a segment costs more than any rounding.
    if chunk_bytes < 4096:
        return chunk_bytes
    return _size_class_below(chunk_bytes) - _STRING_HEADROOM


def _check_positive_int(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an int of at least 1, got {value!r}")
