"""Plain Flask: one request creates a file, the returned address serves it once.

``POST /create-file?rows=N`` builds a CSV of ``N`` rows (default 10), registers it
as a one-time download and answers ``{"addr": "/cached-data?uid=...&download=true"}``.
A GET of that address sends the file; since the entry is one-time, a second GET
answers 410 Gone. ``GET /`` explains this.

Run ``python demos/flask_app.py [--host 127.0.0.1] [--port 8080]``, then for example::

    curl -X POST 'http://127.0.0.1:8080/create-file?rows=3'
    curl -OJ 'http://127.0.0.1:8080/cached-data?uid=...&download=true'
"""

from __future__ import annotations

import argparse
import io

import flask

import dash_file_cache as dfc

MAX_ROWS = 100_000

app = flask.Flask(__name__)
# On disk, so that several worker processes (gunicorn -w 4 ...) share the entries.
service = dfc.ServiceData(dfc.CacheFile())
service.serve(app)


@app.get("/")
def index() -> flask.Response:
    text = "POST /create-file?rows=N to create a CSV; GET the returned addr to fetch it.\n"
    return flask.Response(text, mimetype="text/plain")


@app.post("/create-file")
def create_file() -> tuple[dict[str, str], int]:
    raw = flask.request.args.get("rows", "10")
    rows = int(raw) if raw.isascii() and raw.isdigit() else 0
    if not 1 <= rows <= MAX_ROWS:
        return {"error": f"rows must be a whole number from 1 to {MAX_ROWS}"}, 400
    table = io.StringIO()
    table.write("row,value\n")
    for row in range(rows):
        table.write(f"{row},{row * 0.5}\n")
    addr = service.register(
        table, file_name=f"rows-{rows}.csv", one_time_service=True, download=True
    )
    return {"addr": addr}, 200


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    print(f"Serving on http://{args.host}:{args.port}/")
    app.run(host=args.host, port=args.port)
