"""How much a body registered from a child process costs the serving process.

A background callback runs in a child; with ``CacheQueue`` its body ends up in the
memory of the serving process. This measures the serving process's peak RSS growth
while a child registers one large body, for this package and, when its virtualenv
exists (``benchmarks/.venv-020``, made by ``benchmarks/run.py``), for the published
0.2.0 with the ``Manager`` queue its guide shows.

    python benchmarks/child_memory.py [--mib 256] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from probes import VENV_020, run_probe

# Runs in the interpreter under test; prints the peak growth in bytes.
_PROBE = """
import io, os, sys, time
import multiprocessing
import dash_file_cache as dfc

size = int(sys.argv[1]) << 20
legacy = sys.argv[2] == "0.2.0"
ctx = multiprocessing.get_context("fork")
if legacy:
    manager = ctx.Manager()
    cache = dfc.CacheQueue(4, manager.Queue())
else:
    cache = dfc.CacheQueue(4)
service = dfc.ServiceData(cache)

def child(conn):
    body = os.urandom(1 << 20) * (size >> 20)
    conn.send(service.register(io.BytesIO(body), mime_type="application/octet-stream"))

base = me.memory_info().rss
sampler = PeakRss().start()
receive, send = ctx.Pipe()
proc = ctx.Process(target=child, args=(send,))
proc.start()
address = receive.recv()
proc.join(120)
uid = address.split("uid=")[1].split("&")[0]
deadline = time.monotonic() + 60
while uid not in cache and time.monotonic() < deadline:
    time.sleep(0.01)  # 0.2.0 stores the entry after register() has returned
time.sleep(0.2)
peak = sampler.stop()
print(peak - base, int(uid in cache))
"""


def measure(python: str, mib: int, label: str) -> dict[str, float | str | bool]:
    growth, stored = run_probe(python, _PROBE, str(mib), label, label=label).split()
    return {
        "version": label,
        "body_mib": mib,
        "peak_growth_mib": int(growth) / 2**20,
        "ratio": int(growth) / (mib << 20),
        "stored": stored == "1",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = [measure(sys.executable, args.mib, "ours")]
    if VENV_020.exists():
        rows.append(measure(str(VENV_020), args.mib, "0.2.0"))
    print(f"{'version':8} {'body MiB':>9} {'peak growth MiB':>16} {'x body':>7} stored")
    for row in rows:
        print(
            f"{row['version']:8} {row['body_mib']:>9} {row['peak_growth_mib']:>16.1f} "
            f"{row['ratio']:>7.2f} {row['stored']}"
        )
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
