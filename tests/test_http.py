"""The served route through the Flask test client: one behaviour per test, every backend."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flask
import pytest
from backends import backend_name, cache  # noqa: F401 - fixtures
from flask.testing import FlaskClient

import dash_file_cache as dfc

BODY = bytes(range(256)) * 40  # 10 KiB with every byte value


class Served:
    """An app, its service and a client."""

    def __init__(self, cache: dfc.CacheAbstract, **options: Any) -> None:
        self.app = flask.Flask("served")
        self.service = dfc.ServiceData(cache, **options)
        self.service.serve(self.app)
        self.client: FlaskClient = self.app.test_client()

    def register(self, fobj: Any = BODY, **kwargs: Any) -> str:
        return self.service.register(fobj, **kwargs)

    def get(self, address: str, **kwargs: Any) -> Any:
        # Buffered: the client reads the body and closes it, as a server would.
        kwargs.setdefault("buffered", True)
        return self.client.get(address, **kwargs)


@pytest.fixture
def served(cache: dfc.CacheAbstract) -> Served:
    return Served(cache)


@pytest.fixture
def make_served(cache: dfc.CacheAbstract) -> Callable[..., Served]:
    return lambda **options: Served(cache, **options)


# Inputs -----------------------------------------------------------------------


def _binary_file(tmp_path: Path) -> Any:
    path = tmp_path / "in.bin"
    path.write_bytes(BODY)
    return open(path, "rb")


INPUTS: dict[str, Callable[[Path], Any]] = {
    "bytes": lambda _: BODY,
    "bytearray": lambda _: bytearray(BODY),
    "memoryview": lambda _: memoryview(BODY),
    "BytesIO": lambda _: io.BytesIO(BODY),
    "binary file": _binary_file,
}


@pytest.mark.parametrize("kind", sorted(INPUTS))
def test_every_binary_input_kind_is_served_exactly(
    served: Served, kind: str, tmp_path: Path
) -> None:
    fobj = INPUTS[kind](tmp_path)
    try:
        resp = served.get(served.register(fobj))
    finally:
        if hasattr(fobj, "close"):
            fobj.close()
    assert resp.status_code == 200
    assert resp.data == BODY
    assert resp.headers["Content-Length"] == str(len(BODY))
    assert resp.headers["Content-Type"] == "application/octet-stream"


def test_path_input_is_served_with_guessed_type_and_name(served: Served, tmp_path: Path) -> None:
    path = tmp_path / "chart.png"
    path.write_bytes(BODY)
    resp = served.get(served.register(path, download=True))
    assert resp.status_code == 200
    assert resp.data == BODY
    assert resp.headers["Content-Type"] == "image/png"
    assert resp.headers["Content-Disposition"] == "attachment; filename=chart.png"


def test_str_is_a_path_not_content(served: Served, tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("from disk")
    resp = served.get(served.register(str(path)))
    assert resp.data == b"from disk"


def test_stringio_is_utf8_with_byte_exact_length(served: Served) -> None:
    text = "naïve café - 😀"
    resp = served.get(served.register(io.StringIO(text), file_name="t.txt"))
    assert resp.status_code == 200
    assert resp.data == text.encode("utf-8")
    assert resp.headers["Content-Length"] == str(len(text.encode("utf-8")))
    assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"


def test_text_file_object_is_encoded(served: Served, tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("ünïcode", encoding="utf-8")
    with open(path, encoding="utf-8") as fobj:
        resp = served.get(served.register(fobj, mime_type="text/plain"))
    assert resp.data == "ünïcode".encode()


def test_bytesio_is_served_from_its_start_whatever_its_position(served: Served) -> None:
    buffer = io.BytesIO()
    buffer.write(b"written")
    assert served.get(served.register(buffer)).data == b"written"


def test_unsupported_input_raises_type_error(served: Served) -> None:
    with pytest.raises(TypeError, match="fobj must be"):
        served.register(12345)


def test_missing_path_raises_file_not_found(served: Served, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such file"):
        served.register(tmp_path / "absent.bin")


def test_directory_path_raises_value_error(served: Served, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a regular file"):
        served.register(tmp_path)


# Snapshots ----------------------------------------------------------------------


def test_changing_the_buffer_after_register_does_not_change_the_body(served: Served) -> None:
    buffer = io.BytesIO(b"original")
    address = served.register(buffer)
    buffer.seek(0)
    buffer.write(b"CHANGED!")
    buffer.truncate(3)
    buffer.close()
    assert served.get(address).data == b"original"


def test_changing_a_bytearray_after_register_does_not_change_the_body(served: Served) -> None:
    data = bytearray(b"original")
    address = served.register(data)
    data[:] = b"xx"
    assert served.get(address).data == b"original"


def test_concurrent_gets_of_one_entry_each_get_the_whole_body(served: Served) -> None:
    body = bytes(range(256)) * 4096 * 3  # 3 MiB: several chunks each
    served.service.chunk_size = 1
    address = served.register(body)
    results: list[bytes] = []

    def fetch() -> None:
        results.append(served.app.test_client().get(address, buffered=True).data)

    threads = [threading.Thread(target=fetch) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(results) == 8
    assert all(r == body for r in results)


# Types, names, flags --------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "content_type"),
    [
        ({}, "application/octet-stream"),
        ({"file_name": "table.csv"}, "text/csv"),
        ({"mime_type": "image/svg+xml"}, "image/svg+xml"),
        (
            {"mime_type": "text/csv", "content_type": "text/csv; charset=latin-1"},
            "text/csv; charset=latin-1",
        ),
        ({"file_name": "x.unknownext"}, "application/octet-stream"),
    ],
)
def test_content_type_defaults(served: Served, kwargs: dict[str, str], content_type: str) -> None:
    resp = served.get(served.register(**kwargs))
    assert resp.headers["Content-Type"] == content_type


def test_download_name_falls_back_to_id_plus_extension(served: Served) -> None:
    address = served.register(mime_type="image/png", download=True)
    uid = address.split("uid=")[1].split("&")[0]
    resp = served.get(address)
    assert resp.headers["Content-Disposition"] == f"attachment; filename={uid}.png"


@pytest.mark.parametrize("flag", ["true", "1", "yes", "TRUE", "on"])
def test_download_true_values_make_an_attachment(served: Served, flag: str) -> None:
    address = served.register(file_name="a.bin")
    resp = served.get(f"{address}&download={flag}")
    assert resp.headers["Content-Disposition"] == "attachment; filename=a.bin"


@pytest.mark.parametrize("flag", ["false", "0", "no", "False", "off", ""])
def test_download_false_values_display_inline(served: Served, flag: str) -> None:
    address = served.register(file_name="a.bin")
    resp = served.get(f"{address}&download={flag}")
    assert resp.headers["Content-Disposition"] == "inline; filename=a.bin"


def test_download_with_unknown_value_is_400(served: Served) -> None:
    resp = served.get(served.register() + "&download=maybe")
    assert resp.status_code == 400


def test_register_download_adds_flag_to_address(served: Served) -> None:
    address = served.register(download=True)
    assert address.startswith("/cached-data?uid=")
    assert address.endswith("&download=true")


@pytest.mark.parametrize(
    ("name", "disposition"),
    [
        ('quote".csv', 'attachment; filename="quote\\".csv"'),
        ("semi;colon.csv", 'attachment; filename="semi;colon.csv"'),
        ("space name.csv", 'attachment; filename="space name.csv"'),
        (
            "отчёт.csv",
            "attachment; filename=.csv; filename*=UTF-8''%D0%BE%D1%82%D1%87%D1%91%D1%82.csv",
        ),
        ("😀.txt", "attachment; filename=.txt; filename*=UTF-8''%F0%9F%98%80.txt"),
        ("日本", "attachment; filename=download; filename*=UTF-8''%E6%97%A5%E6%9C%AC"),
        ("café.csv", "attachment; filename=cafe.csv; filename*=UTF-8''caf%C3%A9.csv"),
    ],
)
def test_content_disposition_for_hard_names(served: Served, name: str, disposition: str) -> None:
    resp = served.get(served.register(file_name=name, download=True))
    assert resp.status_code == 200
    assert resp.headers["Content-Disposition"] == disposition


@pytest.mark.parametrize("field", ["file_name", "mime_type", "content_type"])
@pytest.mark.parametrize("bad", ["a\r\nSet-Cookie: x=1", "a\nb", "nul\x00", "tab\tin", "del\x7f"])
def test_control_characters_are_refused_at_register(served: Served, field: str, bad: str) -> None:
    with pytest.raises(ValueError, match="control character"):
        served.register(**{field: bad})


@pytest.mark.parametrize("bad", ["text", "text/", "/csv", "text/csv; x", "a b/c"])
def test_malformed_mime_types_are_refused(served: Served, bad: str) -> None:
    with pytest.raises(ValueError, match="media type"):
        served.register(mime_type=bad)


def test_max_entry_bytes_refuses_larger_entries(make_served: Callable[..., Served]) -> None:
    served = make_served(max_entry_bytes=10)
    served.register(b"0123456789")
    with pytest.raises(ValueError, match="max_entry_bytes"):
        served.register(b"0123456789A")


# Status codes ---------------------------------------------------------------------------


def test_missing_uid_is_400(served: Served) -> None:
    resp = served.get("/cached-data")
    assert resp.status_code == 400
    assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert resp.data == b"the address has no uid\n"


@pytest.mark.parametrize("uid", ["abc", "../../etc/passwd", "a" * 33, "%00" * 11, "a" * 31 + "/"])
def test_malformed_uid_is_400(served: Served, uid: str) -> None:
    assert served.get("/cached-data", query_string={"uid": uid}).status_code == 400


def test_unknown_uid_is_404(served: Served) -> None:
    assert served.get("/cached-data?uid=" + "A" * 32).status_code == 404


def test_error_body_is_json_when_only_json_is_accepted(served: Served) -> None:
    resp = served.get("/cached-data?uid=" + "A" * 32, headers={"Accept": "application/json"})
    assert resp.status_code == 404
    assert resp.json == {"status": 404, "error": "no file is registered at this address"}


def test_consumed_one_time_entry_is_410(served: Served) -> None:
    address = served.register(one_time_service=True)
    assert served.get(address).data == BODY
    assert served.get(address).status_code == 410


def test_path_deleted_after_register_is_410(served: Served, tmp_path: Path) -> None:
    path = tmp_path / "gone.bin"
    path.write_bytes(b"x")
    address = served.register(path)
    path.unlink()
    assert served.get(address).status_code == 410


def test_empty_file_is_served_as_empty_200(served: Served) -> None:
    resp = served.get(served.register(b""))
    assert resp.status_code == 200
    assert resp.data == b""
    assert resp.headers["Content-Length"] == "0"


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_other_methods_are_405(served: Served, method: str) -> None:
    resp = getattr(served.client, method)(served.register())
    assert resp.status_code == 405
    assert resp.headers["Allow"] == "GET, HEAD, OPTIONS"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"


def test_if_match_mismatch_is_412_without_the_body(served: Served) -> None:
    resp = served.get(served.register(), headers={"If-Match": '"other"'})
    assert resp.status_code == 412
    assert resp.data == b"the file does not match If-Match\n"


def test_if_match_with_current_etag_is_served(served: Served) -> None:
    address = served.register()
    etag = served.get(address).headers["ETag"]
    resp = served.get(address, headers={"If-Match": etag})
    assert resp.status_code == 200
    assert resp.data == BODY


def test_zero_length_suffix_is_416(served: Served) -> None:
    resp = served.get(served.register(), headers={"Range": "bytes=-0"})
    assert resp.status_code == 416
    assert resp.headers["Content-Range"] == f"bytes */{len(BODY)}"


# Headers --------------------------------------------------------------------------------


def test_common_headers(served: Served) -> None:
    resp = served.get(served.register())
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Accept-Ranges"] == "bytes"
    assert resp.headers["Cache-Control"] == "private, no-cache"
    etag = resp.headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"')  # strong, not W/
    assert "Last-Modified" in resp.headers


def test_one_time_entries_are_never_stored_by_the_browser(served: Served) -> None:
    resp = served.get(served.register(one_time_service=True))
    assert resp.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize(
    "mime",
    [
        "text/html",
        "image/svg+xml",
        "application/xhtml+xml",
        "text/javascript",
        "application/xml",
        "application/rss+xml",
    ],
)
def test_active_content_is_sandboxed_inline(served: Served, mime: str) -> None:
    resp = served.get(served.register(b"<svg/>", mime_type=mime))
    assert resp.headers["Content-Security-Policy"] == "sandbox"


def test_passive_content_is_not_sandboxed(served: Served) -> None:
    resp = served.get(served.register(mime_type="image/png"))
    assert "Content-Security-Policy" not in resp.headers


def test_active_content_can_be_allowed(make_served: Callable[..., Served]) -> None:
    served = make_served(allow_active_content=True)
    resp = served.get(served.register(b"<p>", mime_type="text/html"))
    assert "Content-Security-Policy" not in resp.headers


def test_cors_wildcard_never_allows_credentials(make_served: Callable[..., Served]) -> None:
    served = make_served(allowed_cross_origin="*")
    resp = served.get(served.register())
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in resp.headers
    exposed = {h.strip() for h in resp.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"Content-Disposition", "Content-Length", "Content-Range", "Accept-Ranges"} <= exposed


def test_cors_named_origin_allows_credentials(make_served: Callable[..., Served]) -> None:
    served = make_served(allowed_cross_origin="https://app.example")
    resp = served.get(served.register())
    assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert resp.headers["Access-Control-Allow-Credentials"] == "true"
    assert resp.headers["Vary"] == "Origin"


def test_cors_preflight_is_answered(make_served: Callable[..., Served]) -> None:
    served = make_served(allowed_cross_origin="*")
    resp = served.client.options(
        "/cached-data",
        headers={"Origin": "https://x.example", "Access-Control-Request-Method": "GET"},
    )
    assert resp.status_code == 204
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert resp.headers["Access-Control-Allow-Methods"] == "GET, HEAD, OPTIONS"
    assert "Range" in resp.headers["Access-Control-Allow-Headers"]


def test_no_cors_headers_by_default(served: Served) -> None:
    resp = served.get(served.register())
    assert "Access-Control-Allow-Origin" not in resp.headers


# Ranges ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-0", 0, 0),
        ("bytes=10-19", 10, 19),
        ("bytes=100-", 100, len(BODY) - 1),
        ("bytes=-5", len(BODY) - 5, len(BODY) - 1),
        ("bytes=10000-99999", 10000, len(BODY) - 1),
    ],
)
def test_single_range_gives_206_with_exact_bytes(
    served: Served, header: str, start: int, end: int
) -> None:
    resp = served.get(served.register(), headers={"Range": header})
    assert resp.status_code == 206
    assert resp.data == BODY[start : end + 1]
    assert resp.headers["Content-Range"] == f"bytes {start}-{end}/{len(BODY)}"
    assert resp.headers["Content-Length"] == str(end + 1 - start)


@pytest.mark.parametrize("header", ["bytes=20000-", "bytes=10240-10250"])
def test_unsatisfiable_range_is_416(served: Served, header: str) -> None:
    resp = served.get(served.register(), headers={"Range": header})
    assert resp.status_code == 416
    assert resp.headers["Content-Range"] == f"bytes */{len(BODY)}"


@pytest.mark.parametrize("header", ["bytes=5-2", "items=0-3", "bytes=abc", "bytes=", "garbage"])
def test_malformed_range_is_ignored(served: Served, header: str) -> None:
    resp = served.get(served.register(), headers={"Range": header})
    assert resp.status_code == 200
    assert resp.data == BODY


def test_multi_range_falls_back_to_whole_body(served: Served) -> None:
    resp = served.get(served.register(), headers={"Range": "bytes=0-1,5-6"})
    assert resp.status_code == 200
    assert resp.data == BODY


def test_if_range_with_current_etag_gives_206(served: Served) -> None:
    address = served.register()
    etag = served.get(address).headers["ETag"]
    resp = served.get(address, headers={"Range": "bytes=0-3", "If-Range": etag})
    assert resp.status_code == 206
    assert resp.data == BODY[:4]


def test_if_range_with_stale_etag_gives_whole_body(served: Served) -> None:
    resp = served.get(served.register(), headers={"Range": "bytes=0-3", "If-Range": '"old"'})
    assert resp.status_code == 200
    assert resp.data == BODY


def test_range_on_path_entry(served: Served, tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(BODY * 100)
    resp = served.get(served.register(path), headers={"Range": "bytes=500000-500009"})
    assert resp.status_code == 206
    assert resp.data == (BODY * 100)[500000:500010]


# Conditional requests --------------------------------------------------------------------


def test_if_none_match_gives_304(served: Served) -> None:
    address = served.register()
    etag = served.get(address).headers["ETag"]
    resp = served.get(address, headers={"If-None-Match": etag})
    assert resp.status_code == 304
    assert resp.data == b""


def test_if_modified_since_gives_304(served: Served) -> None:
    address = served.register()
    modified = served.get(address).headers["Last-Modified"]
    assert served.get(address, headers={"If-Modified-Since": modified}).status_code == 304


def test_entries_have_distinct_etags(served: Served) -> None:
    first = served.get(served.register()).headers["ETag"]
    second = served.get(served.register()).headers["ETag"]
    assert first != second


def test_path_etag_changes_when_the_file_changes(served: Served, tmp_path: Path) -> None:
    path = tmp_path / "f.txt"
    path.write_bytes(b"one")
    address = served.register(path)
    before = served.get(address).headers["ETag"]
    path.write_bytes(b"two!")
    resp = served.get(address, headers={"If-None-Match": before})
    assert resp.status_code == 200
    assert resp.data == b"two!"


def test_head_gives_headers_without_body(served: Served) -> None:
    resp = served.client.head(served.register(), buffered=True)
    assert resp.status_code == 200
    assert resp.data == b""
    assert resp.headers["Content-Length"] == str(len(BODY))


# One-time semantics ----------------------------------------------------------------------


def test_head_does_not_consume_one_time_entry(served: Served) -> None:
    address = served.register(one_time_service=True)
    assert served.client.head(address, buffered=True).status_code == 200
    assert served.get(address).data == BODY


def test_range_does_not_consume_one_time_entry(served: Served) -> None:
    address = served.register(one_time_service=True)
    assert served.get(address, headers={"Range": "bytes=0-9"}).status_code == 206
    assert served.get(address).data == BODY


def test_aborted_transfer_leaves_one_time_entry_servable(served: Served) -> None:
    body = b"y" * (3 << 20)
    address = served.register(body, one_time_service=True)
    resp = served.get(address, buffered=False)
    first = next(iter(resp.response))
    assert 0 < len(first) < len(body)
    resp.close()
    again = served.get(address)
    assert again.status_code == 200
    assert again.data == body
    assert served.get(address).status_code == 410


def test_concurrent_gets_of_one_time_entry_serve_it_once(served: Served) -> None:
    body = b"q" * (2 << 20)
    address = served.register(body, one_time_service=True)
    barrier = threading.Barrier(6)
    results: list[tuple[int, bytes]] = []

    def fetch() -> None:
        client = served.app.test_client()
        barrier.wait(timeout=10)
        resp = client.get(address, buffered=True)
        results.append((resp.status_code, resp.data))

    threads = [threading.Thread(target=fetch) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    statuses = sorted(status for status, _ in results)
    assert statuses == [200] + [410] * 5
    assert [data for status, data in results if status == 200] == [body]


# Apps, prefixes, compatibility -----------------------------------------------------------


def test_0_2_0_positional_and_keyword_calls_still_work(cache: dfc.CacheAbstract) -> None:
    app = flask.Flask("compat")
    service = dfc.ServiceData(cache, "/cached-data", 1, None)
    service.serve(app)
    address = service.register(
        fobj=io.StringIO("a simple test"),
        file_name="test.txt",
        content_type="",
        mime_type="text/plain",
        one_time_service=False,
        download=False,
    )
    resp = app.test_client().get(address, buffered=True)
    assert resp.data == b"a simple test"
    assert service.cache is cache
    assert service.chunk_size == 1


def test_two_services_on_one_app(cache: dfc.CacheAbstract, tmp_path: Path) -> None:
    app = flask.Flask("two")
    first = dfc.ServiceData(cache)
    second = dfc.ServiceData(dfc.CacheFile(tmp_path / "other"), service_name="/other-data")
    first.serve(app)
    second.init_app(app)
    one, two = first.register(b"one"), second.register(b"two")
    assert two.startswith("/other-data?uid=")
    client = app.test_client()
    assert client.get(one, buffered=True).data == b"one"
    assert client.get(two, buffered=True).data == b"two"
    second.cache.cache.close()  # type: ignore[attr-defined]


def test_serving_the_same_name_twice_is_refused(cache: dfc.CacheAbstract) -> None:
    app = flask.Flask("dup")
    dfc.ServiceData(cache).serve(app)
    with pytest.raises(ValueError, match="already has an endpoint"):
        dfc.ServiceData(cache).serve(app)


def test_dash_prefix_is_honoured(cache: dfc.CacheAbstract) -> None:
    import dash

    app = dash.Dash("prefixed", url_base_pathname="/dash/app/")
    app.layout = dash.html.Div()
    service = dfc.ServiceData(cache)
    service.serve(app)
    address = service.register(b"in dash")
    assert address.startswith("/dash/app/cached-data?uid=")
    assert app.server.test_client().get(address, buffered=True).data == b"in dash"


def test_dash_requests_prefix_differs_from_routes_prefix(cache: dfc.CacheAbstract) -> None:
    import dash

    app = dash.Dash(
        "proxied", routes_pathname_prefix="/app/", requests_pathname_prefix="/proxy/app/"
    )
    app.layout = dash.html.Div()
    service = dfc.ServiceData(cache)
    service.serve(app)
    address = service.register(b"behind a proxy")
    assert address.startswith("/proxy/app/cached-data?uid=")
    route = address.replace("/proxy", "", 1)
    assert app.server.test_client().get(route, buffered=True).data == b"behind a proxy"


@pytest.mark.parametrize("name", ["cached-data", "/", "/a?b", "/x\r\n"])
def test_bad_service_names_are_refused(cache: dfc.CacheAbstract, name: str) -> None:
    with pytest.raises(ValueError):
        dfc.ServiceData(cache, service_name=name)


def test_non_cache_is_refused() -> None:
    with pytest.raises(TypeError, match="cache must be"):
        dfc.ServiceData({})  # type: ignore[arg-type]


def test_serve_refuses_other_objects(cache: dfc.CacheAbstract) -> None:
    with pytest.raises(TypeError, match=r"dash\.Dash or a flask\.Flask"):
        dfc.ServiceData(cache).serve(object())


@pytest.mark.parametrize("size", [0, -1, 1.5])
def test_chunk_size_is_validated(cache: dfc.CacheAbstract, size: Any) -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        dfc.ServiceData(cache, chunk_size=size)


class _UnreachableCache(dfc.CachePlain):
    """A backend whose store cannot be reached, as when its server is down."""

    def get(self, key: str) -> Any:
        raise dfc.BackendUnavailable("the store is down")


def test_backend_failure_is_503_with_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    served = Served(_UnreachableCache(4))
    address = served.register()
    with caplog.at_level("ERROR", logger="dash_file_cache"):
        resp = served.get(address)
    assert resp.status_code == 503
    assert resp.data == b"the file cache is unavailable, try again later\n"
    assert [r.levelname for r in caplog.records] == ["ERROR"]
    assert address.split("uid=")[1] in caplog.records[0].getMessage()


def test_open_file_is_copied_and_left_open(served: Served, tmp_path: Path) -> None:
    path = tmp_path / "open.bin"
    path.write_bytes(BODY)
    with open(path, "r+b") as fobj:
        fobj.seek(100)  # served from the start whatever the position
        address = served.register(fobj)
        assert not fobj.closed
        fobj.seek(0)
        fobj.write(b"changed afterwards")
        fobj.truncate(50)
    resp = served.get(address)
    assert resp.data == BODY
    assert resp.headers["Content-Length"] == str(len(BODY))
