"""Remote entries: a file on another http(s) server, streamed through the route.

Only the upstream's type, length, range and file name reach the browser; upstream
errors become 502, timeouts 504, and redirects are followed only within the same
host or to an allowed one, without credentials.
"""

from __future__ import annotations

import http.client
import logging
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import flask

from .entry import Entry

if TYPE_CHECKING:
    from ._http import _Answer

__all__ = ["file_name_part", "remote_response"]

log = logging.getLogger("dash_file_cache")

# Upstream headers that a remote entry passes on; nothing else from the upstream
# server reaches the browser.
_UPSTREAM_HEADERS = ("Content-Type", "Content-Length", "Content-Range", "Accept-Ranges")


def remote_response(answer: _Answer, entry: Entry, download: bool) -> flask.Response:
    """Stream a remote entry's upstream file through, passing on only safe headers."""
    assert entry.url is not None
    headers = dict(entry.url_headers)
    if "HTTP_RANGE" in answer.request.environ:
        headers["Range"] = answer.request.environ["HTTP_RANGE"]
    opener = urllib.request.build_opener(_SameHostRedirects(answer.service.remote_hosts))
    try:
        upstream = opener.open(
            urllib.request.Request(entry.url, headers=headers, method=answer.request.method),
            timeout=answer.service.remote_timeout,
        )
    except _SameHostRedirects.Refused as exc:
        log.warning("remote entry %s: %s", entry.key, exc.reason)
        return answer.error(502, "the remote server redirected to a host that is not allowed")
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416:
            resp = answer.error(416, "the requested range is outside the remote file")
            content_range = exc.headers.get("Content-Range")
            if content_range:
                resp.headers["Content-Range"] = content_range
            return resp
        return answer.error(502, f"the remote server answered {exc.code}")
    except (OSError, http.client.HTTPException, ValueError) as exc:
        # urllib wraps a connect timeout in URLError; a read timeout comes bare.
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        if isinstance(reason, TimeoutError):
            return answer.error(504, "the remote server did not answer in time")
        log.warning("remote entry %s failed: %r", entry.key, reason)
        return answer.error(502, "the remote server cannot be reached")
    resp = flask.Response(
        _iter_upstream(upstream, answer.service.chunk_bytes),
        status=upstream.status,
        content_type="application/octet-stream",
        direct_passthrough=True,
    )
    for name in _UPSTREAM_HEADERS:
        value = upstream.headers.get(name)
        if value is not None:
            resp.headers[name] = value
    # The URL's own name wins; without one, entry.file_name holds the fallback.
    name = (
        file_name_part(urllib.parse.unquote(urllib.parse.urlsplit(entry.url).path))
        or _upstream_file_name(upstream.headers.get("Content-Disposition"))
        or entry.file_name
    )
    answer.describe(resp, entry.replace(file_name=name or entry.key), download)
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _iter_upstream(upstream: Any, chunk: int) -> Iterator[bytes]:
    """The upstream body in chunks; closing it closes the upstream even if unread (HEAD).

    http.client returns a short body silently when the upstream closes early; that
    is raised instead, so the server drops the connection rather than send a
    response shorter than its Content-Length.
    """
    from werkzeug.wsgi import ClosingIterator

    def chunks() -> Iterator[bytes]:
        sent = 0
        while data := upstream.read(chunk):
            sent += len(data)
            yield data
        missing = getattr(upstream, "length", None)
        if missing:
            raise OSError(f"the remote body ended after {sent} of {sent + missing} bytes")

    return ClosingIterator(chunks(), upstream.close)


def file_name_part(name: str) -> str:
    """The last segment of a path-like name, or ``""`` if it is not usable as a file name."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1].strip()
    if name in (".", "..") or any(ord(c) < 32 or ord(c) == 127 for c in name):
        return ""
    return name


def _upstream_file_name(value: str | None) -> str:
    if not value:
        return ""
    from werkzeug.http import parse_options_header

    _, params = parse_options_header(value)
    return file_name_part(params.get("filename", ""))


class _SameHostRedirects(urllib.request.HTTPRedirectHandler):
    """Follow http(s) redirects only within the same host, or to an allowed host.

    Credentials are not sent on to another host, as browsers and requests do.
    """

    class Refused(urllib.error.URLError):
        """A redirect to a host or scheme that the service does not allow."""

    _CREDENTIALS = ("Authorization", "Proxy-authorization", "Cookie")

    def __init__(self, allowed: frozenset[str] | None) -> None:
        self.allowed = allowed

    def redirect_request(
        self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> urllib.request.Request | None:
        old = urllib.parse.urlsplit(req.full_url)
        new = urllib.parse.urlsplit(newurl)
        host = (new.hostname or "").lower()
        same_host = host == (old.hostname or "").lower()
        allowed = same_host or (self.allowed is not None and host in self.allowed)
        if new.scheme not in ("http", "https") or not host or not allowed:
            fp.close()
            raise self.Refused(f"redirect from {old.hostname} to {newurl!r} refused")
        follow = super().redirect_request(req, fp, code, msg, headers, newurl)
        if follow is not None and not same_host:
            for name in self._CREDENTIALS:
                follow.remove_header(name)
        return follow
