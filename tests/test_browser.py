"""The demos in a real headless Chromium: what a person would see and download.

Each test starts its app on a free port with ``dash[testing]``'s ``dash_duo``
(threaded server plus Selenium), waits for what the page shows within a bound,
and leaves the fixture to stop the browser and the server.
"""

from __future__ import annotations

import pathlib
from typing import Any

import dash
import flask
import pytest
from browser_media import webm_video
from dash import html
from dash.testing.wait import until
from demo_support import free_port

import dash_file_cache as dfc

pytestmark = [
    pytest.mark.browser,
    # dash[testing] pins selenium<=4.2.0, which still reads response headers with
    # urllib3's deprecated HTTPResponse.getheader().
    pytest.mark.filterwarnings(
        "ignore:HTTPResponse.getheader:DeprecationWarning:selenium.webdriver.remote"
    ),
]


@pytest.fixture(autouse=True)
def _chromium_temp_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: Any) -> None:
    # Chromium leaves a directory with its singleton socket in TMPDIR even after a
    # clean quit; keep those inside pytest's temporary tree, which pytest prunes.
    # This process has already resolved its own temporary directory.
    monkeypatch.setenv("TMPDIR", str(tmp_path_factory.mktemp("chromium")))


def natural_size(dash_duo: Any, selector: str, timeout: float = 15) -> tuple[int, int]:
    """Wait until the ``<img>`` at ``selector`` has loaded a picture; return its size."""
    image = dash_duo.wait_for_element(f"{selector}[src]", timeout=timeout)
    script = "const i = arguments[0]; return i.complete && i.naturalWidth > 0;"
    until(lambda: dash_duo.driver.execute_script(script, image), timeout=timeout)
    width, height = dash_duo.driver.execute_script(
        "return [arguments[0].naturalWidth, arguments[0].naturalHeight];", image
    )
    return width, height


def test_image_demo_shows_the_picture(dash_duo: Any, load_demo: Any) -> None:
    demo = load_demo("image")
    dash_duo.start_server(demo.app, port=free_port())
    dash_duo.find_element("#draw").click()
    assert natural_size(dash_duo, "#picture") == (demo.WIDTH, demo.HEIGHT)
    src = dash_duo.find_element("#picture").get_attribute("src")
    assert src.startswith(f"{dash_duo.server_url}/cached-data?uid=")
    dash_duo.wait_for_text_to_equal("#address", src.removeprefix(dash_duo.server_url))
    assert dash_duo.get_logs() == []


# Dash starts each background job with fork(); Python 3.12+ warns that forking a
# process with threads (the test server's, the CacheQueue listener) may deadlock.
# The job only writes one entry and exits, which is safe here.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
@pytest.mark.parametrize("kind", ["queue", "file"])
def test_background_demo_finishes_and_shows_the_picture(
    dash_duo: Any, load_demo: Any, kind: str
) -> None:
    demo = load_demo("background", DFC_DEMO_CACHE=kind, DFC_DEMO_STEP_SECONDS="0.1")
    dash_duo.start_server(demo.app, port=free_port())
    dash_duo.wait_for_text_to_equal("#percent", "0%")
    dash_duo.find_element("#build").click()
    dash_duo.wait_for_text_to_equal("#percent", "100%", timeout=30)
    assert natural_size(dash_duo, "#picture", timeout=30) == (demo.WIDTH, demo.HEIGHT)
    progress = dash_duo.find_element("#progress")
    assert progress.get_attribute("value") == progress.get_attribute("max") == str(demo.STEPS)
    until(lambda: dash_duo.find_element("#build").is_enabled(), timeout=10)
    assert dash_duo.get_logs() == []


def test_download_demo_saves_the_file(dash_duo: Any, load_demo: Any) -> None:
    demo = load_demo("download")
    dash_duo.start_server(demo.app, port=free_port())
    target = pathlib.Path(dash_duo.download_path)
    # Headless Chromium only saves downloads where it is told to.
    dash_duo.driver.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(target)}
    )
    dash_duo.find_element("#make").click()
    dash_duo.wait_for_text_to_equal("#link", "Download table.csv (10 rows)")
    dash_duo.find_element("#link").click()
    saved = target / "table.csv"
    # Chromium writes "<name>.crdownload" and renames it when the download is complete.
    until(lambda: saved.exists(), timeout=20)
    assert saved.read_bytes() == demo.make_csv(10)
    assert sorted(p.name for p in target.iterdir()) == ["table.csv"]


def test_video_seeks_with_range_requests(dash_duo: Any) -> None:
    seconds = 30
    clip = webm_video(seconds=seconds, fps=10, frame_bytes=64 * 1024)
    service = dfc.ServiceData(dfc.CachePlain(4))
    app = dash.Dash(__name__)
    service.serve(app)
    address = service.register(clip, file_name="clip.webm")
    app.layout = html.Div(html.Video(id="clip", src=address, preload="metadata", controls=True))
    answers: list[tuple[str | None, int, str | None]] = []

    @app.server.after_request
    def record(response: flask.Response) -> flask.Response:
        if flask.request.path == service.service_name:
            answers.append(
                (
                    flask.request.headers.get("Range"),
                    response.status_code,
                    response.headers.get("Content-Range"),
                )
            )
        return response

    dash_duo.start_server(app, port=free_port())
    video = dash_duo.wait_for_element("#clip")
    run = dash_duo.driver.execute_script
    until(lambda: run("return arguments[0].readyState >= 1;", video), timeout=15)
    assert run("return arguments[0].error;", video) is None
    assert run("return [arguments[0].videoWidth, arguments[0].videoHeight];", video) == [64, 48]
    assert run("return arguments[0].duration;", video) == seconds
    assert run("return arguments[0].seekable.length;", video) == 1
    assert run("return arguments[0].seekable.end(0);", video) == seconds

    before = len(answers)
    run("arguments[0].currentTime = 27.5;", video)
    until(
        lambda: run("const v = arguments[0]; return !v.seeking && v.readyState >= 2;", video),
        timeout=15,
    )
    assert run("return arguments[0].currentTime;", video) == 27.5
    assert run("return arguments[0].error;", video) is None
    # The frame at 27.5 s was decoded: drawn on a canvas, it is opaque mid grey.
    pixel = run(
        "const v = arguments[0], c = document.createElement('canvas');"
        "c.width = v.videoWidth; c.height = v.videoHeight;"
        "const g = c.getContext('2d'); g.drawImage(v, 0, 0);"
        "return Array.from(g.getImageData(32, 24, 1, 1).data);",
        video,
    )
    red, green, blue, alpha = pixel
    assert alpha == 255
    assert red == green == blue
    assert 100 < red < 160

    size = len(clip)
    assert answers[0][:2] == ("bytes=0-", 206)
    later = [answer for answer in answers[before:] if answer[0] and answer[0] != "bytes=0-"]
    starts = []
    for header, status, content_range in later:
        assert status == 206
        first = int(header.removeprefix("bytes=").split("-")[0])
        assert content_range is not None and content_range.startswith(f"bytes {first}-")
        assert content_range.endswith(f"/{size}")
        starts.append(first)
    # Frames are evenly sized, so 27.5 s of a 30 s clip lies past 80 % of the file.
    assert any(first > size * 8 // 10 for first in starts), f"no range near 27.5 s: {answers}"


def _svg(width: int, height: int) -> bytes:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">'
        f'<rect width="{width}" height="{height}" fill="teal"/></svg>'
    ).encode()


def test_session_scoped_image_is_private_to_the_browser(dash_duo: Any) -> None:
    app = dash.Dash(__name__)
    service = dfc.ServiceData(dfc.CachePlain(8))
    service.serve(app)
    app.layout = html.Div([html.Button("Draw", id="draw"), html.Img(id="picture")])

    @app.callback(
        dash.Output("picture", "src"), dash.Input("draw", "n_clicks"), prevent_initial_call=True
    )
    def draw(_: int) -> str:
        return service.register(_svg(120, 80), mime_type="image/svg+xml", scope="session")

    dash_duo.start_server(app, port=free_port())
    cookies = {c["name"]: c for c in dash_duo.driver.get_cookies()}
    assert cookies["dash_file_cache_session"]["httpOnly"] is True
    dash_duo.find_element("#draw").click()
    assert natural_size(dash_duo, "#picture") == (120, 80)
    address = dash_duo.find_element("#picture").get_attribute("src")
    fetch_status = "return fetch(arguments[0], {credentials: 'include'}).then(r => r.status);"
    assert dash_duo.driver.execute_script(fetch_status, address) == 200
    # Another browser session: the same address is unknown to it.
    dash_duo.driver.delete_all_cookies()
    assert dash_duo.driver.execute_script(fetch_status, address) == 404
    # The only console message is the refused fetch.
    assert all("404" in entry["message"] for entry in dash_duo.get_logs())
