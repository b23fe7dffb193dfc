"""Start real servers for tests: a free loopback port, a readiness check, a clean stop."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def pattern(size: int, seed: int = 0) -> bytes:
    """Deterministic bytes that differ at every offset modulo 251."""
    block = bytes((i * 7 + seed) % 251 for i in range(251))
    return (block * (size // 251 + 1))[:size]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 30.0) -> bytes:
    """GET ``url`` until it answers 2xx (its body is returned), or fail when ``process``
    exits or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                body: bytes = resp.read()
                return body
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.05)
    raise TimeoutError(f"{url} was not ready after {timeout} s")


@contextlib.contextmanager
def gunicorn(
    app: str,
    *args: str,
    env: Mapping[str, str] | None = None,
    cwd: Path = HERE,
    ready_path: str = "/health",
) -> Iterator[str]:
    """Run ``gunicorn app`` on a free port; yield its base URL."""
    port = free_port()
    command = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", *args, app]
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent)])}
    full_env.update(env or {})
    process = subprocess.Popen(
        command, cwd=cwd, env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base + ready_path, process)
        yield base
    finally:
        stop(process, signal.SIGTERM, timeout=20)


def stop(process: subprocess.Popen[bytes], sig: int, timeout: float) -> None:
    """Ask a server to stop with ``sig``; kill it if it has not stopped in ``timeout`` s."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    if process.stderr is not None:
        process.stderr.close()


def add_test_routes(app: Any, service: Any) -> None:
    """``/health`` (the worker's pid) and ``/register`` (query-string driven) on ``app``."""
    import flask

    @app.get("/health")
    def health() -> str:
        return str(os.getpid())

    @app.post("/register")
    def register() -> str:
        args = flask.request.args
        path = args.get("path")
        fobj: object = (
            path if path else pattern(int(args.get("size", "1000")), int(args.get("seed", "0")))
        )
        return str(
            service.register(
                fobj,
                file_name=args.get("name", ""),
                mime_type=args.get("mime", ""),
                one_time_service=args.get("one_time") == "1",
                download=args.get("download") == "1",
            )
        )
