"""A second app module, imported after other modules have built caches.

A spawned child re-imports only the modules its target needs, so the caches built
here are the first ones the child builds while the parent had built others before:
each must still be matched with its own counterpart in the parent. Three queues
come from one line, in a loop.
"""

from __future__ import annotations

from typing import Any

import flask
from proc_app_common import register_with

import dash_file_cache as dfc

file_cache = dfc.CacheFile()
queues = [dfc.CacheQueue(4) for _ in range(3)]
services = {
    "file": dfc.ServiceData(file_cache, service_name="/late-file"),
    **{
        f"queue-{i}": dfc.ServiceData(queue, service_name=f"/late-queue-{i}")
        for i, queue in enumerate(queues)
    },
}
server = flask.Flask(__name__)
for _service in services.values():
    _service.serve(server)


def child_register(conn: Any, backend: str, kind: str, size: int, seed: int = 0) -> None:
    """Register into the cache named ``backend`` ("file", "queue-0", ...)."""
    register_with(services[backend], conn, kind, size, seed)
