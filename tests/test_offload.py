"""Offload to a front server: the headers in-process, and real nginx in front of gunicorn."""

from __future__ import annotations

import contextlib
import os
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import flask
import pytest
import requests
from front_server import NginxMissing, nginx_in_front
from servers import gunicorn, pattern

import dash_file_cache as dfc

BIG = pattern(100_000, seed=4)  # above diskcache's 32 KiB: stored as a file
SMALL = pattern(1_000, seed=5)  # kept inside diskcache's database
ODD_NAME = "a b%20c?#ü;.bin"


class Offloaded:
    """A Flask app whose service offloads, with a CacheFile and one allowed root."""

    def __init__(self, tmp_path: Path, mode: str = "x-accel-redirect", **options: Any) -> None:
        self.root = tmp_path / "served"
        self.root.mkdir(exist_ok=True)
        self.cache = dfc.CacheFile(tmp_path / "cache")
        self.app = flask.Flask("offloaded")
        self.service = dfc.ServiceData(
            self.cache, offload=mode, offload_roots=[self.root], **options
        )
        self.service.serve(self.app)
        self.client = self.app.test_client()

    def get(self, address: str, **kwargs: Any) -> Any:
        kwargs.setdefault("buffered", True)
        return self.client.get(address, **kwargs)

    def file(self, name: str = "data.bin", body: bytes = BIG) -> Path:
        path = self.root / name
        path.write_bytes(body)
        return path

    def close(self) -> None:
        self.cache.cache.close()


@pytest.fixture
def offloaded(tmp_path: Path) -> Iterator[Offloaded]:
    made = Offloaded(tmp_path)
    yield made
    made.close()


def internal_uri(path: Path | str) -> str:
    real = os.path.realpath(path)
    return "/_dfc_internal/" + urllib.parse.quote(real.lstrip("/"), safe="/")


# In-process: which answers are handed over, with which headers ------------------


def test_path_under_a_root_is_handed_to_nginx(offloaded: Offloaded) -> None:
    path = offloaded.file()
    resp = offloaded.get(offloaded.service.register(path))
    assert resp.status_code == 200
    assert resp.headers["X-Accel-Redirect"] == internal_uri(path)
    assert resp.data == b""
    assert resp.headers["Content-Length"] == "0"


def test_offloaded_answer_keeps_every_header_of_the_entry(offloaded: Offloaded) -> None:
    path = offloaded.file("drawing.svg", b"<svg xmlns='http://www.w3.org/2000/svg'/>")
    resp = offloaded.get(offloaded.service.register(path))
    assert resp.headers["X-Accel-Redirect"] == internal_uri(path)
    assert resp.headers["Content-Type"] == "image/svg+xml"
    assert resp.headers["Content-Disposition"] == "inline; filename=drawing.svg"
    assert resp.headers["Cache-Control"] == "private, no-cache"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Content-Security-Policy"] == "sandbox"
    assert resp.headers["ETag"].startswith('"')
    assert "Last-Modified" in resp.headers
    # nginx adds its own Accept-Ranges and computes Content-Range itself.
    assert "Accept-Ranges" not in resp.headers
    assert "Content-Range" not in resp.headers


def test_download_name_is_kept(offloaded: Offloaded) -> None:
    path = offloaded.file()
    address = offloaded.service.register(path, file_name="résumé.bin", download=True)
    resp = offloaded.get(address)
    assert resp.headers["X-Accel-Redirect"] == internal_uri(path)
    assert resp.headers["Content-Disposition"] == (
        "attachment; filename=resume.bin; filename*=UTF-8''r%C3%A9sum%C3%A9.bin"
    )


def test_internal_uri_is_percent_encoded(offloaded: Offloaded) -> None:
    path = offloaded.file(ODD_NAME)
    resp = offloaded.get(offloaded.service.register(path))
    uri = resp.headers["X-Accel-Redirect"]
    assert uri == internal_uri(path)
    assert uri.endswith("/a%20b%2520c%3F%23%C3%BC%3B.bin")
    assert urllib.parse.unquote(uri.removeprefix("/_dfc_internal")) == os.path.realpath(path)


def test_cache_file_body_is_handed_over_from_the_cache_directory(offloaded: Offloaded) -> None:
    resp = offloaded.get(offloaded.service.register(BIG))
    uri = resp.headers["X-Accel-Redirect"]
    directory = os.path.realpath(offloaded.cache.directory)
    assert urllib.parse.unquote(uri).startswith("/_dfc_internal" + directory + "/")
    assert resp.data == b""


def test_body_kept_in_the_database_is_served_by_the_app(offloaded: Offloaded) -> None:
    resp = offloaded.get(offloaded.service.register(SMALL))
    assert "X-Accel-Redirect" not in resp.headers
    assert resp.data == SMALL


def test_path_outside_the_roots_is_served_by_the_app(offloaded: Offloaded, tmp_path: Path) -> None:
    outside = tmp_path / "outside.bin"
    outside.write_bytes(BIG)
    resp = offloaded.get(offloaded.service.register(outside))
    assert "X-Accel-Redirect" not in resp.headers
    assert resp.data == BIG


def test_symlink_out_of_a_root_is_served_by_the_app(offloaded: Offloaded, tmp_path: Path) -> None:
    outside = tmp_path / "secret.bin"
    outside.write_bytes(BIG)
    link = offloaded.root / "link.bin"
    link.symlink_to(outside)
    resp = offloaded.get(offloaded.service.register(link))
    assert "X-Accel-Redirect" not in resp.headers
    assert resp.data == BIG


def test_symlink_within_a_root_names_the_real_file(offloaded: Offloaded) -> None:
    path = offloaded.file("real.bin")
    link = offloaded.root / "alias.bin"
    link.symlink_to(path)
    resp = offloaded.get(offloaded.service.register(link))
    assert resp.headers["X-Accel-Redirect"] == internal_uri(path)


def test_memory_backend_is_never_offloaded(tmp_path: Path) -> None:
    app = flask.Flask("memory")
    service = dfc.ServiceData(dfc.CachePlain(4), offload="x-accel-redirect")
    service.serve(app)
    resp = app.test_client().get(service.register(BIG), buffered=True)
    assert "X-Accel-Redirect" not in resp.headers
    assert resp.data == BIG


def test_without_offload_nothing_is_handed_over(tmp_path: Path) -> None:
    cache = dfc.CacheFile(tmp_path / "cache")
    app = flask.Flask("plain")
    service = dfc.ServiceData(cache, offload_roots=[tmp_path])
    service.serve(app)
    resp = app.test_client().get(service.register(BIG), buffered=True)
    assert "X-Accel-Redirect" not in resp.headers
    assert "X-Sendfile" not in resp.headers
    assert resp.data == BIG
    cache.cache.close()


def test_one_time_entry_is_served_by_the_app(offloaded: Offloaded) -> None:
    address = offloaded.service.register(offloaded.file(), one_time_service=True)
    first = offloaded.get(address)
    assert "X-Accel-Redirect" not in first.headers
    assert first.data == BIG
    assert offloaded.get(address).status_code == 410


def test_head_is_answered_by_the_app(offloaded: Offloaded) -> None:
    resp = offloaded.client.head(offloaded.service.register(offloaded.file()), buffered=True)
    assert resp.status_code == 200
    assert "X-Accel-Redirect" not in resp.headers
    assert resp.headers["Content-Length"] == str(len(BIG))


def test_single_range_is_handed_over_whole(offloaded: Offloaded) -> None:
    path = offloaded.file()
    resp = offloaded.get(offloaded.service.register(path), headers={"Range": "bytes=10-19"})
    assert resp.status_code == 200
    assert resp.headers["X-Accel-Redirect"] == internal_uri(path)
    assert "Content-Range" not in resp.headers
    # nginx adds Accept-Ranges to a whole file only.
    assert resp.headers["Accept-Ranges"] == "bytes"


@pytest.mark.parametrize("header", ["bytes=5-1", "bytes=0-1,5-6", "lines=1-2"])
def test_range_the_app_ignores_is_served_by_the_app(offloaded: Offloaded, header: str) -> None:
    resp = offloaded.get(offloaded.service.register(offloaded.file()), headers={"Range": header})
    assert resp.status_code == 200
    assert "X-Accel-Redirect" not in resp.headers
    assert resp.data == BIG


def test_unsatisfiable_range_is_416_from_the_app(offloaded: Offloaded) -> None:
    address = offloaded.service.register(offloaded.file())
    resp = offloaded.get(address, headers={"Range": "bytes=200000-"})
    assert resp.status_code == 416
    assert "X-Accel-Redirect" not in resp.headers
    assert resp.headers["Content-Range"] == f"bytes */{len(BIG)}"


def test_not_modified_is_304_from_the_app(offloaded: Offloaded) -> None:
    address = offloaded.service.register(offloaded.file())
    etag = offloaded.get(address).headers["ETag"]
    resp = offloaded.get(address, headers={"If-None-Match": etag})
    assert resp.status_code == 304
    assert "X-Accel-Redirect" not in resp.headers


def test_stale_if_none_match_is_handed_over(offloaded: Offloaded) -> None:
    address = offloaded.service.register(offloaded.file())
    resp = offloaded.get(address, headers={"If-None-Match": '"stale"'})
    assert resp.status_code == 200
    assert "X-Accel-Redirect" in resp.headers


@pytest.mark.parametrize(
    "header",
    [
        {"If-Match": "{etag}"},
        {"If-Unmodified-Since": "Fri, 01 Jan 2100 00:00:00 GMT"},
        {"If-Range": '"stale"', "Range": "bytes=0-9"},
    ],
)
def test_preconditions_nginx_would_judge_are_served_by_the_app(
    offloaded: Offloaded, header: dict[str, str]
) -> None:
    address = offloaded.service.register(offloaded.file())
    etag = offloaded.get(address).headers["ETag"]
    resp = offloaded.get(address, headers={k: v.format(etag=etag) for k, v in header.items()})
    assert resp.status_code == 200
    assert "X-Accel-Redirect" not in resp.headers
    assert resp.data == BIG


def test_custom_prefix(tmp_path: Path) -> None:
    made = Offloaded(tmp_path, offload_prefix="/protected/")
    path = made.file()
    resp = made.get(made.service.register(path))
    assert resp.headers["X-Accel-Redirect"] == internal_uri(path).replace(
        "/_dfc_internal/", "/protected/", 1
    )
    made.close()


def test_x_sendfile_names_the_encoded_absolute_path(tmp_path: Path) -> None:
    made = Offloaded(tmp_path, mode="x-sendfile")
    path = made.file(ODD_NAME)
    resp = made.get(made.service.register(path))
    assert resp.status_code == 200
    assert resp.headers["X-Sendfile"] == urllib.parse.quote(os.path.realpath(path), safe="/")
    assert "X-Accel-Redirect" not in resp.headers
    assert resp.headers["Accept-Ranges"] == "bytes"
    assert resp.data == b""
    made.close()


@pytest.mark.parametrize("mode", ["nginx", "sendfile", "", 1])
def test_unknown_offload_mode_is_refused(mode: Any) -> None:
    with pytest.raises(ValueError, match="offload must be None"):
        dfc.ServiceData(dfc.CachePlain(1), offload=mode)


@pytest.mark.parametrize("prefix", ["_dfc/", "/_dfc", "/a?b/", "/a%20/", "/a\n/"])
def test_bad_offload_prefix_is_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="offload_prefix"):
        dfc.ServiceData(dfc.CachePlain(1), offload="x-accel-redirect", offload_prefix=prefix)


def test_single_path_as_offload_roots_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="collection of directories"):
        dfc.ServiceData(dfc.CachePlain(1), offload="x-sendfile", offload_roots=str(tmp_path))


# Real nginx in front of gunicorn: answers identical to the app without offload ----


class Live:
    """nginx with offload, and the same cache served directly without offload."""

    def __init__(self, nginx: str, offloading: str, reference: str, root: Path) -> None:
        self.nginx = nginx
        self.offloading = offloading
        self.reference = reference
        self.root = root

    def register(self, **params: object) -> str:
        resp = requests.post(f"{self.reference}/register", params=params, timeout=30)
        assert resp.status_code == 200, resp.text
        return resp.text


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    cache_dir = str(tmp_path_factory.mktemp("offload-cache"))
    root = tmp_path_factory.mktemp("offload-root")
    args = ("--worker-class", "gthread", "--threads", "4")
    env = {"DFC_CACHE_DIR": cache_dir, "DFC_OFFLOAD_ROOTS": str(root)}
    with (
        gunicorn("offload_app:app", *args, env={**env, "DFC_OFFLOAD": "x-accel-redirect"}) as app,
        gunicorn("offload_app:app", *args, env=env) as reference,
        contextlib.ExitStack() as stack,
    ):
        try:
            nginx = stack.enter_context(nginx_in_front(app, cache_dir, str(root)))
        except NginxMissing as exc:
            # Locally a missing nginx only skips; CI installs it, so there it fails.
            if os.environ.get("CI") == "true":
                pytest.fail(f"nginx must run in CI: {exc}", pytrace=False)
            pytest.skip(str(exc))
        yield Live(nginx, app, reference, root)


# Headers that nginx itself adds or that depend on the connection.
_OWN_HEADERS = {"server", "date", "connection", "keep-alive"}


def compare(live: Live, address: str, method: str = "GET", **headers: str) -> requests.Response:
    """Fetch through nginx and from the reference app; assert both answers are the same."""
    via = requests.request(method, live.nginx + address, headers=headers, timeout=60)
    ref = requests.request(method, live.reference + address, headers=headers, timeout=60)
    assert via.status_code == ref.status_code
    assert via.content == ref.content

    def kept(resp: requests.Response) -> dict[str, str]:
        return {k.lower(): v for k, v in resp.headers.items() if k.lower() not in _OWN_HEADERS}

    assert kept(via) == kept(ref)
    return via


def assert_offloaded(live: Live, address: str, **headers: str) -> None:
    resp = requests.get(live.offloading + address, headers=headers, timeout=60)
    assert resp.headers.get("X-Accel-Redirect", "").startswith("/_dfc_internal/")


def live_file(live: Live, name: str, body: bytes = BIG) -> Path:
    path = live.root / name
    path.write_bytes(body)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("source", ["path", "body"])
def test_live_whole_file(live: Live, source: str) -> None:
    params = {"path": str(live_file(live, ODD_NAME))} if source == "path" else {"size": 300_000}
    address = live.register(**params)
    assert_offloaded(live, address)
    resp = compare(live, address)
    assert resp.status_code == 200
    assert "X-Accel-Redirect" not in resp.headers


@pytest.mark.slow
@pytest.mark.parametrize(
    "header",
    ["bytes=0-99", "bytes=1000-", "bytes=-10", "bytes=-999999", "bytes=299999-299999"],
)
def test_live_ranges(live: Live, header: str) -> None:
    address = live.register(size=300_000, seed=7)
    assert_offloaded(live, address, Range=header)
    assert compare(live, address, Range=header).status_code == 206


@pytest.mark.slow
@pytest.mark.parametrize("header", ["bytes=300000-", "bytes=-0", "bytes=5-1", "bytes=0-1,5-6"])
def test_live_ranges_answered_by_the_app(live: Live, header: str) -> None:
    address = live.register(size=300_000, seed=7)
    compare(live, address, Range=header)


@pytest.mark.slow
def test_live_if_range(live: Live) -> None:
    address = live.register(size=300_000)
    etag = requests.get(live.reference + address, timeout=30).headers["ETag"]
    assert compare(live, address, Range="bytes=0-9", **{"If-Range": etag}).status_code == 206
    assert compare(live, address, Range="bytes=0-9", **{"If-Range": '"old"'}).status_code == 200


@pytest.mark.slow
def test_live_not_modified(live: Live) -> None:
    address = live.register(size=300_000)
    first = compare(live, address)
    etag, modified = first.headers["ETag"], first.headers["Last-Modified"]
    assert compare(live, address, **{"If-None-Match": etag}).status_code == 304
    assert compare(live, address, **{"If-Modified-Since": modified}).status_code == 304
    assert compare(live, address, **{"If-None-Match": '"other"'}).status_code == 200


@pytest.mark.slow
def test_live_head(live: Live) -> None:
    address = live.register(size=300_000)
    resp = compare(live, address, method="HEAD")
    assert resp.status_code == 200
    assert resp.headers["Content-Length"] == "300000"


@pytest.mark.slow
def test_live_download_name_and_active_content(live: Live) -> None:
    path = live_file(
        live, "chart ü.svg", b"<svg xmlns='http://www.w3.org/2000/svg'>" + BIG + b"</svg>"
    )
    for download in ("0", "1"):
        address = live.register(path=str(path), download=download)
        assert_offloaded(live, address)
        compare(live, address)


@pytest.mark.slow
def test_live_one_time_entry(live: Live) -> None:
    via = live.register(size=300_000, one_time="1")
    ref = live.register(size=300_000, one_time="1")
    for _ in range(2):
        a = requests.get(live.nginx + via, timeout=30)
        b = requests.get(live.reference + ref, timeout=30)
        assert (a.status_code, a.content) == (b.status_code, b.content)
    assert a.status_code == 410


@pytest.mark.slow
def test_live_internal_location_is_not_reachable_directly(live: Live) -> None:
    path = live_file(live, "private.bin")
    resp = requests.get(live.nginx + internal_uri(path), timeout=30)
    assert resp.status_code == 404
    assert resp.content != BIG
