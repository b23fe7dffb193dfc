"""Benchmark dash_file_cache against its baselines, side by side in one run.

Usage::

    python benchmarks/run.py [--quick] [--no-020] [--out benchmarks/results/<date>.json]

It starts every server itself on free loopback ports (gunicorn with one worker,
gthread and sync; nginx; redis-server), measures, prints a table and writes JSON.
Every figure is the median of several runs, interleaved so that noise from the
machine spreads over all contenders; compare the ratios, not absolute numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import http.client
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
from bench_servers import BENCH, Gunicorn, Nginx, Redis, python_path_env

VENV_020 = BENCH / ".venv-020"
MiB = 1 << 20


@dataclass(frozen=True)
class Settings:
    quick: bool
    large_bytes: int
    repeats: int
    roundtrip_seconds: float
    clients: int
    wrk_seconds: int
    register_sizes: tuple[int, ...]
    register_repeats: int
    sync: bool
    wrk_repeats: int
    # Entries in the ``-full`` caches of bench_app (its BENCH_FULL_SIZE default).
    full_size: int = 1000
    # Downloads of the large entry are the noisiest figures: more of them.
    large_repeats: int = 5


FULL = Settings(False, 256 * MiB, 3, 2.0, 8, 3, (1 << 10, MiB, 100 * MiB), 5, True, 5)
QUICK = Settings(True, 8 * MiB, 1, 0.4, 8, 1, (1 << 10, MiB), 3, False, 1, large_repeats=1)


def svg_asset(size: int = 10 << 10) -> bytes:
    """A valid SVG of exactly ``size`` bytes."""
    head = b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><!--'
    tail = b'--><circle cx="32" cy="32" r="30" fill="teal"/></svg>\n'
    filler = (b"dash-file-cache " * (size // 16 + 1))[: size - len(head) - len(tail)]
    return head + filler + tail


# HTTP clients -----------------------------------------------------------------


def _split(url: str) -> tuple[str, int, str]:
    parts = urllib.parse.urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    return parts.hostname or "127.0.0.1", parts.port or 80, path


def post(url: str, body: bytes = b"") -> str:
    host, port, path = _split(url)
    conn = http.client.HTTPConnection(host, port, timeout=600)
    try:
        conn.request("POST", path, body=body)
        resp = conn.getresponse()
        text = resp.read().decode()
        if resp.status != 200:
            raise RuntimeError(f"POST {url} answered {resp.status}: {text[:200]}")
        return text
    finally:
        conn.close()


def download(url: str) -> tuple[int, int, float]:
    """GET ``url``, discarding the body; return status, bytes and seconds."""
    host, port, path = _split(url)
    buffer = memoryview(bytearray(MiB))
    conn = http.client.HTTPConnection(host, port, timeout=600)
    try:
        start = time.perf_counter()
        conn.request("GET", path)
        resp = conn.getresponse()
        total = 0
        while count := resp.readinto(buffer):
            total += count
        return resp.status, total, time.perf_counter() - start
    finally:
        conn.close()


class RssSampler:
    """Peak resident memory of some processes, sampled every few milliseconds."""

    def __init__(self, processes: list[psutil.Process]) -> None:
        self.processes = processes
        self.baseline = self._rss()
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> int:
        total = 0
        for process in self.processes:
            with contextlib.suppress(psutil.Error):
                total += process.memory_info().rss
        return total

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def growth_mib(self) -> float:
        return (self.peak - self.baseline) / MiB


# Workloads --------------------------------------------------------------------


@dataclass
class Series:
    """Repeated measurements of one contender in one workload."""

    workload: str
    server: str
    case: str
    runs: list[dict[str, float]] = field(default_factory=list)

    def median(self, key: str) -> float:
        values = [run[key] for run in self.runs if key in run]
        return statistics.median(values) if values else float("nan")

    def summary(self) -> dict[str, Any]:
        keys = sorted({k for run in self.runs for k in run})
        out: dict[str, Any] = {"server": self.server, "case": self.case}
        for key in keys:
            out[key] = self.median(key)
        if any("failed" in run for run in self.runs):
            out["failed"] = sum(run.get("failed", 0) for run in self.runs)
        out["repeats"] = len(self.runs)
        out["runs"] = self.runs
        return out


def measure_large(url: str, workers: list[psutil.Process], size: int) -> dict[str, float]:
    """Throughput, the worker's peak RSS growth and its CPU time per GiB sent.

    The CPU time moves much less than the throughput on a shared machine, where one
    Python client reading at several GB/s competes with the server for two cores.
    """
    cpu = cpu_seconds(workers)
    with RssSampler(workers) as sampler:
        status, count, seconds = download(url)
    cpu = cpu_seconds(workers) - cpu
    if status != 200 or count < size:
        raise RuntimeError(f"GET {url} gave {status} with {count} bytes")
    return {
        "mib_per_s": count / MiB / seconds,
        "rss_growth_mib": sampler.growth_mib,
        "worker_cpu_ms_per_gib": cpu * 1000 / (count / (1 << 30)),
    }


def cpu_seconds(processes: list[psutil.Process]) -> float:
    """CPU time (user and system) that ``processes`` have used so far."""
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def measure_roundtrip(
    base: str,
    backend: str,
    one_time: bool,
    clients: int,
    seconds: float,
    asset: bytes,
    fast: bool = False,
    workers: list[psutil.Process] | None = None,
) -> dict[str, float]:
    """Clients that each register the asset (POST) and fetch it back (GET) in a loop.

    With ``workers``, also the server's CPU time per round trip (``worker_cpu_us``).
    """
    host, port, _ = _split(base)
    query = "?name=icon.svg" + ("&one_time=1" if one_time else "") + ("&fast=1" if fast else "")
    register_path = f"/register/{backend}{query}"
    deadline = time.perf_counter() + seconds
    latencies: list[float] = []
    failures = [0]
    lock = threading.Lock()

    def client() -> None:
        conn = http.client.HTTPConnection(host, port, timeout=30)
        mine: list[float] = []
        failed = 0
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            try:
                conn.request("POST", register_path, body=asset)
                resp = conn.getresponse()
                address = resp.read().decode()
                ok = resp.status == 200
                if ok:
                    conn.request("GET", address)
                    resp = conn.getresponse()
                    ok = resp.status == 200 and resp.read() == asset
                    if not resp.isclosed():
                        resp.read()
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=30)
            if ok:
                mine.append(time.perf_counter() - start)
            else:
                failed += 1
        conn.close()
        with lock:
            latencies.extend(mine)
            failures[0] += failed

    started = time.perf_counter()
    cpu = cpu_seconds(workers or [])
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    cpu = cpu_seconds(workers or []) - cpu
    latencies.sort()
    result = {
        "per_s": len(latencies) / elapsed,
        "p50_ms": _percentile(latencies, 0.50) * 1000,
        "p99_ms": _percentile(latencies, 0.99) * 1000,
        "failed": failures[0],
    }
    if workers and latencies:
        result["worker_cpu_us"] = cpu / (len(latencies) + failures[0]) * 1e6
    return result


def prefill(base: str, backend: str, count: int, asset: bytes, clients: int = 8) -> None:
    """Register ``count`` entries, so that the cache is full before it is measured."""
    host, port, _ = _split(base)
    left = iter(range(count))
    lock = threading.Lock()

    def client() -> None:
        conn = http.client.HTTPConnection(host, port, timeout=30)
        while True:
            with lock:
                if next(left, None) is None:
                    break
            conn.request("POST", f"/register/{backend}?name=icon.svg", body=asset)
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                raise RuntimeError(f"registering into {backend} at {base} gave {resp.status}")
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(q * len(values)))]


_WRK_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def measure_wrk(
    url: str, seconds: int, workers: list[psutil.Process] | None = None
) -> dict[str, float]:
    """``wrk`` with 2 threads and 8 connections for a few seconds.

    With ``workers``, also the server's CPU time per request (``worker_cpu_us``).
    """
    cpu = cpu_seconds(workers or [])
    out = subprocess.run(
        ["wrk", "-t2", "-c8", f"-d{seconds}s", "--latency", url],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    ).stdout
    cpu = cpu_seconds(workers or []) - cpu
    result = {"per_s": float(re.search(r"Requests/sec:\s*([\d.]+)", out).group(1))}  # type: ignore[union-attr]
    count = re.search(r"(\d+) requests in", out)
    if workers and count and int(count.group(1)):
        result["worker_cpu_us"] = cpu / int(count.group(1)) * 1e6
    for label, key in (("50%", "p50_ms"), ("99%", "p99_ms")):
        found = re.search(rf"^\s*{re.escape(label)}\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
        if found:
            result[key] = float(found.group(1)) * _WRK_UNITS[found.group(2)]
    bad = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    result["failed"] = int(bad.group(1)) if bad else 0
    # gunicorn's sync worker closes every connection: wrk counts those as read errors.
    result["socket_errors"] = sum(int(g) for g in errors.groups()) if errors else 0
    return result


def measure_register(python: str, settings: Settings, cache_dir: str, redis_url: str) -> Any:
    env = {**os.environ, **python_path_env(python)}
    sizes = ",".join(str(s) for s in settings.register_sizes)
    out = subprocess.run(
        [
            python,
            str(BENCH / "register_cost.py"),
            sizes,
            str(settings.register_repeats),
            cache_dir,
            redis_url,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
        env=env,
        cwd=tempfile.gettempdir(),
    ).stdout
    return json.loads(out)


# The run ----------------------------------------------------------------------


def ensure_venv_020() -> str:
    """The Python of a virtualenv with dash-file-cache 0.2.0, made on first use."""
    python = VENV_020 / "bin" / "python"
    if not python.exists():
        print("creating benchmarks/.venv-020 with dash-file-cache 0.2.0 ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV_020)], check=True)
    probe = subprocess.run(
        [str(python), "-c", "import dash_file_cache, gunicorn, flask"],
        capture_output=True,
        cwd=tempfile.gettempdir(),
    )
    if probe.returncode != 0:
        subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "-q",
                "dash-file-cache==0.2.0",
                "flask",
                "gunicorn",
            ],
            check=True,
        )
    return str(python)


class Run:
    def __init__(self, settings: Settings, with_020: bool) -> None:
        self.settings = settings
        self.with_020 = with_020
        self.series: dict[tuple[str, str, str], Series] = {}
        self.skipped: list[str] = []
        self.data = tempfile.mkdtemp(prefix="dfc-bench-data-")
        self.asset = svg_asset()

    def add(self, workload: str, server: str, case: str, run: dict[str, float]) -> None:
        key = (workload, server, case)
        self.series.setdefault(key, Series(workload, server, case)).runs.append(run)

    def prepare_data(self) -> None:
        Path(self.data, "asset.svg").write_bytes(self.asset)
        with open(Path(self.data, "big.bin"), "wb") as out:
            left = self.settings.large_bytes
            while left:
                out.write(os.urandom(min(left, 16 * MiB)))
                left -= min(left, 16 * MiB)

    def start(self, stack: list[Any], make: Callable[[], Any], what: str) -> Any:
        try:
            made = make()
        except (OSError, RuntimeError, TimeoutError, subprocess.SubprocessError) as exc:
            self.skipped.append(f"{what}: {exc}")
            print(f"  skipped {what}: {exc}", flush=True)
            return None
        stack.append(made)
        return made

    def execute(self) -> dict[str, Any]:
        settings = self.settings
        stack: list[Any] = []
        started = time.monotonic()
        try:
            self.prepare_data()
            redis = (
                self.start(stack, Redis, "redis-server") if shutil.which("redis-server") else None
            )
            redis_url = redis.url if redis is not None else ""
            python_020 = ensure_venv_020() if self.with_020 else None
            servers: dict[str, Gunicorn] = {}
            kinds = ["gthread", "sync"] if settings.sync else ["gthread"]
            for worker in kinds:
                name = f"ours-{worker}"
                made = self.start(
                    stack,
                    lambda w=worker, n=name: Gunicorn(n, sys.executable, w, self.data, redis_url),
                    name,
                )
                if made is not None:
                    servers[name] = made
                if python_020 is not None:
                    name = f"0.2.0-{worker}"
                    made = self.start(
                        stack, lambda w=worker, n=name: Gunicorn(n, python_020, w, self.data), name
                    )
                    if made is not None:
                        servers[name] = made
            ours = servers["ours-gthread"]
            nginx = None
            if shutil.which("nginx") or os.path.exists("/usr/sbin/nginx"):
                nginx = self.start(
                    stack,
                    lambda: Nginx(ours, self.data, os.path.join(ours.cache_dir, "file")),
                    "nginx",
                )
            print(f"servers up in {time.monotonic() - started:.1f} s", flush=True)
            self.large(servers, nginx)
            print(f"large done at {time.monotonic() - started:.1f} s", flush=True)
            self.roundtrip(servers)
            print(f"round trips done at {time.monotonic() - started:.1f} s", flush=True)
            self.get_only(servers, nginx)
            print(f"GET-only done at {time.monotonic() - started:.1f} s", flush=True)
            register = {"ours": measure_register(sys.executable, settings, self.data, redis_url)}
            if python_020 is not None:
                register["0.2.0"] = measure_register(python_020, settings, self.data, "")
            versions = {name: server.health.split(" ", 1)[-1] for name, server in servers.items()}
        finally:
            for item in reversed(stack):
                item.close()
            shutil.rmtree(self.data, ignore_errors=True)
        return self.report(register, versions, time.monotonic() - started)

    # Workload 1 and the offload figure.
    def large(self, servers: dict[str, Gunicorn], nginx: Nginx | None) -> None:
        size = self.settings.large_bytes
        plans: list[tuple[str, str, Gunicorn, str]] = []
        for name, server in servers.items():
            legacy = name.startswith("0.2.0")
            cases = {"path": post(f"{server.base}/register-file/plain?name=big.bin&as=path")}
            for backend in ("plain", "file", "redis"):
                if backend == "redis" and (legacy or not self._has(server, backend)):
                    continue
                cases[backend] = post(
                    f"{server.base}/register-file/{backend}?name=big.bin&as=bytes"
                )
            cases["send_file"] = "/send-file/big.bin"
            if not legacy:
                cases["base64_json"] = "/base64/big.bin"
            for case, address in cases.items():
                plans.append((name, case, server, server.base + address))
        if nginx is not None:
            ours = servers["ours-gthread"]
            plans.append(("nginx", "static", ours, nginx.base + "/static/big.bin"))
            for case, kind in (("offload_path", "path"), ("offload_file", "bytes")):
                address = post(f"{ours.base}/register-file/offload?name=big.bin&as={kind}")
                plans.append(("nginx", case, ours, nginx.base + address))
        for _ in range(self.settings.large_repeats):
            for name, case, server, url in plans:
                self.add("large", name, case, measure_large(url, server.workers(), size))

    def _has(self, server: Gunicorn, backend: str, prefix: str = "/d/") -> bool:
        status, _, _ = download(f"{server.base}{prefix}{backend}?uid=x")
        return status != 404

    def _fast(self, name: str, server: Gunicorn) -> bool:
        """Whether ``server`` also serves its entries through the opt-in fast path."""
        return not name.startswith("0.2.0") and self._has(server, "plain", prefix="/f/")

    # Workload 2.
    def roundtrip(self, servers: dict[str, Gunicorn]) -> None:
        settings = self.settings
        plans: list[tuple[str, str, Gunicorn, str, bool, bool]] = []
        full: list[tuple[Gunicorn, str]] = []
        for name, server in servers.items():
            gthread = name.endswith("gthread")
            backends = ["plain", "queue", "file", "redis"] if gthread else ["plain", "file"]
            if settings.quick:
                backends = ["plain", "file"]
            # Caches that are full and evict on every registration (``-full``).
            steady = ["plain-full", "queue-full"] if gthread and not settings.quick else []
            steady = steady or ["plain-full"]
            full += [(server, backend) for backend in steady]
            ways = ["", "fast:"] if self._fast(name, server) else [""]
            for way in ways:
                for backend in backends + steady:
                    if backend == "redis" and (
                        name.startswith("0.2.0") or not self._has(server, backend)
                    ):
                        continue
                    fast = way == "fast:"
                    plans.append((name, way + backend, server, backend, False, fast))
                    if gthread and backend in backends:
                        case = way + backend + "+one_time"
                        plans.append((name, case, server, backend, True, fast))
        for server, backend in full:
            prefill(server.base, backend, settings.full_size, self.asset)
        for _ in range(settings.repeats):
            for name, case, server, backend, one_time, fast in plans:
                run = measure_roundtrip(
                    server.base,
                    backend,
                    one_time,
                    settings.clients,
                    settings.roundtrip_seconds,
                    self.asset,
                    fast,
                    server.workers(),
                )
                self.add("roundtrip", name, case, run)

    # Workload 3.
    def get_only(self, servers: dict[str, Gunicorn], nginx: Nginx | None) -> None:
        if shutil.which("wrk") is None:
            self.skipped.append("GET-only: wrk is not installed")
            return
        plans: list[tuple[str, str, str]] = []
        for name, server in servers.items():
            cases = {
                "plain": post(f"{server.base}/register/plain?name=icon.svg", self.asset),
                "file": post(f"{server.base}/register/file?name=icon.svg", self.asset),
                "path": post(f"{server.base}/register-file/plain?name=asset.svg&as=path"),
            }
            if not name.startswith("0.2.0"):
                cases["send_file"] = "/send-file/asset.svg"
            if self._fast(name, server):
                base = server.base
                cases["fast:plain"] = post(
                    f"{base}/register/plain?name=icon.svg&fast=1", self.asset
                )
                cases["fast:file"] = post(f"{base}/register/file?name=icon.svg&fast=1", self.asset)
                cases["fast:path"] = post(
                    f"{base}/register-file/plain?name=asset.svg&as=path&fast=1"
                )
            if name.endswith("sync"):
                kept = ("plain", "fast:plain", "send_file")
                cases = {k: v for k, v in cases.items() if k in kept}
            for case, address in cases.items():
                plans.append((name, case, server.base + address))
        if nginx is not None:
            ours = servers["ours-gthread"]
            plans.append(("nginx", "static", nginx.base + "/static/asset.svg"))
            address = post(f"{ours.base}/register-file/offload?name=asset.svg&as=path")
            plans.append(("nginx", "offload_path", nginx.base + address))
        # Short wrk runs are the noisiest figures: more of them.
        for _ in range(self.settings.wrk_repeats):
            for name, case, url in plans:
                workers = servers[name].workers() if name in servers else None
                run = measure_wrk(url, self.settings.wrk_seconds, workers)
                self.add("get_only", name, case, run)

    # Report.
    def report(self, register: Any, versions: dict[str, str], seconds: float) -> dict[str, Any]:
        by_workload: dict[str, list[dict[str, Any]]] = {
            "large": [],
            "roundtrip": [],
            "get_only": [],
        }
        for series in self.series.values():
            by_workload[series.workload].append(series.summary())
        ratios, targets = judge(self.series, register)
        return {
            "meta": machine() | {"seconds": round(seconds, 1), "versions": versions},
            "settings": asdict(self.settings),
            "large": by_workload["large"],
            "roundtrip": by_workload["roundtrip"],
            "get_only": by_workload["get_only"],
            "register": register,
            "ratios": ratios,
            "targets": targets,
            "skipped": self.skipped,
        }


def judge(
    series: dict[tuple[str, str, str], Series], register: Any
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Ratios between contenders of the same run, and the targets they meet."""

    def value(workload: str, server: str, case: str, key: str) -> float | None:
        found = series.get((workload, server, case))
        if found is None:
            return None
        result = found.median(key)
        return None if result != result else result  # NaN

    ratios: dict[str, float] = {}

    def ratio(name: str, top: float | None, bottom: float | None) -> float | None:
        if top is None or bottom is None or bottom == 0:
            return None
        ratios[name] = round(top / bottom, 3)
        return ratios[name]

    targets: list[dict[str, Any]] = []

    def target(
        name: str, got: float | None, goal: float, extra: bool = True, note: str = ""
    ) -> None:
        if got is None:
            return  # not measured in this run
        met = bool(got >= goal and extra)
        targets.append({"target": name, "value": got, "goal": goal, "met": met, "note": note})

    for worker in ("gthread", "sync"):
        ours, old = f"ours-{worker}", f"0.2.0-{worker}"
        send = value("large", ours, "send_file", "mib_per_s")
        for case in ("path", "file", "plain", "redis", "base64_json"):
            got = value("large", ours, case, "mib_per_s")
            r = ratio(f"large {case} / send_file ({worker})", got, send)
            ratio(f"large {case} / 0.2.0 ({worker})", got, value("large", old, case, "mib_per_s"))
            ratio(
                f"large {case} worker CPU, send_file / ours ({worker})",
                value("large", ours, "send_file", "worker_cpu_ms_per_gib"),
                value("large", ours, case, "worker_cpu_ms_per_gib"),
            )
            rss = value("large", ours, case, "rss_growth_mib")
            if case in ("path", "file"):
                target(
                    f"large {case} >= 1.0 x send_file, RSS growth < 8 MiB ({worker})",
                    r,
                    1.0,
                    rss is not None and rss < 8,
                    f"RSS growth {rss:.1f} MiB" if rss is not None else "",
                )
            elif case == "plain":
                target(f"large in-memory >= 0.9 x send_file ({worker})", r, 0.9)
        # Each figure of ours twice: through the route (serve(app, fast=False)), and
        # served the default way, through the fast path ("fast:" cases), both against
        # the same figure of 0.2.0.
        for way, label in (("", worker), ("fast:", f"{worker}, fast path")):
            for case in ("plain", "queue", "file", "redis", "plain-full", "queue-full"):
                for suffix in ("", "+one_time"):
                    got = value("roundtrip", ours, way + case + suffix, "per_s")
                    old_value = value("roundtrip", old, case + suffix, "per_s")
                    r = ratio(f"register+GET {case}{suffix} / 0.2.0 ({label})", got, old_value)
                    cpu = ratio(
                        f"register+GET {case}{suffix} worker CPU, 0.2.0 / ours ({label})",
                        value("roundtrip", old, case + suffix, "worker_cpu_us"),
                        value("roundtrip", ours, way + case + suffix, "worker_cpu_us"),
                    )
                    failed = series.get(("roundtrip", ours, way + case + suffix))
                    failures = sum(run.get("failed", 0) for run in failed.runs) if failed else 0
                    if old_value is not None:
                        target(
                            f"register+GET {case}{suffix} >= 2 x 0.2.0, 0 failed ({label})",
                            r,
                            2.0,
                            failures == 0,
                            _notes(f"{failures} failed", _cpu_note(cpu)),
                        )
            send = value("get_only", ours, "send_file", "per_s")
            static = value("get_only", "nginx", "static", "per_s")
            for case in ("plain", "file", "path"):
                got = value("get_only", ours, way + case, "per_s")
                ratio(f"GET-only {case} / send_file ({label})", got, send)
                ratio(f"GET-only {case} / nginx static ({label})", got, static)
                old_value = value("get_only", old, case, "per_s")
                r = ratio(f"GET-only {case} / 0.2.0 ({label})", got, old_value)
                cpu = ratio(
                    f"GET-only {case} worker CPU, 0.2.0 / ours ({label})",
                    value("get_only", old, case, "worker_cpu_us"),
                    value("get_only", ours, way + case, "worker_cpu_us"),
                )
                if r is not None:
                    target(f"GET-only {case} >= 1.2 x 0.2.0 ({label})", r, 1.2, note=_cpu_note(cpu))
    static = value("large", "nginx", "static", "mib_per_s")
    for case in ("offload_path", "offload_file"):
        r = ratio(
            f"large {case} / nginx static", value("large", "nginx", case, "mib_per_s"), static
        )
        target(f"large {case} >= 0.8 x nginx static", r, 0.8)
    ratio(
        "GET-only offload_path / nginx static",
        value("get_only", "nginx", "offload_path", "per_s"),
        value("get_only", "nginx", "static", "per_s"),
    )
    for backend, figures in register.get("ours", {}).items():
        for size, seconds in figures.items():
            old = register.get("0.2.0", {}).get(backend, {}).get(size)
            ratio(f"register() {backend} {size} B time / 0.2.0", seconds, old)
    return ratios, targets


def _cpu_note(ratio: float | None) -> str:
    """How much less CPU time per request the worker used than 0.2.0's."""
    return "" if ratio is None else f"worker CPU/request {ratio:.2f} x less"


def _notes(*notes: str) -> str:
    return "; ".join(note for note in notes if note)


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / (1 << 30), 1),
        "cpu": model or platform.processor(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


# Printing ---------------------------------------------------------------------


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if value != value else f"{value:,.{digits}f}"
    return str(value)


def table(rows: list[list[str]]) -> Iterator[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        yield "| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + " |"
        if n == 0:
            yield "|" + "|".join("-" * (w + 2) for w in widths) + "|"


def render(result: dict[str, Any]) -> str:
    meta = result["meta"]
    lines = [
        f"date {meta['date']}, {meta['nproc']} CPUs ({meta['cpu']}), "
        f"{meta['memory_gib']} GiB, Python {meta['python']}, {meta['seconds']} s",
        "",
        f"Large entry ({result['settings']['large_bytes'] // MiB} MiB, one client)",
        "",
    ]
    rows = [["server", "case", "MiB/s", "RSS growth MiB", "worker CPU ms/GiB"]]
    for row in result["large"]:
        rows.append(
            [
                row["server"],
                row["case"],
                _fmt(row["mib_per_s"]),
                _fmt(row["rss_growth_mib"]),
                _fmt(row.get("worker_cpu_ms_per_gib"), 0),
            ]
        )
    lines += [*table(rows), "", "Register + GET of a 10 KiB SVG, 8 clients", ""]
    rows = [["server", "backend", "round trips/s", "p50 ms", "p99 ms", "failed", "worker CPU us"]]
    for row in result["roundtrip"]:
        rows.append(
            [
                row["server"],
                row["case"],
                _fmt(row["per_s"]),
                _fmt(row["p50_ms"], 2),
                _fmt(row["p99_ms"], 2),
                _fmt(row.get("failed", 0)),
                _fmt(row.get("worker_cpu_us"), 0),
            ]
        )
    lines += [*table(rows), "", "GET-only of a 10 KiB asset (wrk -t2 -c8)", ""]
    rows = [["server", "case", "requests/s", "p50 ms", "p99 ms", "non-2xx", "worker CPU us"]]
    for row in result["get_only"]:
        rows.append(
            [
                row["server"],
                row["case"],
                _fmt(row["per_s"]),
                _fmt(row.get("p50_ms"), 2),
                _fmt(row.get("p99_ms"), 2),
                _fmt(row.get("failed", 0)),
                _fmt(row.get("worker_cpu_us"), 0),
            ]
        )
    lines += [*table(rows), "", "register() alone, median seconds", ""]
    rows = [
        ["version", "backend", *(f"{int(s):,} B" for s in result["settings"]["register_sizes"])]
    ]
    for version, backends in result["register"].items():
        for backend, figures in backends.items():
            rows.append(
                [
                    version,
                    backend,
                    *(
                        f"{figures[str(s)] * 1000:.3f} ms"
                        for s in result["settings"]["register_sizes"]
                    ),
                ]
            )
    lines += [*table(rows), "", "Ratios (same run)", ""]
    rows = [["ratio", "value"]] + [[k, f"{v:.2f}"] for k, v in result["ratios"].items()]
    lines += [*table(rows), "", "Targets", ""]
    rows = [["target", "value", "met", "note"]]
    for item in result["targets"]:
        met = {True: "yes", False: "NO", None: "-"}[item["met"]]
        rows.append([item["target"], _fmt(item["value"], 2), met, item["note"]])
    lines += [*table(rows)]
    if result["skipped"]:
        lines += ["", "Skipped: " + "; ".join(result["skipped"])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    parser.add_argument("--no-020", action="store_true", help="skip the 0.2.0 comparison")
    parser.add_argument(
        "--out", help="the JSON file to write (default benchmarks/results/<date>.json)"
    )
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    result = Run(settings, with_020=not args.no_020).execute()
    print(render(result))
    out = (
        Path(args.out)
        if args.out
        else (
            BENCH
            / "results"
            / f"{datetime.date.today().isoformat()}{'-quick' if args.quick else ''}.json"
        )
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(out.name + ".tmp")
    temporary.write_text(json.dumps(result, indent=2) + "\n")
    temporary.replace(out)
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
