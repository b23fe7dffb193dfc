"""The servers a benchmark run starts: gunicorn, nginx and redis, each on a free port."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SHIPPED_NGINX_CONF = ROOT / "demos" / "nginx-offload.conf"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _wait(url: str, process: subprocess.Popen[bytes], what: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return str(resp.read().decode())
        except urllib.error.HTTPError:
            return ""
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.05)
    raise TimeoutError(f"{what} did not answer {url} within {timeout} s")


class Gunicorn:
    """``bench_app`` under gunicorn with one worker, run by a given Python."""

    def __init__(self, name: str, python: str, worker: str, data: str, redis_url: str = "") -> None:
        self.name = name
        self.cache_dir = tempfile.mkdtemp(prefix=f"dfc-bench-{name}-")
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        command = [python, "-m", "gunicorn", "--bind", f"127.0.0.1:{self.port}"]
        command += ["--workers", "1", "--timeout", "300", "--worker-class", worker]
        if worker == "gthread":
            command += ["--threads", "8"]
        command.append("bench_app:app")
        env = {**os.environ, "BENCH_DATA": data, "BENCH_CACHE": self.cache_dir}
        if redis_url:
            env["BENCH_REDIS_URL"] = redis_url
        env.update(python_path_env(python))
        self.process = subprocess.Popen(
            command, cwd=BENCH, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            self.health = _wait(self.base + "/health", self.process, f"gunicorn {name}")
        except BaseException:
            self.close()
            raise

    def workers(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.process.pid).children(recursive=False)
        except psutil.NoSuchProcess:
            return []

    def close(self) -> None:
        _stop(self.process)
        shutil.rmtree(self.cache_dir, ignore_errors=True)


def python_path_env(python: str) -> dict[str, str]:
    """``PYTHONPATH`` for a server run by ``python``.

    The tree's own package comes from ROOT, after any ``PYTHONPATH`` already set
    (which lets a run measure another checkout); the 0.2.0 venv sees neither.
    """
    if python != sys.executable:
        return {"PYTHONPATH": ""}
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {"PYTHONPATH": os.pathsep.join([*paths, str(ROOT)])}


class Nginx:
    """The shipped offload configuration in front of ``upstream``, plus a static folder.

    ``/static/<name>`` serves the data folder directly: the ceiling that the app
    is compared with.
    """

    def __init__(self, upstream: Gunicorn, data: str, cache_dir: str) -> None:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        self.prefix = tempfile.mkdtemp(prefix="dfc-bench-nginx-")
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        site = SHIPPED_NGINX_CONF.read_text()
        site = site.replace("127.0.0.1:8000", f"127.0.0.1:{upstream.port}")
        site = site.replace(
            "listen 8080;",
            f"listen 127.0.0.1:{self.port};\n    location /static/ {{ alias {data}/; }}",
        )
        site = site.replace("/var/cache/dash-file-cache", cache_dir.rstrip("/"))
        site = site.replace("/srv/reports", data.rstrip("/"))
        Path(self.prefix, "site.conf").write_text(site)
        user = "user root root;\n" if os.geteuid() == 0 else ""
        temp = "".join(
            f"    {kind}_temp_path {self.prefix}/{kind};\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        conf = (
            f"{user}daemon off;\nworker_processes 1;\npid {self.prefix}/nginx.pid;\n"
            f"error_log {self.prefix}/error.log warn;\n"
            "events { worker_connections 1024; }\n"
            f"http {{\n    access_log off;\n    sendfile on;\n    tcp_nopush on;\n"
            f"    default_type application/octet-stream;\n{temp}"
            f"    include {self.prefix}/site.conf;\n}}\n"
        )
        Path(self.prefix, "nginx.conf").write_text(conf)
        self.process = subprocess.Popen(
            [binary, "-p", self.prefix, "-c", f"{self.prefix}/nginx.conf"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait(self.base + "/health", self.process, "nginx", timeout=20)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        _stop(self.process, signal.SIGQUIT)
        shutil.rmtree(self.prefix, ignore_errors=True)


class Redis:
    """A throw-away redis-server without persistence."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        self.folder = tempfile.mkdtemp(prefix="dfc-bench-redis-")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.folder,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        self.close()
        raise RuntimeError("redis-server did not start")

    def close(self) -> None:
        _stop(self.process)
        shutil.rmtree(self.folder, ignore_errors=True)
