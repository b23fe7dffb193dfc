"""A Dash app whose background callbacks register files, run by ``DiskcacheManager``.

The caches and services are module-level, as in a real app; the app itself is built
by :func:`build` so that a test chooses where the manager keeps its results.
"""

from __future__ import annotations

import diskcache
from dash import Dash, DiskcacheManager, Input, Output, html
from proc_app_common import body

import dash_file_cache as dfc

SIZE = 300_000

queue_cache = dfc.CacheQueue(8)
file_cache = dfc.CacheFile()
queue_service = dfc.ServiceData(queue_cache, service_name="/cached-queue")
file_service = dfc.ServiceData(file_cache, service_name="/cached-file")


def build(results: diskcache.Cache) -> Dash:
    """A Dash app with one background callback per backend."""
    app = Dash(__name__, background_callback_manager=DiskcacheManager(results))
    app.layout = html.Div(
        [
            html.Button("queue", id="queue-go"),
            html.Div(id="queue-address"),
            html.Button("file", id="file-go"),
            html.Div(id="file-address"),
        ]
    )

    @app.callback(
        Output("queue-address", "children"),
        Input("queue-go", "n_clicks"),
        background=True,
        prevent_initial_call=True,
    )
    def register_in_queue(n_clicks: int) -> str:
        return queue_service.register(body(SIZE, n_clicks), file_name="queue.bin")

    @app.callback(
        Output("file-address", "children"),
        Input("file-go", "n_clicks"),
        background=True,
        prevent_initial_call=True,
    )
    def register_in_file(n_clicks: int) -> str:
        return file_service.register(body(SIZE, n_clicks), file_name="file.bin")

    queue_service.serve(app)
    file_service.serve(app)
    return app
