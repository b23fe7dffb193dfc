"""Time ``register()`` alone, in process, for this tree or for 0.2.0; print JSON.

Usage: ``python register_cost.py SIZES REPEATS CACHE_DIR [REDIS_URL]`` where SIZES
is a comma-separated list of byte counts. Each figure is the median of REPEATS
calls with a fresh ``io.BytesIO`` of that size (what a Dash callback usually has).
"""

from __future__ import annotations

import io
import json
import os
import queue
import statistics
import sys
import time
from typing import Any

import dash_file_cache as dfc

LEGACY = not hasattr(dfc, "Entry")


def caches(cache_dir: str, redis_url: str) -> dict[str, Any]:
    found: dict[str, Any] = {
        "plain": dfc.CachePlain(4),
        "queue": dfc.CacheQueue(4, queue.Queue()) if LEGACY else dfc.CacheQueue(4),
        "file": dfc.CacheFile(os.path.join(cache_dir, "register")),
    }
    if redis_url and hasattr(dfc, "CacheRedis"):
        found["redis"] = dfc.CacheRedis(redis_url, namespace=f"register{os.getpid()}")
    return found


def main() -> None:
    sizes = [int(s) for s in sys.argv[1].split(",")]
    repeats = int(sys.argv[2])
    cache_dir = sys.argv[3]
    redis_url = sys.argv[4] if len(sys.argv) > 4 else ""
    results: dict[str, dict[str, float]] = {}
    for backend, cache in caches(cache_dir, redis_url).items():
        service = dfc.ServiceData(cache, service_name=f"/{backend}")
        results[backend] = {}
        for size in sizes:
            payload = os.urandom(size)
            timings = []
            for _ in range(repeats):
                fobj = io.BytesIO(payload)
                start = time.perf_counter()
                service.register(fobj, file_name="data.bin", mime_type="application/octet-stream")
                timings.append(time.perf_counter() - start)
            results[backend][str(size)] = statistics.median(timings)
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
