"""The route under a real WSGI server: gunicorn with threads, and with several workers."""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests
from redis_server import NAMESPACE as REDIS_NAMESPACE
from redis_server import redis_url  # noqa: F401 - fixture
from servers import gunicorn, pattern

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gthread(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    cache_dir = tmp_path_factory.mktemp("gthread-cache")
    with gunicorn(
        "live_app:app",
        "--worker-class",
        "gthread",
        "--threads",
        "8",
        env={"DFC_BACKEND": "file", "DFC_CACHE_DIR": str(cache_dir)},
    ) as base:
        yield base


def register(base: str, **params: object) -> str:
    resp = requests.post(f"{base}/register", params=params, timeout=30)
    assert resp.status_code == 200, resp.text
    return base + resp.text


def test_large_path_is_sent_whole(gthread: str, tmp_path: Path) -> None:
    body = pattern(20 << 20, seed=3)
    path = tmp_path / "big.bin"
    path.write_bytes(body)
    resp = requests.get(register(gthread, path=str(path)), timeout=60)
    assert resp.status_code == 200
    assert resp.headers["Content-Length"] == str(len(body))
    assert resp.content == body


@pytest.mark.parametrize("source", ["path", "body"])
@pytest.mark.parametrize(
    ("header", "start", "stop"),
    [
        ("bytes=0-99", 0, 100),
        ("bytes=12345678-12345999", 12345678, 12346000),
        ("bytes=-10", -10, None),
    ],
)
def test_ranges_through_gunicorn(
    gthread: str, tmp_path: Path, source: str, header: str, start: int, stop: int | None
) -> None:
    body = pattern(16 << 20, seed=5)
    if source == "path":
        path = tmp_path / "ranged.bin"
        path.write_bytes(body)
        address = register(gthread, path=str(path))
    else:
        address = register(gthread, size=len(body), seed=5)
    resp = requests.get(address, headers={"Range": header}, timeout=60)
    assert resp.status_code == 206
    assert resp.content == body[start:stop]
    first = start % len(body)
    last = (stop if stop is not None else len(body)) - 1
    assert resp.headers["Content-Range"] == f"bytes {first}-{last}/{len(body)}"


def test_concurrent_gets_of_one_time_entry_under_gunicorn(gthread: str) -> None:
    size = 4 << 20
    address = register(gthread, size=size, one_time=1, seed=9)
    barrier = threading.Barrier(8)
    results: list[tuple[int, bytes]] = []
    lock = threading.Lock()

    def fetch() -> None:
        barrier.wait(timeout=20)
        resp = requests.get(address, timeout=60)
        with lock:
            results.append((resp.status_code, resp.content))

    threads = [threading.Thread(target=fetch) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90)
    statuses = sorted(status for status, _ in results)
    assert statuses[0] == 200
    assert statuses[1:] == [410] * 7
    assert [body for status, body in results if status == 200] == [pattern(size, seed=9)]


def test_aborted_download_keeps_one_time_entry(gthread: str) -> None:
    size = 32 << 20
    address = register(gthread, size=size, one_time=1, seed=11)
    parsed = urllib.parse.urlsplit(address)
    with socket.create_connection((parsed.hostname, parsed.port), timeout=30) as sock:
        sock.sendall(
            f"GET {parsed.path}?{parsed.query} HTTP/1.1\r\nHost: x\r\n\r\n".encode("ascii")
        )
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    # The server notices the reset when its next write fails; poll (bounded) until
    # it has released the entry, which must then be served whole exactly once.
    deadline = time.monotonic() + 30
    while True:
        resp = requests.get(address, timeout=60)
        if resp.status_code == 200 or time.monotonic() > deadline:
            break
        assert resp.status_code == 410
        time.sleep(0.1)
    assert resp.status_code == 200
    assert resp.content == pattern(size, seed=11)
    assert requests.get(address, timeout=30).status_code == 410


def test_head_and_conditional_requests_through_gunicorn(gthread: str) -> None:
    address = register(gthread, size=5000, one_time=1)
    head = requests.head(address, timeout=30)
    assert head.status_code == 200
    assert head.headers["Content-Length"] == "5000"
    assert head.content == b""
    resp = requests.get(address, timeout=30)
    assert resp.status_code == 200
    assert resp.content == pattern(5000)


def register_then_get(base: str, count: int) -> tuple[int, set[str]]:
    """``count`` register-then-GET pairs; the misses and the worker pids seen."""
    misses = 0
    pids: set[str] = set()
    with requests.Session() as session:
        for i in range(count):
            size = 1000 + (i * 37) % 7000
            address = register(base, size=size, seed=i % 200)
            resp = session.get(address, timeout=30)
            if resp.status_code != 200 or resp.content != pattern(size, seed=i % 200):
                misses += 1
            if i % 5 == 0:
                pids.add(session.get(base + "/health", timeout=10).text)
    return misses, pids


def shared_backend_env(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> dict[str, str]:
    """The live app's settings for a cache shared by every worker."""
    env = {"DFC_BACKEND": backend, "DFC_CACHE_DIR": str(tmp_path / "shared")}
    if backend == "redis":
        env["DFC_REDIS_URL"] = request.getfixturevalue("redis_url")
        env["DFC_REDIS_NAMESPACE"] = REDIS_NAMESPACE
    return env


@pytest.mark.parametrize("backend", ["file", "redis"])
def test_cache_shared_by_four_workers(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    env = shared_backend_env(backend, tmp_path, request)
    with gunicorn("live_app:app", "--workers", "4", env=env) as base:
        misses, pids = register_then_get(base, 500)
    assert misses == 0
    assert len(pids) > 1, "the requests should have reached several workers"


@pytest.mark.parametrize("backend", ["file", "redis"])
def test_no_misses_while_workers_are_recycled(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    env = shared_backend_env(backend, tmp_path, request)
    recycling = ("--max-requests", "50", "--max-requests-jitter", "10")
    with gunicorn("live_app:app", "--workers", "4", *recycling, env=env) as base:
        misses, pids = register_then_get(base, 500)
    assert misses == 0
    # 500 pairs and 100 health checks over 4 workers of at most 60 requests each.
    assert len(pids) > 8, "the workers should have been replaced many times"


def worker_pids(master: psutil.Process) -> set[int]:
    """The pids of the master's live workers (an exited worker not yet reaped excluded)."""
    pids = set()
    for child in master.children():
        with contextlib.suppress(psutil.NoSuchProcess):
            if child.status() != psutil.STATUS_ZOMBIE:
                pids.add(child.pid)
    return pids


@pytest.mark.parametrize("backend", ["file", "redis"])
def test_entries_survive_a_graceful_reload(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    env = shared_backend_env(backend, tmp_path, request)
    with gunicorn("live_app:app", "--workers", "4", env=env) as base, requests.Session() as session:
        sizes = [1000 + i * 401 for i in range(20)]
        addresses = [register(base, size=size, seed=i) for i, size in enumerate(sizes)]
        master = psutil.Process(int(session.get(base + "/health", timeout=10).text)).parent()
        assert master is not None
        # The server answers as soon as one worker runs: wait for all four.
        deadline = time.monotonic() + 30
        while len(old := worker_pids(master)) != 4:
            assert time.monotonic() < deadline, f"only {len(old)} workers after 30 s"
            time.sleep(0.05)
        # SIGHUP makes the master start four new workers, then stop the old ones
        # once the new ones run: a reload without downtime, and without memory.
        master.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while True:
            current = worker_pids(master)
            if len(current) == 4 and not current & old:
                break
            assert time.monotonic() < deadline, f"old workers {old & current} still run after 30 s"
            time.sleep(0.05)
        for i, (address, size) in enumerate(zip(addresses, sizes, strict=True)):
            resp = session.get(address, timeout=30)
            assert resp.status_code == 200, (i, resp.text)
            assert resp.content == pattern(size, seed=i)
        served_by = {int(session.get(base + "/health", timeout=10).text) for _ in range(20)}
        assert served_by <= current
