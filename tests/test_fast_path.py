"""The fast path answers exactly as the Flask route does, request by request.

Two apps serve two backends holding the same entries (same ids, ETags and times):
one through the route alone, one with the fast path in front. Every request of the
table goes to both; status, headers (but Date) and body must be identical, and the
requests the fast path is meant for must not reach Flask at all.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import flask
import pytest
from backends import close_backend, make_backend
from werkzeug.wsgi import FileWrapper

import dash_file_cache as dfc
from dash_file_cache.errors import BackendUnavailable

BODY = bytes(range(256)) * 40  # 10 KiB with every byte value
SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><circle r="4"/></svg>\n'
TOKEN = "t" * 43  # a well-formed session token
OTHER_TOKEN = "u" * 43
CREATED = 1_700_000_000.25


def _key(label: str) -> str:
    """A fixed, well-formed id, the same in both apps."""
    return hashlib.sha256(label.encode()).hexdigest()[:32]


def _entry(label: str, body: bytes | None, **fields: Any) -> dfc.Entry:
    options: dict[str, Any] = {
        "size": len(body) if body is not None else 0,
        "mime_type": "application/octet-stream",
        "content_type": "application/octet-stream",
        "file_name": f"{label}.bin",
        "created": CREATED,
        "etag": _key("etag " + label),
    }
    options.update(fields)
    return dfc.Entry(key=_key(label), **options)


def _entries(data: Path) -> list[tuple[dfc.Entry, bytes | None]]:
    path = data / "report.csv"
    if not path.exists():
        path.write_bytes(BODY)
    return [
        (_entry("bin", BODY), BODY),
        (_entry("svg", SVG, mime_type="image/svg+xml", content_type="image/svg+xml"), SVG),
        (
            _entry(
                "text",
                b"caf\xc3\xa9\n",
                mime_type="text/plain",
                content_type="text/plain; charset=utf-8",
                file_name="café.txt",
            ),
            b"caf\xc3\xa9\n",
        ),
        (_entry("one", BODY, one_time=True), BODY),
        # Big enough for CacheFile to keep it in a file of its own.
        (_entry("big", BODY * 8), BODY * 8),
        (
            _entry(
                "path",
                None,
                size=len(BODY),
                mime_type="text/csv",
                content_type="text/csv",
                file_name="report.csv",
                path=str(path),
            ),
            None,
        ),
        (
            _entry("html", b"<p>hi</p>", mime_type="text/html", content_type="text/html"),
            b"<p>hi</p>",
        ),
        (
            _entry(
                "session", BODY, scope="session", session=hashlib.sha256(TOKEN.encode()).hexdigest()
            ),
            BODY,
        ),
        (_entry("gone", BODY), BODY),
    ]


@dataclass
class World:
    """An app serving one backend, with or without the fast path; counts what reaches Flask."""

    cache: dfc.CacheAbstract
    fast: bool
    origin: str
    reached_flask: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.app = flask.Flask("fast" if self.fast else "route")
        self.service = dfc.ServiceData(self.cache, allowed_cross_origin=self.origin or None)
        self.service.serve(self.app, fast=self.fast)
        self.app.before_request(lambda: self.reached_flask.append(flask.request.full_path))
        # Without a cookie jar, so that a Cookie header goes out as given.
        self.client = self.app.test_client(use_cookies=False)

    def request(self, method: str, query: str, headers: dict[str, str]) -> Any:
        return self.client.open(
            "/cached-data" + query,
            method=method,
            headers=headers,
            buffered=True,
            environ_base={"wsgi.file_wrapper": FileWrapper},
        )


@pytest.fixture(params=["plain", "file"])
def worlds(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[World, World]]:
    made = []
    for fast in (False, True):
        cache = make_backend(str(request.param), tmp_path / f"fast{fast}")
        for entry, body in _entries(tmp_path):
            cache.put(entry, body)
        cache.delete(_key("gone"))
        made.append(World(cache, fast, origin=""))
    yield made[0], made[1]
    for world in made:
        close_backend(world.cache)


def _answer(resp: Any) -> tuple[str, list[tuple[str, str]], bytes]:
    # A new session token is random: only its place and attributes can match.
    headers = [
        (k, re.sub(r"^dash_file_cache_session=[\w-]{43};", "<token>;", v))
        for k, v in resp.headers.items()
        if k != "Date"
    ]
    return resp.status, headers, resp.get_data()


def _same(route: World, fast: World, method: str, query: str, **headers: str) -> Any:
    expected = route.request(method, query, headers)
    got = fast.request(method, query, headers)
    assert _answer(got) == _answer(expected)
    return got


def _uid(label: str, download: str | None = None) -> str:
    return f"?uid={_key(label)}" + ("" if download is None else f"&download={download}")


# (id, method, query, request headers, answered by the fast path itself)
REQUESTS: list[tuple[str, str, str, dict[str, str], bool]] = [
    ("plain", "GET", _uid("bin"), {}, True),
    ("svg, sandboxed", "GET", _uid("svg"), {}, True),
    ("svg download", "GET", _uid("svg", "true"), {}, True),
    ("download=1", "GET", _uid("bin", "1"), {}, True),
    ("download=false", "GET", _uid("bin", "false"), {}, True),
    ("download=", "GET", _uid("bin", ""), {}, True),
    ("download=True", "GET", _uid("bin", "True"), {}, True),
    ("non-ASCII name", "GET", _uid("text", "yes"), {}, True),
    ("path", "GET", _uid("path"), {}, True),
    ("big", "GET", _uid("big"), {}, True),
    ("path download", "GET", _uid("path", "on"), {}, True),
    ("HEAD", "HEAD", _uid("bin"), {}, True),
    ("HEAD path", "HEAD", _uid("path"), {}, True),
    ("HEAD one-time", "HEAD", _uid("one"), {}, True),
    ("range", "GET", _uid("bin"), {"Range": "bytes=10-99"}, False),
    ("suffix range", "GET", _uid("path"), {"Range": "bytes=-100"}, False),
    ("range -0", "GET", _uid("bin"), {"Range": "bytes=-0"}, False),
    ("range outside", "GET", _uid("bin"), {"Range": "bytes=99999-"}, False),
    ("multi-range", "GET", _uid("bin"), {"Range": "bytes=0-1,5-6"}, False),
    ("If-None-Match", "GET", _uid("bin"), {"If-None-Match": f'"{_key("etag bin")}"'}, False),
    (
        "If-Modified-Since",
        "GET",
        _uid("bin"),
        {"If-Modified-Since": "Sat, 1 Jan 2050 0:0:0 GMT"},
        False,
    ),
    ("If-Match wrong", "GET", _uid("bin"), {"If-Match": '"nope"'}, False),
    ("If-Range", "GET", _uid("bin"), {"If-Range": '"nope"', "Range": "bytes=0-9"}, False),
    ("no uid", "GET", "", {}, False),
    ("malformed uid", "GET", "?uid=../../etc/passwd", {}, False),
    ("short uid", "GET", "?uid=abc", {}, False),
    ("bad download", "GET", _uid("bin", "maybe"), {}, False),
    ("two uids", "GET", _uid("bin") + "&uid=" + _key("svg"), {}, False),
    ("other parameter", "GET", _uid("bin") + "&x=1", {}, False),
    ("encoded uid", "GET", "?uid=" + _key("bin")[:31] + "%61", {}, False),
    ("unknown", "GET", _uid("nothing"), {}, False),
    ("unknown, JSON", "GET", _uid("nothing"), {"Accept": "application/json"}, False),
    ("gone", "GET", _uid("gone"), {}, False),
    ("session, no cookie", "GET", _uid("session"), {}, False),
    (
        "session, its cookie",
        "GET",
        _uid("session"),
        {"Cookie": f"dash_file_cache_session={TOKEN}"},
        False,
    ),
    (
        "session, another cookie",
        "GET",
        _uid("session"),
        {"Cookie": f"dash_file_cache_session={OTHER_TOKEN}"},
        False,
    ),
    ("html page", "GET", _uid("html"), {"Cookie": f"dash_file_cache_session={TOKEN}"}, False),
    ("POST", "POST", _uid("bin"), {}, False),
    ("OPTIONS", "OPTIONS", _uid("bin"), {"Origin": "https://app.example"}, False),
]


@pytest.mark.parametrize(
    ("method", "query", "headers", "answered_fast"),
    [pytest.param(*row[1:], id=row[0]) for row in REQUESTS],
)
def test_fast_path_answers_like_the_route(
    worlds: tuple[World, World],
    method: str,
    query: str,
    headers: dict[str, str],
    answered_fast: bool,
) -> None:
    route, fast = worlds
    _same(route, fast, method, query, **headers)
    assert fast.reached_flask == ([] if answered_fast else [route.reached_flask[0]])


def test_one_time_entry_is_sent_once_by_either(worlds: tuple[World, World]) -> None:
    route, fast = worlds
    first = _same(route, fast, "GET", _uid("one"))
    assert first.status_code == 200
    assert first.get_data() == BODY
    second = _same(route, fast, "GET", _uid("one"))
    assert second.status_code == 410
    assert fast.reached_flask == ["/cached-data" + _uid("one")]


@pytest.mark.parametrize("origin", ["*", "https://app.example"])
def test_fast_path_sends_the_cross_origin_headers(tmp_path: Path, origin: str) -> None:
    route, fast = (World(dfc.CachePlain(4), fast, origin=origin) for fast in (False, True))
    entry, body = _entries(tmp_path)[0]
    for world in (route, fast):
        world.cache.put(entry, body)
    resp = _same(route, fast, "GET", _uid("bin", "true"), Origin="https://app.example")
    assert resp.headers["Access-Control-Allow-Origin"] == origin
    assert fast.reached_flask == []


def test_fast_path_counts_hits_like_the_route(worlds: tuple[World, World]) -> None:
    route, fast = worlds
    for _ in range(3):
        _same(route, fast, "GET", _uid("bin"))
    _same(route, fast, "HEAD", _uid("bin"))
    _same(route, fast, "GET", _uid("nothing"))
    for world in (route, fast):
        assert world.service.info(_key("bin"))["hits"] == 3
    assert fast.service.stats()["hits"] == route.service.stats()["hits"] == 3
    assert fast.service.stats()["misses"] == route.service.stats()["misses"] == 1
    assert fast.service.stats()["bytes_served"] == 3 * len(BODY)


def test_a_failing_backend_is_answered_by_the_route(
    worlds: tuple[World, World], monkeypatch: pytest.MonkeyPatch
) -> None:
    route, fast = worlds

    def unavailable(key: str) -> Any:
        raise BackendUnavailable("down")

    for world in (route, fast):
        monkeypatch.setattr(world.cache, "open", unavailable)
    resp = _same(route, fast, "GET", _uid("bin"))
    assert resp.status_code == 503


def test_other_routes_and_paths_pass_through(tmp_path: Path) -> None:
    world = World(dfc.CachePlain(4), fast=True, origin="")
    world.app.add_url_rule("/other", view_func=lambda: "other")
    entry, body = _entries(tmp_path)[0]
    world.cache.put(entry, body)
    assert world.client.get("/other").get_data() == b"other"
    assert world.client.get("/cached-data/" + _uid("bin")).status_code == 404
    assert world.reached_flask == ["/other?", "/cached-data/" + _uid("bin")]


def test_the_fast_path_skips_before_request_hooks(tmp_path: Path) -> None:
    # The documented trade-off: a login check in before_request does not guard it.
    world = World(dfc.CachePlain(4), fast=True, origin="")
    world.app.before_request(lambda: flask.abort(401))
    entry, body = _entries(tmp_path)[0]
    world.cache.put(entry, body)
    assert world.client.get("/cached-data" + _uid("bin")).status_code == 200
    assert world.client.get("/cached-data" + _uid("nothing")).status_code == 401


def test_the_fast_path_follows_the_dash_route_prefix(tmp_path: Path) -> None:
    dash = pytest.importorskip("dash")
    app = dash.Dash(__name__, routes_pathname_prefix="/app/", requests_pathname_prefix="/app/")
    service = dfc.ServiceData(dfc.CachePlain(4))
    service.serve(app, fast=True)
    reached: list[str] = []
    app.server.before_request(lambda: reached.append(flask.request.path))
    address = service.register(BODY)
    assert address.startswith("/app/cached-data?uid=")
    resp = app.server.test_client().get(address, buffered=True)
    assert resp.status_code == 200
    assert resp.get_data() == BODY
    assert reached == []


def test_the_date_is_the_current_one(worlds: tuple[World, World]) -> None:
    _, fast = worlds
    before = int(time.time())
    sent = parsedate_to_datetime(fast.request("GET", _uid("bin"), {}).headers["Date"])
    assert before <= sent.timestamp() <= time.time()


@pytest.mark.parametrize(
    "options",
    [{"host_matching": True, "static_host": "files.example"}, {"subdomain_matching": True}],
)
def test_the_fast_path_refuses_apps_that_route_by_host(options: dict[str, Any]) -> None:
    app = flask.Flask("hosts", **options)
    with pytest.raises(ValueError, match="fast=False"):
        dfc.ServiceData(dfc.CachePlain(4)).serve(app, fast=True)
    assert "dash_file_cache.cached-data" not in app.view_functions


# The default, fast="auto": the fast path answers only while no hook of the app
# would see the route's requests.


class AutoApp:
    """A Flask app served with the default ``fast``; counts requests that reach Flask."""

    def __init__(self, tmp_path: Path, app: flask.Flask | None = None, **serve: Any) -> None:
        self.app = app or flask.Flask("auto")
        self.service = dfc.ServiceData(dfc.CachePlain(8))
        self.service.serve(self.app, **serve)
        self.reached_flask: list[str] = []
        self.fast_path = _fast_path_of(self.app)
        if self.fast_path is not None:
            inner = self.fast_path.wsgi_app

            def counting(environ: dict[str, Any], start_response: Any) -> Any:
                self.reached_flask.append(environ["PATH_INFO"])
                return inner(environ, start_response)

            self.fast_path.wsgi_app = counting
        entry, body = _entries(tmp_path)[0]
        self.service.cache.put(entry, body)
        self.client = self.app.test_client()

    def get(self, query: str = _uid("bin")) -> Any:
        return self.client.get("/cached-data" + query, buffered=True)


def _fast_path_of(app: flask.Flask) -> Any:
    from dash_file_cache._http import FastPath

    return app.wsgi_app if isinstance(app.wsgi_app, FastPath) else None


def test_by_default_a_plain_download_skips_flask(tmp_path: Path) -> None:
    auto = AutoApp(tmp_path)
    assert auto.fast_path is not None
    resp = auto.get()
    assert resp.status_code == 200
    assert resp.get_data() == BODY
    assert auto.reached_flask == []
    # What the fast path leaves to the route still gets there.
    assert (
        auto.client.get("/cached-data" + _uid("bin"), headers={"Range": "bytes=0-9"}).data
        == (BODY[:10])
    )
    assert auto.reached_flask == ["/cached-data"]


def test_by_default_a_login_check_added_later_guards_the_files(tmp_path: Path) -> None:
    auto = AutoApp(tmp_path)
    assert auto.get().status_code == 200

    @auto.app.before_request
    def login_required() -> Any:
        if flask.request.headers.get("Authorization") != "Bearer ok":
            flask.abort(401)
        return None

    assert auto.get().status_code == 401
    resp = auto.client.get("/cached-data" + _uid("bin"), headers={"Authorization": "Bearer ok"})
    assert (resp.status_code, resp.get_data()) == (200, BODY)
    assert auto.reached_flask == ["/cached-data", "/cached-data"]


def _add_after_request(app: flask.Flask) -> None:
    def add_header(resp: flask.Response) -> flask.Response:
        resp.headers["X-Frame-Options"] = "DENY"
        return resp

    app.after_request(add_header)


def _add_teardown(app: flask.Flask) -> None:
    app.teardown_request(lambda exc: None)


def _add_url_value_preprocessor(app: flask.Flask) -> None:
    app.url_value_preprocessor(lambda endpoint, values: None)


@pytest.mark.parametrize(
    "add_hook", [_add_after_request, _add_teardown, _add_url_value_preprocessor]
)
def test_by_default_any_other_app_hook_sends_downloads_through_flask(
    tmp_path: Path, add_hook: Any
) -> None:
    auto = AutoApp(tmp_path)
    add_hook(auto.app)
    resp = auto.get()
    assert (resp.status_code, resp.get_data()) == (200, BODY)
    assert auto.reached_flask == ["/cached-data"]
    if add_hook is _add_after_request:
        assert resp.headers["X-Frame-Options"] == "DENY"


def test_by_default_a_blueprint_hook_does_not_concern_the_route(tmp_path: Path) -> None:
    auto = AutoApp(tmp_path)
    blueprint = flask.Blueprint("admin", "admin")
    blueprint.before_request(lambda: flask.abort(403))
    auto.app.register_blueprint(blueprint)
    assert auto.get().status_code == 200
    assert auto.reached_flask == []


def test_by_default_a_request_signal_receiver_sends_downloads_through_flask(
    tmp_path: Path,
) -> None:
    auto = AutoApp(tmp_path)
    seen: list[str] = []

    def started(sender: Any, **extra: Any) -> None:
        seen.append(flask.request.path)

    flask.request_started.connect(started, auto.app)
    try:
        assert auto.get().status_code == 200
    finally:
        flask.request_started.disconnect(started, auto.app)
    assert seen == ["/cached-data"]
    assert auto.reached_flask == ["/cached-data"]
    assert auto.get().status_code == 200
    assert auto.reached_flask == ["/cached-data"]


def test_by_default_middleware_wrapped_before_serve_is_never_skipped(tmp_path: Path) -> None:
    app = flask.Flask("wrapped")
    seen: list[str] = []
    inner = app.wsgi_app

    def guard(environ: dict[str, Any], start_response: Any) -> Any:
        seen.append(environ["PATH_INFO"])
        return inner(environ, start_response)

    app.wsgi_app = guard  # type: ignore[method-assign]
    auto = AutoApp(tmp_path, app)
    assert auto.fast_path is None
    assert auto.get().status_code == 200
    assert seen == ["/cached-data"]


def test_by_default_middleware_wrapped_after_serve_runs_in_front(tmp_path: Path) -> None:
    auto = AutoApp(tmp_path)
    seen: list[str] = []
    fast = auto.app.wsgi_app

    def outer(environ: dict[str, Any], start_response: Any) -> Any:
        seen.append(environ["PATH_INFO"])
        return fast(environ, start_response)

    auto.app.wsgi_app = outer  # type: ignore[method-assign]
    assert auto.get().status_code == 200
    assert seen == ["/cached-data"]
    assert auto.reached_flask == []


def test_by_default_two_services_both_get_a_fast_path(tmp_path: Path) -> None:
    app = flask.Flask("two")
    first = dfc.ServiceData(dfc.CachePlain(4))
    second = dfc.ServiceData(dfc.CachePlain(4), service_name="/other-data")
    first.serve(app)
    second.serve(app)
    one, two = first.register(b"one"), second.register(b"two")
    client = app.test_client()
    assert (client.get(one).data, client.get(two).data) == (b"one", b"two")
    outer = _fast_path_of(app)
    assert outer is not None and _fast_path_of_inner(outer) is not None


def _fast_path_of_inner(fast_path: Any) -> Any:
    from dash_file_cache._http import FastPath

    return fast_path.wsgi_app if isinstance(fast_path.wsgi_app, FastPath) else None


@pytest.mark.parametrize(
    "options",
    [{"host_matching": True, "static_host": "files.example"}, {"subdomain_matching": True}],
)
def test_by_default_apps_that_route_by_host_get_the_route_alone(
    tmp_path: Path, options: dict[str, Any]
) -> None:
    auto = AutoApp(tmp_path, flask.Flask("hosts", **options))
    assert auto.fast_path is None


@pytest.mark.parametrize("value", ["yes", 1, 0, None])
def test_fast_accepts_only_its_three_values(value: Any) -> None:
    with pytest.raises(ValueError, match="True, False or 'auto'"):
        dfc.ServiceData(dfc.CachePlain(4)).serve(flask.Flask("x"), fast=value)


def test_by_default_a_dash_app_gets_the_fast_path(tmp_path: Path) -> None:
    dash = pytest.importorskip("dash")
    app = dash.Dash(__name__)
    app.layout = dash.html.Div("page")
    auto = AutoApp(tmp_path, app.server)
    # Dash's own set-up hook and the session cookie hook do not stop it.
    assert app.server.before_request_funcs.get(None)
    assert auto.client.get("/").status_code == 200
    auto.reached_flask.clear()
    resp = auto.get()
    assert (resp.status_code, resp.get_data()) == (200, BODY)
    assert auto.reached_flask == []
