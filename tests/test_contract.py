"""The backend contract of caches/base.py, run against every backend."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import pytest
from backends import backend_factory, backend_name, cache  # noqa: F401 - fixtures

import dash_file_cache as dfc
from dash_file_cache._keys import new_key
from dash_file_cache.entry import Entry


def make_entry(size: int, **changes: object) -> Entry:
    entry = Entry(
        key=new_key(),
        size=size,
        mime_type="application/octet-stream",
        content_type="application/octet-stream",
        file_name="x.bin",
        created=time.time(),
        etag=new_key(),
    )
    return entry.replace(**changes)


def read_all(cache: dfc.CacheAbstract, key: str) -> bytes:
    _, stream = cache.get(key)
    assert stream is not None
    with stream:
        return stream.read()


def test_put_bytes_then_get_returns_same_entry_and_body(cache: dfc.CacheAbstract) -> None:
    entry = make_entry(5)
    cache.put(entry, b"hello")
    got, stream = cache.get(entry.key)
    assert got == entry
    assert stream is not None
    with stream:
        assert stream.read() == b"hello"


def test_put_stream_reads_it_to_the_end(cache: dfc.CacheAbstract) -> None:
    body = bytes(range(256)) * 4096  # 1 MiB, larger than diskcache's inline limit
    entry = make_entry(len(body))
    cache.put(entry, io.BytesIO(body))
    assert read_all(cache, entry.key) == body


def test_empty_body_is_stored(cache: dfc.CacheAbstract) -> None:
    entry = make_entry(0)
    cache.put(entry, b"")
    assert read_all(cache, entry.key) == b""


def test_each_get_returns_an_independent_seekable_stream(cache: dfc.CacheAbstract) -> None:
    entry = make_entry(10)
    cache.put(entry, b"0123456789")
    _, first = cache.get(entry.key)
    _, second = cache.get(entry.key)
    assert first is not None and second is not None
    with first, second:
        assert first.seekable()
        first.seek(6)
        assert first.read(2) == b"67"
        assert second.read(3) == b"012"
        first.seek(1)
        assert first.read() == b"123456789"


def test_put_same_key_replaces_body(cache: dfc.CacheAbstract) -> None:
    entry = make_entry(3)
    cache.put(entry, b"old")
    cache.put(entry.replace(size=3, file_name="new.bin"), b"new")
    got, stream = cache.get(entry.key)
    assert stream is not None
    with stream:
        assert stream.read() == b"new"
    assert got.file_name == "new.bin"
    assert cache.keys().count(entry.key) == 1


def test_get_unknown_key_is_not_found_not_gone(cache: dfc.CacheAbstract) -> None:
    with pytest.raises(dfc.EntryNotFound) as info:
        cache.get(new_key())
    assert not isinstance(info.value, dfc.EntryGone)


def test_delete_marks_entry_gone(cache: dfc.CacheAbstract) -> None:
    entry = make_entry(1)
    cache.put(entry, b"x")
    assert cache.delete(entry.key) is True
    assert cache.delete(entry.key) is False
    with pytest.raises(dfc.EntryGone):
        cache.get(entry.key)


def test_delete_without_gone_forgets_entry(cache: dfc.CacheAbstract) -> None:
    entry = make_entry(1)
    cache.put(entry, b"x")
    assert cache.delete(entry.key, gone=False) is True
    with pytest.raises(dfc.EntryNotFound) as info:
        cache.get(entry.key)
    assert not isinstance(info.value, dfc.EntryGone)


def test_put_after_delete_makes_entry_live_again(cache: dfc.CacheAbstract) -> None:
    entry = make_entry(1)
    cache.put(entry, b"x")
    cache.delete(entry.key)
    cache.put(entry, b"y")
    assert read_all(cache, entry.key) == b"y"


def test_claim_is_exclusive_and_release_gives_it_back(cache: dfc.CacheAbstract) -> None:
    entry = make_entry(1, one_time=True)
    cache.put(entry, b"x")
    assert cache.claim(entry.key) is True
    assert cache.claim(entry.key) is False
    with pytest.raises(dfc.EntryGone):
        cache.get(entry.key)
    cache.release(entry.key)
    assert read_all(cache, entry.key) == b"x"
    assert cache.claim(entry.key) is True


def test_claim_of_missing_entry_fails(cache: dfc.CacheAbstract) -> None:
    assert cache.claim(new_key()) is False


def test_claim_races_have_one_winner(cache: dfc.CacheAbstract) -> None:
    entry = make_entry(1, one_time=True)
    cache.put(entry, b"x")
    barrier = threading.Barrier(8)
    wins: list[bool] = []

    def contend() -> None:
        barrier.wait(timeout=10)
        wins.append(cache.claim(entry.key))

    threads = [threading.Thread(target=contend) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert sorted(wins) == [False] * 7 + [True]


def test_keys_lists_only_entries(cache: dfc.CacheAbstract) -> None:
    first, second, third = make_entry(1), make_entry(1, one_time=True), make_entry(1)
    for entry in (first, second, third):
        cache.put(entry, b"x")
    cache.claim(second.key)
    cache.delete(third.key)
    assert sorted(cache.keys()) == sorted([first.key, second.key])
    assert len(cache) == 2
    assert sorted(cache) == sorted([first.key, second.key])


def test_compat_names_is_in_contains_remove(cache: dfc.CacheAbstract) -> None:
    entry = make_entry(1)
    cache.put(entry, b"x")
    assert cache.is_in(entry.key)
    assert entry.key in cache
    assert 42 not in cache
    assert cache.remove(entry.key) == entry
    assert not cache.is_in(entry.key)
    with pytest.raises(dfc.EntryGone):
        cache.remove(entry.key)


def test_info_returns_metadata(cache: dfc.CacheAbstract) -> None:
    entry = make_entry(2, file_name="a.csv", mime_type="text/csv")
    cache.put(entry, b"ab")
    assert cache.info(entry.key) == entry


def test_path_entry_is_opened_in_place(cache: dfc.CacheAbstract, tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    path.write_bytes(b"abc")
    entry = make_entry(3, path=str(path))
    cache.put(entry, None)
    got, stream = cache.open(entry.key)
    assert stream is not None
    with stream:
        assert stream.read() == b"abc"
    assert got.size == 3
    path.write_bytes(b"abcdef")
    got, stream = cache.open(entry.key)
    assert stream is not None
    stream.close()
    assert got.size == 6


def test_path_entry_whose_file_vanished_is_gone(cache: dfc.CacheAbstract, tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    path.write_bytes(b"abc")
    entry = make_entry(3, path=str(path))
    cache.put(entry, None)
    path.unlink()
    with pytest.raises(dfc.EntryGone):
        cache.open(entry.key)


def test_stream_open_during_delete_still_reads_everything(cache: dfc.CacheAbstract) -> None:
    body = b"z" * (3 << 20)
    entry = make_entry(len(body))
    cache.put(entry, body)
    _, stream = cache.get(entry.key)
    assert stream is not None
    cache.delete(entry.key)
    with stream:
        assert stream.read() == body


def test_concurrent_puts_and_gets_stay_consistent(cache: dfc.CacheAbstract) -> None:
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(10):
                body = f"{n}-{i}".encode() * 100
                entry = make_entry(len(body))
                cache.put(entry, body)
                assert read_all(cache, entry.key) == body
        except BaseException as exc:  # collected and re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []


@pytest.mark.parametrize("backend_name", ["plain", "queue"], indirect=True)
def test_count_bound_evicts_least_recently_used(backend_factory) -> None:
    cache = backend_factory(cache_size=2)
    a, b, c = make_entry(1), make_entry(1), make_entry(1)
    cache.put(a, b"a")
    cache.put(b, b"b")
    read_all(cache, a.key)  # a becomes the most recently used
    cache.put(c, b"c")
    assert sorted(cache.keys()) == sorted([a.key, c.key])
    with pytest.raises(dfc.EntryGone):
        cache.get(b.key)


def test_entry_json_round_trip() -> None:
    entry = make_entry(3, url="https://example.org/x", url_headers={"A": "b"}, one_time=True)
    assert Entry.from_json(entry.to_json()) == entry
    assert entry.kind == "url"
    assert make_entry(1, path="/x").kind == "path"
    assert make_entry(1).kind == "body"


@pytest.mark.parametrize("size", [0, -1])
def test_cache_size_must_be_positive(size: int) -> None:
    with pytest.raises(ValueError, match="cache_size"):
        dfc.CachePlain(size)
    with pytest.raises(ValueError, match="cache_size"):
        dfc.CacheQueue(size)


def test_cache_size_must_be_int() -> None:
    with pytest.raises(TypeError, match="cache_size"):
        dfc.CachePlain("3")  # type: ignore[arg-type]
