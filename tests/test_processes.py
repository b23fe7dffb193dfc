"""Caches used from real child processes, started the way Dash starts background jobs.

``DiskcacheManager`` runs each background callback in ``multiprocess.Process``
(fork by default on Linux, spawn elsewhere); plain ``multiprocessing`` is
covered too. A child registers a file and sends the address back over a pipe,
then stays alive until the parent has fetched the address from the app the parent
serves: the address must answer at once, not once the child has exited.

The children run functions of the ``proc_app_*`` modules. A spawned child
re-imports those modules, which rebuilds their module-level caches in the child,
as it does with a real app module.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import importlib
import json
import multiprocessing
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import diskcache
import flask
import multiprocess
import proc_app_common as common
import proc_app_file
import proc_app_plain
import proc_app_queue
import pytest

import dash_file_cache as dfc

pytestmark = [
    pytest.mark.slow,
    # Python 3.12+ warns on every fork of a process running threads; a CacheQueue
    # always runs its listening thread, and forking is exactly what is under test.
    pytest.mark.filterwarnings(
        r"ignore:This process \(pid=\d+\) is multi-threaded, use of fork\(\):DeprecationWarning"
    ),
]

TESTS = Path(__file__).resolve().parent
# Bounds on waits that normally last well under a second; generous for loaded hosts.
ANSWER_SECONDS = 30
EXIT_SECONDS = 15

STARTS: dict[str, Callable[[], Any]] = {
    "multiprocess-fork": lambda: multiprocess.get_context("fork"),
    "multiprocess-spawn": lambda: multiprocess.get_context("spawn"),
    "multiprocessing-fork": lambda: multiprocessing.get_context("fork"),
    "multiprocessing-spawn": lambda: multiprocessing.get_context("spawn"),
}
SPAWNS = ["multiprocess-spawn", "multiprocessing-spawn"]
FORKS = ["multiprocess-fork", "multiprocessing-fork"]


# Child processes ---------------------------------------------------------------


class Child:
    """One child process running ``target(conn, *args)`` and answering on ``conn``."""

    def __init__(self, start: str, target: Callable[..., None], *args: Any) -> None:
        ctx = STARTS[start]()
        self.conn, child_end = ctx.Pipe()
        self.process = ctx.Process(target=target, args=(child_end, *args), daemon=True)
        self.process.start()
        child_end.close()

    def answer(self) -> tuple[Any, ...]:
        """The child's ``("ok", result)`` or ``("error", type name, message)``."""
        if not self.conn.poll(ANSWER_SECONDS):
            raise AssertionError(f"the child sent nothing within {ANSWER_SECONDS} s")
        try:
            outcome: tuple[Any, ...] = self.conn.recv()
        except EOFError:
            self.process.join(EXIT_SECONDS)
            raise AssertionError(
                f"the child exited ({self.process.exitcode}) without answering"
            ) from None
        return outcome

    def address(self) -> str:
        """The address the child registered, failing with the child's error if any."""
        outcome = self.answer()
        assert outcome[0] == "ok", f"the child failed: {outcome[1:]}"
        address: str = outcome[1]
        return address

    def running(self) -> bool:
        return self.process.exitcode is None and self.process.is_alive()

    def finish(self) -> int | None:
        """Let the child exit and reap it, killing it if it does not exit in time."""
        with contextlib.suppress(OSError):
            self.conn.send("exit")
        self.conn.close()
        self.process.join(EXIT_SECONDS)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(EXIT_SECONDS)
        exitcode: int | None = self.process.exitcode
        return exitcode


@contextlib.contextmanager
def child(start: str, target: Callable[..., None], *args: Any) -> Iterator[Child]:
    proc = Child(start, target, *args)
    try:
        yield proc
    finally:
        proc.finish()


# HTTP ----------------------------------------------------------------------------


def make_app(service: dfc.ServiceData) -> flask.Flask:
    app = flask.Flask(__name__)
    service.serve(app)
    return app


def fetch(app: flask.Flask, address: str) -> tuple[int, dict[str, str], bytes]:
    with app.test_client() as client:
        resp = client.get(address)
        try:
            return resp.status_code, dict(resp.headers), resp.get_data()
        finally:
            resp.close()


def check_served(
    app: flask.Flask, address: str, kind: str, size: int, seed: int = 0, name: str = ""
) -> None:
    """The address answers 200 with the exact bytes and headers of the input."""
    status, headers, data = fetch(app, address)
    expected = common.expected(kind, size, seed)
    file_name, content_type = common.NAMES[kind]
    assert status == 200
    assert data == expected
    assert headers["Content-Length"] == str(len(expected))
    assert headers["Content-Type"] == content_type
    assert headers["Content-Disposition"] == f"inline; filename={file_name or name}"


def registered_in_child(
    app: flask.Flask, start: str, target: Callable[..., None], *args: Any
) -> tuple[str, int | None]:
    """Run one registering child; return its address, fetched while it still ran."""
    with child(start, target, *args) as proc:
        address = proc.address()
        assert proc.running(), "the child should still be waiting for the parent"
        status, _, _ = fetch(app, address)
        assert status == 200, f"the address answered {status} right after register()"
    return address, proc.process.exitcode


def csv_file(tmp_path: Path, size: int) -> str:
    path = tmp_path / "report.csv"
    path.write_bytes(common.body(size))
    return str(path)


# CacheQueue ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", common.KINDS)
@pytest.mark.parametrize("start", list(STARTS))
def test_queue_child_registers(start: str, kind: str, tmp_path: Path) -> None:
    # Forked children inherit the cache, spawned ones receive it pickled.
    cache = dfc.CacheQueue(8)
    service = dfc.ServiceData(cache)
    app = make_app(service)
    path = csv_file(tmp_path, 5000) if kind == "path" else None
    with child(start, common.register_in_cache, cache, kind, 5000, 0, path) as proc:
        address = proc.address()
        assert proc.running()
        check_served(app, address, kind, 5000, name="report.csv")
    assert proc.process.exitcode == 0
    assert len(cache) == 1


@pytest.mark.parametrize("start", list(STARTS))
def test_service_reaches_the_child_with_its_cache(start: str) -> None:
    # What a callback usually holds is the app's ServiceData, not the bare cache.
    service = dfc.ServiceData(dfc.CacheQueue(4), service_name="/files")
    app = make_app(service)
    address, exitcode = registered_in_child(
        app, start, common.register_in_service, service, "BytesIO", 2000, 1
    )
    assert address.startswith("/files?uid=")
    check_served(app, address, "BytesIO", 2000, 1)
    assert exitcode == 0


@pytest.mark.parametrize("start", SPAWNS)
def test_queue_spawned_child_rebuilds_module_cache(start: str) -> None:
    before = set(proc_app_queue.cache.keys())
    address, exitcode = registered_in_child(
        proc_app_queue.server, start, proc_app_queue.child_register, "bytes", 7000, 3
    )
    check_served(proc_app_queue.server, address, "bytes", 7000, 3)
    assert set(proc_app_queue.cache.keys()) - before == {address.split("uid=")[1]}
    assert exitcode == 0


@pytest.mark.parametrize("backend", ["file", "queue-0", "queue-2"])
def test_spawned_child_finds_the_caches_of_a_module_imported_later(backend: str) -> None:
    late = importlib.import_module("proc_app_late")
    address, _ = registered_in_child(
        late.server, "multiprocess-spawn", late.child_register, backend, "bytes", 3000, 4
    )
    check_served(late.server, address, "bytes", 3000, 4)
    key = address.split("uid=")[1]
    assert key in late.services[backend].cache
    others = [name for name, service in late.services.items() if key in service.cache]
    assert others == [backend]


def published_queue_addresses() -> set[str]:
    table = json.loads(os.environ.get("DASH_FILE_CACHE_QUEUES", "{}"))
    return {address for _, address in table.values()}


def test_queue_dropped_cache_closes_its_channel() -> None:
    # Spawned children learn the sockets from the environment; a cache that is
    # gone must leave it (Linux caps one environment string at 128 KiB), and its
    # listening thread must end.
    for _ in range(5):
        known_threads = set(threading.enumerate())
        known_addresses = published_queue_addresses()
        cache = dfc.CacheQueue(1)
        (address,) = published_queue_addresses() - known_addresses
        (listener,) = [
            t
            for t in threading.enumerate()
            if t not in known_threads and t.name == "dash-file-cache-queue"
        ]
        del cache
        gc.collect()
        assert address not in published_queue_addresses()
        listener.join(EXIT_SECONDS)
        assert not listener.is_alive()


@pytest.mark.parametrize("start", ["multiprocess-fork", "multiprocess-spawn"])
def test_queue_large_body_arrives_intact(start: str) -> None:
    size = 50 * 1024 * 1024
    cache = dfc.CacheQueue(2)
    service = dfc.ServiceData(cache)
    app = make_app(service)
    with child(start, common.register_in_cache, cache, "bytes", size, 9) as proc:
        address = proc.address()
        status, headers, data = fetch(app, address)
    assert status == 200
    assert headers["Content-Length"] == str(size)
    assert len(data) == size
    assert hashlib.sha256(data).digest() == hashlib.sha256(common.body(size, 9)).digest()


@pytest.mark.parametrize("how", ["constructor", "property"])
@pytest.mark.parametrize("start", ["multiprocess-fork", "multiprocess-spawn"])
def test_queue_accepts_a_manager_queue(start: str, how: str) -> None:
    with multiprocessing.Manager() as manager:
        qobj = manager.Queue()
        if how == "constructor":
            cache = dfc.CacheQueue(8, qobj)
        else:
            cache = dfc.CacheQueue(8)
            cache.qobj = qobj
        assert cache.qobj is qobj
        assert cache.mirror is cache
        service = dfc.ServiceData(cache)
        app = make_app(service)
        address, exitcode = registered_in_child(
            app, start, common.register_in_cache, cache, "bytes", 4000, 5
        )
        check_served(app, address, "bytes", 4000, 5)
        assert exitcode == 0


def test_queue_children_register_concurrently() -> None:
    cache = dfc.CacheQueue(16)
    service = dfc.ServiceData(cache)
    app = make_app(service)
    size = 2 * 1024 * 1024
    procs: list[Child] = []
    try:
        for seed in range(6):
            procs.append(
                Child("multiprocess-fork", common.register_in_cache, cache, "bytes", size, seed)
            )
        addresses = [proc.address() for proc in procs]
        for seed, address in enumerate(addresses):
            check_served(app, address, "bytes", size, seed)
    finally:
        exitcodes = [proc.finish() for proc in procs]
    assert len(set(addresses)) == 6
    assert len(cache) == 6
    assert exitcodes == [0] * 6


# CacheFile -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", common.KINDS)
@pytest.mark.parametrize("start", list(STARTS))
def test_file_child_registers_in_temporary_dir(start: str, kind: str, tmp_path: Path) -> None:
    cache = dfc.CacheFile()
    service = dfc.ServiceData(cache)
    app = make_app(service)
    path = csv_file(tmp_path, 5000) if kind == "path" else None
    with cache.cache, child(start, common.register_in_cache, cache, kind, 5000, 0, path) as proc:
        address = proc.address()
        assert proc.running()
        check_served(app, address, kind, 5000, name="report.csv")
    assert proc.process.exitcode == 0
    assert os.path.isdir(cache.directory), "a child must never remove the directory"


@pytest.mark.parametrize("start", list(STARTS))
def test_file_child_registers_in_named_dir(start: str, tmp_path: Path) -> None:
    directory = tmp_path / "named"
    cache = dfc.CacheFile(directory)
    service = dfc.ServiceData(cache)
    app = make_app(service)
    with cache.cache:
        address, exitcode = registered_in_child(
            app, start, common.register_in_cache, cache, "bytes", 6000, 6
        )
        check_served(app, address, "bytes", 6000, 6)
    assert exitcode == 0
    assert directory.is_dir()


@pytest.mark.parametrize("start", SPAWNS)
def test_file_spawned_child_rebuilds_module_cache(start: str) -> None:
    address, exitcode = registered_in_child(
        proc_app_file.server, start, proc_app_file.child_register, "StringIO", 3000, 7
    )
    check_served(proc_app_file.server, address, "StringIO", 3000, 7)
    assert exitcode == 0
    assert os.path.isdir(proc_app_file.cache.directory)


def run_creator(*args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(TESTS / "proc_app_creator.py"), *args],
        capture_output=True,
        text=True,
        timeout=ANSWER_SECONDS * 2,
        cwd=TESTS,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def test_file_temporary_dir_lives_as_long_as_its_creator() -> None:
    report = run_creator()
    directory = report.pop("directory")
    # Each child had exited, running its atexit handlers where it has them, when
    # the creator checked the directory and served the child's entry from it.
    for name, seen in report.items():
        assert seen == {"exitcode": 0, "exists": True, "served": True}, name
    assert not os.path.exists(directory), "the creator must remove its temporary directory"


def test_file_named_dir_is_never_removed(tmp_path: Path) -> None:
    directory = tmp_path / "kept"
    report = run_creator(str(directory))
    assert report.pop("directory") == str(directory)
    for name, seen in report.items():
        assert seen == {"exitcode": 0, "exists": True, "served": True}, name
    assert directory.is_dir()
    # Another server process sharing the directory still serves what was stored.
    cache = dfc.CacheFile(directory)
    app = make_app(dfc.ServiceData(cache))
    with cache.cache:
        assert len(cache) == 3
        for key in cache:
            status, _, data = fetch(app, f"/cached-data?uid={key}")
            assert status == 200
            assert len(data) == 20_000


# CachePlain ----------------------------------------------------------------------


def check_refused(outcome: tuple[Any, ...]) -> None:
    assert outcome[:2] == ("error", "CacheProcessError")
    assert "CacheQueue" in outcome[2]
    assert "CacheFile" in outcome[2]


@pytest.mark.parametrize("start", FORKS)
def test_plain_refuses_forked_child(start: str) -> None:
    cache = dfc.CachePlain(8)
    with child(start, common.register_in_cache, cache, "bytes", 100) as proc:
        check_refused(proc.answer())


@pytest.mark.parametrize("start", SPAWNS)
def test_plain_refuses_spawned_child_rebuilding_module_cache(start: str) -> None:
    with child(start, proc_app_plain.child_register, "bytes", 100) as proc:
        check_refused(proc.answer())


def test_plain_refuses_spawned_child_given_a_pickled_cache() -> None:
    # multiprocess pickles with dill, which copies a CachePlain (lock included).
    cache = dfc.CachePlain(8)
    with child("multiprocess-spawn", common.register_in_cache, cache, "bytes", 100) as proc:
        check_refused(proc.answer())


def test_plain_still_serves_in_the_parent() -> None:
    with child("multiprocess-fork", proc_app_plain.child_register, "bytes", 100) as proc:
        check_refused(proc.answer())
    address = proc_app_plain.service.register(common.body(100, 8), file_name="data.bin")
    check_served(proc_app_plain.server, address, "bytes", 100, 8)


# A Dash app with DiskcacheManager --------------------------------------------------


@contextlib.contextmanager
def start_method(method: str) -> Iterator[None]:
    """Make ``method`` the default of ``multiprocess``, which DiskcacheManager uses."""
    previous = multiprocess.get_start_method(allow_none=True)
    multiprocess.set_start_method(method, force=True)
    try:
        yield
    finally:
        multiprocess.set_start_method(previous, force=True)


def reap_job(pid: int) -> None:
    """Join (or kill and join) the background job ``pid`` started by the manager."""
    for proc in multiprocess.active_children():
        if proc.pid == pid:
            proc.join(EXIT_SECONDS)
            if proc.is_alive():
                proc.kill()
                proc.join(EXIT_SECONDS)


@pytest.mark.parametrize("backend", ["queue", "file"])
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_dash_background_callback(method: str, backend: str, tmp_path: Path) -> None:
    dash_app = importlib.import_module("proc_app_dash")
    output = f"{backend}-address"
    payload = {
        "output": f"{output}.children",
        "outputs": {"id": output, "property": "children"},
        "inputs": [{"id": f"{backend}-go", "property": "n_clicks", "value": 2}],
        "changedPropIds": [f"{backend}-go.n_clicks"],
        "state": [],
    }
    with diskcache.Cache(str(tmp_path / "results")) as results, start_method(method):
        app = dash_app.build(results)
        client = app.server.test_client()
        job_pid = None
        try:
            started = client.post("/_dash-update-component", json=payload)
            assert started.status_code == 200, started.get_data(as_text=True)
            handles = started.get_json()
            job_pid = int(handles["job"].split("~")[0])
            query = {"cacheKey": handles["cacheKey"], "job": handles["job"]}
            for _ in range(3):
                answer = client.post("/_dash-update-component", json=payload, query_string=query)
                assert answer.status_code == 200, answer.get_data(as_text=True)
                if "response" in answer.get_json():
                    break
                # Not done yet: wait for the job to end rather than polling blindly.
                reap_job(job_pid)
            else:
                raise AssertionError("the background callback never returned its result")
            address = answer.get_json()["response"][output]["children"]
        finally:
            if job_pid is not None:
                reap_job(job_pid)
        status, headers, data = fetch(app.server, address)
    assert status == 200
    assert headers["Content-Disposition"] == f"inline; filename={backend}.bin"
    assert data == common.body(dash_app.SIZE, 2)


def test_celery_task_is_a_background_job() -> None:
    import celery

    worker = celery.Celery("jobs", broker="memory://", backend="cache+memory://")
    worker.conf.task_always_eager = True
    plain = dfc.ServiceData(dfc.CachePlain(4))
    queue_service = dfc.ServiceData(dfc.CacheQueue(4))

    @worker.task
    def register_plain() -> str:
        return plain.register(b"lost in the worker")

    @worker.task
    def register_lazy() -> str:
        return queue_service.register(iter([b"never served"]))

    @worker.task
    def register_queue() -> str:
        return queue_service.register(b"lost in the worker too")

    with pytest.raises(dfc.CacheProcessError, match=r"Celery task.*CacheRedis"):
        register_plain.delay().get(timeout=10)
    with pytest.raises(dfc.CacheProcessError, match="lazy producer"):
        register_lazy.delay().get(timeout=10)
    with pytest.raises(dfc.CacheProcessError, match="Celery task"):
        register_queue.delay().get(timeout=10)
    assert plain.register(b"fine outside a task").startswith("/cached-data?uid=")


def test_a_finalizer_withdrawing_inside_a_publish_does_not_deadlock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A cache dropped by a garbage collection that runs while the same thread
    publishes another cache's address: the withdrawal waits for the publication
    (a plain lock would hang here forever) and both land."""
    from dash_file_cache import _process

    monkeypatch.delenv("DASH_FILE_CACHE_TESTKIND", raising=False)
    _process.publish_for_children("testkind", "gone.py:1", "/old")
    encode = json.dumps
    calls: list[str] = []

    def dumps_with_a_finalizer(obj: Any, *args: Any, **kwargs: Any) -> str:
        if not calls:
            calls.append("finalizer")
            _process.withdraw_for_children("testkind", "gone.py:1", "/old")
        return encode(obj, *args, **kwargs)

    monkeypatch.setattr(_process.json, "dumps", dumps_with_a_finalizer)
    done = threading.Event()

    def publish() -> None:
        _process.publish_for_children("testkind", "new.py:2", "/new")
        done.set()

    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    assert done.wait(10), "publishing deadlocked on the withdrawal inside it"
    assert calls == ["finalizer"]
    assert json.loads(os.environ["DASH_FILE_CACHE_TESTKIND"]) == {"new.py:2": [os.getpid(), "/new"]}


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_child_forked_while_a_thread_writes_to_a_file_cache_can_write(tmp_path: Path) -> None:
    """A background callback forked from a threaded server, at the moment another
    thread holds the cache's write lock, starts with locks of its own."""
    cache = dfc.CacheFile(tmp_path / "cache")
    service = dfc.ServiceData(cache)
    holding, release = threading.Event(), threading.Event()

    def writer() -> None:
        with cache._writing:  # as during a registration
            holding.set()
            release.wait(30)

    thread = threading.Thread(target=writer)
    thread.start()
    assert holding.wait(10)
    try:
        ctx = multiprocessing.get_context("fork")
        receive, send = ctx.Pipe()

        def child() -> None:
            address = service.register(b"from the child", mime_type="text/plain")
            service.cache.get(address.split("uid=")[1])  # a read notes a use too
            send.send(address)

        proc = ctx.Process(target=child)
        proc.start()
        proc.join(30)
        stuck = proc.exitcode is None
        if stuck:
            proc.kill()
            proc.join()
    finally:
        release.set()
        thread.join()
    assert not stuck, "the child waited for a lock held by a thread it does not have"
    assert proc.exitcode == 0
    address = receive.recv()
    assert service.cache.get(address.split("uid=")[1])[1].read() == b"from the child"


def test_a_forked_child_does_not_write_its_parents_pending_counts(tmp_path: Path) -> None:
    cache = dfc.CacheFile(tmp_path / "cache")
    cache.record("deleted")  # gathered in this process, written at most once a second
    ctx = multiprocessing.get_context("fork")
    proc = ctx.Process(target=cache.flush_stats)
    proc.start()
    proc.join(30)
    assert proc.exitcode == 0
    cache.flush_stats()
    assert cache.stats()["deleted"] == 1
