"""How many copies of a large in-memory body ``register()`` makes, and whether they go.

For each kind of input (``bytes``, ``bytearray``, ``memoryview``, ``io.BytesIO`` made
from bytes, ``io.BytesIO`` written piece by piece), a fresh interpreter builds one
body of ``--mib`` MiB, registers it into ``CachePlain(1)`` and samples its resident
memory every 2 ms. It reports, in multiples of the body's size:

- ``peak extra``: the peak during ``register()`` over the level with the caller's
  input already built (the copies ``register()`` makes, at most one is the target);
- ``held extra``: what stays after ``register()`` returns, the caller's input still
  alive;
- ``left after eviction``: what stays once a second entry has evicted the first and
  the caller has dropped its input, over the level before the input was built
  (0 when the cache freed its copy).

The published 0.2.0, which takes file objects but not ``bytes``, is measured the
same way with the two ``io.BytesIO`` inputs when its virtualenv exists
(``benchmarks/.venv-020``, made by ``benchmarks/run.py``).

    python benchmarks/register_memory.py [--mib 256] [--out results.json] [--no-020]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from probes import VENV_020, run_probe

KINDS = ("bytes", "bytearray", "memoryview", "BytesIO", "BytesIO written")
# 0.2.0 takes paths and file objects only.
KINDS_020 = ("BytesIO", "BytesIO written")

# Runs in the interpreter under test; prints one JSON object.
_PROBE = """
import gc, io, json, os, sys
import dash_file_cache as dfc

size = int(sys.argv[1]) << 20
kind = sys.argv[2]
service = dfc.ServiceData(dfc.CachePlain(1))
service.register(io.BytesIO(b"warm-up"), mime_type="application/octet-stream")
gc.collect()
before = me.memory_info().rss

def build():
    block = os.urandom(1 << 20)
    if kind == "bytes":
        return block * (size >> 20)
    if kind == "bytearray":
        return bytearray(block * (size >> 20))
    if kind == "memoryview":
        return memoryview(bytearray(block * (size >> 20)))
    if kind == "BytesIO":
        return io.BytesIO(block * (size >> 20))
    out = io.BytesIO()
    for _ in range(size >> 20):
        out.write(block)
    out.seek(0)
    return out

body = build()
gc.collect()
built = me.memory_info().rss
sampler = PeakRss().start()
address = service.register(body, mime_type="application/octet-stream")
peak = sampler.stop()
held = me.memory_info().rss
uid = address.split("uid=")[1].split("&")[0]
stored = uid in service.cache
# A second entry evicts the first from CachePlain(1); the caller drops its input.
service.register(io.BytesIO(b"next"), mime_type="application/octet-stream")
evicted = uid not in service.cache
del body
gc.collect()
after = me.memory_info().rss
print(json.dumps({
    "peak_extra": (peak - built) / size,
    "held_extra": (held - built) / size,
    "left_after_eviction": (after - before) / size,
    "input_size": (built - before) / size,
    "stored": stored,
    "evicted": evicted,
}))
"""


def measure(python: str, mib: int, kind: str, label: str) -> dict[str, object]:
    printed = run_probe(python, _PROBE, str(mib), kind, label=label)
    return {"version": label, "input": kind, "body_mib": mib, **json.loads(printed)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--no-020", action="store_true", help="skip the 0.2.0 comparison")
    args = parser.parse_args()
    rows = [measure(sys.executable, args.mib, kind, "ours") for kind in KINDS]
    if VENV_020.exists() and not args.no_020:
        rows += [measure(str(VENV_020), args.mib, kind, "0.2.0") for kind in KINDS_020]
    print(f"{args.mib} MiB body; figures in multiples of its size")
    header = ("version", "input", "peak extra", "held extra", "left after eviction")
    print(f"{header[0]:8} {header[1]:16} {header[2]:>10} {header[3]:>10} {header[4]:>20}")
    for row in rows:
        print(
            f"{row['version']:8} {row['input']:16} {row['peak_extra']:>10.2f} "
            f"{row['held_extra']:>10.2f} {row['left_after_eviction']:>20.2f}"
        )
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
