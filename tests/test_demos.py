"""Every demo, driven in-process over HTTP: its callbacks run and its addresses answer.

Dash callbacks are called the way the browser calls them, through
``/_dash-update-component``; background callbacks are polled like the browser polls
them, so their child processes really register the entries.
"""

from __future__ import annotations

import os
import pathlib
import signal
import struct
import subprocess
import sys
import time
from typing import Any

import pytest
from demo_support import DEMOS, ROOT, free_port
from redis_server import redis_url_for_test
from servers import wait_until_ready

import dash_file_cache as dfc
from dash_file_cache import demo as main_demo

DEMO_NAMES = sorted(path.stem for path in DEMOS.glob("*.py"))


# Address GETs pass buffered=True: the test client then reads the body and closes
# it at once, as a WSGI server does, so files opened for a response are closed.


def dash_update(client: Any, component: str, prop: str, value: Any) -> Any:
    """Fire the callback of ``component.prop`` as the browser does; return the answer.

    The answer's ``response`` holds the outputs by id and property; for a background
    callback, ``progress`` holds the last progress reported.
    """
    callbacks = client.get("/_dash-dependencies").get_json()
    (callback,) = [c for c in callbacks if {"id": component, "property": prop} in c["inputs"]]
    output = callback["output"]
    parts = output[2:-2].split("...") if output.startswith("..") else [output]
    pairs = [part.rsplit(".", 1) for part in parts]
    outputs = [{"id": name, "property": prop_name} for name, prop_name in pairs]
    body = {
        "output": output,
        "outputs": outputs if output.startswith("..") else outputs[0],
        "inputs": [{"id": component, "property": prop, "value": value}],
        "changedPropIds": [f"{component}.{prop}"],
        "state": [],
    }
    resp = client.post("/_dash-update-component", json=body)
    assert resp.status_code == 200, resp.data
    answer = resp.get_json()
    if "cacheKey" not in answer:
        return answer
    # A background callback: poll, as the browser does, until the job answers. Each
    # progress report is sent once, maybe before the result: keep the latest.
    query = {"cacheKey": answer["cacheKey"], "job": answer["job"]}
    progress: dict[str, Any] = {}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        resp = client.post("/_dash-update-component", json=body, query_string=query)
        assert resp.status_code == 200, resp.data
        answer = resp.get_json()
        progress.update(answer.get("progress", {}))
        if "response" in answer:
            answer["progress"] = progress
            return answer
        time.sleep(0.05)  # the polling interval, not a synchronisation
    raise AssertionError(f"the background callback did not finish in 30 s: {answer}")


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


# Every demo --------------------------------------------------------------------


def test_all_demos_are_covered() -> None:
    assert DEMO_NAMES == [
        "background",
        "celery_app",
        "download",
        "flask_app",
        "image",
        "large_file",
    ]


@pytest.mark.parametrize("name", DEMO_NAMES)
def test_demo_has_a_docstring_and_serves_the_route(
    load_demo: Any, name: str, request: pytest.FixtureRequest
) -> None:
    # The Celery demo keeps its entries in Redis: give it the tests' server.
    environ = {"DFC_DEMO_REDIS_URL": redis_url_for_test(request)} if name == "celery_app" else {}
    module = load_demo(name, **environ)
    assert module.__doc__ and len(module.__doc__.strip().splitlines()) > 2
    server = getattr(module.app, "server", module.app)
    assert isinstance(module.service, dfc.ServiceData)
    with server.test_client() as client:
        assert client.get("/").status_code == 200
        resp = client.get("/cached-data")
        assert resp.status_code == 400
        assert resp.data == b"the address has no uid\n"
        resp = client.get("/cached-data?uid=" + "A" * 32)
        assert resp.status_code == 404


# image.py ----------------------------------------------------------------------


def test_image_demo_serves_the_drawn_svg(load_demo: Any) -> None:
    demo = load_demo("image")
    with demo.app.server.test_client() as client:
        answer = dash_update(client, "draw", "n_clicks", 2)
        address = answer["response"]["picture"]["src"]
        assert answer["response"]["address"]["children"] == address
        assert address.startswith("/cached-data?uid=")
        resp = client.get(address, buffered=True)
    assert resp.status_code == 200
    assert resp.data == demo.draw_svg(2).encode("utf-8")
    assert resp.headers["Content-Type"] == "image/svg+xml"
    assert resp.headers["Content-Length"] == str(len(resp.data))
    assert resp.headers["Content-Disposition"] == "inline; filename=picture.svg"
    assert resp.headers["Content-Security-Policy"] == "sandbox"
    assert f'width="{demo.WIDTH}"' in resp.text


# download.py -------------------------------------------------------------------


def test_download_demo_serves_an_attachment(load_demo: Any) -> None:
    demo = load_demo("download")
    with demo.app.server.test_client() as client:
        answer = dash_update(client, "make", "n_clicks", 3)
        link = answer["response"]["link"]
        assert link["href"].endswith("&download=true")
        assert link["children"] == "Download table.csv (30 rows)"
        assert link["style"] == {}
        resp = client.get(link["href"], buffered=True)
    assert resp.status_code == 200
    assert resp.data == demo.make_csv(30)
    assert resp.data.startswith(b"n,square,cube\n1,1,1\n2,4,8\n")
    assert resp.headers["Content-Type"] == "text/csv"
    assert resp.headers["Content-Disposition"] == "attachment; filename=table.csv"


# flask_app.py ------------------------------------------------------------------


def test_flask_demo_creates_then_serves_once(load_demo: Any) -> None:
    demo = load_demo("flask_app")
    with demo.app.test_client() as client:
        resp = client.post("/create-file?rows=3")
        assert resp.status_code == 200
        assert resp.headers["Content-Type"] == "application/json"
        addr = resp.get_json()["addr"]
        assert addr.startswith("/cached-data?uid=") and addr.endswith("&download=true")

        resp = client.get(addr, buffered=True)
        assert resp.status_code == 200
        assert resp.data == b"row,value\n0,0.0\n1,0.5\n2,1.0\n"
        assert resp.headers["Content-Type"] == "text/csv; charset=utf-8"
        assert resp.headers["Content-Length"] == "28"
        assert resp.headers["Content-Disposition"] == "attachment; filename=rows-3.csv"
        assert resp.headers["Cache-Control"] == "no-store"
        assert resp.headers["X-Content-Type-Options"] == "nosniff"

        again = client.get(addr, buffered=True)
        assert again.status_code == 410
        assert again.headers["Content-Type"] == "text/plain; charset=utf-8"


def test_flask_demo_defaults_to_ten_rows(load_demo: Any) -> None:
    demo = load_demo("flask_app")
    with demo.app.test_client() as client:
        addr = client.post("/create-file").get_json()["addr"]
        resp = client.get(addr, buffered=True)
    assert resp.status_code == 200
    assert resp.data.splitlines() == [b"row,value"] + [f"{n},{n * 0.5}".encode() for n in range(10)]


@pytest.mark.parametrize("rows", ["0", "-1", "abc", "1.5", "100001", "\u00b2"])
def test_flask_demo_rejects_a_bad_row_count(load_demo: Any, rows: str) -> None:
    demo = load_demo("flask_app")
    with demo.app.test_client() as client:
        resp = client.post("/create-file", query_string={"rows": rows})
    assert resp.status_code == 400
    assert resp.get_json() == {"error": "rows must be a whole number from 1 to 100000"}


def test_flask_demo_answers_only_post_on_create_file(load_demo: Any) -> None:
    demo = load_demo("flask_app")
    with demo.app.test_client() as client:
        resp = client.get("/create-file")
    assert resp.status_code == 405


# large_file.py -----------------------------------------------------------------


@pytest.fixture
def large(load_demo: Any) -> Any:
    """The large-file demo with a 50 kB file, its served address and the file's bytes."""
    demo = load_demo("large_file", DFC_DEMO_SIZE_MB="0.05")
    client = demo.app.server.test_client()
    answer = dash_update(client, "create", "n_clicks", 1)
    address = answer["response"]["link"]["href"]
    path = demo.large_csv(50_000)
    data = pathlib.Path(path).read_bytes()
    assert answer["response"]["size"]["children"] == f"{len(data):,} bytes"
    return client, address, data


def test_large_file_demo_writes_whole_rows_past_the_size(load_demo: Any) -> None:
    demo = load_demo("large_file", DFC_DEMO_SIZE_MB="0.05")
    data = pathlib.Path(demo.large_csv(50_000)).read_bytes()
    assert len(data) >= 50_000
    lines = data.decode("ascii").splitlines()
    assert lines[0] == "row,hash"
    assert lines[1] == "0000000000,0000000000"
    assert lines[2] == f"0000000001,{2654435761:010d}"
    assert all(len(line) == 21 for line in lines[1:])
    assert demo.large_csv(50_000) == demo.large_csv(50_000)


def test_large_file_demo_serves_the_whole_file(large: Any) -> None:
    client, address, data = large
    resp = client.get(address, buffered=True)
    assert resp.status_code == 200
    assert resp.data == data
    assert resp.headers["Content-Length"] == str(len(data))
    assert resp.headers["Content-Type"] == "text/csv"
    assert resp.headers["Accept-Ranges"] == "bytes"
    assert resp.headers["Content-Disposition"] == "attachment; filename=large.csv"


def test_large_file_demo_serves_a_range(large: Any) -> None:
    client, address, data = large
    resp = client.get(address, buffered=True, headers={"Range": "bytes=1000-1999"})
    assert resp.status_code == 206
    assert resp.data == data[1000:2000]
    assert resp.headers["Content-Range"] == f"bytes 1000-1999/{len(data)}"
    assert resp.headers["Content-Length"] == "1000"


def test_large_file_demo_serves_a_suffix_range(large: Any) -> None:
    client, address, data = large
    resp = client.get(address, buffered=True, headers={"Range": "bytes=-22"})
    assert resp.status_code == 206
    assert resp.data == data[-22:]
    assert resp.headers["Content-Range"] == f"bytes {len(data) - 22}-{len(data) - 1}/{len(data)}"


def test_large_file_demo_refuses_a_range_past_the_end(large: Any) -> None:
    client, address, data = large
    resp = client.get(address, buffered=True, headers={"Range": f"bytes={len(data)}-"})
    assert resp.status_code == 416
    assert resp.headers["Content-Range"] == f"bytes */{len(data)}"


# background.py -----------------------------------------------------------------


# Dash starts each background job with fork(); Python 3.12+ warns that forking a
# process with threads (the test server's, the CacheQueue listener) may deadlock.
# The job only writes one entry and exits, which is safe here.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
@pytest.mark.parametrize(("kind", "backend"), [("queue", "CacheQueue"), ("file", "CacheFile")])
def test_background_demo_registers_from_the_job(load_demo: Any, kind: str, backend: str) -> None:
    demo = load_demo("background", DFC_DEMO_CACHE=kind, DFC_DEMO_STEP_SECONDS="0")
    assert type(demo.cache).__name__ == backend
    with demo.app.server.test_client() as client:
        answer = dash_update(client, "build", "n_clicks", 1)
        progress = answer["progress"]
        if progress:  # a poll sees only the latest report: some, or all, pass unseen
            step = int(progress["progress.value"])
            assert 0 <= step < demo.STEPS
            assert progress["percent.children"] == f"{100 * step // demo.STEPS}%"
        # The result itself says "done".
        assert answer["response"]["progress"] == {"value": "5"}
        assert answer["response"]["percent"] == {"children": "100%"}
        address = answer["response"]["picture"]["src"]
        resp = client.get(address, buffered=True)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "image/png"
    assert png_size(resp.data) == (demo.WIDTH, demo.HEIGHT)


def test_background_demo_refuses_an_unknown_backend(load_demo: Any) -> None:
    with pytest.raises(SystemExit, match="DFC_DEMO_CACHE must be 'queue' or 'file'"):
        load_demo("background", DFC_DEMO_CACHE="redis")


# dash_file_cache.demo ----------------------------------------------------------


def test_main_demo_draws_a_png() -> None:
    app = main_demo.create_app()
    with app.server.test_client() as client:
        answer = dash_update(client, "draw", "n_clicks", 1)
        address = answer["response"]["picture"]["src"]
        assert answer["response"]["picture-address"]["children"] == f"Served from {address}"
        resp = client.get(address, buffered=True)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "image/png"
    assert resp.data == main_demo.png(*main_demo.PICTURE_SIZE, 1)
    assert png_size(resp.data) == main_demo.PICTURE_SIZE


def test_main_demo_offers_a_table_download() -> None:
    app = main_demo.create_app(dfc.ServiceData(dfc.CachePlain(2)))
    with app.server.test_client() as client:
        answer = dash_update(client, "make-table", "n_clicks", 2)
        link = answer["response"]["table-link"]
        assert link["children"] == "Download table.csv (20 rows)"
        resp = client.get(link["href"], buffered=True)
    assert resp.status_code == 200
    assert resp.data == main_demo.table_csv(20)
    assert resp.data.splitlines()[:3] == [b"n,square", b"1,1", b"2,4"]
    assert resp.headers["Content-Disposition"] == "attachment; filename=table.csv"


def test_png_encodes_its_size() -> None:
    assert png_size(main_demo.png(3, 2)) == (3, 2)


# Real processes ----------------------------------------------------------------


def _stop(process: subprocess.Popen[bytes]) -> None:
    # Ctrl-C, not SIGTERM: the server then exits normally and removes its temporary
    # directories.
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def _environ() -> dict[str, str]:
    environ = dict(os.environ)
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), environ.get("PYTHONPATH")]))
    return environ


@pytest.mark.slow
@pytest.mark.parametrize("name", DEMO_NAMES)
def test_demo_runs_as_a_script(name: str) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(DEMOS / f"{name}.py"), "--port", str(port)],
        cwd=ROOT,
        env=_environ(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        body = wait_until_ready(f"http://127.0.0.1:{port}/", process)
        assert body
    finally:
        _stop(process)


@pytest.mark.slow
def test_main_demo_runs_as_a_module(tmp_path: pathlib.Path) -> None:
    port = free_port()
    log = tmp_path / "out.txt"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "dash_file_cache.demo", "--port", str(port)],
            cwd=tmp_path,
            env=_environ(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        page = wait_until_ready(f"http://127.0.0.1:{port}/", process)
        assert b"dash-file-cache demo" in page
        layout = wait_until_ready(f"http://127.0.0.1:{port}/_dash-layout", process)
        assert b'"make-table"' in layout
    finally:
        _stop(process)
    assert log.read_text().splitlines()[0] == f"dash-file-cache demo: http://127.0.0.1:{port}/"
