"""Code written for the documented API of dash-file-cache 0.2.0 runs unchanged."""

from __future__ import annotations

import io
from pathlib import Path

import dash
import flask
import pytest
from backends import backend_name, cache  # noqa: F401 - fixtures
from dash import Input, Output, html

import dash_file_cache as dfc


def test_dash_usage_from_the_0_2_0_guide() -> None:
    app = dash.Dash("demo")
    service = dfc.ServiceData(dfc.CachePlain(1))
    service.serve(app)
    app.layout = html.Div([html.Button(id="btn"), html.Img(id="img")])

    @app.callback(Output("img", "src"), Input("btn", "n_clicks"))
    def a_callback_creating_data(n_clicks: int | None) -> str:
        fobj = io.BytesIO()
        fobj.write(b"<svg xmlns='http://www.w3.org/2000/svg' width='4' height='4'/>")
        return service.register(fobj=fobj, mime_type="image/svg+xml", one_time_service=True)

    address = a_callback_creating_data(1)
    client = app.server.test_client()
    resp = client.get(address, buffered=True)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "image/svg+xml"
    assert resp.data.startswith(b"<svg")
    assert client.get(address, buffered=True).status_code == 410


def test_flask_usage_from_the_0_2_0_guide() -> None:
    app = flask.Flask("demo")
    service = dfc.ServiceData(dfc.CachePlain(1))
    service.serve(app)

    @app.route("/create-file", methods=["POST"])
    def create_file() -> str:
        return service.register(
            fobj=io.StringIO("a simple test"), file_name="test.txt", mime_type="text/plain"
        )

    client = app.test_client()
    address = client.post("/create-file").get_data(as_text=True)
    assert address.startswith("/cached-data?uid=")
    resp = client.get(address, buffered=True)
    assert resp.data == b"a simple test"
    assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"
    download = client.get(address + "&download=true", buffered=True)
    assert download.headers["Content-Disposition"] == "attachment; filename=test.txt"


def test_0_2_0_constructors() -> None:
    dfc.CachePlain(3)
    dfc.CacheQueue(3)
    dfc.CacheQueue(3, None)
    disk = dfc.CacheFile(None, 1)
    assert disk.chunk_size == 1
    service = dfc.ServiceData(disk, "/files", 2, "*")
    assert service.chunk_size == 2
    assert service.allowed_cross_origin == "*"


def test_dump_and_load_with_0_2_0_dicts(cache: dfc.CacheAbstract, tmp_path: Path) -> None:
    info = {
        "type": "bytes",
        "data_size": 3,
        "file_name": "a.bin",
        "content_type": "",
        "mime_type": "application/octet-stream",
        "one_time_service": False,
    }
    cache.dump("k1", info, {"type": "bytes", "data": io.BytesIO(b"abc")})
    loaded_info, deferred = cache.load("k1")
    assert loaded_info == {**info, "content_type": "application/octet-stream"}
    assert deferred()["data"].read() == b"abc"
    assert cache.load_info("k1")["file_name"] == "a.bin"
    path = tmp_path / "p.txt"
    path.write_text("on disk")
    cache.dump("k2", {**info, "type": "path"}, {"type": "path", "path": path})
    assert cache.load_data("k2") == {"type": "path", "path": str(path)}
    assert "k2" in cache
    assert cache.remove("k2").path == str(path)
    with pytest.raises(ValueError, match="data\\['type'\\]"):
        cache.dump("k3", info, {"type": "other"})
