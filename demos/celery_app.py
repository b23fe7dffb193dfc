"""A background callback run by a Celery worker, which registers its file in Redis.

Dash's ``CeleryManager`` sends each background job to a Celery worker, which may run
on another host than the web server. Redis carries the jobs (broker), their
progress and results (result backend), and the files: the worker registers the
picture it builds through ``CacheRedis``, and whichever web process the browser
reaches serves it from there.

``DFC_DEMO_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``) is the broker and
result backend; ``DFC_DEMO_CACHE_URL`` is where the files go, by default the same
server's database 1. ``DFC_DEMO_STEP_SECONDS`` (default 0.4) sets how long each
step pretends to work. From the root of the repository, with Redis running::

    celery -A demos.celery_app:celery_app worker --loglevel=INFO
    python demos/celery_app.py          # --host and --port as usual
"""

from __future__ import annotations

import argparse
import os
import time
import urllib.parse

import dash
from dash import CeleryManager, Input, Output, html

try:
    from celery import Celery
except ImportError as exc:
    raise ImportError('this demo needs Celery: pip install "dash-file-cache[celery]"') from exc

import dash_file_cache as dfc
from dash_file_cache.demo import encode_png

WIDTH, HEIGHT, STEPS = 240, 160, 8


def with_database(url: str, database: int) -> str:
    """``url`` with its Redis database number replaced by ``database``."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{database}"))


REDIS_URL = os.environ.get("DFC_DEMO_REDIS_URL", "redis://127.0.0.1:6379/0")
CACHE_URL = os.environ.get("DFC_DEMO_CACHE_URL") or with_database(REDIS_URL, 1)
STEP_SECONDS = float(os.environ.get("DFC_DEMO_STEP_SECONDS", "0.4"))

celery_app = Celery(__name__, broker=REDIS_URL, backend=REDIS_URL)
# Keep results an hour rather than Celery's default day: Dash reads each one once.
celery_app.conf.result_expires = 3600
# Retry the broker at start-up, as Celery does today, and say so: Celery 5.3+
# warns at every start when the setting is left unset.
celery_app.conf.broker_connection_retry_on_startup = True

# Built from a URL, the cache connects lazily in each process that uses it: the web
# workers read from it, the Celery worker writes to it.
cache = dfc.CacheRedis(CACHE_URL, namespace="dfc-celery-demo", max_bytes=256 << 20, ttl=3600)
manager = CeleryManager(celery_app)
app = dash.Dash(__name__, background_callback_manager=manager)
service = dfc.ServiceData(cache)
service.serve(app)

app.layout = html.Div(
    [
        html.P("A Celery worker builds the picture; Redis holds the jobs and the file."),
        html.Button("Build", id="build"),
        html.Progress(id="progress", value="0", max=str(STEPS)),
        html.Span("0%", id="percent"),
        html.Div(html.Img(id="picture", alt="the built picture")),
    ]
)


def band(step: int) -> list[bytes]:
    """The rows that step ``step`` adds: a horizontal stripe of one colour."""
    shade = 255 * (step + 1) // STEPS
    return [bytes((40, shade, 255 - shade)) * WIDTH] * (HEIGHT // STEPS)


def picture() -> bytes:
    """The finished picture, as the callback builds it."""
    return encode_png(WIDTH, [row for step in range(STEPS) for row in band(step)])


@app.callback(
    Output("picture", "src"),
    Output("progress", "value", allow_duplicate=True),
    Output("percent", "children", allow_duplicate=True),
    Input("build", "n_clicks"),
    background=True,
    progress=[Output("progress", "value"), Output("percent", "children")],
    running=[(Output("build", "disabled"), True, False)],
    interval=250,
    prevent_initial_call=True,
)
def build(set_progress, n_clicks: int) -> tuple[str, str, str]:
    rows: list[bytes] = []
    for step in range(STEPS):
        set_progress((str(step), f"{100 * step // STEPS}%"))
        time.sleep(STEP_SECONDS)  # stands for real work
        rows.extend(band(step))
    # This runs in the Celery worker: the entry goes to Redis, and the address
    # works on every web process that uses the same cache.
    address = service.register(encode_png(WIDTH, rows), file_name="built.png")
    # The finished state is returned rather than reported: Dash may drop a progress
    # report that comes just before the result.
    return address, str(STEPS), "100%"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8050)
    args = parser.parse_args()
    app.run(host=args.host, port=args.port, debug=False)
