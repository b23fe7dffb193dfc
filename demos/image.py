"""A picture drawn by a callback and shown through its cached address.

Click "Draw": the callback writes an SVG into an ``io.StringIO``, registers it and
returns the address to ``html.Img(src=...)``. The browser then fetches the picture
with an ordinary GET instead of receiving it inside the callback's JSON answer.

Run ``python demos/image.py [--host 127.0.0.1] [--port 8050]``.
"""

from __future__ import annotations

import argparse
import io

import dash
from dash import Input, Output, html

import dash_file_cache as dfc

WIDTH, HEIGHT = 240, 160
COLOURS = ("crimson", "darkorange", "seagreen", "steelblue", "slateblue")

app = dash.Dash(__name__)
service = dfc.ServiceData(dfc.CachePlain(16))
service.serve(app)

app.layout = html.Div(
    [
        html.Button("Draw", id="draw"),
        html.P(id="address"),
        html.Img(id="picture", alt="the drawn picture"),
    ]
)


def draw_svg(clicks: int) -> str:
    """An SVG of ``WIDTH`` x ``HEIGHT`` pixels whose colour changes with each click."""
    colour = COLOURS[clicks % len(COLOURS)]
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}">'
        f'<rect width="100%" height="100%" fill="ivory"/>'
        f'<circle cx="{WIDTH // 2}" cy="{HEIGHT // 2}" r="{HEIGHT // 3}" fill="{colour}"/>'
        f'<text x="8" y="{HEIGHT - 8}" font-size="16">click {clicks}</text></svg>'
    )


@app.callback(
    Output("picture", "src"),
    Output("address", "children"),
    Input("draw", "n_clicks"),
    prevent_initial_call=True,
)
def draw(n_clicks: int) -> tuple[str, str]:
    address = service.register(io.StringIO(draw_svg(n_clicks)), file_name="picture.svg")
    return address, address


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8050)
    args = parser.parse_args()
    app.run(host=args.host, port=args.port, debug=False)
