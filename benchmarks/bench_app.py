"""The WSGI app that the benchmark runs under gunicorn, for this tree and for 0.2.0.

Both versions share the routes below, so the runner drives them alike:

``/d/<backend>``
    One ``ServiceData`` per backend (``plain``, ``queue``, ``file``; ``redis`` and
    ``offload`` when this version has them), answered by the Flask route
    (``serve(app, fast=False)`` where this version has a fast path). Also
    ``plain-full`` and ``queue-full``: ``cache_size`` entries only
    (``BENCH_FULL_SIZE``, 1,000 by default), for a cache that is full and evicts on
    every registration, as in an app that has run for a while.
``/f/<backend>``
    When this version has the fast path: a second service on the same cache,
    served the default way (``serve(app)``, whose fast path answers since no hook
    of this app watches the route).
``POST /register/<backend>``
    Registers the request body as an in-memory file (``io.BytesIO``) named after
    ``name``; ``one_time=1`` makes it a one-time entry; ``fast=1`` registers it
    through the ``/f/`` service. Answers the address.
``POST /register-file/<backend>?path=...&as=path|bytes``
    Registers a file of the data folder as a path, or read into memory.
``GET /send-file/<name>``
    ``flask.send_file`` of a file of the data folder: the baseline of a plain Flask app.
``GET /base64/<name>``
    The file as base64 in JSON, the way ``dcc.send_bytes`` hands a file to a browser.

Configured by ``BENCH_DATA`` (the data folder), ``BENCH_CACHE`` (a folder for the
disk caches) and ``BENCH_REDIS_URL`` (optional).
"""

from __future__ import annotations

import base64
import inspect
import io
import os
import queue
from typing import Any

import flask

import dash_file_cache as dfc

DATA = os.path.realpath(os.environ["BENCH_DATA"])
CACHE = os.environ["BENCH_CACHE"]
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "")
CACHE_SIZE = int(os.environ.get("BENCH_CACHE_SIZE", "100000"))
FULL_SIZE = int(os.environ.get("BENCH_FULL_SIZE", "1000"))
LEGACY = not hasattr(dfc, "Entry")  # 0.2.0 has no Entry record
FAST = "fast" in inspect.signature(dfc.ServiceData.serve).parameters

app = flask.Flask(__name__)


def _caches() -> dict[str, Any]:
    found: dict[str, Any] = {
        "plain": dfc.CachePlain(CACHE_SIZE),
        # 0.2.0 needs the queue that background processes would write to.
        "queue": dfc.CacheQueue(CACHE_SIZE, queue.Queue())
        if LEGACY
        else dfc.CacheQueue(CACHE_SIZE),
        "file": dfc.CacheFile(os.path.join(CACHE, "file")),
        "plain-full": dfc.CachePlain(FULL_SIZE),
        "queue-full": dfc.CacheQueue(FULL_SIZE, queue.Queue())
        if LEGACY
        else dfc.CacheQueue(FULL_SIZE),
    }
    if REDIS_URL and hasattr(dfc, "CacheRedis"):
        found["redis"] = dfc.CacheRedis(REDIS_URL, namespace=f"bench{os.getpid()}")
    return found


services: dict[str, Any] = {}
fast_services: dict[str, Any] = {}
for _name, _cache in _caches().items():
    services[_name] = dfc.ServiceData(_cache, service_name=f"/d/{_name}")
    if FAST:
        fast_services[_name] = dfc.ServiceData(_cache, service_name=f"/f/{_name}")
if not LEGACY:
    # The same disk cache folder, answered with X-Accel-Redirect for nginx in front.
    services["offload"] = dfc.ServiceData(
        dfc.CacheFile(os.path.join(CACHE, "file")),
        service_name="/d/offload",
        offload="x-accel-redirect",
        offload_roots=[DATA],
    )
for _service in services.values():
    if FAST:
        _service.serve(app, fast=False)
    else:
        _service.serve(app)
for _service in fast_services.values():
    _service.serve(app)


def _service(backend: str) -> Any:
    chosen = fast_services if flask.request.args.get("fast") == "1" else services
    try:
        return chosen[backend]
    except KeyError:
        flask.abort(404)


def _data_path(name: str) -> str:
    path = os.path.realpath(os.path.join(DATA, name))
    if os.path.dirname(path) != DATA or not os.path.isfile(path):
        flask.abort(404)
    return path


@app.get("/health")
def health() -> str:
    return f"{os.getpid()} {getattr(dfc, '__version__', '?')}"


@app.post("/register/<backend>")
def register(backend: str) -> str:
    args = flask.request.args
    name = args.get("name", "asset.svg")
    address: str = _service(backend).register(
        io.BytesIO(flask.request.get_data()),
        file_name=name,
        mime_type=args.get("mime", "image/svg+xml"),
        one_time_service=args.get("one_time") == "1",
    )
    return address


@app.post("/register-file/<backend>")
def register_file(backend: str) -> str:
    args = flask.request.args
    path = _data_path(args["name"])
    fobj: Any = path
    if args.get("as") == "bytes":
        with open(path, "rb") as source:
            fobj = io.BytesIO(source.read())
    address: str = _service(backend).register(
        fobj,
        file_name=os.path.basename(path),
        mime_type=args.get("mime", "application/octet-stream"),
    )
    return address


@app.get("/send-file/<name>")
def send_file(name: str) -> flask.Response:
    return flask.send_file(_data_path(name))


@app.get("/base64/<name>")
def as_base64(name: str) -> flask.Response:
    with open(_data_path(name), "rb") as source:
        content = base64.b64encode(source.read()).decode("ascii")
    return flask.jsonify({"content": content, "filename": name, "type": None, "base64": True})
