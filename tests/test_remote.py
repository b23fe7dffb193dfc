"""Remote entries (``register_request``) against a real HTTP server on loopback.

The upstream is a stdlib ``ThreadingHTTPServer`` on 127.0.0.1 with a free port. The
same server is also reachable as ``localhost``, which the redirect rules treat as
another host.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import flask
import pytest
from backends import backend_name, cache  # noqa: F401 - fixtures
from werkzeug.http import parse_range_header

import dash_file_cache as dfc

BODY = bytes(range(256)) * 40  # 10 KiB with every byte value
TIMEOUT = 0.5  # seconds, for the tests that wait for an upstream that never answers


class Upstream(ThreadingHTTPServer):
    """The fake remote server; it records the requests it received."""

    # Join the handler threads on close, so that no thread outlives its test.
    daemon_threads = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.release = threading.Event()
        self.seen: list[tuple[str, str, dict[str, str]]] = []

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The client of /slow gives up before the answer: a broken pipe is expected.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 5
    server: Upstream

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._route()

    def do_HEAD(self) -> None:
        self._route()

    def _route(self) -> None:
        self.server.seen.append((self.command, self.path, dict(self.headers.items())))
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        path = url.path
        if path == "/files/data.bin":
            self._file()
        elif path.startswith("/status/"):
            self._send(int(path.rsplit("/", 1)[1]), b"upstream error page", "text/html")
        elif path == "/redirect":
            self._send(302, b"", "text/plain", {"Location": query["to"]})
        elif path == "/slow":
            self.server.release.wait(10)
            # The client gave up long ago: the write may find the socket closed.
            with contextlib.suppress(OSError):
                self._send(200, BODY, "application/octet-stream")
        elif path == "/leaky.txt":
            headers = {
                "Set-Cookie": "session=upstream-secret",
                "X-Secret": "hunter2",
                "ETag": '"upstream"',
                "Content-Encoding": "identity",
            }
            self._send(200, b"hello", "text/plain; charset=utf-8", headers)
        elif path == "/echo":
            headers = {k.lower(): v for k, v in self.headers.items()}
            self._send(200, json.dumps(headers).encode(), "application/json")
        elif path.startswith("/named/"):
            disposition = query.get("cd", 'attachment; filename="from-upstream.csv"')
            self._send(200, b"a,b\n", "text/csv", {"Content-Disposition": disposition})
        elif path.startswith("/plain/"):
            self._send(200, b"plain", "text/plain")
        elif path == "/untyped/":
            self._send(200, b"<b>no type</b>", None)
        elif path == "/page.html":
            self._send(200, b"<script>alert(1)</script>", "text/html")
        elif path == "/garbage":
            self.wfile.write(b"THIS IS NOT HTTP\r\n\r\n")
            self.close_connection = True
        elif path == "/truncated":
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY[:100])
            self.close_connection = True
        else:
            self._send(404, b"no such test route", "text/plain")

    def _file(self) -> None:
        header = self.headers.get("Range")
        if header is None:
            self._send(200, BODY, "application/octet-stream", {"Accept-Ranges": "bytes"})
            return
        parsed = parse_range_header(header)
        span = None if parsed is None else parsed.range_for_length(len(BODY))
        if span is None:
            self._send(416, b"", "text/plain", {"Content-Range": f"bytes */{len(BODY)}"})
            return
        start, stop = span
        headers = {
            "Accept-Ranges": "bytes",
            "Content-Range": f"bytes {start}-{stop - 1}/{len(BODY)}",
        }
        self._send(206, BODY[start:stop], "application/octet-stream", headers)

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str | None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        if content_type is not None:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # urllib honours the proxy variables; the upstream is on loopback.
    for name in ("http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


class Served:
    """A Flask app serving one service, with a client that reads whole bodies."""

    def __init__(self, cache: dfc.CacheAbstract | None = None, **options: Any) -> None:
        options.setdefault("remote_timeout", 5.0)
        self.app = flask.Flask("remote")
        self.service = dfc.ServiceData(cache or dfc.CachePlain(16), **options)
        self.service.serve(self.app)
        self.client = self.app.test_client()

    def get(self, address: str, **kwargs: Any) -> Any:
        # Buffered: the client reads the body and closes it, as a server would.
        return self.client.get(address, buffered=True, **kwargs)

    def head(self, address: str, **kwargs: Any) -> Any:
        return self.client.head(address, buffered=True, **kwargs)


@pytest.fixture
def served() -> Served:
    return Served()


# Names and content ------------------------------------------------------------


def test_streams_the_remote_bytes_as_an_attachment(served: Served, upstream: Upstream) -> None:
    resp = served.get(served.service.register_request(upstream.url("/files/data.bin")))
    assert resp.status_code == 200
    assert resp.data == BODY
    assert resp.headers["Content-Type"] == "application/octet-stream"
    assert resp.headers["Content-Length"] == str(len(BODY))
    assert resp.headers["Content-Disposition"] == "attachment; filename=data.bin"
    assert resp.headers["Cache-Control"] == "no-store"


def test_download_false_serves_inline(served: Served, upstream: Upstream) -> None:
    address = served.service.register_request(upstream.url("/files/data.bin"), download=False)
    resp = served.get(address)
    assert resp.status_code == 200
    assert resp.data == BODY
    assert resp.headers["Content-Disposition"] == "inline; filename=data.bin"


def test_register_request_accepts_a_parse_result(served: Served, upstream: Upstream) -> None:
    parsed = urllib.parse.urlparse(upstream.url("/files/data.bin"))
    resp = served.get(served.service.register_request(parsed))
    assert resp.status_code == 200
    assert resp.data == BODY


def test_remote_entry_round_trips_through_every_backend(
    cache: dfc.CacheAbstract,
    upstream: Upstream,
) -> None:
    served = Served(cache)
    address = served.service.register_request(upstream.url("/echo"), headers={"X-Token": "abc"})
    resp = served.get(address)
    assert resp.status_code == 200
    assert json.loads(resp.data)["x-token"] == "abc"
    assert resp.headers["Content-Disposition"] == "attachment; filename=echo"


def test_url_name_wins_over_the_upstream_name(served: Served, upstream: Upstream) -> None:
    resp = served.get(served.service.register_request(upstream.url("/named/table.csv")))
    assert resp.status_code == 200
    assert resp.headers["Content-Disposition"] == "attachment; filename=table.csv"


def test_upstream_name_when_the_url_has_none(served: Served, upstream: Upstream) -> None:
    address = served.service.register_request(
        upstream.url("/named/"), file_name_fallback="fallback.txt"
    )
    resp = served.get(address)
    assert resp.status_code == 200
    assert resp.headers["Content-Disposition"] == "attachment; filename=from-upstream.csv"


def test_fallback_name_when_neither_url_nor_upstream_has_one(
    served: Served, upstream: Upstream
) -> None:
    address = served.service.register_request(
        upstream.url("/plain/"), file_name_fallback="fallback.txt"
    )
    resp = served.get(address)
    assert resp.status_code == 200
    assert resp.data == b"plain"
    assert resp.headers["Content-Disposition"] == "attachment; filename=fallback.txt"


def test_url_name_is_percent_decoded(served: Served, upstream: Upstream) -> None:
    resp = served.get(served.service.register_request(upstream.url("/named/r%C3%A9sum%C3%A9.csv")))
    assert resp.status_code == 200
    assert resp.headers["Content-Disposition"] == (
        "attachment; filename=resume.csv; filename*=UTF-8''r%C3%A9sum%C3%A9.csv"
    )


def test_upstream_utf8_name_is_kept(served: Served, upstream: Upstream) -> None:
    cd = urllib.parse.quote("attachment; filename*=UTF-8''%C3%A9t%C3%A9.csv")
    resp = served.get(served.service.register_request(upstream.url(f"/named/?cd={cd}")))
    assert resp.status_code == 200
    assert resp.headers["Content-Disposition"] == (
        "attachment; filename=ete.csv; filename*=UTF-8''%C3%A9t%C3%A9.csv"
    )


@pytest.mark.parametrize(
    "disposition",
    [
        'attachment; filename="../../etc/passwd"',
        'attachment; filename="..\\\\..\\\\etc\\\\passwd"',
    ],
)
def test_upstream_name_is_reduced_to_its_last_segment(
    served: Served, upstream: Upstream, disposition: str
) -> None:
    cd = urllib.parse.quote(disposition)
    resp = served.get(served.service.register_request(upstream.url(f"/named/?cd={cd}")))
    assert resp.status_code == 200
    assert resp.headers["Content-Disposition"] == "attachment; filename=passwd"


def test_missing_upstream_type_is_served_as_octet_stream(
    served: Served, upstream: Upstream
) -> None:
    address = served.service.register_request(upstream.url("/untyped/"), download=False)
    resp = served.get(address)
    assert resp.status_code == 200
    assert resp.data == b"<b>no type</b>"
    assert resp.headers["Content-Type"] == "application/octet-stream"


def test_inline_upstream_html_is_sandboxed(served: Served, upstream: Upstream) -> None:
    address = served.service.register_request(upstream.url("/page.html"), download=False)
    resp = served.get(address)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "text/html"
    assert resp.headers["Content-Security-Policy"] == "sandbox"


# Registration checks ----------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1/data.bin",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "data:text/plain,hello",
        "/relative/data.bin",
        "127.0.0.1/data.bin",
        "http:///data.bin",
        "https://",
    ],
)
def test_register_request_refuses_non_http_urls(served: Served, url: str) -> None:
    with pytest.raises(ValueError, match=r"absolute http:// or https:// address"):
        served.service.register_request(url)


@pytest.mark.parametrize("url", ["http://127.0.0.1:99999/x", "http://127.0.0.1:port/x"])
def test_register_request_refuses_a_bad_port(served: Served, url: str) -> None:
    with pytest.raises(ValueError, match=r"port"):
        served.service.register_request(url)


def test_register_request_refuses_credentials_in_the_url(served: Served) -> None:
    with pytest.raises(ValueError, match=r"Authorization"):
        served.service.register_request("http://user:secret@127.0.0.1/data.bin")


def test_register_request_refuses_a_url_of_wrong_type(served: Served) -> None:
    with pytest.raises(TypeError, match=r"url must be a str"):
        served.service.register_request(b"http://127.0.0.1/x")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Token": "a\r\nX-Injected: 1"},
        {"X-Token": "a\nb"},
        {"X-Token": "a\rb"},
        {"X-Bad\r\nName": "1"},
        {"Bad Name": "1"},
        {"Bad:Name": "1"},
        {"": "1"},
        {"X-Token": "caf\u00e9 \u2603"},
    ],
    ids=["crlf", "lf", "cr", "crlf-name", "space-name", "colon-name", "empty-name", "not-latin1"],
)
def test_register_request_refuses_bad_headers(
    served: Served, upstream: Upstream, headers: dict[str, str]
) -> None:
    with pytest.raises(ValueError, match=r"header"):
        served.service.register_request(upstream.url("/echo"), headers=headers)


def test_register_request_refuses_headers_of_wrong_type(served: Served) -> None:
    with pytest.raises(TypeError, match=r"headers must be a mapping"):
        served.service.register_request(
            "http://127.0.0.1/x",
            headers=[("X-Token", "a")],  # type: ignore[arg-type]
        )


def test_remote_hosts_restricts_registration(upstream: Upstream) -> None:
    served = Served(remote_hosts={"localhost"})
    with pytest.raises(ValueError, match=r"remote_hosts"):
        served.service.register_request(upstream.url("/files/data.bin"))


def test_remote_hosts_match_without_case(upstream: Upstream) -> None:
    served = Served(remote_hosts={"LocalHost"})
    resp = served.get(served.service.register_request(upstream.url("/files/data.bin", "LOCALHOST")))
    assert resp.status_code == 200
    assert resp.data == BODY


# Upstream errors --------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 401, 403, 404, 500, 503])
def test_upstream_error_is_answered_502(served: Served, upstream: Upstream, status: int) -> None:
    resp = served.get(served.service.register_request(upstream.url(f"/status/{status}")))
    assert resp.status_code == 502
    assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert resp.data == f"the remote server answered {status}\n".encode()
    assert resp.headers["Cache-Control"] == "no-store"


def test_upstream_that_does_not_speak_http_is_answered_502(
    served: Served, upstream: Upstream
) -> None:
    resp = served.get(served.service.register_request(upstream.url("/garbage")))
    assert resp.status_code == 502
    assert resp.data == b"the remote server cannot be reached\n"


def test_unreachable_upstream_is_answered_502(served: Served) -> None:
    # A bound socket that does not listen: connections to it are refused.
    with socket.socket() as reserved:
        reserved.bind(("127.0.0.1", 0))
        port = reserved.getsockname()[1]
        resp = served.get(served.service.register_request(f"http://127.0.0.1:{port}/x"))
    assert resp.status_code == 502
    assert resp.data == b"the remote server cannot be reached\n"


def test_silent_upstream_is_answered_504_within_the_timeout(upstream: Upstream) -> None:
    served = Served(remote_timeout=TIMEOUT)
    address = served.service.register_request(upstream.url("/slow"))
    start = time.monotonic()
    resp = served.get(address)
    elapsed = time.monotonic() - start
    assert resp.status_code == 504
    assert resp.data == b"the remote server did not answer in time\n"
    assert TIMEOUT * 0.9 <= elapsed < TIMEOUT + 2.0


def test_connect_timeout_is_answered_504(
    served: Served, upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_answer(address: Any, timeout: Any = None, *args: Any, **kwargs: Any) -> socket.socket:
        raise TimeoutError("timed out")

    address = served.service.register_request(upstream.url("/files/data.bin"))
    monkeypatch.setattr(socket, "create_connection", no_answer)
    resp = served.get(address)
    assert resp.status_code == 504
    assert resp.data == b"the remote server did not answer in time\n"


def test_truncated_upstream_body_aborts_the_transfer(served: Served, upstream: Upstream) -> None:
    # Headers are already sent: failing the iteration makes the server drop the
    # connection, so the browser sees a failed download, not a short file.
    address = served.service.register_request(upstream.url("/truncated"))
    with pytest.raises(OSError, match=r"ended after 100 of 10240 bytes"):
        served.get(address)


# Ranges -----------------------------------------------------------------------


def test_range_is_forwarded_and_answered_206(served: Served, upstream: Upstream) -> None:
    address = served.service.register_request(upstream.url("/files/data.bin"))
    resp = served.get(address, headers={"Range": "bytes=10-19"})
    assert resp.status_code == 206
    assert resp.data == BODY[10:20]
    assert resp.headers["Content-Range"] == f"bytes 10-19/{len(BODY)}"
    assert resp.headers["Content-Length"] == "10"
    assert resp.headers["Accept-Ranges"] == "bytes"
    assert upstream.seen[-1][2]["Range"] == "bytes=10-19"


def test_unsatisfiable_range_is_answered_416(served: Served, upstream: Upstream) -> None:
    address = served.service.register_request(upstream.url("/files/data.bin"))
    resp = served.get(address, headers={"Range": f"bytes={len(BODY)}-"})
    assert resp.status_code == 416
    assert resp.headers["Content-Range"] == f"bytes */{len(BODY)}"


# Redirects --------------------------------------------------------------------


def test_redirect_on_the_same_host_is_followed(served: Served, upstream: Upstream) -> None:
    address = served.service.register_request(upstream.url("/redirect?to=/files/data.bin"))
    resp = served.get(address)
    assert resp.status_code == 200
    assert resp.data == BODY
    assert [path for _, path, _ in upstream.seen] == [
        "/redirect?to=/files/data.bin",
        "/files/data.bin",
    ]


@pytest.mark.parametrize("remote_hosts", [None, {"127.0.0.1"}], ids=["no-allowlist", "allowlist"])
def test_redirect_to_another_host_is_refused(
    upstream: Upstream, remote_hosts: set[str] | None
) -> None:
    served = Served(remote_hosts=remote_hosts)
    target = urllib.parse.quote(upstream.url("/files/data.bin", "localhost"))
    resp = served.get(served.service.register_request(upstream.url(f"/redirect?to={target}")))
    assert resp.status_code == 502
    assert resp.data == b"the remote server redirected to a host that is not allowed\n"
    assert len(upstream.seen) == 1


def test_redirect_to_an_allowed_host_is_followed(upstream: Upstream) -> None:
    served = Served(remote_hosts={"127.0.0.1", "localhost"})
    target = urllib.parse.quote(upstream.url("/files/data.bin", "localhost"))
    resp = served.get(served.service.register_request(upstream.url(f"/redirect?to={target}")))
    assert resp.status_code == 200
    assert resp.data == BODY
    assert upstream.seen[-1][2]["Host"] == f"localhost:{upstream.port}"


def test_redirect_to_another_host_drops_credentials(upstream: Upstream) -> None:
    served = Served(remote_hosts={"127.0.0.1", "localhost"})
    target = urllib.parse.quote(upstream.url("/echo", "localhost"))
    address = served.service.register_request(
        upstream.url(f"/redirect?to={target}"),
        headers={"Authorization": "Bearer t0ken", "Cookie": "a=b", "X-Trace": "1"},
    )
    resp = served.get(address)
    assert resp.status_code == 200
    echoed = json.loads(resp.data)
    assert "authorization" not in echoed
    assert "cookie" not in echoed
    assert echoed["x-trace"] == "1"
    assert upstream.seen[0][2]["Authorization"] == "Bearer t0ken"


def test_redirect_to_another_scheme_is_refused(upstream: Upstream) -> None:
    served = Served(remote_hosts={"127.0.0.1"})
    target = urllib.parse.quote(f"ftp://127.0.0.1:{upstream.port}/data.bin")
    resp = served.get(served.service.register_request(upstream.url(f"/redirect?to={target}")))
    assert resp.status_code == 502
    assert len(upstream.seen) == 1


# Headers ----------------------------------------------------------------------


def test_only_content_headers_of_the_upstream_reach_the_browser(
    served: Served, upstream: Upstream
) -> None:
    resp = served.get(served.service.register_request(upstream.url("/leaky.txt")))
    assert resp.status_code == 200
    assert resp.data == b"hello"
    assert sorted(resp.headers.keys()) == [
        "Cache-Control",
        "Content-Disposition",
        "Content-Length",
        "Content-Type",
        "X-Content-Type-Options",
    ]
    assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"


def test_registered_headers_are_sent_upstream(served: Served, upstream: Upstream) -> None:
    address = served.service.register_request(
        upstream.url("/echo"), headers={"Authorization": "Bearer t0ken", "X-Api-Key": "k1"}
    )
    resp = served.get(address)
    assert resp.status_code == 200
    echoed = json.loads(resp.data)
    assert echoed["authorization"] == "Bearer t0ken"
    assert echoed["x-api-key"] == "k1"


def test_browser_headers_are_not_sent_upstream(served: Served, upstream: Upstream) -> None:
    address = served.service.register_request(upstream.url("/echo"))
    resp = served.get(address, headers={"Cookie": "session=browser", "X-Other": "1"})
    assert resp.status_code == 200
    echoed = json.loads(resp.data)
    assert "cookie" not in echoed
    assert "x-other" not in echoed


# HEAD -------------------------------------------------------------------------


def test_head_is_forwarded_and_has_no_body(served: Served, upstream: Upstream) -> None:
    resp = served.head(served.service.register_request(upstream.url("/files/data.bin")))
    assert resp.status_code == 200
    assert resp.data == b""
    assert resp.headers["Content-Length"] == str(len(BODY))
    assert resp.headers["Content-Type"] == "application/octet-stream"
    assert resp.headers["Content-Disposition"] == "attachment; filename=data.bin"
    assert [method for method, _, _ in upstream.seen] == ["HEAD"]


def test_head_of_an_upstream_error_is_answered_502(served: Served, upstream: Upstream) -> None:
    resp = served.head(served.service.register_request(upstream.url("/status/404")))
    assert resp.status_code == 502
    assert resp.data == b""


def test_head_closes_the_upstream_response(
    served: Served, upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A HEAD body is never iterated; the upstream must be closed all the same, not
    # left to the garbage collector. The list keeps the response alive to check it.
    opened: list[http.client.HTTPResponse] = []
    open_ = urllib.request.OpenerDirector.open

    def spy(self: urllib.request.OpenerDirector, *args: Any, **kwargs: Any) -> Any:
        response = open_(self, *args, **kwargs)
        opened.append(response)
        return response

    monkeypatch.setattr(urllib.request.OpenerDirector, "open", spy)
    resp = served.head(served.service.register_request(upstream.url("/files/data.bin")))
    assert resp.status_code == 200
    assert [r.isclosed() for r in opened] == [True]
