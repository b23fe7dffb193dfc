"""Soak the bounded caches: register far more than ``max_bytes`` and watch what they hold.

Usage::

    python benchmarks/soak.py [--quick] [--entries N] [--max-bytes B]
                              [--backends plain,file,redis] [--out PATH]

For each backend, the script registers N entries whose sizes are drawn log-uniformly
between 1 KiB and 2 MiB with a fixed seed (about 275 kB on average, so the total is
many times ``max_bytes``) into a cache built with that ``max_bytes``, and after every
registration measures what the cache really takes:

- ``CachePlain``: the body bytes it holds (``stats()["bytes"]``) and the growth of
  this process's resident memory over its level before the first registration;
- ``CacheFile``: the apparent size of everything under the cache directory (a walk
  with ``os.scandir``, cross-checked with ``du -sb`` at a few points), split into
  body files, SQLite files and directories, and diskcache's own ``volume()``;
- ``CacheRedis``: the ``used_memory`` of a throw-away redis-server, split into the
  memory of the body keys (``MEMORY USAGE`` of every live, lingering or half-written
  body piece), of every other key of the namespace (entry hashes, the LRU and size
  bookkeeping, the set of ids remembered as gone, counters) and the growth of the
  server's own overhead (``used_memory_overhead``: the key tables, and the clients'
  buffers as ``CLIENT LIST`` tells them); and the body bytes the cache counts (its
  running total, checked against ``stats()["bytes"]``).

It keeps the peak of each figure, checks it against ``max_bytes`` plus the largest
single entry, prints a table, writes JSON and exits with status 1 if a bound is
broken. The bound allows one entry over ``max_bytes`` because a backend stores the
new body before it evicts older ones.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import inspect
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil
from bench_servers import BENCH, Redis
from run import machine, table

# Measure this checkout, whatever copy of the package is installed.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import dash_file_cache as dfc

KiB, MiB, MB = 1 << 10, 1 << 20, 10**6
BACKENDS = ("plain", "file", "redis")
# diskcache keeps its index in SQLite: the database, its write-ahead log and the
# shared-memory file, in the cache directory and in the "marks" one below it.
SQLITE_SUFFIXES = (".db", ".db-wal", ".db-shm", ".db-journal")
# How many times during a run the costly figures (du, stats of a disk cache, the
# stats() of Redis) are taken.
CHECKPOINTS = 20
# MEMORY USAGE of every key of the namespace ARGV[1], summed by kind on the server:
# live, lingering (with their length) and half-written body pieces, the set of gone
# ids, every other key; and how many keys there are.
ACCOUNT_SCRIPT = """
local prefix = ARGV[1] .. ':'
local body, tmp, gone = prefix .. 'body:', prefix .. 'tmp:', prefix .. 'gone'
local function starts(name, part) return string.sub(name, 1, #part) == part end
local sums = {0, 0, 0, 0, 0, 0, 0}
local cursor = '0'
repeat
  local reply = redis.call('SCAN', cursor, 'MATCH', prefix .. '*', 'COUNT', 1000)
  cursor = reply[1]
  for _, name in ipairs(reply[2]) do
    local used = redis.call('MEMORY', 'USAGE', name, 'SAMPLES', 0) or 0
    if starts(name, tmp) then
      sums[4] = sums[4] + used
    elseif starts(name, body) then
      if redis.call('PTTL', name) >= 0 then
        sums[2] = sums[2] + used
        sums[3] = sums[3] + redis.call('STRLEN', name)
      else
        sums[1] = sums[1] + used
      end
    elseif name == gone then
      sums[5] = sums[5] + used
    else
      sums[6] = sums[6] + used
    end
    sums[7] = sums[7] + 1
  end
until cursor == '0'
return sums
"""


@dataclass(frozen=True, slots=True)
class Plan:
    """What one soak registers, and how often it looks."""

    entries: int
    max_bytes: int
    min_entry: int
    max_entry: int
    seed: int
    every: int
    quick: bool
    redis_linger: int | None = None

    def sizes(self) -> list[int]:
        """Entry sizes, log-uniform between ``min_entry`` and ``max_entry`` bytes."""
        rng = random.Random(self.seed)
        low, high = math.log(self.min_entry), math.log(self.max_entry)
        return [
            min(self.max_entry, max(self.min_entry, round(math.exp(rng.uniform(low, high)))))
            for _ in range(self.entries)
        ]


def payloads(plan: Plan, sizes: list[int]) -> Iterator[bytes]:
    """One fresh ``bytes`` per size, cut at a random offset from a pool of random bytes.

    The contents do not matter to any backend (none compresses), so a pool of
    incompressible bytes is enough, and far cheaper than fresh random data.
    """
    rng = random.Random(plan.seed + 1)
    pool = rng.randbytes(plan.max_entry + MiB)
    for size in sizes:
        start = rng.randrange(len(pool) - size + 1)
        yield pool[start : start + size]


# What each backend takes -------------------------------------------------------


class Probe:
    """Measures one backend: cheap figures after each registration, costly ones rarely."""

    backend = ""

    def __init__(self, cache: dfc.CacheAbstract) -> None:
        self.cache = cache

    def start(self) -> None:
        """Take the baselines, just before the first registration."""

    def sample(self) -> dict[str, int]:
        """The figures taken after every registration (each probe has its own)."""
        raise NotImplementedError

    def checkpoint(self) -> dict[str, int]:
        return {}

    def details(self) -> dict[str, Any]:
        """Settings of the backend worth keeping beside the figures."""
        return {}

    def close(self) -> None:
        """Release what the probe or its cache holds."""


class PlainProbe(Probe):
    backend = "plain"

    def __init__(self, plan: Plan) -> None:
        # cache_size far above the number of entries: only max_bytes evicts.
        super().__init__(dfc.CachePlain(plan.entries + 1, max_bytes=plan.max_bytes))
        self.process = psutil.Process()
        self.baseline_rss = 0

    def start(self) -> None:
        gc.collect()
        self.baseline_rss = self.process.memory_info().rss

    def sample(self) -> dict[str, int]:
        return {
            "held_bytes": self.cache.stats()["bytes"],
            "rss_growth": self.process.memory_info().rss - self.baseline_rss,
        }

    def details(self) -> dict[str, Any]:
        return {"baseline_rss": self.baseline_rss}


@dataclass(frozen=True, slots=True)
class DiskUsage:
    """Apparent sizes under a directory, as ``du -sb`` adds them up."""

    bodies: int
    sqlite: dict[str, int]
    dirs: int
    allocated: int

    @property
    def index(self) -> int:
        return sum(self.sqlite.values())

    @property
    def total(self) -> int:
        return self.bodies + self.index + self.dirs


def disk_usage(directory: str) -> DiskUsage:
    """Walk ``directory``: body files, SQLite files by name, directories, blocks allocated."""
    top = os.lstat(directory)
    bodies = 0
    sqlite: dict[str, int] = {}
    dirs, allocated = top.st_size, top.st_blocks * 512
    pending = [directory]
    while pending:
        with os.scandir(pending.pop()) as found:
            for item in found:
                try:
                    info = item.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                allocated += info.st_blocks * 512
                if item.is_dir(follow_symlinks=False):
                    dirs += info.st_size
                    pending.append(item.path)
                elif item.name.endswith(SQLITE_SUFFIXES):
                    sqlite[os.path.relpath(item.path, directory)] = info.st_size
                else:
                    bodies += info.st_size
    return DiskUsage(bodies, sqlite, dirs, allocated)


def du_bytes(directory: str) -> int:
    out = subprocess.run(
        ["du", "-sb", directory], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return int(out.split()[0])


class FileProbe(Probe):
    backend = "file"

    def __init__(self, plan: Plan) -> None:
        self.folder = tempfile.mkdtemp(prefix="dfc-soak-file-")
        self.directory = os.path.join(self.folder, "cache")
        super().__init__(dfc.CacheFile(self.directory, max_bytes=plan.max_bytes))
        self.du_gap = 0

    def sample(self) -> dict[str, int]:
        usage = disk_usage(self.directory)
        assert isinstance(self.cache, dfc.CacheFile)
        parts = dict.fromkeys(("index_db_bytes", "index_journal_bytes", "marks_bytes"), 0)
        for name, size in usage.sqlite.items():
            if name.startswith("marks" + os.sep):
                parts["marks_bytes"] += size
            elif name.endswith(".db"):
                parts["index_db_bytes"] += size
            else:
                parts["index_journal_bytes"] += size
        return {
            "disk_bytes": usage.total,
            "body_file_bytes": usage.bodies,
            "beyond_sqlite_bytes": usage.bodies + usage.dirs,
            "index_bytes": usage.index,
            **parts,
            "dir_bytes": usage.dirs,
            "allocated_bytes": usage.allocated,
            "diskcache_volume": int(self.cache.cache.volume()),
        }

    def checkpoint(self) -> dict[str, int]:
        du = du_bytes(self.directory)
        walked = disk_usage(self.directory).total
        # Nothing writes between the two, so they must agree exactly.
        self.du_gap = max(self.du_gap, abs(du - walked))
        return {"du_bytes": du, "held_bytes": self.cache.stats()["bytes"]}

    def details(self) -> dict[str, Any]:
        return {"du_minus_walk_max": self.du_gap}

    def close(self) -> None:
        assert isinstance(self.cache, dfc.CacheFile)
        self.cache.close()
        shutil.rmtree(self.folder, ignore_errors=True)


class RedisProbe(Probe):
    """Measures CacheRedis: where the server's memory goes, after every registration.

    ``used_memory`` grows with the body keys, with the other keys of the namespace
    and with the server's overhead (client buffers, key tables); each is measured
    at the same moment, so that the bodies can be held to the bound alone and
    ``used_memory`` to the bound plus the rest.

    ``INFO``'s overhead counts the clients' memory as of the server's last periodic
    look at them, and misses the query buffer of a connection that has just sent a
    body (up to about a MB, released after two idle seconds): the clients' share is
    replaced by what ``CLIENT LIST`` tells now.
    """

    backend = "redis"

    def __init__(self, plan: Plan, server: Redis) -> None:
        import redis

        self.client = redis.Redis.from_url(server.url)
        self.linger_seconds = (
            _default("linger_seconds") if plan.redis_linger is None else plan.redis_linger
        )
        cache = dfc.CacheRedis(
            server.url,
            namespace="soak",
            max_bytes=plan.max_bytes,
            linger_seconds=self.linger_seconds,
        )
        super().__init__(cache)
        self.baseline = self.baseline_overhead = self.baseline_clients = 0
        self.stats_gap = 0
        self.keys_max = 0
        self.account = self.client.register_script(ACCOUNT_SCRIPT)

    def memory(self) -> tuple[int, int, int]:
        """``used_memory``, the overhead with the clients as they are now, the clients."""
        pipe = self.client.pipeline(transaction=False)
        pipe.info("memory")
        pipe.client_list()
        info, clients = pipe.execute()
        now = sum(int(client["tot-mem"]) for client in clients)
        seen = int(info["mem_clients_normal"]) + int(info["mem_clients_slaves"])
        return int(info["used_memory"]), int(info["used_memory_overhead"]) - seen + now, now

    def start(self) -> None:
        self.baseline, self.baseline_overhead, self.baseline_clients = self.memory()

    def sample(self) -> dict[str, int]:
        """The running total of body bytes, and where the server's memory went.

        stats() would decode every entry: the running total that the cache's own
        bound compares with is read instead, and checked against stats() at the
        checkpoints. The keys are measured by a script, in one round trip.
        """
        held = int(self.client.get("soak:bytes") or 0)
        replies = self.account(args=["soak"])
        # Read once the keys are measured: the replies just sent no longer sit in
        # an output buffer that only one of the two figures would count.
        used, overhead, clients = self.memory()
        names = (
            "live_body_allocated",
            "lingering_body_allocated",
            "lingering_body_bytes",
            "tmp_body_allocated",
            "gone_set_allocated",
            "other_keys_allocated",
            "keys",
        )
        figures = {name: int(value) for name, value in zip(names, replies, strict=True)}
        self.keys_max = max(self.keys_max, figures.pop("keys"))
        bodies = sum(
            figures[name]
            for name in ("live_body_allocated", "lingering_body_allocated", "tmp_body_allocated")
        )
        bookkeeping = figures["other_keys_allocated"] + figures["gone_set_allocated"]
        growth, overhead_growth = used - self.baseline, overhead - self.baseline_overhead
        return {
            "held_bytes_total": held,
            "used_memory_growth": growth,
            "used_memory_less_bookkeeping": growth - bookkeeping - overhead_growth,
            "body_allocated": bodies,
            **figures,
            "bookkeeping_keys_allocated": bookkeeping,
            "overhead_growth": overhead_growth,
            "clients_growth": clients - self.baseline_clients,
            "unaccounted": growth - bodies - bookkeeping - overhead_growth,
        }

    def checkpoint(self) -> dict[str, int]:
        """stats(), checked against the running total."""
        held = self.cache.stats()["bytes"]
        self.stats_gap = max(self.stats_gap, abs(held - int(self.client.get("soak:bytes") or 0)))
        return {"held_bytes": held}

    def details(self) -> dict[str, Any]:
        return {
            "baseline_used_memory": self.baseline,
            "baseline_used_memory_overhead": self.baseline_overhead,
            "baseline_clients": self.baseline_clients,
            "namespace_keys_max": self.keys_max,
            "linger_seconds": self.linger_seconds,
            "stats_minus_total_max": self.stats_gap,
            "redis_version": self.client.info("server").get("redis_version"),
            "maxmemory": self.client.info("memory").get("maxmemory"),
        }

    def close(self) -> None:
        assert isinstance(self.cache, dfc.CacheRedis)
        self.cache.close()
        self.client.close()


def _default(name: str) -> Any:
    return inspect.signature(dfc.CacheRedis).parameters[name].default


# One soak ---------------------------------------------------------------------


class Peaks:
    """The highest value of each figure, with the registration it followed."""

    def __init__(self) -> None:
        self.value: dict[str, int] = {}
        self.at: dict[str, int] = {}
        self.beside: dict[str, dict[str, int]] = {}

    def add(self, count: int, figures: dict[str, int]) -> None:
        for name, value in figures.items():
            if name not in self.value or value > self.value[name]:
                self.value[name] = value
                self.at[name] = count
                self.beside[name] = figures

    def as_dict(self) -> dict[str, Any]:
        return {name: {"value": v, "after": self.at[name]} for name, v in self.value.items()}


def soak(probe: Probe, plan: Plan) -> dict[str, Any]:
    """Register every entry into the probe's cache, sampling as it goes."""
    service = dfc.ServiceData(probe.cache, service_name="/soak")
    sizes = plan.sizes()
    checkpoint_after = {
        max(1, round(plan.entries * (n + 1) / CHECKPOINTS)) for n in range(CHECKPOINTS)
    }
    trace_every = max(1, plan.entries // 100)
    peaks = Peaks()
    checkpoints: list[dict[str, int]] = []
    trace: list[dict[str, int]] = []
    probe.start()
    started = time.perf_counter()
    sampling = 0.0
    for count, payload in enumerate(payloads(plan, sizes), start=1):
        service.register(payload, file_name="soak.bin", mime_type="application/octet-stream")
        del payload
        if count % plan.every and count not in checkpoint_after and count != plan.entries:
            continue
        begun = time.perf_counter()
        figures = probe.sample()
        peaks.add(count, figures)
        if count % trace_every == 0:
            trace.append({"after": count, **figures})
        if count in checkpoint_after:
            extra = probe.checkpoint()
            peaks.add(count, extra)
            checkpoints.append({"after": count, **figures, **extra})
        sampling += time.perf_counter() - begun
    seconds = time.perf_counter() - started
    stats = service.stats()
    return {
        "entries": plan.entries,
        "registered_bytes": sum(sizes),
        "largest_entry": max(sizes),
        "seconds": round(seconds, 2),
        "sampling_seconds": round(sampling, 2),
        "peaks": peaks.as_dict(),
        "at_disk_peak": peaks.beside.get("disk_bytes"),
        "final_stats": {k: stats[k] for k in ("entries", "bytes", "stored", "evicted_count")},
        "details": probe.details(),
        "checkpoints": checkpoints,
        "trace": trace,
    }


# Judging ----------------------------------------------------------------------


def judge(backend: str, result: dict[str, Any], max_bytes: int) -> list[dict[str, Any]]:
    """The bounds a backend's peaks must respect, and the figures only reported."""
    peaks, largest = result["peaks"], result["largest_entry"]
    bound = max_bytes + largest
    rows: list[dict[str, Any]] = []

    def row(figure: str, name: str, limit: int | None, rule: str, judged: bool = True) -> None:
        peak = peaks[name]["value"]
        rows.append(
            {
                "backend": backend,
                "figure": figure,
                "peak": peak,
                "after": peaks[name]["after"],
                "bound": limit,
                "rule": rule,
                "judged": judged,
                "ok": peak <= limit if judged and limit is not None else None,
            }
        )

    plus = "max_bytes + largest entry"
    if backend == "plain":
        row("held body bytes (stats)", "held_bytes", bound, plus)
        row("process RSS growth", "rss_growth", bound, "not judged (see notes)", False)
    elif backend == "file":
        then = result["at_disk_peak"]["index_bytes"]
        row("held body bytes (stats)", "held_bytes", bound, plus + " (at checkpoints)")
        row("disk, all files + dirs", "disk_bytes", bound + then, plus + " + SQLite then")
        row("  less SQLite files", "beyond_sqlite_bytes", bound, plus)
        row("  SQLite files", "index_bytes", None, "reported")
        row("    cache.db", "index_db_bytes", None, "counted in volume()")
        row("    cache.db-wal, -shm", "index_journal_bytes", None, "not counted in volume()")
        row("    marks/ database", "marks_bytes", None, "not counted in volume()")
        row("  body files", "body_file_bytes", None, "reported")
        row("  directories", "dir_bytes", None, "reported")
        row("blocks allocated", "allocated_bytes", None, "reported")
        row("diskcache volume()", "diskcache_volume", bound, plus)
    elif backend == "redis":
        row("held body bytes (running total)", "held_bytes_total", bound, plus)
        row("held body bytes (stats)", "held_bytes", bound, plus + " (at checkpoints)")
        row("used_memory growth, raw", "used_memory_growth", bound, "reported", False)
        row(
            "  less bookkeeping + overhead then",
            "used_memory_less_bookkeeping",
            bound,
            plus,
        )
        row("  body keys, allocated", "body_allocated", bound, plus)
        row("    live", "live_body_allocated", None, "reported")
        row("    lingering", "lingering_body_allocated", None, "reported")
        row("    lingering, by length", "lingering_body_bytes", None, "reported")
        row("    being written (tmp)", "tmp_body_allocated", None, "reported")
        row("  bookkeeping keys, allocated", "bookkeeping_keys_allocated", None, "reported")
        row("    gone set", "gone_set_allocated", None, "reported")
        row("    other keys", "other_keys_allocated", None, "reported")
        row("  overhead growth", "overhead_growth", None, "reported")
        row("    clients (CLIENT LIST)", "clients_growth", None, "reported")
        row("  neither keys nor overhead", "unaccounted", None, "reported")
    return rows


# The run ----------------------------------------------------------------------


def make_probes(
    names: list[str], plan: Plan, skipped: list[str], stack: contextlib.ExitStack
) -> Iterator[Probe]:
    """The probes to run, in order; each one's backend is built only when its turn comes."""
    makers: dict[str, Callable[[], Probe]] = {
        "plain": lambda: PlainProbe(plan),
        "file": lambda: FileProbe(plan),
    }
    if "redis" in names:
        try:
            import redis  # noqa: F401 - CacheRedis needs it
        except ImportError:
            skipped.append('redis: the redis package is missing (pip install "redis>=5")')
            names = [name for name in names if name != "redis"]
    if "redis" in names:
        try:
            server = Redis()
        except (OSError, RuntimeError) as exc:
            skipped.append(f"redis: {exc}")
        else:
            stack.callback(server.close)
            makers["redis"] = lambda: RedisProbe(plan, server)
    for name in names:
        if name in makers:
            yield makers[name]()


def execute(plan: Plan, names: list[str]) -> dict[str, Any]:
    skipped: list[str] = []
    backends: dict[str, Any] = {}
    checks: list[dict[str, Any]] = []
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        for probe in make_probes(names, plan, skipped, stack):
            print(f"soaking {probe.backend} ...", flush=True)
            try:
                result = soak(probe, plan)
            finally:
                probe.close()
            backends[probe.backend] = result
            checks += judge(probe.backend, result, plan.max_bytes)
            print(f"  {result['seconds']} s", flush=True)
            # What one backend kept must not weigh on the next one's figures.
            del probe
            gc.collect()
    return {
        "meta": machine() | {"seconds": round(time.monotonic() - started, 1)},
        "settings": asdict(plan) | {"backends": names},
        "backends": backends,
        "checks": checks,
        "skipped": skipped,
        "ok": all(c["ok"] is not False for c in checks),
    }


# Printing ---------------------------------------------------------------------


NOTES = {
    "": """\
Figures are taken after each registration, once the backend has applied its bounds;
the bound allows one entry over max_bytes all the same, since a backend stores a
new body before it evicts older ones.""",
    "plain": """\
plain: RSS growth is over this process's RSS before the first registration. It also
  counts memory the allocator keeps after a free and the ids remembered as gone (at
  most 20,000), which max_bytes does not bound, so it is reported, not judged.""",
    "file": """\
file: max_bytes is diskcache's size_limit, which counts the body files and the pages
  of its index (cache.db), but neither SQLite's write-ahead log and shared-memory
  files, nor the separate marks database (ids remembered as gone for a day,
  statistics), nor directories. The whole disk is therefore held to the bound plus
  every SQLite file measured at the same moment, and what is not SQLite (bodies and
  directories) to the bound alone, at every sample.""",
    "redis": """\
redis: used_memory growth is the server's allocated memory over its level before the
  first registration, measured after every registration with MEMORY USAGE of every
  key of the namespace (up to {namespace_keys_max:,} keys) and the growth of the overhead:
  used_memory_overhead (key tables, where a key's table entry is also in its MEMORY
  USAGE), with the client buffers taken from CLIENT LIST, since INFO counts them
  late and misses the query buffer that has just taken a body. The body keys (live,
  lingering for a download for linger_seconds={linger_seconds} s, or being written)
  are held to the bound; the whole growth to the bound plus what the other keys
  (entry hashes, LRU and sizes, the set of ids remembered as gone, counters) and the
  overhead took at the same moment: reported raw, judged less those. What is neither
  keys nor overhead is mostly the latency histogram that Redis 7 makes for each
  command the first time it runs (about 25 kB each); the judged figure counts it.""",
}


def _mb(value: int | None) -> str:
    return "-" if value is None else f"{value / MB:,.2f}"


def render(result: dict[str, Any]) -> str:
    meta, settings = result["meta"], result["settings"]
    lines = [
        f"date {meta['date']}, {meta['nproc']} CPUs ({meta['cpu']}), "
        f"{meta['memory_gib']} GiB, Python {meta['python']}, {meta['seconds']} s",
        f"max_bytes {settings['max_bytes']:,} B, {settings['entries']:,} entries of "
        f"{settings['min_entry']:,} to {settings['max_entry']:,} B (log-uniform, seed "
        f"{settings['seed']}), sampled after "
        + ("every registration" if settings["every"] == 1 else f"every {settings['every']}"),
        "",
    ]
    rows = [["backend", "registered MB", "x max_bytes", "largest entry", "evicted", "seconds"]]
    for name, soaked in result["backends"].items():
        rows.append(
            [
                name,
                _mb(soaked["registered_bytes"]),
                f"{soaked['registered_bytes'] / settings['max_bytes']:.1f}",
                f"{soaked['largest_entry']:,} B",
                f"{soaked['final_stats']['evicted_count']:,}",
                f"{soaked['seconds']:.1f}",
            ]
        )
    lines += [*table(rows), "", "Peaks (MB = 10^6 bytes)", ""]
    rows = [["backend", "figure", "peak MB", "after entry", "bound MB", "bound", "ok"]]
    for check in result["checks"]:
        if check["ok"] is None and check["bound"] is not None:
            verdict = f"{check['peak'] / check['bound']:.2f} x bound"
        else:
            verdict = {True: "yes", False: "NO", None: "-"}[check["ok"]]
        rows.append(
            [
                check["backend"],
                check["figure"],
                _mb(check["peak"]),
                f"{check['after']:,}",
                _mb(check["bound"]),
                check["rule"],
                verdict,
            ]
        )
    lines += [*table(rows), "", NOTES[""]]
    for name, soaked in result["backends"].items():
        lines.append(NOTES[name].format(**soaked["details"]))
    if result["skipped"]:
        lines += ["", "Skipped: " + "; ".join(result["skipped"])]
    lines += ["", "All bounds hold." if result["ok"] else "A BOUND IS BROKEN (see NO above)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--quick", action="store_true", help="500 entries and a 5 MB bound: a few seconds"
    )
    parser.add_argument("--entries", type=int, help="entries per backend (default 10000)")
    parser.add_argument("--max-bytes", type=int, help="max_bytes of every cache (default 50 MB)")
    parser.add_argument(
        "--backends",
        default=",".join(BACKENDS),
        help="comma-separated, among plain, file, redis (default: all; redis is skipped "
        "when no redis-server can be started)",
    )
    parser.add_argument("--min-entry", type=int, default=KiB, help="smallest entry in bytes")
    parser.add_argument("--max-entry", type=int, default=2 * MiB, help="largest entry in bytes")
    parser.add_argument("--seed", type=int, default=20261122)
    parser.add_argument(
        "--every", type=int, default=1, help="sample after every N-th registration (default 1)"
    )
    parser.add_argument(
        "--redis-linger",
        type=int,
        help="linger_seconds of CacheRedis (default: its own default, 300)",
    )
    parser.add_argument(
        "--out", help="the JSON file to write (default benchmarks/results/soak-<date>.json)"
    )
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.backends.split(",") if name.strip()]
    unknown = sorted(set(names) - set(BACKENDS))
    if unknown or not names:
        parser.error(f"--backends takes plain, file and redis, got {args.backends!r}")
    plan = Plan(
        entries=args.entries or (500 if args.quick else 10_000),
        max_bytes=args.max_bytes or (5 * MB if args.quick else 50 * MB),
        min_entry=args.min_entry,
        max_entry=args.max_entry,
        seed=args.seed,
        every=args.every,
        quick=args.quick,
        redis_linger=args.redis_linger,
    )
    if not 1 <= plan.min_entry <= plan.max_entry <= plan.max_bytes:
        parser.error(
            "entry sizes must satisfy 1 <= --min-entry <= --max-entry <= --max-bytes "
            f"(got {plan.min_entry}, {plan.max_entry}, {plan.max_bytes}): a larger entry "
            "is refused by every cache"
        )
    if plan.entries < 1 or plan.every < 1:
        parser.error("--entries and --every must be at least 1")
    result = execute(plan, list(dict.fromkeys(names)))
    print(render(result))
    day = datetime.date.today().isoformat()
    out = (
        Path(args.out)
        if args.out
        else BENCH / "results" / f"soak-{day}{'-quick' if args.quick else ''}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(out.name + ".tmp")
    temporary.write_text(json.dumps(result, indent=2) + "\n")
    temporary.replace(out)
    print(f"\nwrote {out}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
