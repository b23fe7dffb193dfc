"""A WSGI app for the offload tests, run by gunicorn behind nginx.

Configured by environment variables: ``DFC_CACHE_DIR`` (a CacheFile directory),
``DFC_OFFLOAD`` (``x-accel-redirect`` or empty for none) and ``DFC_OFFLOAD_ROOTS``
(directories whose files may be offloaded, separated by ``os.pathsep``).
"""

from __future__ import annotations

import os

import flask
from servers import pattern

import dash_file_cache as dfc

roots = [r for r in os.environ.get("DFC_OFFLOAD_ROOTS", "").split(os.pathsep) if r]
app = flask.Flask(__name__)
service = dfc.ServiceData(
    dfc.CacheFile(os.environ["DFC_CACHE_DIR"]),
    offload=os.environ.get("DFC_OFFLOAD") or None,
    offload_roots=roots,
)
service.serve(app)


@app.get("/health")
def health() -> str:
    return str(os.getpid())


@app.post("/register")
def register() -> str:
    args = flask.request.args
    path = args.get("path")
    fobj: object = (
        path if path else pattern(int(args.get("size", "1000")), int(args.get("seed", "0")))
    )
    return service.register(
        fobj,
        file_name=args.get("name", ""),
        mime_type=args.get("mime", ""),
        one_time_service=args.get("one_time") == "1",
        download=args.get("download") == "1",
    )
