"""Hostile input: ids, names, types and ranges chosen to break the route.

Whatever a client sends, the answer is never a 500 and never holds a byte that is
not part of the entry it asked for.
"""

from __future__ import annotations

import io
import itertools
import string
import urllib.parse
from pathlib import Path
from typing import Any

import flask
import pytest
from backends import backend_name, cache  # noqa: F401 - fixtures
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dash_file_cache as dfc
from dash_file_cache._streams import BufferReader

SECRET = b"SECRET-FILE-CONTENT-" * 10
BODY = bytes(range(256)) * 8


def _hostile_ids() -> list[str]:
    bases = [
        "../../../../etc/passwd",
        "/etc/passwd",
        "..\\..\\windows\\win.ini",
        "C:\\Windows\\win.ini",
        "\x00",
        "a\x00b",
        "%00",
        "%2e%2e%2f%2e%2e%2f",
        "..%2f..%2f",
        "%252e%252e%252f",
        "\u2025\uff0f",  # two-dot leader, fullwidth solidus
        "ﬁ" * 32,
        "é" * 32,
        "😀" * 8,
        "A" * 31,
        "A" * 33,
        "A" * 10_000,
        " " + "A" * 31,
        "A" * 31 + " ",
        "A" * 31 + "\n",
        "*",
        "?",
        "[a-z]*",
        "{0}",
        "$(rm -rf /)",
        "'; DROP TABLE cache; --",
        "\r\nSet-Cookie: x=1",
        "gone:" + "A" * 27,
        "claim:" + "A" * 26,
        "",
    ]
    variants: list[str] = []
    for base in bases:
        variants += [base, base * 2, base.upper(), "A" * 16 + base, base + "A" * 16]
        variants.append(urllib.parse.quote(base, safe=""))
    # Id-shaped strings with one forbidden character in them.
    for position in (0, 7, 16, 24, 31):
        for char in "./\\%:*?\x00\x01\x7f \u200b=+&#~é😀":
            variants.append("A" * position + char + "A" * (31 - position))
    for length in (1, 16, 31, 32, 33, 64, 128):
        for char in "./\\%:*?\x01\x7f\u200b":
            variants.append((char * length)[:length])
    return sorted(set(variants))


HOSTILE_IDS = _hostile_ids()


@pytest.fixture
def loaded(cache: dfc.CacheAbstract, tmp_path: Path) -> tuple[flask.Flask, dfc.ServiceData]:
    app = flask.Flask("hostile")
    service = dfc.ServiceData(cache)
    service.serve(app)
    secret = tmp_path / "secret.txt"
    secret.write_bytes(SECRET)
    service.register(secret)
    service.register(SECRET)
    return app, service


def test_there_are_hundreds_of_hostile_ids() -> None:
    assert len(HOSTILE_IDS) > 300


def test_hostile_ids_never_reach_a_file(loaded: tuple[flask.Flask, dfc.ServiceData]) -> None:
    app, _ = loaded
    client = app.test_client()
    for uid in HOSTILE_IDS:
        for query in ({"uid": uid}, {"uid": uid, "download": "true"}):
            resp = client.get("/cached-data", query_string=query, buffered=True)
            assert resp.status_code in (400, 404), (uid, resp.status_code)
            assert SECRET[:20] not in resp.data
            assert resp.headers["Content-Type"].startswith("text/plain")


def test_raw_query_strings_never_give_500(loaded: tuple[flask.Flask, dfc.ServiceData]) -> None:
    app, _ = loaded
    client = app.test_client()
    raw = [
        "uid",
        "uid=",
        "uid=%",
        "uid=%ZZ",
        "uid=%00",
        "uid=%C0%AE%C0%AE",
        "uid=%FF%FE",
        "uid=a&uid=b",
        "uid[]=x",
        "download=true",
        "&&&",
        "uid=" + "%41" * 32,
        "uid=" + "A" * 32 + "&download=%00",
        "uid=" + "A" * 32 + "&download=" + "t" * 5000,
    ]
    for query in raw:
        resp = client.get("/cached-data?" + query, buffered=True)
        assert resp.status_code in (400, 404), (query, resp.status_code)


def test_percent_encoded_valid_id_is_the_same_id(
    loaded: tuple[flask.Flask, dfc.ServiceData],
) -> None:
    app, service = loaded
    address = service.register(b"encoded")
    uid = address.split("uid=")[1]
    encoded = "".join(f"%{ord(c):02X}" for c in uid)
    resp = app.test_client().get("/cached-data?uid=" + encoded, buffered=True)
    assert resp.status_code == 200
    assert resp.data == b"encoded"


HOSTILE_NAMES = [
    'a"b.csv',
    "a;b=c.csv",
    "a\\b.csv",
    "a,b.csv",
    "../../etc/passwd",
    "/abs/path.csv",
    "名前.csv",
    "اسم.csv",
    "имя.csv",
    "👍🏽.png",
    "\u202etxt.exe",
    "x" * 2000,
    " leading and trailing ",
    "percent%20encoded%0d%0a.csv",
    "filename*=UTF-8''evil.csv",
    "=?utf-8?q?x?=.csv",
    "'quote'.csv",
    "",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_file_names_give_one_safe_header(
    loaded: tuple[flask.Flask, dfc.ServiceData], name: str
) -> None:
    app, service = loaded
    resp = app.test_client().get(
        service.register(BODY, file_name=name, download=True), buffered=True
    )
    assert resp.status_code == 200
    assert resp.data == BODY
    disposition = resp.headers.getlist("Content-Disposition")
    assert len(disposition) == 1
    assert disposition[0].startswith("attachment; filename=")
    assert all(32 <= ord(c) < 127 for c in disposition[0])
    assert "Set-Cookie" not in resp.headers


@pytest.mark.parametrize(
    "value",
    [
        "text/html\r\nX-Injected: 1",
        "text/html\nX-Injected: 1",
        "image/png\x00",
        "image/png\rx",
        "\x0bimage/png",
    ],
)
def test_header_injection_through_types_is_refused(
    loaded: tuple[flask.Flask, dfc.ServiceData], value: str
) -> None:
    _, service = loaded
    for field in ("mime_type", "content_type"):
        with pytest.raises(ValueError, match="control character"):
            service.register(BODY, **{field: value})


@pytest.mark.parametrize("name", ["a\r\nX-Injected: 1", "a\nb", "a\x00b", "a\x1bb"])
def test_header_injection_through_names_is_refused(
    loaded: tuple[flask.Flask, dfc.ServiceData], name: str
) -> None:
    _, service = loaded
    with pytest.raises(ValueError, match="control character"):
        service.register(BODY, file_name=name)


MALFORMED_RANGES = [
    "",
    "bytes",
    "bytes=",
    "bytes=-",
    "bytes=--1",
    "bytes=1--2",
    "bytes=a-b",
    "bytes=1-a",
    "bytes=9999999999999999999999999999-",
    "bytes=-9999999999999999999999999999",
    "bytes=0-0,",
    "bytes=,0-0",
    "bytes=0-1,2-3,4-5",
    "bytes= 0 - 1 ",
    "bytes=0-1;q=1",
    "Bytes=0-1",
    "bits=0-1",
    "bytes=\x000-1",
    "bytes=0-1\r\n",
    "=0-1",
    "bytes=1-0",
    "bytes=-0",
    "bytes=2048-",
    "bytes=4096-5000",
    "bytes=0-" + "9" * 500,
    "bytes=" + ",".join(f"{i}-{i}" for i in range(300)),
]


@pytest.mark.parametrize("header", MALFORMED_RANGES)
def test_malformed_ranges_never_give_500_or_wrong_bytes(
    loaded: tuple[flask.Flask, dfc.ServiceData], header: str
) -> None:
    app, service = loaded
    address = service.register(BODY)
    # Through the environ: the test client itself refuses some of these headers.
    resp = app.test_client().get(address, environ_overrides={"HTTP_RANGE": header}, buffered=True)
    assert resp.status_code in (200, 206, 416), (header, resp.status_code)
    if resp.status_code == 200:
        assert resp.data == BODY
    elif resp.status_code == 206:
        unit, _, spec = resp.headers["Content-Range"].partition(" ")
        first, last = (int(x) for x in spec.split("/")[0].split("-"))
        assert unit == "bytes"
        assert resp.data == BODY[first : last + 1]
    else:
        assert resp.headers["Content-Range"] == f"bytes */{len(BODY)}"


@pytest.mark.parametrize(
    "headers",
    [
        {"If-None-Match": "*"},
        {"If-None-Match": "W/" + '"x"'},
        {"If-None-Match": "\x00"},
        {"If-Modified-Since": "not a date"},
        {"If-Modified-Since": "Mon, 01 Jan 1900 00:00:00 GMT"},
        {"If-Range": "garbage", "Range": "bytes=0-1"},
        {"If-Range": "Mon, 01 Jan 1900 00:00:00 GMT", "Range": "bytes=0-1"},
        {"If-Match": '"nope"'},
        {"Accept": "\x00/\x00"},
        {"Accept": "application/json;q=abc"},
    ],
)
def test_odd_conditional_headers_never_give_500(
    loaded: tuple[flask.Flask, dfc.ServiceData], headers: dict[str, str]
) -> None:
    app, service = loaded
    environ = {"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()}
    resp = app.test_client().get(service.register(BODY), environ_overrides=environ, buffered=True)
    assert resp.status_code in (200, 206, 304, 412), (headers, resp.status_code)
    if resp.status_code == 200:
        assert resp.data == BODY


# Property-based: any range of any entry returns exactly those bytes -----------------------

_bodies = st.binary(min_size=1, max_size=5000)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=_bodies, data=st.data())
def test_any_range_returns_exactly_those_bytes(
    loaded: tuple[flask.Flask, dfc.ServiceData], body: bytes, data: st.DataObject
) -> None:
    app, service = loaded
    size = len(body)
    form = data.draw(st.sampled_from(["closed", "open", "suffix"]))
    if form == "closed":
        first = data.draw(st.integers(0, size - 1))
        last = data.draw(st.integers(first, size + 50))
        header, expected = f"bytes={first}-{last}", body[first : last + 1]
        shown_last = min(last, size - 1)
    elif form == "open":
        first = data.draw(st.integers(0, size - 1))
        header, expected, shown_last = f"bytes={first}-", body[first:], size - 1
    else:
        count = data.draw(st.integers(1, size + 50))
        first = max(size - count, 0)
        header, expected, shown_last = f"bytes=-{count}", body[first:], size - 1
    address = service.register(io.BytesIO(body))
    resp = app.test_client().get(address, headers={"Range": header}, buffered=True)
    assert resp.status_code == 206
    assert resp.data == expected
    assert resp.headers["Content-Range"] == f"bytes {first}-{shown_last}/{size}"
    assert resp.headers["Content-Length"] == str(len(expected))


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=_bodies, start=st.integers(min_value=0, max_value=10_000))
def test_ranges_past_the_end_are_416(
    loaded: tuple[flask.Flask, dfc.ServiceData], body: bytes, start: int
) -> None:
    app, service = loaded
    address = service.register(body)
    first = len(body) + start
    resp = app.test_client().get(address, headers={"Range": f"bytes={first}-"}, buffered=True)
    assert resp.status_code == 416
    assert resp.headers["Content-Range"] == f"bytes */{len(body)}"


# Seeking instead of reading ------------------------------------------------------------


class _CountingStream(io.RawIOBase):
    """Wraps a stream and counts the bytes read through it."""

    def __init__(self, inner: Any, counter: list[int]) -> None:
        super().__init__()
        self._inner = inner
        self._counter = counter

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        data: bytes = self._inner.read(size)
        self._counter[0] += len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return int(self._inner.seek(offset, whence))

    def tell(self) -> int:
        return int(self._inner.tell())

    def close(self) -> None:
        self._inner.close()
        super().close()


def test_a_late_range_reads_only_its_own_bytes(
    cache: dfc.CacheAbstract, tmp_path: Path, backend_name: str
) -> None:
    counter = [0]
    real_open = cache.open

    def counting_open(key: str) -> Any:
        entry, stream = real_open(key)
        return entry, _CountingStream(stream, counter)

    cache.open = counting_open  # type: ignore[method-assign]
    app = flask.Flask("seek")
    service = dfc.ServiceData(cache)
    service.serve(app)
    body = bytes(itertools.islice(itertools.cycle(string.ascii_letters.encode()), 8 << 20))
    path = tmp_path / "big.bin"
    path.write_bytes(body)
    for address in (service.register(body), service.register(path)):
        counter[0] = 0
        resp = app.test_client().get(address, headers={"Range": "bytes=-100"}, buffered=True)
        assert resp.status_code == 206
        assert resp.data == body[-100:]
        assert counter[0] == 100, backend_name


def test_buffer_reader_reads_past_the_end_as_empty() -> None:
    reader = BufferReader(b"abc")
    reader.seek(10)
    assert reader.read(5) == b""
    assert reader.tell() == 10
    with pytest.raises(ValueError):
        reader.seek(-1)
