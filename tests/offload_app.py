"""A WSGI app for the offload tests, run by gunicorn behind nginx.

Configured by environment variables: ``DFC_CACHE_DIR`` (a CacheFile directory),
``DFC_OFFLOAD`` (``x-accel-redirect`` or empty for none) and ``DFC_OFFLOAD_ROOTS``
(directories whose files may be offloaded, separated by ``os.pathsep``).
"""

from __future__ import annotations

import os

import flask
from servers import add_test_routes

import dash_file_cache as dfc

roots = [r for r in os.environ.get("DFC_OFFLOAD_ROOTS", "").split(os.pathsep) if r]
app = flask.Flask(__name__)
service = dfc.ServiceData(
    dfc.CacheFile(os.environ["DFC_CACHE_DIR"]),
    offload=os.environ.get("DFC_OFFLOAD") or None,
    offload_roots=roots,
)
service.serve(app)
add_test_routes(app, service)
