"""A large CSV written to disk on demand and served in place, with byte ranges.

Click "Create": the callback writes a CSV of about ``--size-mb`` MB (default 200,
or ``DFC_DEMO_SIZE_MB``) into a temporary directory, once, and registers its path.
A path is not copied into the cache: each request streams the file from disk, and
a ``Range`` request (a resumed download, a download manager) gets ``206 Partial
Content`` with just the bytes asked for.

Run ``python demos/large_file.py [--size-mb 200] [--host 127.0.0.1] [--port 8050]``.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import tempfile
import threading

import dash
from dash import Input, Output, html

import dash_file_cache as dfc

SIZE_MB = float(os.environ.get("DFC_DEMO_SIZE_MB", "200"))

app = dash.Dash(__name__)
service = dfc.ServiceData(dfc.CachePlain(16))
service.serve(app)
_lock = threading.Lock()
_written: dict[int, str] = {}

app.layout = html.Div(
    [
        html.Button("Create", id="create"),
        html.P(id="size"),
        html.A(id="link", download="large.csv"),
    ]
)


def write_csv(path: str, size_bytes: int) -> None:
    """Write rows of a counter and a hash of it until the file has ``size_bytes``."""
    written = 0
    with open(path, "w", encoding="ascii", newline="\n") as out:
        out.write("row,hash\n")
        written += 9
        row = 0
        while written < size_bytes:
            block = "".join(
                f"{n:010d},{n * 2654435761 % 2**32:010d}\n" for n in range(row, row + 50_000)
            )
            out.write(block)
            written += len(block)
            row += 50_000


def large_csv(size_bytes: int) -> str:
    """The path of a CSV of at least ``size_bytes`` bytes, written on first use."""
    with _lock:
        if size_bytes not in _written:
            directory = tempfile.mkdtemp(prefix="dash-file-cache-demo-")
            atexit.register(shutil.rmtree, directory, ignore_errors=True)
            path = os.path.join(directory, "large.csv")
            write_csv(path, size_bytes)
            _written[size_bytes] = path
        return _written[size_bytes]


@app.callback(
    Output("link", "href"),
    Output("link", "children"),
    Output("size", "children"),
    Input("create", "n_clicks"),
    prevent_initial_call=True,
)
def create(n_clicks: int) -> tuple[str, str, str]:
    path = large_csv(int(SIZE_MB * 1_000_000))
    address = service.register(path, mime_type="text/csv", download=True)
    size = os.path.getsize(path)
    return address, "Download large.csv", f"{size:,} bytes"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=SIZE_MB)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8050)
    args = parser.parse_args()
    SIZE_MB = args.size_mb
    app.run(host=args.host, port=args.port, debug=False)
