"""The main demo: a picture and a download made by Dash callbacks, served by address.

``python -m dash_file_cache.demo`` (or the ``dash-file-cache-demo`` command) starts
it on http://127.0.0.1:8050/; ``--host`` and ``--port`` change that. Entries live in
a ``CachePlain`` in the server's memory, so nothing needs setting up. The demo
needs Dash: ``pip install "dash-file-cache[dash]"``.
"""

from __future__ import annotations

import argparse
import struct
import zlib
from collections.abc import Sequence
from typing import Any

from .caches import CachePlain
from .service import ServiceData

__all__ = ["PICTURE_SIZE", "create_app", "encode_png", "main", "png", "table_csv"]

PICTURE_SIZE = (320, 200)


def encode_png(width: int, rows: Sequence[bytes]) -> bytes:
    """Encode RGB ``rows`` (3 bytes per pixel, ``width`` pixels each) as a PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, len(rows), 8, 2, 0, 0, 0)
    # Each row starts with its filter type, 0 ("none").
    pixels = zlib.compress(b"".join(b"\x00" + row for row in rows))
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def png(width: int, height: int, shift: int = 0) -> bytes:
    """A ``width`` x ``height`` RGB PNG of colour gradients; ``shift`` changes the blue."""
    blue = 60 * shift % 256
    reds = [255 * x // max(width - 1, 1) for x in range(width)]
    rows = []
    for y in range(height):
        green = 255 * y // max(height - 1, 1)
        rows.append(b"".join(bytes((red, green, blue)) for red in reds))
    return encode_png(width, rows)


def table_csv(rows: int) -> bytes:
    """A CSV table of ``rows`` numbers with their squares, encoded as UTF-8."""
    lines = ["n,square"] + [f"{n},{n * n}" for n in range(1, rows + 1)]
    return ("\n".join(lines) + "\n").encode("utf-8")


def create_app(service: ServiceData | None = None) -> Any:
    """Build the demo's ``dash.Dash`` app around ``service`` (a ``CachePlain`` one by default)."""
    try:
        import dash
        from dash import Input, Output, html
    except ImportError as exc:
        raise ImportError(
            'the demo needs Dash; install it with: pip install "dash-file-cache[dash]"'
        ) from exc

    if service is None:
        service = ServiceData(CachePlain(32))
    app = dash.Dash(__name__, title="dash-file-cache demo")
    service.serve(app)
    width, height = PICTURE_SIZE
    app.layout = html.Div(
        [
            html.H1("dash-file-cache"),
            html.H2("A picture made by a callback"),
            html.Button("Draw", id="draw"),
            html.P(id="picture-address"),
            html.Img(id="picture", alt="a generated picture"),
            html.H2("A file to download"),
            html.Button("Make a table", id="make-table"),
            html.P(html.A(id="table-link", download="table.csv")),
        ]
    )

    def draw(n_clicks: int) -> tuple[str, str]:
        address = service.register(png(width, height, n_clicks), file_name="picture.png")
        return address, f"Served from {address}"

    def make_table(n_clicks: int) -> tuple[str, str]:
        rows = 10 * n_clicks
        address = service.register(
            table_csv(rows), file_name="table.csv", mime_type="text/csv", download=True
        )
        return address, f"Download table.csv ({rows} rows)"

    app.callback(
        Output("picture", "src"),
        Output("picture-address", "children"),
        Input("draw", "n_clicks"),
        prevent_initial_call=True,
    )(draw)
    app.callback(
        Output("table-link", "href"),
        Output("table-link", "children"),
        Input("make-table", "n_clicks"),
        prevent_initial_call=True,
    )(make_table)
    return app


def main(argv: Sequence[str] | None = None) -> None:
    """Run the demo server until interrupted."""
    parser = argparse.ArgumentParser(
        prog="dash-file-cache-demo",
        description="Serve the dash-file-cache demo app.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8050, help="port to listen on")
    args = parser.parse_args(argv)
    app = create_app()
    print(f"dash-file-cache demo: http://{args.host}:{args.port}/", flush=True)
    app.run(host=args.host, port=args.port, debug=False)


if __name__ == "__main__":
    main()
