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
Lua script that renames them, sets the last pieces (those under a segment, sent
with it) and writes the entry hash: a reader finds either no entry or a complete
one. Each publication uses a fresh version. The body an entry no longer points to
(replaced, deleted, evicted) is deleted at once, unless a stream holds a lease on
it: then it lingers, with an expiry of ``linger_seconds`` that every chunk read
extends, so that the download under way completes. The script that retires a body
checks its lease as it runs, and a stream takes its lease in the MULTI that checks
that the entry still points to the version it opens, so a body is never deleted
under a stream that has just opened it.

Round trips are what a request costs here, so the common steps take one each: a
publication with its bookkeeping (and the figures the bounds need), the opening of
an entry with the whole of a body of at most ``chunk_bytes``, a deletion. The
scripts derive the pieces of a body from its entry hash, as :func:`_layout` does.
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
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from .._keys import is_valid_key
from .._streams import reader, seek_position
from ..entry import Entry
from ..errors import BackendUnavailable, EntryGone, EntryNotFound
from .base import GONE_SECONDS, Body, Bounds, CacheAbstract

if TYPE_CHECKING:
    import redis

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
# Gone marks: a Lua function of the sorted set, the mark key of earlier versions,
# the member, the operation (get, set or add), how the expiry is given ("in" ms from
# now, "at" an epoch in ms, "never"), the expiry, and the cap. Redis' own clock
# decides, as for the expiry of every other mark; scores keep its microseconds, so
# that marks laid within one millisecond still leave the set in the order laid.
_GONE_LUA = """
local function gone(marks, single, id, op, how, value, cap)
  local clock = redis.call('TIME')
  local now = tonumber(clock[1]) * 1000 + tonumber(clock[2]) / 1000
  local function live()
    local at = redis.call('ZSCORE', marks, id)
    return (at and tonumber(at) > now) or redis.call('EXISTS', single) == 1
  end
  if op == 'get' then return live() and 1 or 0 end
  if op == 'add' and live() then return 0 end
  local at = 'inf'
  if how == 'in' then
    at = string.format('%.3f', now + tonumber(value))
  elseif how == 'at' then
    at = value
  end
  redis.call('ZREMRANGEBYSCORE', marks, '-inf', string.format('%.3f', now))
  redis.call('ZADD', marks, at, id)
  redis.call('DEL', single)
  redis.call('ZREMRANGEBYRANK', marks, 0, -1 - tonumber(cap))
  local last = redis.call('ZRANGE', marks, -1, -1, 'WITHSCORES')[2]
  if last == 'inf' then
    redis.call('PERSIST', marks)
  elseif last then
    redis.call('PEXPIREAT', marks, string.format('%d', math.ceil(tonumber(last))))
  end
  return 1
end
"""
# The layout of a body (as _layout cuts it) and the retirement of a body no entry
# points to any more (deleted at once, or, while a stream holds a lease on it, left
# to linger for linger_seconds after the stream's last read), for the scripts below:
# a script finds the pieces of a body from its entry hash alone, so it reads,
# replaces or deletes an entry in one round trip. The body pieces and
# leases are named from prefixes given as arguments rather than declared as keys:
# like the transactions of this module, the scripts need all keys on one server.
_BODY_LUA = f"""
local function class_below(size)
  local step = 1
  while step * 8 <= size do step = step * 2 end
  return math.floor(size / step) * step
end
local function class_above(size)
  local step = 1
  while step * 8 <= size - 1 do step = step * 2 end
  return math.ceil(size / step) * step
end
local function piece_count(length, segment, layout)
  local full = math.floor(length / segment)
  local rest = length - full * segment
  if not layout then
    return full + (rest > 0 and 1 or 0)
  end
  while rest + {_STRING_HEADROOM} >= {_TAIL_FLOOR} do
    local whole = rest + {_STRING_HEADROOM}
    if class_above(whole) - whole < {_KEY_BYTES} then break end
    rest = rest - (class_below(whole) - {_STRING_HEADROOM})
    full = full + 1
  end
  return full + (rest > 0 and 1 or 0)
end
local function piece_names(prefix, version, count)
  local names = {{}}
  for n = 0, count - 1 do names[n + 1] = prefix .. version .. ':' .. n end
  return names
end
local function retire(version, length, segment, layout, prefix, lease, linger)
  if not version or version == '' or not length or not segment then return end
  local count = piece_count(tonumber(length), tonumber(segment), layout)
  local names = piece_names(prefix, version, count)
  local read = redis.call('EXISTS', lease .. version) == 1
  for n = 1, #names, 500 do
    local batch = {{}}
    for i = n, math.min(n + 499, #names) do batch[#batch + 1] = names[i] end
    if read then
      for _, name in ipairs(batch) do redis.call('EXPIRE', name, linger) end
    else
      redis.call('DEL', unpack(batch))
    end
  end
end
"""
# KEYS: the sorted set of gone marks and the mark key of earlier versions. ARGV: the
# member, the operation, how the expiry is given, the expiry, the cap.
_GONE_SCRIPT = (
    _GONE_LUA + "return gone(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])\n"
)
# Publication of an entry, in one step: the checks and reads of the transaction it
# replaces, the renaming of the pieces written beforehand, the writing of the last
# pieces given here, the bookkeeping and the retirement of the previous body. It
# answers {0} when a piece written beforehand is missing (nothing is changed then),
# else {1, entries booked, bytes booked, whether an expiry is due at ARGV[16]}, so that
# the bounds need no further round trip when nothing is to be evicted.
# KEYS: entry hash, sizes, bytes, lru, expiry, gone set, gone mark of earlier
# versions, claim mark, then the tmp pieces in order.
# ARGV: id, entry JSON, version ("" without a body), length, segment, layout, size,
# lru score, expiry score ("" for none), expiry in epoch ms, gone mark expiry in
# epoch ms, cap of gone marks, linger seconds, body prefix, lease prefix, now (the
# bounds' clock), then the last pieces in order.
_PUBLISH_SCRIPT = (
    _GONE_LUA
    + _BODY_LUA
    + """
local entry_key, sizes, total, lru, expiry = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local id, version, expires = ARGV[1], ARGV[3], ARGV[9]
local written = #KEYS - 8
for i = 9, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then return {0} end
end
local old = redis.call('HMGET', entry_key, 'body', 'length', 'segment', 'layout')
local old_size = tonumber(redis.call('HGET', sizes, id) or '0')
local targets = piece_names(ARGV[14], version, written + #ARGV - 16)
for i = 1, written do redis.call('RENAME', KEYS[8 + i], targets[i]) end
for i = 17, #ARGV do redis.call('SET', targets[written + i - 16], ARGV[i]) end
if expires == '' then
  -- RENAME keeps the expiry of the tmp key.
  for i = 1, written do redis.call('PERSIST', targets[i]) end
  redis.call('ZREM', KEYS[6], id)
  redis.call('DEL', KEYS[7])
else
  for _, target in ipairs(targets) do redis.call('PEXPIREAT', target, ARGV[10]) end
  -- The tombstone is laid now, to outlive the entry: 410 once it expired.
  gone(KEYS[6], KEYS[7], id, 'set', 'at', ARGV[11], ARGV[12])
end
redis.call('DEL', entry_key, KEYS[8])
redis.call('ZADD', lru, ARGV[8], id)
redis.call('HSET', sizes, id, ARGV[7])
redis.call('INCRBY', total, string.format('%d', tonumber(ARGV[7]) - old_size))
if expires ~= '' then redis.call('ZADD', expiry, expires, id) end
redis.call('HSET', entry_key, 'entry', ARGV[2], 'body', version, 'length', ARGV[4],
  'segment', ARGV[5], 'layout', ARGV[6])
if expires ~= '' then redis.call('PEXPIREAT', entry_key, ARGV[10]) end
retire(old[1], old[2], old[3], old[4], ARGV[14], ARGV[15], ARGV[13])
local due = redis.call('ZRANGEBYSCORE', expiry, '-inf', ARGV[16], 'LIMIT', 0, 1)
return {1, redis.call('ZCARD', lru), redis.call('GET', total), #due}
"""
)
# Opening an entry: its hash, its use noted in the lru set, and, when the body is
# at most ARGV[3] bytes, the body pieces read at the same instant (false for a
# missing piece), after the five fields of the hash.
# KEYS: entry hash, lru. ARGV: id, lru score, largest body read whole, body prefix.
_READ_SCRIPT = (
    _BODY_LUA
    + """
local fields = redis.call('HMGET', KEYS[1], 'entry', 'body', 'length', 'segment', 'layout')
redis.call('ZADD', KEYS[2], 'XX', ARGV[2], ARGV[1])
local version, length = fields[2], tonumber(fields[3] or '0')
if fields[1] and version and version ~= '' and length > 0 and length <= tonumber(ARGV[3]) then
  local count = piece_count(length, tonumber(fields[4]), fields[5])
  for n, name in ipairs(piece_names(ARGV[4], version, count)) do
    fields[5 + n] = redis.call('GET', name)
  end
end
return fields
"""
)
# Removal of an entry and of its bookkeeping; its body is retired. Answers 1 if the
# entry was there.
# KEYS: entry hash, sizes, bytes, lru, expiry. ARGV: id, body prefix, lease prefix,
# linger seconds.
_ERASE_SCRIPT = (
    _BODY_LUA
    + """
local fields = redis.call('HMGET', KEYS[1], 'entry', 'body', 'length', 'segment', 'layout')
if not fields[1] then return 0 end
local size = redis.call('HGET', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
if size then redis.call('DECRBY', KEYS[3], size) end
retire(fields[2], fields[3], fields[4], fields[5], ARGV[2], ARGV[3], ARGV[4])
return 1
"""
)


class _Script:
    """A Lua script and its digest: sent by digest, whole only when Redis lacks it."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()

    def __call__(self, client: redis.Redis, keys: Sequence[str], args: Sequence[Any]) -> Any:
        import redis.exceptions

        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            return client.eval(self.text, len(keys), *keys, *args)


_GONE = _Script(_GONE_SCRIPT)
_PUBLISH = _Script(_PUBLISH_SCRIPT)
_READ = _Script(_READ_SCRIPT)
_ERASE = _Script(_ERASE_SCRIPT)


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
        """Run the gone-mark script for entry ``key``."""
        args = self._gone_args(key, op, expiry, value)
        with self._reaching() as client:
            return int(_GONE(client, args[:2], args[2:]))

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
                length, last = self._write(client, key, version, body, written)
                booked = self._publish(client, entry, version, written, last, length)
            except BaseException:
                if written:
                    # Best effort: if Redis is gone too, the expiry cleans up.
                    with contextlib.suppress(Exception):
                        client.delete(*written)
                raise
        self._apply_bounds(booked)

    def _apply_bounds(self, booked: Sequence[Any] | None = None) -> None:
        """Evict least recently used entries while the count or byte bound is exceeded.

        ``booked`` is what the publication just reported: the count and bytes booked
        and whether an expiry is due. When they show nothing to do, nothing is sent.
        """
        limit, room = self.bounds.cache_size, self.bounds.max_bytes
        if booked is not None:
            count, used, due = int(booked[0]), int(booked[1] or 0), int(booked[2])
            if not due and (limit is None or count <= limit) and (room is None or used <= room):
                return
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
    ) -> tuple[int, list[bytes | memoryview]]:
        """Store the full segments of ``body`` in ``tmp`` pieces, one SET of a piece each.

        Each full segment goes in one round trip. The pieces cut from the rest of the
        body (less than a segment in all, and always last) are returned instead, to
        travel with the publication: a small body costs no round trip of its own.
        Returns the length of the body and those last pieces.
        """
        length = 0
        if body is None:
            return length, []
        renewed = time.monotonic()
        for parts in _pieces(body, self._segment_bytes):
            size = sum(len(part) for part in parts)
            length += size
            if size < self._segment_bytes:
                return length, list(parts)
            pipe = client.pipeline(transaction=False)
            for part in parts:
                name = self._segment("tmp", key, version, len(written))
                written.append(name)
                pipe.set(name, part, ex=_WRITE_SECONDS)
            pipe.execute()
            if time.monotonic() - renewed > _WRITE_SECONDS / 2:
                # A slow producer: keep the first segments as long as the last one.
                pipe = client.pipeline(transaction=False)
                for done in written:
                    pipe.expire(done, _WRITE_SECONDS)
                pipe.execute()
                renewed = time.monotonic()
        return length, []

    def _publish(
        self,
        client: redis.Redis,
        entry: Entry,
        version: str,
        tmp: list[str],
        last: list[bytes | memoryview],
        length: int,
    ) -> list[Any]:
        """Make the entry visible with its body, in one script: all of it or nothing.

        The script renames the ``tmp`` pieces, sets the ``last`` ones, writes the
        entry hash and its bookkeeping, and retires the previous body, which lingers
        if a stream holds a lease on it. Returns the count and bytes booked and
        whether an expiry is due, for :meth:`_apply_bounds`.
        """
        key = entry.key
        encoded = _encode(key)
        expires = entry.expires
        keys = [
            *self._entry_keys(key),
            self._book("gone"),
            self._mark("gone:" + key),
            self._mark("claim:" + key),
            *tmp,
        ]
        args: list[Any] = [
            encoded,
            entry.to_json(),
            version if tmp or last else "",
            length,
            self._segment_bytes,
            _LAYOUT,
            entry.size,
            time.time(),
            "" if expires is None else expires,
            0 if expires is None else int(expires * 1000),
            0 if expires is None else int((expires + GONE_SECONDS) * 1000),
            self._max_gone_marks,
            self._linger_seconds,
            f"{self._namespace}:body:{encoded}:",
            f"{self._namespace}:reading:{encoded}:",
            self.bounds.clock(),
            *last,
        ]
        done = cast(list[Any], _PUBLISH(client, keys, args))
        if not done[0]:
            raise BackendUnavailable(
                f"Redis at {self._where()} dropped part of entry {key} before it was "
                "published (maxmemory eviction?); register it again"
            )
        return done[1:]

    def read(self, key: str) -> tuple[Entry, BinaryIO | None]:
        encoded = _encode(key)
        keys = [self._key("entry", key), self._book("lru")]
        args = [encoded, 0.0, self._chunk_bytes, f"{self._namespace}:body:{encoded}:"]
        with self._reaching() as client:
            for _ in range(_OPEN_ATTEMPTS):
                args[1] = time.time()
                fields = cast(list[Any], _READ(client, keys, args))
                raw, version, length_text, segment_text, layout, *parts = fields
                if raw is None:
                    raise EntryNotFound(f"no entry {key} is stored")
                entry = Entry.from_json(raw)
                length = int(length_text or 0)
                if entry.kind != "body" or entry.lazy:
                    return entry, None
                if not version or length == 0:
                    return entry, reader(b"")
                sizes = _sizes(length, int(segment_text), layout)
                if length <= self._chunk_bytes:
                    # Read with the hash, at the same instant: the stream no longer
                    # depends on Redis.
                    if len(parts) != len(sizes) or not all(isinstance(p, bytes) for p in parts):
                        raise _lost(key)
                    data = b"".join(parts)
                    if len(data) != length:
                        raise _lost(key)
                    return entry, reader(data)
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
        """A leased stream of body ``version`` of ``key``; ``None`` if the entry moved on.

        For bodies larger than ``chunk_bytes`` (smaller ones are read whole with their
        hash). One MULTI checks that the entry still points to ``version`` and takes
        the lease of a stream on it: a body cannot be deleted between the two, as its
        retirement would have changed the entry first.
        """
        names = self._segments("body", key, version, len(sizes))
        pipe = client.pipeline(transaction=True)
        pipe.hget(self._key("entry", key), "body")
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

    def _entry_keys(self, key: str) -> list[str]:
        """The keys a script changes for entry ``key``: its hash and the bookkeeping."""
        return [
            self._key("entry", key),
            self._book("sizes"),
            self._book("bytes"),
            self._book("lru"),
            self._book("expiry"),
        ]

    def erase(self, key: str) -> bool:
        encoded = _encode(key)
        keys = self._entry_keys(key)
        args = [
            encoded,
            f"{self._namespace}:body:{encoded}:",
            f"{self._namespace}:reading:{encoded}:",
            self._linger_seconds,
        ]
        with self._reaching() as client:
            return bool(_ERASE(client, keys, args))

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

    def mark_incr_many(self, counts: Mapping[str, int]) -> None:
        """Add to several counters in one round trip (statistics are flushed so)."""
        with self._reaching() as client:
            pipe = client.pipeline(transaction=False)
            for name, amount in counts.items():
                pipe.incrby(self._mark(name), amount)
            pipe.execute()


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
