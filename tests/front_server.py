"""Start nginx in front of a test server, with the shipped offload configuration."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from servers import free_port, stop

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_CONF = ROOT / "demos" / "nginx-offload.conf"

# What the shipped file names, replaced by the test's own addresses and folders.
_UPSTREAM = "127.0.0.1:8000"
_LISTEN = "listen 8080;"
_CACHE_DIR = "/var/cache/dash-file-cache"
_ROOT_DIR = "/srv/reports"


class NginxMissing(RuntimeError):
    """nginx is not installed or could not start here."""


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


def site_config(upstream: str, port: int, cache_dir: str, root_dir: str) -> str:
    """The shipped server block, pointed at the given upstream, port and folders."""
    text = SHIPPED_CONF.read_text()
    for placeholder in (_UPSTREAM, _LISTEN, _CACHE_DIR, _ROOT_DIR):
        if placeholder not in text:
            raise AssertionError(f"{SHIPPED_CONF} no longer contains {placeholder!r}")
    text = text.replace(_UPSTREAM, upstream).replace(_LISTEN, f"listen 127.0.0.1:{port};")
    return text.replace(_CACHE_DIR, cache_dir.rstrip("/")).replace(_ROOT_DIR, root_dir.rstrip("/"))


def main_config(prefix: str, site: str) -> str:
    """A whole nginx configuration that keeps every file it writes under ``prefix``."""
    # As root, nginx workers would switch to an unprivileged user that cannot read
    # the test's private temporary folders.
    user = "user root root;\n" if os.geteuid() == 0 else ""
    temp = "\n".join(
        f"    {kind}_temp_path {prefix}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""{user}daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 512; }}
http {{
    access_log off;
    sendfile on;
    default_type application/octet-stream;
{temp}
    include {site};
}}
"""


@contextlib.contextmanager
def nginx_in_front(upstream: str, cache_dir: str, root_dir: str) -> Iterator[str]:
    """Run nginx with the shipped configuration on a free port; yield its base URL.

    Raises :class:`NginxMissing` when nginx is absent or does not come up.
    """
    binary = nginx_binary()
    if binary is None:
        raise NginxMissing("nginx is not installed (apt-get install nginx-light)")
    prefix = tempfile.mkdtemp(prefix="dfc-nginx-")
    port = free_port()
    site = os.path.join(prefix, "site.conf")
    conf = os.path.join(prefix, "nginx.conf")
    Path(site).write_text(site_config(upstream.removeprefix("http://"), port, cache_dir, root_dir))
    Path(conf).write_text(main_config(prefix, site))
    process = subprocess.Popen(
        [binary, "-p", prefix, "-c", conf, "-e", os.path.join(prefix, "error.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for(base, process, prefix)
        yield base
    finally:
        stop(process, signal.SIGQUIT, timeout=10)
        shutil.rmtree(prefix, ignore_errors=True)


def _wait_for(base: str, process: subprocess.Popen[bytes], prefix: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log = Path(prefix, "error.log")
            detail = log.read_text() if log.exists() else ""
            raise NginxMissing(f"nginx exited with {process.returncode}: {detail.strip()}")
        try:
            with urllib.request.urlopen(base + "/health", timeout=2):
                return
        except urllib.error.HTTPError:
            return  # nginx answers; the upstream's answer does not matter here
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.05)
    raise NginxMissing(f"nginx did not answer on {base} within 20 s")
