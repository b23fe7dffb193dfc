"""Run as a script: a serving process that owns a CacheFile, and children that use it.

``python proc_app_creator.py [DIRECTORY]`` builds the cache in DIRECTORY, or in a
temporary directory when none is given. Three children register into it: one made
by ``os.fork`` that exits through the interpreter's normal shutdown (as a gunicorn
worker does, running the atexit handlers it inherited), one spawned by
``multiprocess`` that re-imports this module (and also exits normally), and one
forked by ``multiprocess``. After each one has exited, this process serves what it
registered. The outcome is printed as one JSON line; the caller checks the
directory once this process is gone.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import flask
import multiprocess
from proc_app_common import body, register_with

import dash_file_cache as dfc

SIZE = 20_000
WAIT_SECONDS = 30

cache = dfc.CacheFile(sys.argv[1] if len(sys.argv) > 1 else None)
service = dfc.ServiceData(cache)
server = flask.Flask(__name__)
service.serve(server)


def child_register(conn: Any, seed: int) -> None:
    register_with(service, conn, "bytes", SIZE, seed)


def served(address: str, seed: int) -> bool:
    with server.test_client() as client:
        resp = client.get(address)
        try:
            return resp.status_code == 200 and resp.get_data() == body(SIZE, seed)
        finally:
            resp.close()


def os_fork_child(seed: int) -> dict[str, Any]:
    read_end, write_end = os.pipe()
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        address = service.register(body(SIZE, seed), file_name="data.bin")
        os.write(write_end, address.encode())
        # A normal exit: the inherited atexit handlers run here.
        sys.exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        address = reader.read().decode()
    _, status = os.waitpid(pid, 0)
    return {
        "exitcode": os.waitstatus_to_exitcode(status),
        "exists": os.path.isdir(cache.directory),
        "served": served(address, seed),
    }


def multiprocess_child(method: str, seed: int) -> dict[str, Any]:
    ctx = multiprocess.get_context(method)
    parent_end, child_end = ctx.Pipe()
    proc = ctx.Process(target=child_register, args=(child_end, seed))
    proc.start()
    child_end.close()
    try:
        if not parent_end.poll(WAIT_SECONDS):
            return {"error": "no answer"}
        outcome = parent_end.recv()
        # Forked, the child holds both ends of the pipe: it needs a message, not EOF.
        parent_end.send("exit")
        parent_end.close()
        proc.join(WAIT_SECONDS)
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join(WAIT_SECONDS)
    if outcome[0] != "ok":
        return {"error": outcome}
    return {
        "exitcode": proc.exitcode,
        "exists": os.path.isdir(cache.directory),
        "served": served(outcome[1], seed),
    }


def main() -> None:
    report = {
        "directory": cache.directory,
        "os_fork": os_fork_child(1),
        "spawn": multiprocess_child("spawn", 2),
        "fork": multiprocess_child("fork", 3),
    }
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
