"""CacheRedis against a real redis-server: chunked writes, atomic publication, ranged
reads, processes, outages and memory. The contract and HTTP suites run on it too
(see backends.py)."""

from __future__ import annotations

import hashlib
import io
import itertools
import math
import multiprocessing
import os
import pickle
import random
import select
import string
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import flask
import psutil
import pytest
import requests
from redis_server import NAMESPACE, RedisServer, redis_server, redis_url, running_redis  # noqa: F401
from servers import gunicorn, pattern
from test_contract import make_entry, read_all

import dash_file_cache as dfc
from dash_file_cache._keys import new_key
from dash_file_cache.caches.redis import _BODY_LUA, _layout, _sizes
from dash_file_cache.entry import Entry

KIB, MIB = 1 << 10, 1 << 20


class PatternStream(io.RawIOBase):
    """``pattern(size, seed)`` as a stream, made on the fly; ``before_read`` runs first.

    Each read returns at most ``most`` bytes, as a pipe or a socket would.
    """

    def __init__(
        self,
        size: int,
        seed: int = 0,
        before_read: Callable[[int], None] | None = None,
        most: int = 4 * MIB,
    ) -> None:
        super().__init__()
        self._size = size
        self._pos = 0
        self._block = pattern(251 + 4 * MIB, seed)
        self._before_read = before_read
        self._most = min(most, 4 * MIB)

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if self._before_read is not None:
            self._before_read(self._pos)
        limit = self._most if size is None or size < 0 else min(size, self._most)
        count = min(limit, self._size - self._pos)
        start = self._pos % 251
        self._pos += count
        return self._block[start : start + count]


def server_stats(server: RedisServer) -> dict[str, int]:
    """Calls per command and bytes sent to clients, from the server's own counters."""
    with server.client() as client:
        commands = client.info("commandstats")
        sent = client.info("stats")["total_net_output_bytes"]
    stats = {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in commands.items()}
    stats["net_output_bytes"] = int(sent)
    return stats


def spy_client(url: str, sizes: list[tuple[str, int]]) -> Any:
    """A redis-py client recording, per command sent, its name and largest argument."""
    import redis

    def record(args: tuple[Any, ...]) -> None:
        largest = max(
            (len(a) for a in args[1:] if isinstance(a, (bytes, bytearray, memoryview, str))),
            default=0,
        )
        sizes.append((str(args[0]).upper(), largest))

    class SpyConnection(redis.connection.Connection):
        def pack_command(self, *args: Any) -> Any:
            record(args)
            return super().pack_command(*args)

        def pack_commands(self, commands: Any) -> Any:
            for args in commands:
                record(tuple(args))
            return super().pack_commands(commands)

    pool = redis.ConnectionPool.from_url(url, connection_class=SpyConnection)
    return redis.Redis(connection_pool=pool)


@pytest.fixture
def cache(redis_url: str) -> Iterator[dfc.CacheRedis]:
    made = dfc.CacheRedis(redis_url, namespace=NAMESPACE)
    yield made
    made.close()


# Writing ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["bytes", "stream"])
def test_bodies_travel_in_commands_no_larger_than_chunk_bytes(
    redis_server: RedisServer, kind: str
) -> None:
    sizes: list[tuple[str, int]] = []
    body = pattern(MIB + 1234, seed=1)
    client = spy_client(redis_server.url, sizes)
    cache = dfc.CacheRedis(client, namespace=NAMESPACE, chunk_bytes=64 * KIB)
    try:
        before = server_stats(redis_server)
        entry = make_entry(len(body))
        cache.put(entry, body if kind == "bytes" else io.BytesIO(body))
        after = server_stats(redis_server)
        assert read_all(cache, entry.key) == body
    finally:
        client.close()
    segments = piece_lengths(redis_server, entry.key)
    # Each piece is sent whole in one SET, never grown by APPEND.
    assert after.get("set", 0) - before.get("set", 0) == len(segments)
    assert after.get("append", 0) == before.get("append", 0)
    assert segments == _layout(len(body), 64 * KIB - 64)
    assert max(size for _, size in sizes) <= 64 * KIB
    # A read of chunk_bytes fetches each piece it touches, in one round trip: one
    # more GETRANGE than reads for each piece boundary crossed, at most.
    chunks = math.ceil(len(body) / (64 * KIB))
    assert chunks <= sum(1 for name, _ in sizes if name == "GETRANGE") <= chunks + len(segments)


def piece_lengths(server: RedisServer, key: str) -> list[int]:
    """The lengths of the body pieces of entry ``key``, in order."""
    with server.client() as client:
        names = sorted(
            client.scan_iter(match=f"{NAMESPACE}:body:{key}:*"),
            key=lambda name: int(name.rsplit(b":", 1)[1]),
        )
        return [int(client.strlen(name)) for name in names]


def test_a_body_larger_than_a_segment_spans_several_keys(
    cache: dfc.CacheRedis, redis_server: RedisServer
) -> None:
    body = pattern(20 * MIB, seed=2)
    entry = make_entry(len(body))
    cache.put(entry, body)
    with redis_server.client() as client:
        segments = sorted(
            client.scan_iter(match=f"{NAMESPACE}:body:{entry.key}:*"),
            key=lambda name: int(name.rsplit(b":", 1)[1]),
        )
        lengths = [client.strlen(name) for name in segments]
    assert len(segments) == 21  # 20 MiB in segments just under a MiB
    assert max(lengths) <= cache.chunk_bytes
    assert sum(lengths) == len(body)
    _, stream = cache.get(entry.key)
    assert stream is not None
    with stream:
        edge = lengths[0]  # the first byte of the second segment
        stream.seek(edge - 10)
        assert stream.read(20) == body[edge - 10 : edge + 10]
        stream.seek(0)
        assert hashlib.sha256(stream.read()).digest() == hashlib.sha256(body).digest()


def test_readers_never_see_a_partial_entry(redis_url: str) -> None:
    writer = dfc.CacheRedis(redis_url, namespace=NAMESPACE, chunk_bytes=64 * KIB)
    reader = dfc.CacheRedis(redis_url, namespace=NAMESPACE)
    size = 2 * MIB
    entry = make_entry(size)
    new_body = pattern(size, 4)
    seen: list[str] = []
    done = threading.Event()
    failures: list[BaseException] = []

    def observe(expected: bytes | None) -> str:
        try:
            data = read_all(reader, entry.key)
        except dfc.EntryNotFound as exc:
            assert expected is None and not isinstance(exc, dfc.EntryGone)
            return "missing"
        if data == new_body:
            return "new"
        assert data == expected
        return "old"

    def poll(expected: bytes | None) -> None:
        try:
            while not done.is_set():
                seen.append(observe(expected))
        except BaseException as exc:  # re-raised in the test thread below
            failures.append(exc)

    def write_while_watching(old: bytes | None) -> None:
        at_chunk: list[str] = []
        body = PatternStream(size, 4, before_read=lambda _: at_chunk.append(observe(old)))
        done.clear()
        thread = threading.Thread(target=poll, args=(old,))
        thread.start()
        try:
            writer.put(entry, body)
        finally:
            done.set()
            thread.join(timeout=30)
        assert failures == []
        assert set(seen) <= {"missing", "old", "new"}
        # At every chunk boundary of the write: the previous state, complete.
        assert len(at_chunk) >= size // (64 * KIB)
        assert set(at_chunk) == {"missing" if old is None else "old"}
        assert observe(old) == "new"
        assert reader.keys().count(entry.key) == 1

    try:
        write_while_watching(None)
        old = pattern(size, 3)
        writer.put(entry, old)
        write_while_watching(old)
    finally:
        writer.close()
        reader.close()


def test_a_reader_racing_deletes_finds_the_entry_or_its_tombstone(redis_url: str) -> None:
    writer = dfc.CacheRedis(redis_url, namespace=NAMESPACE)
    reader = dfc.CacheRedis(redis_url, namespace=NAMESPACE)
    current: list[str] = []
    stop = threading.Event()
    outcomes: dict[str, int] = {"found": 0, "gone": 0}
    plain_misses: list[str] = []

    def poll() -> None:
        while not stop.is_set():
            if not current:
                continue
            key = current[-1]
            try:
                reader.info(key)
                outcomes["found"] += 1
            except dfc.EntryGone:
                outcomes["gone"] += 1
            except dfc.EntryNotFound:
                plain_misses.append(key)

    thread = threading.Thread(target=poll)
    thread.start()
    try:
        for _ in range(300):
            entry = make_entry(1)
            writer.put(entry, b"x")
            current.append(entry.key)
            writer.delete(entry.key)
    finally:
        stop.set()
        thread.join(timeout=30)
        writer.close()
        reader.close()
    assert plain_misses == []
    assert outcomes["gone"] > 0


def test_a_failed_write_leaves_nothing_behind(
    cache: dfc.CacheRedis, redis_server: RedisServer
) -> None:
    def explode(pos: int) -> None:
        if pos >= 3 * MIB:
            raise OSError("the producer failed")

    entry = make_entry(8 * MIB)
    with pytest.raises(OSError, match="producer failed"):
        cache.put(entry, PatternStream(8 * MIB, before_read=explode))
    with pytest.raises(dfc.EntryNotFound):
        cache.get(entry.key)
    with redis_server.client() as client:
        assert list(client.scan_iter(match=f"{NAMESPACE}:*")) == []


_KILLED_WRITER = """
import io, sys, time
import dash_file_cache as dfc
from dash_file_cache._keys import new_key
from dash_file_cache.entry import Entry

class Stalling(io.RawIOBase):
    sent = 0
    def readable(self):
        return True
    def read(self, size=-1):
        if self.sent >= 2 << 20:
            print(entry.key, flush=True)
            time.sleep(600)  # until the test kills this process
        self.sent += 1 << 16
        return b"x" * (1 << 16)

cache = dfc.CacheRedis(sys.argv[1], namespace=sys.argv[2], chunk_bytes=1 << 16)
entry = Entry(new_key(), 4 << 20, "a/b", "a/b", "x.bin", time.time())
cache.put(entry, Stalling())
"""


def test_a_killed_writer_leaves_only_keys_that_expire(
    cache: dfc.CacheRedis, redis_server: RedisServer
) -> None:
    writer = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, redis_server.url, NAMESPACE],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )
    try:
        assert writer.stdout is not None
        ready, _, _ = select.select([writer.stdout], [], [], 60)
        assert ready, "the writer did not reach the middle of its body"
        key = writer.stdout.readline().decode().strip()
        writer.kill()
        writer.wait(timeout=10)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait(timeout=10)
        if writer.stdout is not None:
            writer.stdout.close()
    with redis_server.client() as client:
        leftover = list(client.scan_iter(match=f"{NAMESPACE}:*"))
        assert leftover
        assert all(name.startswith(f"{NAMESPACE}:tmp:{key}:".encode()) for name in leftover)
        # The full segments of what the writer read were sent, the rest was buffered.
        sent = sum(client.strlen(name) for name in leftover)
        assert (2 << 20) - (1 << 16) < sent <= 2 << 20
        assert all(0 < client.ttl(name) <= 3600 for name in leftover)
    assert cache.keys() == []
    with pytest.raises(dfc.EntryNotFound):
        cache.get(key)


# Reading ---------------------------------------------------------------------------


def test_range_reads_of_a_64_mb_entry_fetch_only_their_bytes(
    cache: dfc.CacheRedis, redis_server: RedisServer
) -> None:
    app = flask.Flask("ranged")
    service = dfc.ServiceData(cache)
    service.serve(app)
    body = pattern(64 * MIB, seed=6)
    address = service.register(body)
    client = app.test_client()

    def fetched(action: Callable[[], bytes], expected: bytes) -> tuple[int, int]:
        """GETRANGE calls and bytes Redis sent (INFO answers included) for ``action``."""
        before = server_stats(redis_server)
        assert action() == expected
        after = server_stats(redis_server)
        calls = after.get("getrange", 0) - before.get("getrange", 0)
        return calls, after["net_output_bytes"] - before["net_output_bytes"]

    def stream_read() -> bytes:
        _, stream = cache.get(address.split("uid=")[1])
        assert stream is not None
        with stream:
            stream.seek(50_000_000)
            return stream.read(100)

    def http_get(header: str) -> Callable[[], bytes]:
        def get() -> bytes:
            resp = client.get(address, headers={"Range": header}, buffered=True)
            assert resp.status_code == 206
            return bytes(resp.data)

        return get

    calls, sent = fetched(stream_read, body[50_000_000:50_000_100])
    assert (calls, sent < 64 * KIB) == (1, True)
    calls, sent = fetched(http_get("bytes=-100"), body[-100:])
    # The last 100 bytes lie in the last two pieces (64 and 4,032 bytes) of the rest.
    assert _layout(len(body), MIB - 64)[-2:] == [4032, 64]
    assert (calls, sent < 64 * KIB) == (2, True)
    # The view reads whole chunks from the stream (it does not tell it where the
    # range ends), so a range inside the file costs at most one chunk, never the file.
    calls, sent = fetched(http_get("bytes=50000000-50000099"), body[50_000_000:50_000_100])
    assert calls <= 2
    assert sent < service.chunk_bytes + 64 * KIB


def test_a_body_that_vanishes_mid_stream_raises_rather_than_truncates(
    cache: dfc.CacheRedis, redis_server: RedisServer
) -> None:
    body = pattern(3 * MIB, seed=7)
    entry = make_entry(len(body))
    cache.put(entry, body)
    _, stream = cache.get(entry.key)
    assert stream is not None
    with stream:
        assert stream.read(MIB) == body[:MIB]
        with redis_server.client() as client:  # as maxmemory eviction would
            client.delete(*client.scan_iter(match=f"{NAMESPACE}:body:*"))
        with pytest.raises(OSError, match="vanished"):
            stream.read(MIB)


def test_an_entry_whose_body_was_evicted_answers_410(
    cache: dfc.CacheRedis, redis_server: RedisServer
) -> None:
    app = flask.Flask("evicted")
    service = dfc.ServiceData(cache)
    service.serve(app)
    small, large = service.register(b"small"), service.register(pattern(3 * MIB))
    with redis_server.client() as client:
        client.delete(*client.scan_iter(match=f"{NAMESPACE}:body:*"))
    for address in (small, large):
        assert app.test_client().get(address, buffered=True).status_code == 410


def test_a_download_under_way_survives_replace_and_delete(
    redis_url: str, redis_server: RedisServer
) -> None:
    cache = dfc.CacheRedis(redis_url, namespace=NAMESPACE, linger_seconds=100)
    old, new = pattern(3 * MIB, seed=8), pattern(3 * MIB, seed=9)
    entry = make_entry(len(old))
    try:
        cache.put(entry, old)
        _, first = cache.get(entry.key)
        assert first is not None
        with first:
            assert first.read(MIB) == old[:MIB]
            cache.put(entry, new)
            assert read_all(cache, entry.key) == new
            _, second = cache.get(entry.key)
            assert second is not None
            with second:
                assert second.read(MIB) == new[:MIB]
                cache.delete(entry.key)
                with redis_server.client() as client:
                    lingering = sorted(client.scan_iter(match=f"{NAMESPACE}:body:*"))
                    assert lingering and all(0 < client.pttl(n) <= 100_000 for n in lingering)
                    for name in lingering:  # close to the end of the grace period
                        client.pexpire(name, 10_000)
                    assert second.read(MIB) == new[MIB : 2 * MIB]
                    assert first.read() == old[MIB:]
                    # Reading renewed the grace period of what it read.
                    renewed = [client.pttl(n) for n in lingering]
                assert second.read() == new[2 * MIB :]
        assert sum(ttl > 50_000 for ttl in renewed) >= 2
        with pytest.raises(dfc.EntryGone):
            cache.get(entry.key)
    finally:
        cache.close()


def namespace_keys(server: RedisServer) -> dict[bytes, int]:
    """Every key of the test namespace, with its time to live in ms (-1: none)."""
    with server.client() as client:
        return {name: client.pttl(name) for name in client.scan_iter(match=f"{NAMESPACE}:*")}


def body_keys(server: RedisServer, key: str) -> list[bytes]:
    return [
        name
        for name in namespace_keys(server)
        if name.startswith(f"{NAMESPACE}:body:{key}:".encode())
    ]


def retire(cache: dfc.CacheRedis, entry: Entry, how: str) -> None:
    """Make ``entry``'s body one that no entry points to; ``cache`` holds one entry."""
    if how == "replaced":
        cache.put(entry, pattern(entry.size, seed=29))
    elif how == "deleted":
        assert cache.delete(entry.key)
    else:
        cache.put(make_entry(MIB), pattern(MIB, seed=29))
        assert entry.key not in cache


RETIREMENTS = ["replaced", "deleted", "evicted"]


@pytest.mark.parametrize("how", RETIREMENTS)
def test_a_body_nobody_reads_leaves_redis_with_its_entry(
    redis_url: str, redis_server: RedisServer, how: str
) -> None:
    cache = dfc.CacheRedis(redis_url, namespace=NAMESPACE, cache_size=1)
    body = pattern(3 * MIB, seed=20)
    entry = make_entry(len(body))
    try:
        cache.put(entry, body)
        assert read_all(cache, entry.key) == body  # a download that is over
        old = body_keys(redis_server, entry.key)
        assert old
        retire(cache, entry, how)
        left = namespace_keys(redis_server)
    finally:
        cache.close()
    assert set(old).isdisjoint(left)
    # Nothing lingers: the set of tombstones is the only key that expires.
    assert [name for name, ttl in left.items() if ttl >= 0 and name != GONE_SET] == []
    assert [name for name in left if b":reading:" in name or b":tmp:" in name] == []


@pytest.mark.parametrize("how", RETIREMENTS)
def test_a_body_being_read_lingers_until_its_reader_is_done(
    redis_url: str, redis_server: RedisServer, how: str
) -> None:
    cache = dfc.CacheRedis(redis_url, namespace=NAMESPACE, cache_size=1, linger_seconds=100)
    body = pattern(3 * MIB, seed=21)
    entry = make_entry(len(body))
    try:
        cache.put(entry, body)
        old = body_keys(redis_server, entry.key)
        _, stream = cache.get(entry.key)
        assert stream is not None
        with stream:
            assert stream.read(MIB) == body[:MIB]
            retire(cache, entry, how)
            during = namespace_keys(redis_server)
            assert stream.read() == body[MIB:]
        after = namespace_keys(redis_server)
    finally:
        cache.close()
    assert all(0 < during[name] <= 100_000 for name in old)
    assert [name for name in during if b":reading:" in name] != []
    assert set(old).isdisjoint(after)
    assert [name for name in after if b":reading:" in name] == []


def test_streams_racing_replacements_read_whole_versions_and_leave_nothing(
    redis_url: str, redis_server: RedisServer
) -> None:
    writer = dfc.CacheRedis(redis_url, namespace=NAMESPACE)
    # Small reads make each download long enough to see replacements under way.
    readers = [
        dfc.CacheRedis(redis_url, namespace=NAMESPACE, chunk_bytes=64 * KIB) for _ in range(3)
    ]
    size = 2 * MIB + 1
    versions = [pattern(size, seed=40 + n) for n in range(12)]
    digests = {hashlib.sha256(body).digest(): n for n, body in enumerate(versions)}
    entry = make_entry(size)
    seen: set[int] = set()
    read = threading.Condition()
    stop = threading.Event()
    failures: list[BaseException] = []

    def download(cache: dfc.CacheRedis) -> None:
        try:
            while not stop.is_set():
                version = digests[hashlib.sha256(read_all(cache, entry.key)).digest()]
                with read:
                    seen.add(version)
                    read.notify_all()
        except BaseException as exc:  # re-raised in the test thread below
            failures.append(exc)

    writer.put(entry, versions[0])
    threads = [threading.Thread(target=download, args=(cache,)) for cache in readers]
    for thread in threads:
        thread.start()
    try:
        for n, body in enumerate(versions):
            if n:
                writer.put(entry, body)
            with read:
                assert read.wait_for(lambda n=n: n in seen or bool(failures), timeout=30)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        for cache in readers:
            cache.close()
        writer.close()
    assert failures == []
    assert seen == set(range(len(versions)))
    left = namespace_keys(redis_server)
    # Every replaced body left with its last reader; the live one does not expire.
    live = [name for name in left if b":body:" in name]
    assert live and all(left[name] == -1 for name in live)
    assert len({name.rsplit(b":", 1)[0] for name in live}) == 1
    assert [name for name in left if b":reading:" in name or b":tmp:" in name] == []


def test_expiring_entry_becomes_gone(cache: dfc.CacheRedis, redis_server: RedisServer) -> None:
    expires = time.time() + 600
    entry = make_entry(3 * MIB, expires=expires)
    cache.put(entry, pattern(3 * MIB))
    entry_key = f"{NAMESPACE}:entry:{entry.key}"
    with redis_server.client() as client:
        names = list(client.scan_iter(match=f"{NAMESPACE}:*:{entry.key}*"))
        ttls: dict[bytes, list[float]] = {}
        for name in names:
            ttls.setdefault(name.split(b":")[1], []).append(client.pttl(name) / 1000)
        # The entry and the pieces of its body; its tombstone-to-be is in the set.
        assert sorted(ttls) == [b"body", b"entry"]
        assert len(ttls[b"entry"]) == 1
        assert all(abs(ttl - 600) < 30 for ttl in ttls[b"entry"] + ttls[b"body"])
        gone_at = client.zscore(GONE_SET, entry.key) / 1000
        assert abs(gone_at - expires - 24 * 3600) < 1
        assert abs(client.pttl(GONE_SET) / 1000 - (gone_at - time.time())) < 30
        client.pexpire(entry_key, 1)  # as if the ten minutes had passed
        deadline = time.monotonic() + 10
        while client.exists(entry_key) and time.monotonic() < deadline:
            time.sleep(0.01)
    with pytest.raises(dfc.EntryGone):
        cache.get(entry.key)
    assert cache.keys() == []


GONE_SET = f"{NAMESPACE}:gone".encode()


def test_gone_marks_are_members_of_one_capped_sorted_set(
    redis_url: str, redis_server: RedisServer
) -> None:
    cache = dfc.CacheRedis(redis_url, namespace=NAMESPACE, max_gone_marks=5)
    entries = [make_entry(1) for _ in range(8)]
    try:
        for entry in entries:
            cache.put(entry, b"x")
            assert cache.delete(entry.key)
        with redis_server.client() as client:
            members = client.zrange(GONE_SET, 0, -1, withscores=True)
            assert not list(client.scan_iter(match=f"{NAMESPACE}:mark:gone:*"))
            ttl = client.pttl(GONE_SET) / 1000
        # The five latest, each for a day; the set itself expires with the last one.
        assert [name.decode() for name, _ in members] == [e.key for e in entries[3:]]
        assert all(abs(at / 1000 - time.time() - 24 * 3600) < 30 for _, at in members)
        assert abs(ttl - 24 * 3600) < 30
        for entry in entries[:3]:
            with pytest.raises(dfc.EntryNotFound) as info:
                cache.get(entry.key)
            assert not isinstance(info.value, dfc.EntryGone)
        for entry in entries[3:]:
            with pytest.raises(dfc.EntryGone):
                cache.get(entry.key)
        # Registering an id again makes it live: its mark leaves the set.
        cache.put(entries[-1], b"y")
        assert read_all(cache, entries[-1].key) == b"y"
        with redis_server.client() as client:
            assert client.zscore(GONE_SET, entries[-1].key) is None
    finally:
        cache.close()


def test_gone_marks_keep_the_semantics_of_marks(
    cache: dfc.CacheRedis, redis_server: RedisServer
) -> None:
    name = "gone:" + new_key()
    assert cache.mark_get(name) is None
    assert cache.mark_add(name, "deleted", 0.2) is True
    assert cache.mark_add(name, "deleted", 0.2) is False
    assert cache.mark_get(name) is not None
    time.sleep(0.3)  # Redis' clock decides, as for the expiry of the other marks
    assert cache.mark_get(name) is None
    assert cache.mark_add(name, "deleted", 60) is True
    cache.mark_delete(name)
    assert cache.mark_get(name) is None
    cache.mark_delete(name)  # idempotent
    cache.mark_set(name, "evicted", 0.2)
    cache.mark_set(name, "evicted")  # no lifetime: for ever
    time.sleep(0.3)
    assert cache.mark_get(name) is not None
    with redis_server.client() as client:
        assert client.zscore(GONE_SET, name[5:]) == float("inf")
        assert client.pttl(GONE_SET) == -1
    cache.mark_set(name, "evicted", 0.2)  # a lifetime again: the set expires
    # Expired marks leave the set at the next write of one.
    other = "gone:" + new_key()
    time.sleep(0.3)
    cache.mark_set(other, "evicted", 60)
    with redis_server.client() as client:
        assert client.zrange(GONE_SET, 0, -1) == [other[5:].encode()]
        assert 0 < client.pttl(GONE_SET) <= 60_000
    # Keys chosen by code are encoded, as everywhere else.
    odd = "gone:a key/with * odd:chars"
    assert cache.mark_add(odd, "deleted", 60) is True
    assert cache.mark_get(odd) is not None
    assert cache.mark_get("gone:a key/with") is None


def test_only_one_process_adds_a_gone_mark(redis_url: str) -> None:
    caches = [dfc.CacheRedis(redis_url, namespace=NAMESPACE) for _ in range(8)]
    try:
        for _ in range(20):
            name = "gone:" + new_key()
            results: list[bool] = []
            start = threading.Barrier(len(caches))

            def add(cache: dfc.CacheRedis, name: str, start: Any, results: list[bool]) -> None:
                start.wait()
                results.append(cache.mark_add(name, "deleted", 60))

            threads = [
                threading.Thread(target=add, args=(cache, name, start, results)) for cache in caches
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=30)
            assert sorted(results) == [False] * (len(caches) - 1) + [True]
    finally:
        for cache in caches:
            cache.close()


def test_gone_marks_of_earlier_versions_are_honoured(
    cache: dfc.CacheRedis, redis_server: RedisServer
) -> None:
    entry = make_entry(1)
    legacy = f"{NAMESPACE}:mark:gone:{entry.key}"
    with redis_server.client() as client:
        client.set(legacy, b"deleted", ex=3600)
    with pytest.raises(dfc.EntryGone):
        cache.get(entry.key)
    assert cache.mark_add("gone:" + entry.key, "deleted", 60) is False
    cache.put(entry, b"x")  # registering the id again clears its mark
    assert read_all(cache, entry.key) == b"x"
    with redis_server.client() as client:
        assert not client.exists(legacy)
        client.set(legacy, b"deleted", ex=3600)
    cache.mark_set("gone:" + entry.key, "evicted", 60)  # moves into the set
    with redis_server.client() as client:
        assert not client.exists(legacy)
        assert client.zscore(GONE_SET, entry.key) is not None
        client.set(legacy, b"deleted", ex=3600)
    cache.mark_delete("gone:" + entry.key)
    assert cache.mark_get("gone:" + entry.key) is None
    with redis_server.client() as client:
        assert not client.exists(legacy)


def test_claims_expire_and_are_exclusive(cache: dfc.CacheRedis, redis_server: RedisServer) -> None:
    entry = make_entry(1, one_time=True)
    cache.put(entry, b"x")
    assert cache.claim(entry.key) is True
    elsewhere = dfc.CacheRedis(redis_server.url, namespace=NAMESPACE)
    assert elsewhere.claim(entry.key) is False
    elsewhere.close()
    with redis_server.client() as client:
        assert 0 < client.ttl(f"{NAMESPACE}:mark:claim:{entry.key}") <= 6 * 3600
    assert cache.claim(new_key()) is False
    with redis_server.client() as client:
        assert list(client.scan_iter(match=f"{NAMESPACE}:mark:claim:*")) == [
            f"{NAMESPACE}:mark:claim:{entry.key}".encode()
        ]


def test_keys_are_namespaced_and_no_other_text_reaches_a_redis_key(
    redis_url: str, redis_server: RedisServer
) -> None:
    mine = dfc.CacheRedis(redis_url, namespace=NAMESPACE)
    other = dfc.CacheRedis(redis_url, namespace=NAMESPACE + ":other")
    try:
        a, b = make_entry(1), make_entry(1)
        mine.put(a, b"a")
        other.put(b, b"b")
        with redis_server.client() as client:
            client.hset(f"{NAMESPACE}:entry:not-an-id", "entry", "{}")
            client.set(f"{NAMESPACE}:entry:*", b"")
            client.set(f"{NAMESPACE}:entry:.6 1", b"")
            client.set(f"{NAMESPACE}:tmp:{new_key()}:0:0", b"half")
        assert mine.keys() == [a.key]
        assert other.keys() == [b.key]
        with pytest.raises(dfc.EntryNotFound):
            mine.get(b.key)
        hostile = ["*", "not-an-id", "../" + a.key, a.key + "*", "a:b", "", ".61", "[x]?"]
        for key in hostile:
            with pytest.raises(dfc.EntryNotFound):
                mine.get(key)
            assert mine.delete(key) is False
            assert mine.claim(key) is False
        # Keys chosen by code (the 0.2.0 dump/load names) are stored, encoded.
        for n, key in enumerate(hostile):
            mine.put(make_entry(1, key=key), bytes([n]))
        assert sorted(mine.keys()) == sorted([a.key, *hostile])
        assert [read_all(mine, key) for key in hostile] == [bytes([n]) for n in range(8)]
        with redis_server.client() as client:
            client.delete(
                f"{NAMESPACE}:entry:not-an-id", f"{NAMESPACE}:entry:*", f"{NAMESPACE}:entry:.6 1"
            )
            names = [name.decode() for name in client.scan_iter(match=f"{NAMESPACE}:*")]
        allowed = set(string.ascii_letters + string.digits + "_-.:")
        assert all(set(name) <= allowed for name in names), names
    finally:
        mine.close()
        other.close()


# Round trips -------------------------------------------------------------------------


def counting_client(url: str, trips: list[int]) -> Any:
    """A redis-py client adding one to ``trips[0]`` per round trip to the server.

    redis-py sends a single command, and a whole pipeline or MULTI/EXEC block, with
    one ``send_packed_command`` each, then reads the replies.
    """
    import redis

    class CountingConnection(redis.connection.Connection):
        def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            trips[0] += 1
            super().send_packed_command(command, check_health)

    pool = redis.ConnectionPool.from_url(url, connection_class=CountingConnection)
    return redis.Redis(connection_pool=pool)


def commands_run(before: dict[str, int], after: dict[str, int]) -> int:
    """Commands Redis ran between two ``server_stats``, those of scripts included.

    ``INFO commandstats`` counts each command a script calls as well as the script.
    Those of the connections that ``server_stats`` opens to ask are left out.
    """
    skipped = {"info", "hello", "client|setinfo", "net_output_bytes"}
    return sum(after[name] - before.get(name, 0) for name in after if name not in skipped)


def test_a_small_register_and_get_cost_one_round_trip_each(tmp_path: Path) -> None:
    """Registering and serving a 10 KiB body: one round trip each, and a bounded
    number of commands in Redis; a one-time download costs a few more for its claim
    and consumption. Before, they took 8, 2 and 16 round trips."""
    body = pattern(10 * KIB, seed=31)
    trips = [0]
    with running_redis(tmp_path) as server:
        client = counting_client(server.url, trips)
        cache = dfc.CacheRedis(client, namespace=NAMESPACE)
        app = flask.Flask("round_trips")
        service = dfc.ServiceData(cache)
        service.serve(app)
        browser = app.test_client()
        try:
            # Connects, and loads the scripts into Redis.
            address = service.register(body, one_time_service=True)
            assert browser.get(address, buffered=True).data == body
            counted: dict[str, tuple[int, int]] = {}

            def count(name: str, action: Callable[[], Any]) -> Any:
                # Statistics are written at most once a second; not during a count.
                cache.flush_stats()
                before, start = server_stats(server), trips[0]
                result = action()
                counted[name] = (trips[0] - start, commands_run(before, server_stats(server)))
                return result

            for one_time in (False, True):
                kind = "one-time" if one_time else "plain"
                address = count(
                    f"register {kind}",
                    lambda one_time=one_time: service.register(body, one_time_service=one_time),
                )
                answer = count(
                    f"GET {kind}", lambda address=address: browser.get(address, buffered=True)
                )
                assert answer.status_code == 200 and answer.data == body
            assert browser.get(address).status_code == 410
        finally:
            client.close()
    limits = {
        "register plain": (1, 15),
        "GET plain": (1, 5),
        "register one-time": (1, 15),
        "GET one-time": (9, 38),
    }
    for name, (most_trips, most_commands) in limits.items():
        assert counted[name][0] <= most_trips, (name, counted[name])
        assert counted[name][1] <= most_commands, (name, counted[name])


def test_the_scripts_count_the_pieces_of_a_body_as_python_cuts_them(
    redis_server: RedisServer,
) -> None:
    """The scripts that read, replace and delete entries find the pieces of a body
    from its length, segment and layout, as :func:`_layout` cuts them."""
    script = (
        _BODY_LUA
        + """
local counts = {}
for i = 1, #ARGV, 3 do
  local layout = ARGV[i + 2] ~= '' and ARGV[i + 2]
  counts[#counts + 1] = piece_count(tonumber(ARGV[i]), tonumber(ARGV[i + 1]), layout)
end
return counts
"""
    )
    rng = random.Random(32)
    cases: list[tuple[int, int, str]] = []
    for segment in (MIB - 64, 64 * KIB - 64, 3 * MIB - 64, 4095, 1000):
        lengths = [rng.randrange(1, 5 * segment) for _ in range(300)]
        lengths += [rng.randrange(1, min(segment, 40 * KIB)) for _ in range(300)]
        lengths += [segment - 1, segment, segment + 1, 3 * segment + 2047, 2 * segment + 1984]
        cases += [(n, segment, layout) for n in lengths for layout in ("classes", "")]
    with redis_server.client() as client:
        for start in range(0, len(cases), 500):
            batch = cases[start : start + 500]
            counts = client.eval(script, 0, *itertools.chain.from_iterable(batch))
            expected = [len(_sizes(n, segment, layout or None)) for n, segment, layout in batch]
            assert counts == expected


# Configuration, pickling, processes ----------------------------------------------------


def test_constructor_checks_its_arguments(redis_url: str) -> None:
    import redis

    with pytest.raises(ValueError, match="namespace"):
        dfc.CacheRedis(redis_url, namespace="a*b")
    with pytest.raises(ValueError, match="namespace"):
        dfc.CacheRedis(redis_url, namespace="")
    with pytest.raises(ValueError, match="chunk_bytes"):
        dfc.CacheRedis(redis_url, chunk_bytes=0)
    with pytest.raises(ValueError, match="linger_seconds"):
        dfc.CacheRedis(redis_url, linger_seconds=True)
    with pytest.raises(ValueError, match="max_gone_marks"):
        dfc.CacheRedis(redis_url, max_gone_marks=0)
    with pytest.raises(TypeError, match="client_or_url"):
        dfc.CacheRedis(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        dfc.CacheRedis("http://127.0.0.1:1/")
    decoding = redis.Redis.from_url(redis_url, decode_responses=True)
    with decoding, pytest.raises(ValueError, match="decode_responses"):
        dfc.CacheRedis(decoding)


def test_without_redis_py_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(ImportError, match=r"dash-file-cache\[redis\]"):
        dfc.CacheRedis()


def test_importing_the_package_does_not_import_redis() -> None:
    code = "import sys, dash_file_cache; sys.exit('redis' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_repr_shows_no_password_and_the_state_holds_only_settings() -> None:
    cache = dfc.CacheRedis("redis://user:s3cret@127.0.0.1:1/2", namespace="ns")
    assert "s3cret" not in repr(cache)
    assert "127.0.0.1:1/2" in repr(cache)
    state = cache.__getstate__()
    assert state["url"] == "redis://user:s3cret@127.0.0.1:1/2"
    assert state["max_gone_marks"] == 100_000
    copy = pickle.loads(pickle.dumps(dfc.CacheRedis("redis://127.0.0.1:1/2", max_gone_marks=7)))
    assert copy.__getstate__()["max_gone_marks"] == 7
    assert not any(hasattr(value, "connection_pool") for value in state.values())
    cache.close()


def test_unpickled_caches_reconnect_from_their_settings(redis_url: str) -> None:
    import redis

    body = pattern(3 * MIB, seed=10)
    with redis.Redis.from_url(redis_url, socket_timeout=7) as client:
        given = dfc.CacheRedis(client, namespace=NAMESPACE)
        entry = make_entry(len(body))
        given.put(entry, body)
        for original in (given, dfc.CacheRedis(redis_url, namespace=NAMESPACE, chunk_bytes=5000)):
            copy = pickle.loads(pickle.dumps(original))
            try:
                assert read_all(copy, entry.key) == body
                assert copy.chunk_bytes == original.chunk_bytes
                assert copy.namespace == NAMESPACE
                assert copy.client is not client
            finally:
                copy.close()
                original.close()
        copy = pickle.loads(pickle.dumps(given))
        assert copy.client.connection_pool.connection_kwargs["socket_timeout"] == 7
        copy.close()


def _register_in_child(cache: dfc.CacheRedis, size: int, conn: Any) -> None:
    service = dfc.ServiceData(cache)
    conn.send([service.register(pattern(size, seed=11)), service.register(b"small")])
    conn.close()


@pytest.mark.filterwarnings(
    # Python 3.12+ warns about fork in a process with threads; this test forks on purpose.
    "ignore:This process .* is multi-threaded:DeprecationWarning"
)
@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_a_child_process_registers_and_the_parent_serves(
    cache: dfc.CacheRedis, method: str
) -> None:
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {method} start method here")
    app = flask.Flask("parent")
    service = dfc.ServiceData(cache)
    service.serve(app)
    client = app.test_client()
    # The parent holds pooled connections before the child starts.
    assert client.get(service.register(b"before"), buffered=True).data == b"before"
    context = multiprocessing.get_context(method)
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_register_in_child, args=(cache, 3 * MIB, sender))
    try:
        child.start()
        sender.close()
        assert receiver.poll(60), "the child did not answer"
        big, small = receiver.recv()
    finally:
        receiver.close()
        child.join(timeout=60)
        if child.is_alive():
            child.kill()
            child.join(timeout=10)
    assert child.exitcode == 0
    resp = client.get(big, buffered=True)
    assert resp.status_code == 200
    assert resp.data == pattern(3 * MIB, seed=11)
    assert client.get(small, buffered=True).data == b"small"
    # The child's exit did not disturb the parent's connections.
    assert client.get(service.register(b"after"), buffered=True).data == b"after"


# Outages -----------------------------------------------------------------------------


def test_redis_down_answers_503_and_recovery_needs_no_restart(tmp_path: Path) -> None:
    with running_redis(tmp_path, "--appendonly", "yes", "--appendfsync", "always") as server:
        cache = dfc.CacheRedis(server.url, namespace=NAMESPACE)
        app = flask.Flask("outage")
        service = dfc.ServiceData(cache)
        service.serve(app)
        client = app.test_client()
        try:
            kept_small = service.register(b"kept")
            kept_large = service.register(pattern(3 * MIB, seed=12))
            assert client.get(kept_small, buffered=True).status_code == 200
            _, open_stream = cache.get(kept_large.split("uid=")[1])
            assert open_stream is not None

            server.stop()
            started = time.monotonic()
            with pytest.raises(ConnectionError) as info:
                service.register(b"while down")
            assert isinstance(info.value, dfc.BackendUnavailable)
            assert "cannot be reached" in str(info.value)
            assert time.monotonic() - started < 10
            for address in (kept_small, kept_large):
                resp = client.get(address, buffered=True)
                assert resp.status_code == 503
                assert resp.headers["Cache-Control"] == "no-store"
            with open_stream, pytest.raises(OSError):
                open_stream.read(MIB)
            with pytest.raises(dfc.BackendUnavailable):
                cache.keys()
            with pytest.raises(dfc.BackendUnavailable):
                cache.claim(new_key())

            server.start()  # same port, same directory: Redis reloads its append-only file
            resp = client.get(kept_large, buffered=True)
            assert resp.status_code == 200
            assert resp.data == pattern(3 * MIB, seed=12)
            assert client.get(kept_small, buffered=True).data == b"kept"
            fresh = service.register(b"after the outage")
            assert client.get(fresh, buffered=True).data == b"after the outage"
        finally:
            cache.close()


def test_a_full_redis_refuses_registration_with_a_connection_error(tmp_path: Path) -> None:
    options = ("--maxmemory", "4mb", "--maxmemory-policy", "noeviction")
    with running_redis(tmp_path, *options) as server:
        cache = dfc.CacheRedis(server.url, namespace=NAMESPACE)
        app = flask.Flask("full")
        service = dfc.ServiceData(cache)
        service.serve(app)
        try:
            kept = service.register(b"small enough")
            with pytest.raises(ConnectionError, match="refuses the command"):
                service.register(pattern(8 * MIB))
            with server.client() as client:  # the partial body was cleaned up
                assert list(client.scan_iter(match=f"{NAMESPACE}:tmp:*")) == []
            assert app.test_client().get(kept, buffered=True).data == b"small enough"
        finally:
            cache.close()


def test_a_connection_broken_under_the_pool_does_not_poison_the_next_call(
    cache: dfc.CacheRedis, redis_server: RedisServer
) -> None:
    entry = make_entry(4)
    cache.put(entry, b"data")
    with redis_server.client() as admin:
        admin.client_kill_filter(_type="normal", skipme=True)
    assert read_all(cache, entry.key) == b"data"


# Memory ------------------------------------------------------------------------------


# Lengths whose last bytes fall anywhere in a size class: before their rest was cut,
# Redis took up to a quarter more than the length for them.
MEMORY_LENGTHS = [1, 100, 5_000, 70_000, 700_000, 1_048_577, 1_900_000, 3_500_000]
# What a piece may take beyond its bytes: its key (name of about 65 bytes here, object
# and table entry: 120 bytes), and the slack of its string (64 bytes of headroom, or
# for a last piece under 2 KiB, the header and the rounding up to a class at most
# 256 bytes away).
PIECE_ALLOWANCE = 384


def body_memory(server: RedisServer, key: str) -> int:
    """``MEMORY USAGE`` summed over the body keys of entry ``key``."""
    with server.client() as client:
        names = list(client.scan_iter(match=f"{NAMESPACE}:body:{key}:*"))
        return sum(int(client.memory_usage(name, samples=0)) for name in names)


class Overreading(io.BytesIO):
    """A stream that returns at least 300,000 bytes a read, whatever it is asked for."""

    def read(self, size: int | None = -1) -> bytes:
        return super().read(-1 if size is None or size < 0 else max(size, 300_000))


@pytest.mark.parametrize("size", MEMORY_LENGTHS)
@pytest.mark.parametrize("kind", ["bytes", "stream", "short reads", "long reads"])
def test_a_body_takes_little_more_memory_in_redis_than_its_length(
    cache: dfc.CacheRedis, redis_server: RedisServer, size: int, kind: str
) -> None:
    entry = make_entry(size)
    sources: dict[str, Any] = {
        "bytes": lambda: pattern(size, seed=22),
        "stream": lambda: PatternStream(size, seed=22),
        "short reads": lambda: PatternStream(size, seed=22, most=100_000),
        "long reads": lambda: Overreading(pattern(size, seed=22)),
    }
    cache.put(entry, sources[kind]())
    assert read_all(cache, entry.key) == pattern(size, seed=22)
    # The same pieces whatever the producer's reads: full segments, then the rest.
    pieces = piece_lengths(redis_server, entry.key)
    assert pieces == _layout(size, cache.chunk_bytes - 64)
    assert max(pieces) <= cache.chunk_bytes
    assert body_memory(redis_server, entry.key) <= size * 1.02 + PIECE_ALLOWANCE * len(pieces)


def test_the_rest_of_a_body_is_cut_to_fill_size_classes() -> None:
    def size_class(size: int) -> bool:
        step = 1 << (size.bit_length() - 3)
        return size % step == 0

    def nearly_fills_its_class(size: int) -> bool:
        return any(size_class(size + slack) for slack in range(128))

    rng = random.Random(23)
    lengths = [
        *range(0, 5000, 7),
        *MEMORY_LENGTHS,
        *(rng.randrange(1, 1 << 26) for _ in range(2000)),
    ]
    for segment in (MIB - 64, 64 * KIB - 64, 999_936, 4000, 100):
        for length in lengths:
            pieces = _layout(length, segment)
            assert pieces == _layout(length, segment)  # pure: readers recompute it
            full, rest = divmod(length, segment)
            assert sum(pieces) == length and 0 not in pieces
            assert pieces[:full] == [segment] * full
            tail = pieces[full:]
            assert sum(tail) == rest and all(piece < segment for piece in tail)
            # Decreasing classes, each filled with its headroom; a last piece under 2 KiB
            # or nearly filling its own class.
            assert all(size_class(piece + 64) for piece in tail[:-1])
            assert tail == sorted(tail, reverse=True)
            assert not tail or tail[-1] + 64 < 2048 or nearly_fills_its_class(tail[-1] + 64)
            assert len(tail) <= 6


def store_in_fixed_layout(server: RedisServer, key: str, body: bytes) -> None:
    """Rewrite entry ``key`` as earlier versions stored it: full segments and one last
    piece, and no ``layout`` field in its hash."""
    entry_key = f"{NAMESPACE}:entry:{key}"
    with server.client() as client:
        version, segment = client.hmget(entry_key, ["body", "segment"])
        client.delete(*client.scan_iter(match=f"{NAMESPACE}:body:{key}:*"))
        size = int(segment)
        for n, start in enumerate(range(0, len(body), size)):
            name = f"{NAMESPACE}:body:{key}:{version.decode()}:{n}"
            client.set(name, body[start : start + size])
        client.hdel(entry_key, "layout")


@pytest.mark.parametrize("size", [70_000, 700_000])
def test_the_fixed_layout_took_up_to_a_quarter_more(
    cache: dfc.CacheRedis, redis_server: RedisServer, size: int
) -> None:
    body = pattern(size, seed=25)
    entry = make_entry(size)
    cache.put(entry, body)
    cut = body_memory(redis_server, entry.key)
    store_in_fixed_layout(redis_server, entry.key, body)
    fixed = body_memory(redis_server, entry.key)
    # One string of 70,000 or 700,000 bytes rounds up to 80 or 768 KiB.
    assert fixed > 1.1 * size
    assert cut < 1.01 * size
    assert read_all(cache, entry.key) == body


def boundaries(pieces: list[int]) -> list[int]:
    """Every offset next to where a piece starts or ends."""
    starts = [0, *itertools.accumulate(pieces)]
    return sorted({at + d for at in starts for d in (-1, 0, 1) if 0 <= at + d <= starts[-1]})


@pytest.mark.parametrize("layout", ["cut", "fixed"])
def test_every_range_across_piece_boundaries_reads_exact_bytes(
    redis_url: str, redis_server: RedisServer, layout: str
) -> None:
    cache = dfc.CacheRedis(redis_url, namespace=NAMESPACE, chunk_bytes=64 * KIB)
    segment = 64 * KIB - 64
    # Two full segments and a rest of three pieces; random bytes, so that no shifted
    # range can match by chance.
    body = random.Random(24).randbytes(2 * segment + 63_000)
    entry = make_entry(len(body))
    try:
        cache.put(entry, body)
        if layout == "fixed":
            store_in_fixed_layout(redis_server, entry.key, body)
        pieces = piece_lengths(redis_server, entry.key)
        expected = _layout(len(body), segment) if layout == "cut" else [segment, segment, 63_000]
        assert pieces == expected
        assert len(pieces) == (5 if layout == "cut" else 3)
        points = boundaries(pieces)
        _, stream = cache.get(entry.key)
        assert stream is not None
        with stream:
            for start in points:
                for end in points:
                    if end < start:
                        continue
                    assert stream.seek(start) == start
                    assert stream.read(end - start) == body[start:end], (start, end)
                    assert stream.tell() == end
                stream.seek(start)
                assert stream.read() == body[start:]
            stream.seek(-10, io.SEEK_END)
            assert stream.read(100) == body[-10:]
        assert read_all(cache, entry.key) == body
        # Replacing and deleting remove every piece of either layout.
        cache.put(entry, body[:70_000])
        assert piece_lengths(redis_server, entry.key) == _layout(70_000, segment)
        store_in_fixed_layout(redis_server, entry.key, body[:70_000])
        assert read_all(cache, entry.key) == body[:70_000]
        assert cache.delete(entry.key)
        assert [name for name in namespace_keys(redis_server) if b":body:" in name] == []
    finally:
        cache.close()


@pytest.mark.parametrize("size", [5_000, 70_000, 1_900_000])
def test_entries_stored_in_the_fixed_layout_are_read_and_retired(
    cache: dfc.CacheRedis, redis_server: RedisServer, size: int
) -> None:
    body = random.Random(size).randbytes(size)
    entry = make_entry(size)
    cache.put(entry, body)
    store_in_fixed_layout(redis_server, entry.key, body)
    assert len(piece_lengths(redis_server, entry.key)) == math.ceil(size / (MIB - 64))
    assert read_all(cache, entry.key) == body
    _, stream = cache.get(entry.key)
    assert stream is not None
    with stream:
        stream.seek(size // 3)
        assert stream.read(size // 2) == body[size // 3 : size // 3 + size // 2]
    cache.put(entry, body[::-1])  # replaced: the fixed-layout pieces go
    assert read_all(cache, entry.key) == body[::-1]
    assert piece_lengths(redis_server, entry.key) == _layout(size, MIB - 64)
    store_in_fixed_layout(redis_server, entry.key, body)
    assert cache.delete(entry.key)
    assert [name for name in namespace_keys(redis_server) if b":body:" in name] == []


def test_streaming_256_mb_keeps_the_serving_process_flat(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    size = 256 * MIB
    writer = dfc.CacheRedis(redis_url, namespace=NAMESPACE)
    env = {"DFC_BACKEND": "redis", "DFC_REDIS_URL": redis_url, "DFC_REDIS_NAMESPACE": NAMESPACE}
    try:
        entry = make_entry(size)
        writer.put(entry, PatternStream(size, seed=13))
        small = make_entry(MIB + 1)
        writer.put(small, pattern(MIB + 1))
        with gunicorn("live_app:app", "--workers", "1", "--timeout", "120", env=env) as base:
            worker = psutil.Process(int(requests.get(base + "/health", timeout=10).text))
            # Warm up: connections, imports and buffers a first download needs anyway.
            warm = requests.get(f"{base}/cached-data?uid={small.key}", timeout=30)
            assert warm.content == pattern(MIB + 1)
            baseline = peak = worker.memory_info().rss
            expected = PatternStream(size, seed=13)
            received = 0
            with requests.get(f"{base}/cached-data?uid={entry.key}", stream=True, timeout=60) as r:
                assert r.status_code == 200
                assert r.headers["Content-Length"] == str(size)
                for n, chunk in enumerate(r.iter_content(MIB)):
                    assert chunk == expected.read(len(chunk))
                    received += len(chunk)
                    if n % 4 == 0:
                        peak = max(peak, worker.memory_info().rss)
            peak = max(peak, worker.memory_info().rss)
    finally:
        writer.close()
    growth = (peak - baseline) / MIB
    with capsys.disabled():
        print(f"\nRSS growth of the worker streaming 256 MiB from Redis: {growth:.1f} MiB")
    assert received == size
    assert growth < 64
