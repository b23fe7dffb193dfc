"""Entry lifetime and capacity, the management API, names, sessions, memoize, lazy bodies."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import flask
import pytest
from backends import backend_name, bounded  # noqa: F401 - fixtures

import dash_file_cache as dfc


class FakeClock:
    """A clock that moves only when told to; starts at the real time."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


Bounded = Callable[..., dfc.CacheAbstract]


class App:
    def __init__(self, cache: dfc.CacheAbstract) -> None:
        self.app = flask.Flask("lifetime")
        self.service = dfc.ServiceData(cache)
        self.service.serve(self.app)
        self.client = self.app.test_client()

    def get(self, address: str, **kwargs: Any) -> Any:
        kwargs.setdefault("buffered", True)
        return self.client.get(address, **kwargs)


def uid_of(address: str) -> str:
    return address.split("uid=")[1].split("&")[0]


# TTL with a fake clock ----------------------------------------------------------------


def test_default_ttl_expires_entries(bounded: Bounded) -> None:
    clock = FakeClock()
    served = App(bounded(clock=clock, ttl=60))
    address = served.service.register(b"short-lived")
    clock.advance(59)
    assert served.get(address).status_code == 200
    clock.advance(2)
    assert served.get(address).status_code == 410


def test_register_ttl_overrides_the_default(bounded: Bounded) -> None:
    clock = FakeClock()
    cache = bounded(clock=clock, ttl=3600)
    served = App(cache)
    short = served.service.register(b"short", ttl=10)
    long = served.service.register(b"long")
    entry = cache.info(uid_of(short))
    assert entry.expires is not None
    clock.advance(11)
    assert served.get(short).status_code == 410
    assert served.get(long).status_code == 200


def test_no_ttl_means_entries_do_not_expire(bounded: Bounded) -> None:
    clock = FakeClock()
    served = App(bounded(clock=clock))
    address = served.service.register(b"forever")
    clock.advance(10 * 365 * 86400)
    assert served.get(address).status_code == 200


@pytest.mark.parametrize("ttl", [0, -1])
def test_ttl_must_be_positive(bounded: Bounded, ttl: float) -> None:
    served = App(bounded())
    with pytest.raises(ValueError, match="ttl"):
        served.service.register(b"x", ttl=ttl)


# Count and byte bounds ---------------------------------------------------------------------


def test_count_bound_evicts_least_recently_used(bounded: Bounded) -> None:
    served = App(bounded(cache_size=3))
    a, b, c = (served.service.register(x) for x in (b"a", b"b", b"c"))
    assert served.get(a).status_code == 200  # a is now the most recently used
    d = served.service.register(b"d")
    assert [served.get(x).status_code for x in (a, b, c, d)] == [200, 410, 200, 200]


def test_listing_entries_is_not_a_use(bounded: Bounded) -> None:
    served = App(bounded(cache_size=2))
    a, b = (served.service.register(x) for x in (b"a", b"b"))
    assert served.get(a).status_code == 200  # b is now the least recently used
    assert len(served.service.entries()) == 2  # looks at both, uses neither
    served.service.register(b"c")
    assert [served.get(x).status_code for x in (a, b)] == [200, 410]


def test_byte_bound_evicts_least_recently_used(bounded: Bounded) -> None:
    limit = 4 << 20
    served = App(bounded(max_bytes=limit))
    block = 1 << 20
    first = served.service.register(b"1" * block)
    second = served.service.register(b"2" * block)
    third = served.service.register(b"3" * block)
    assert served.get(first).status_code == 200  # first becomes the most recent
    fourth = served.service.register(b"4" * block)
    fifth = served.service.register(b"5" * block)
    statuses = [served.get(x).status_code for x in (first, second, third, fourth, fifth)]
    assert statuses[1] in (404, 410), statuses
    assert statuses[4] == 200
    assert statuses[0] == 200
    assert served.service.stats()["bytes"] <= limit


def test_entry_larger_than_max_bytes_is_refused(bounded: Bounded) -> None:
    served = App(bounded(max_bytes=1 << 20))
    with pytest.raises(ValueError, match="max_bytes"):
        served.service.register(b"x" * ((1 << 20) + 1))


def test_paths_count_their_size_but_stay_on_disk(bounded: Bounded, tmp_path: Path) -> None:
    served = App(bounded(max_bytes=3 << 20))
    paths = []
    for i in range(5):
        path = tmp_path / f"in-place-{i}.bin"
        path.write_bytes(bytes([i]) * (1 << 20))
        paths.append(path)
    addresses = [served.service.register(p) for p in paths]
    assert served.service.stats()["bytes"] <= 3 << 20
    assert served.get(addresses[0]).status_code in (404, 410)
    assert all(p.exists() for p in paths)
    assert served.get(addresses[-1]).data == bytes([4]) * (1 << 20)


def test_eviction_during_a_download_keeps_its_bytes(bounded: Bounded) -> None:
    served = App(bounded(cache_size=2))
    body = bytes(range(256)) * 16384  # 4 MiB: several chunks
    address = served.service.register(body)
    resp = served.client.get(address, buffered=False)
    chunks = iter(resp.response)
    first = next(chunks)
    done = threading.Event()

    def churn() -> None:
        for i in range(20):
            served.service.register(f"filler-{i}".encode())
        done.set()

    thread = threading.Thread(target=churn)
    thread.start()
    thread.join(timeout=60)
    assert done.is_set()
    rest = b"".join(chunks)
    resp.close()
    assert first + rest == body
    assert served.get(address).status_code in (404, 410)


# Management API ----------------------------------------------------------------------------


def test_info_reports_metadata_and_hits(bounded: Bounded) -> None:
    served = App(bounded(ttl=100))
    address = served.service.register(b"abc", file_name="a.csv", key="report-1")
    for _ in range(3):
        served.get(address)
    info = served.service.info(uid_of(address))
    assert info["id"] == uid_of(address)
    assert info["name"] == "report-1"
    assert info["size"] == 3
    assert info["mime_type"] == "text/csv"
    assert info["file_name"] == "a.csv"
    assert info["hits"] == 3
    assert info["expires"] is not None
    assert info["expires"] > info["created"]


def test_entries_lists_and_filters_by_name_prefix(bounded: Bounded) -> None:
    served = App(bounded())
    served.service.register(b"1", key="report-2024")
    served.service.register(b"2", key="report-2025")
    served.service.register(b"3", key="figure-1")
    served.service.register(b"4")
    assert len(served.service.entries()) == 4
    names = sorted(e["name"] for e in served.service.entries(prefix="report-"))
    assert names == ["report-2024", "report-2025"]


def test_delete_and_clear(bounded: Bounded) -> None:
    served = App(bounded())
    first = served.service.register(b"1")
    served.service.register(b"2")
    assert served.service.delete(uid_of(first)) is True
    assert served.get(first).status_code == 410
    assert served.service.delete(uid_of(first)) is False
    assert served.service.clear() == 1
    assert served.service.entries() == []


def test_stats_count_what_happened(bounded: Bounded) -> None:
    clock = FakeClock()
    served = App(bounded(clock=clock, cache_size=2))
    a = served.service.register(b"aaaa")
    served.get(a)
    served.get(a, headers={"Range": "bytes=0-1"})
    served.get("/cached-data?uid=" + "Z" * 32)
    once = served.service.register(b"once", one_time_service=True)
    served.get(once)
    served.service.register(b"x")
    served.service.register(b"y")
    stats = served.service.stats()
    assert stats["hits"] == 3
    assert stats["misses"] == 1
    assert stats["bytes_served"] == 4 + 2 + 4
    assert stats["consumed"] == 1
    assert stats["stored"] == 4
    assert stats["entries"] == 2
    if backend_name != "file":  # diskcache evicts by its own order; counted the same way
        assert stats["evicted_count"] == 1


# Named entries ---------------------------------------------------------------------------


def test_named_entry_keeps_its_address_and_replaces_its_body(bounded: Bounded) -> None:
    served = App(bounded())
    first = served.service.register(b"version 1", key="report")
    etag = served.get(first).headers["ETag"]
    second = served.service.register(b"version 2!", key="report")
    assert first == second
    resp = served.get(second, headers={"If-None-Match": etag})
    assert resp.status_code == 200
    assert resp.data == b"version 2!"
    assert len(served.service.entries(prefix="report")) == 1


def test_names_with_control_characters_are_refused(bounded: Bounded) -> None:
    served = App(bounded())
    with pytest.raises(ValueError, match="control character"):
        served.service.register(b"x", key="a\nb")
    with pytest.raises(ValueError, match="key"):
        served.service.register(b"x", key="")


# Session scope ---------------------------------------------------------------------------


def _session_app(cache: dfc.CacheAbstract) -> tuple[flask.Flask, dfc.ServiceData]:
    app = flask.Flask("sessions")
    service = dfc.ServiceData(cache)
    service.serve(app)

    @app.get("/")
    def page() -> flask.Response:
        return flask.Response("<html>app</html>", mimetype="text/html")

    @app.post("/make")
    def make() -> str:
        return service.register(b"private to one browser", scope="session")

    return app, service


def test_session_entry_is_served_only_to_its_browser(bounded: Bounded) -> None:
    app, _ = _session_app(bounded())
    alice, bob = app.test_client(), app.test_client()
    alice.get("/")
    bob.get("/")
    address = alice.post("/make").get_data(as_text=True)
    assert alice.get(address, buffered=True).data == b"private to one browser"
    assert bob.get(address, buffered=True).status_code == 404
    assert app.test_client().get(address, buffered=True).status_code == 404


def test_session_cookie_is_made_when_missing(bounded: Bounded) -> None:
    app, _ = _session_app(bounded())
    client = app.test_client()
    made = client.post("/make")
    cookie = made.headers["Set-Cookie"]
    assert cookie.startswith("dash_file_cache_session=")
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert client.get(made.get_data(as_text=True), buffered=True).status_code == 200


def test_pages_get_a_session_cookie_other_answers_do_not(tmp_path: Path) -> None:
    app, service = _session_app(dfc.CachePlain(4))
    client = app.test_client()
    plain = client.get(service.register(b"x"), buffered=True)
    assert "Set-Cookie" not in plain.headers
    page = client.get("/")
    assert page.headers["Set-Cookie"].startswith("dash_file_cache_session=")
    assert "Set-Cookie" not in client.get("/").headers


def test_session_scope_needs_a_browser() -> None:
    service = dfc.ServiceData(dfc.CachePlain(4))
    with pytest.raises(RuntimeError, match="session"):
        service.register(b"x", scope="session")
    with pytest.raises(ValueError, match="scope"):
        service.register(b"x", scope="user")


# Memoize -----------------------------------------------------------------------------------


def test_memoize_returns_the_same_address_without_calling_again(bounded: Bounded) -> None:
    served = App(bounded())
    calls: list[tuple[Any, ...]] = []

    @served.service.memoize(mime_type="text/csv")
    def export(table: str, rows: int = 10, *, sep: str = ",") -> bytes:
        calls.append((table, rows, sep))
        return f"{table}{sep}{rows}".encode()

    first = export("sales", rows=5, sep=";")
    assert export("sales", sep=";", rows=5) == first
    assert export("sales", 5, sep=";") != first  # positional and keyword are distinct calls
    assert export("costs", rows=5, sep=";") != first
    assert len(calls) == 3
    resp = served.get(first)
    assert resp.data == b"sales;5"
    assert resp.headers["Content-Type"] == "text/csv"


def test_memoize_calls_once_under_eight_threads(bounded: Bounded) -> None:
    served = App(bounded())
    calls = []
    barrier = threading.Barrier(8)

    @served.service.memoize()
    def slow(n: int) -> bytes:
        calls.append(n)
        time.sleep(0.2)  # a slow producer, so that the callers overlap
        return str(n).encode()

    addresses: list[str] = []

    def call() -> None:
        barrier.wait(timeout=10)
        addresses.append(slow(7))

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert calls == [7]
    assert len(set(addresses)) == 1
    assert len(addresses) == 8


def test_memoize_version_and_code_changes_invalidate(bounded: Bounded) -> None:
    served = App(bounded())

    def make(version: str, body: bytes) -> Callable[[], str]:
        @served.service.memoize(version=version)
        def figure() -> bytes:
            return body

        return figure

    first = make("1", b"one")()
    assert make("1", b"one")() == first
    second = make("2", b"two")()
    assert second != first
    assert served.get(second).data == b"two"
    assert served.get(first).status_code == 410  # the old version was forgotten


def test_memoize_max_entries_keeps_the_most_recent(bounded: Bounded) -> None:
    served = App(bounded())

    @served.service.memoize(max_entries=2)
    def square(n: int) -> bytes:
        return str(n * n).encode()

    addresses = [square(n) for n in range(4)]
    statuses = [served.get(a).status_code for a in addresses]
    assert statuses == [410, 410, 200, 200]


def test_memoize_ttl(bounded: Bounded) -> None:
    clock = FakeClock()
    served = App(bounded(clock=clock))
    calls = []

    @served.service.memoize(ttl=30)
    def figure() -> bytes:
        calls.append(1)
        return b"fig"

    first = figure()
    clock.advance(31)
    second = figure()
    assert len(calls) == 2
    assert served.get(second).status_code == 200
    # The expired result is gone; the new one lives under a new address.
    assert first != second
    assert served.get(first).status_code == 410


def test_memoize_refuses_unhashable_arguments(bounded: Bounded) -> None:
    served = App(bounded())

    @served.service.memoize()
    def f(arg: Any) -> bytes:
        return b"x"

    with pytest.raises(TypeError, match="cannot memoize"):
        f(threading.Lock())


def test_memoize_runs_once_across_four_processes(tmp_path: Path) -> None:
    cache_dir = tmp_path / "shared"
    calls = tmp_path / "calls.log"
    script = textwrap.dedent(
        f"""
        import sys, time
        import dash_file_cache as dfc
        service = dfc.ServiceData(dfc.CacheFile({str(cache_dir)!r}))

        @service.memoize()
        def export(n):
            with open({str(calls)!r}, "a") as log:
                log.write("call\\n")
            time.sleep(1.0)
            return str(n).encode()

        start = float(sys.argv[1])
        while time.time() < start:
            time.sleep(0.005)
        print(export(42))
        """
    )
    start = time.time() + 3
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(start)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        outputs.append(out.strip())
    assert calls.read_text().count("call") == 1
    assert len(set(outputs)) == 1


# Lazy producers -----------------------------------------------------------------------------


def test_generator_runs_at_first_fetch_and_is_cached(bounded: Bounded) -> None:
    served = App(bounded())
    ran = []

    def pieces() -> Iterator[bytes]:
        ran.append(1)
        for i in range(5):
            yield f"row {i}\n".encode()

    address = served.service.register(pieces(), mime_type="text/plain")
    assert ran == []
    first = served.get(address)
    assert first.status_code == 200
    assert first.data == b"".join(f"row {i}\n".encode() for i in range(5))
    assert ran == [1]
    second = served.get(address, headers={"Range": "bytes=0-4"})
    assert second.status_code == 206
    assert second.data == b"row 0"
    assert served.service.info(uid_of(address))["size"] == len(first.data)


def test_callable_producer(bounded: Bounded) -> None:
    served = App(bounded())
    address = served.service.register(lambda: [b"a", b"b", "c"])
    assert served.get(address).data == b"abc"
    assert served.get(address).data == b"abc"


def test_abandoned_first_fetch_still_stores_the_body(bounded: Bounded) -> None:
    served = App(bounded())
    finished = threading.Event()

    def pieces() -> Iterator[bytes]:
        for i in range(50):
            yield bytes([i]) * 10000
        finished.set()

    address = served.service.register(pieces())
    resp = served.client.get(address, buffered=False)
    next(iter(resp.response))
    resp.close()
    assert finished.wait(timeout=30)
    deadline = time.monotonic() + 30
    while served.service.info(uid_of(address))["kind"] == "lazy":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert served.get(address).data == b"".join(bytes([i]) * 10000 for i in range(50))


def test_failing_producer_leaves_a_gone_address(bounded: Bounded) -> None:
    served = App(bounded())

    def pieces() -> Iterator[bytes]:
        yield b"start"
        raise RuntimeError("the export broke")

    address = served.service.register(pieces())
    with pytest.raises(RuntimeError, match="export broke"):
        served.get(address)
    assert served.get(address).status_code == 410


# Disk usage ------------------------------------------------------------------------------


def _disk_usage(path: Path) -> int:
    out = subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0]) * 1024


def test_expired_bodies_are_removed_from_disk(tmp_path: Path) -> None:
    clock = FakeClock()
    cache_dir = tmp_path / "du"
    served = App(dfc.CacheFile(cache_dir, ttl=60, clock=clock))
    empty = _disk_usage(cache_dir)
    for i in range(20):
        served.service.register(os.urandom(1 << 20) + bytes([i]))
    assert _disk_usage(cache_dir) > empty + (15 << 20)
    clock.advance(61)
    served.service.register(b"trigger")  # registration removes what has expired
    assert _disk_usage(cache_dir) < empty + (1 << 20)
    assert served.service.stats()["expired"] == 20


def test_stream_body_into_memory_cache_is_bounded(tmp_path: Path) -> None:
    served = App(dfc.CachePlain(100, max_bytes=2 << 20))
    with pytest.raises(ValueError, match="max_bytes"):
        served.service.register(io.BytesIO(b"x" * (3 << 20)))


def test_counters_survive_a_flood_of_gone_marks(monkeypatch: pytest.MonkeyPatch) -> None:
    from dash_file_cache.caches import memory

    monkeypatch.setattr(memory, "_MAX_MARKS", 10)
    served = App(dfc.CachePlain(1000))
    first = served.service.register(b"counted")
    served.get(first)
    for _ in range(50):
        served.service.delete(uid_of(served.service.register(b"x")))
    stats = served.service.stats()
    assert stats["hits"] == 1
    assert stats["deleted"] == 50
    assert served.service.info(uid_of(first))["hits"] == 1
    assert served.get(first).status_code == 200


# Dash starts background jobs with fork(); the CacheQueue listener is a thread.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_names_and_memoize_work_from_a_background_child() -> None:
    import multiprocess

    served = App(dfc.CacheQueue(16))
    service = served.service

    @service.memoize()
    def export(n: int) -> bytes:
        return f"export {n}".encode()

    def job(conn: Any) -> None:
        first = service.register(b"one", key="report")
        second = service.register(b"two", key="report")
        conn.send((first, second, export(1), export(1)))

    context = multiprocess.get_context("fork")
    receive, send = context.Pipe()
    child = context.Process(target=job, args=(send,))
    child.start()
    try:
        assert receive.poll(30)
        first, second, memo_a, memo_b = receive.recv()
    finally:
        child.join(30)
    assert first == second
    assert served.get(first).data == b"two"
    assert memo_a == memo_b
    assert served.get(memo_a).data == b"export 1"
    assert export(1) == memo_a  # the serving process finds the child's result


def test_two_session_entries_in_one_cookieless_request_share_the_session() -> None:
    app = flask.Flask("two-in-one")
    service = dfc.ServiceData(dfc.CachePlain(8))
    service.serve(app)

    @app.post("/make-two")
    def make_two() -> str:
        first = service.register(b"first", scope="session")
        second = service.register(b"second", scope="session")
        return first + " " + second

    client = app.test_client()
    first, second = client.post("/make-two").get_data(as_text=True).split()
    assert client.get(first, buffered=True).data == b"first"
    assert client.get(second, buffered=True).data == b"second"
