"""A download link for a CSV table made by a callback.

Click "Make table": the callback registers the CSV with ``download=True`` and puts
the address into a link. The address answers with ``Content-Disposition:
attachment; filename=table.csv``, so the browser saves the file under that name
instead of showing it, with no data passing through the callback's JSON answer.

Run ``python demos/download.py [--host 127.0.0.1] [--port 8050]``.
"""

from __future__ import annotations

import argparse

import dash
from dash import Input, Output, html

import dash_file_cache as dfc

FILE_NAME = "table.csv"

app = dash.Dash(__name__)
service = dfc.ServiceData(dfc.CachePlain(16))
service.serve(app)

app.layout = html.Div(
    [
        html.Button("Make table", id="make"),
        html.Div(html.A(id="link", download=FILE_NAME, style={"display": "none"})),
    ]
)


def make_csv(rows: int) -> bytes:
    """A table of ``rows`` numbers with their squares and cubes, as UTF-8 CSV."""
    lines = ["n,square,cube"] + [f"{n},{n * n},{n**3}" for n in range(1, rows + 1)]
    return ("\n".join(lines) + "\n").encode("utf-8")


@app.callback(
    Output("link", "href"),
    Output("link", "children"),
    Output("link", "style"),
    Input("make", "n_clicks"),
    prevent_initial_call=True,
)
def make(n_clicks: int) -> tuple[str, str, dict[str, str]]:
    rows = 10 * n_clicks
    address = service.register(
        make_csv(rows), file_name=FILE_NAME, mime_type="text/csv", download=True
    )
    return address, f"Download {FILE_NAME} ({rows} rows)", {}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8050)
    args = parser.parse_args()
    app.run(host=args.host, port=args.port, debug=False)
