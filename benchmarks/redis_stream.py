"""Memory of a process that registers and serves one large entry through CacheRedis.

Registers a file of ``--mib`` MiB (default 1024) from a file object, then streams it
back through the route, and reports the process's peak RSS growth in each phase and
the memory Redis used. The bodies travel in chunks, so both figures should stay
flat whatever the size.

    python benchmarks/redis_stream.py [--mib 1024] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import flask
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_servers import Redis

import dash_file_cache as dfc


def peak_growth(action: Callable[[], object]) -> tuple[float, float]:
    """Run ``action``; return (seconds, peak RSS growth in MiB) while it ran."""
    me = psutil.Process()
    base = me.memory_info().rss
    peak = base
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, me.memory_info().rss)
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    start = time.monotonic()
    try:
        action()
    finally:
        done.set()
        sampler.join()
    return time.monotonic() - start, (peak - base) / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    server = Redis()
    folder = tempfile.mkdtemp(prefix="dfc-redis-stream-")
    try:
        cache = dfc.CacheRedis(server.url, namespace="stream")
        app = flask.Flask("stream")
        service = dfc.ServiceData(cache)
        service.serve(app)
        path = os.path.join(folder, "big.bin")
        block = os.urandom(1 << 20)
        with open(path, "wb") as out:
            for _ in range(args.mib):
                out.write(block)
        addresses: list[str] = []

        def register() -> None:
            with open(path, "rb") as fobj:
                addresses.append(service.register(fobj))

        received = 0

        def stream() -> None:
            nonlocal received
            resp = app.test_client().get(addresses[0], buffered=False)
            for chunk in resp.response:
                received += len(chunk)
            resp.close()

        register_s, register_mib = peak_growth(register)
        stream_s, stream_mib = peak_growth(stream)
        used = cache.client.info("memory")["used_memory"] / 2**20
        cache.close()
    finally:
        server.close()
        for name in os.listdir(folder):
            os.unlink(os.path.join(folder, name))
        os.rmdir(folder)
    result = {
        "body_mib": args.mib,
        "register_seconds": register_s,
        "register_rss_growth_mib": register_mib,
        "stream_seconds": stream_s,
        "stream_rss_growth_mib": stream_mib,
        "stream_complete": received == args.mib << 20,
        "redis_used_memory_mib": used,
    }
    print(
        f"{args.mib} MiB through CacheRedis: register {register_s:.1f} s, RSS +{register_mib:.1f} "
        f"MiB; stream {stream_s:.1f} s, RSS +{stream_mib:.1f} MiB, complete "
        f"{result['stream_complete']}; Redis used {used:.0f} MiB"
    )
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return 0 if result["stream_complete"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
