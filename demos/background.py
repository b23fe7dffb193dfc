"""A background callback that builds a picture step by step, with a progress bar.

Dash runs background callbacks (``DiskcacheManager``) in a child process, whose
memory is thrown away when the job ends. ``CacheQueue`` sends the registered entry
to the serving process; ``CacheFile`` writes it to a directory that both share.
Neither needs any set-up beyond creating the cache at module level.

Run ``DFC_DEMO_CACHE=queue python demos/background.py`` (the default) or
``DFC_DEMO_CACHE=file python demos/background.py``; ``--host`` and ``--port`` as
usual. ``DFC_DEMO_STEP_SECONDS`` (default 0.4) sets how long each step pretends to
work.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import time

import dash
import diskcache
from dash import DiskcacheManager, Input, Output, html

import dash_file_cache as dfc
from dash_file_cache.demo import encode_png

WIDTH, HEIGHT, STEPS = 200, 120, 5
CACHE = os.environ.get("DFC_DEMO_CACHE", "queue")
STEP_SECONDS = float(os.environ.get("DFC_DEMO_STEP_SECONDS", "0.4"))

if CACHE == "queue":
    cache: dfc.CacheAbstract = dfc.CacheQueue(16)
elif CACHE == "file":
    cache = dfc.CacheFile()
else:
    raise SystemExit(f"DFC_DEMO_CACHE must be 'queue' or 'file', not {CACHE!r}")

# The jobs' own bookkeeping (progress, results) lives in a temporary diskcache.
jobs = diskcache.Cache()
atexit.register(shutil.rmtree, jobs.directory, ignore_errors=True)
manager = DiskcacheManager(jobs)
app = dash.Dash(__name__, background_callback_manager=manager)
service = dfc.ServiceData(cache)
service.serve(app)

app.layout = html.Div(
    [
        html.P(f"Backend: {type(cache).__name__}"),
        html.Button("Build", id="build"),
        html.Progress(id="progress", value="0", max=str(STEPS)),
        html.Span("0%", id="percent"),
        html.Div(html.Img(id="picture", alt="the built picture")),
    ]
)


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
    band = HEIGHT // STEPS
    for step in range(STEPS):
        set_progress((str(step), f"{100 * step // STEPS}%"))
        time.sleep(STEP_SECONDS)  # stands for real work
        shade = 255 * (step + 1) // STEPS
        for _ in range(band):
            rows.append(bytes((shade, 80, 255 - shade)) * WIDTH)
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
