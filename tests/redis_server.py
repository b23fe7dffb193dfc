"""A real ``redis-server`` for tests: a free loopback port, a readiness check, a clean stop.

One server serves the whole session (started on first use); tests that stop or
restart Redis start their own with :func:`running_redis`. Where no server can be
started the tests are skipped, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
from servers import free_port

# Every test cache on the shared server uses this namespace; it is emptied between tests.
NAMESPACE = "dfc-test"
_READY_SECONDS = 15.0


def unavailable(reason: str) -> NoReturn:
    """Skip, or fail under ``CI=true``, where the tests cannot get a Redis server."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"Redis tests must run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def _redis_module() -> Any:
    try:
        import redis
    except ImportError:
        unavailable('redis-py is not installed (pip install -e ".[test]")')
    return redis


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1 that can be stopped and started again.

    It keeps its port and directory across restarts, so with persistence turned on
    (``--appendonly yes`` in ``options``) a restarted server has the same data.
    """

    def __init__(self, directory: Path, *options: str, port: int | None = None) -> None:
        self.directory = directory
        self.options = options
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log(self) -> Path:
        return self.directory / "redis.log"

    def client(self, **options: Any) -> Any:
        """A new redis-py client for this server; close it after use."""
        return _redis_module().Redis(host="127.0.0.1", port=self.port, **options)

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            unavailable("redis-server is not installed (apt-get install redis-server)")
        command = [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.directory),
            "--logfile",
            str(self.log),
            "--save",
            "",
            "--appendonly",
            "no",
            *self.options,
        ]
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_until_ready(self) -> None:
        assert self.process is not None
        redis = _redis_module()
        deadline = time.monotonic() + _READY_SECONDS
        with self.client(socket_connect_timeout=1, socket_timeout=1) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"redis-server exited with {self.process.returncode}: {self._log_tail()}"
                    )
                try:
                    if client.ping():
                        return
                except redis.exceptions.RedisError:
                    time.sleep(0.02)
        raise TimeoutError(f"redis-server on port {self.port} not ready after {_READY_SECONDS} s")

    def _log_tail(self) -> str:
        try:
            return " | ".join(self.log.read_text(errors="replace").splitlines()[-5:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        try:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def flush(self, namespace: str = NAMESPACE) -> None:
        """Delete every key of ``namespace``."""
        with self.client() as client:
            names = list(client.scan_iter(match=f"{namespace}:*", count=1000))
            for start in range(0, len(names), 500):
                client.delete(*names[start : start + 500])


@contextlib.contextmanager
def running_redis(directory: Path, *options: str) -> Iterator[RedisServer]:
    """A private server for one test; stopped however the test ends."""
    server = RedisServer(directory, *options)
    try:
        try:
            server.start()
        except (OSError, RuntimeError, TimeoutError) as exc:
            unavailable(f"redis-server could not be started: {exc}")
        yield server
    finally:
        server.stop()


_shared: list[RedisServer] = []


def shared_redis(request: pytest.FixtureRequest) -> RedisServer:
    """The session's server: started by the first test that needs it, stopped at the end.

    A plain function rather than a fixture so that the backend fixtures of
    ``backends.py`` can use it without every test module importing a fixture.
    """
    if _shared:
        return _shared[0]
    directory = Path(tempfile.mkdtemp(prefix="dfc-redis-"))
    server = RedisServer(directory)

    def finish() -> None:
        try:
            server.stop()
        finally:
            _shared.clear()
            shutil.rmtree(directory, ignore_errors=True)

    try:
        server.start()
    except (OSError, RuntimeError, TimeoutError) as exc:
        shutil.rmtree(directory, ignore_errors=True)
        unavailable(f"redis-server could not be started: {exc}")
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    request.session.addfinalizer(finish)
    _shared.append(server)
    return server


def redis_url_for_test(request: pytest.FixtureRequest) -> str:
    """The shared server's URL, with :data:`NAMESPACE` empty now and after the test."""
    server = shared_redis(request)
    server.flush()
    request.addfinalizer(server.flush)
    return server.url


@pytest.fixture
def redis_url(request: pytest.FixtureRequest) -> str:
    """URL of the session's Redis server, :data:`NAMESPACE` emptied around the test."""
    return redis_url_for_test(request)


@pytest.fixture
def redis_server(request: pytest.FixtureRequest) -> RedisServer:
    """The session's Redis server, :data:`NAMESPACE` emptied around the test."""
    redis_url_for_test(request)
    return shared_redis(request)
