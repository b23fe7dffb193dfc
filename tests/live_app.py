"""A small WSGI app for tests that run a real server (gunicorn) in a subprocess.

Configured by environment variables: ``DFC_BACKEND`` (plain, queue, file) and
``DFC_CACHE_DIR`` (for file).
``DFC_BACKEND=redis`` uses ``DFC_REDIS_URL`` and ``DFC_REDIS_NAMESPACE``.
"""

from __future__ import annotations

import os

import flask
from servers import add_test_routes

import dash_file_cache as dfc


def make_cache() -> dfc.CacheAbstract:
    backend = os.environ.get("DFC_BACKEND", "file")
    if backend == "plain":
        return dfc.CachePlain(1000)
    if backend == "queue":
        return dfc.CacheQueue(1000)
    if backend == "redis":
        return dfc.CacheRedis(
            os.environ["DFC_REDIS_URL"],
            namespace=os.environ.get("DFC_REDIS_NAMESPACE", "dash-file-cache"),
        )
    return dfc.CacheFile(os.environ["DFC_CACHE_DIR"])


app = flask.Flask(__name__)
service = dfc.ServiceData(make_cache())
service.serve(app)
add_test_routes(app, service)
