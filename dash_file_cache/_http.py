"""The Flask view: one registered entry in, one HTTP-correct response out."""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import time
import unicodedata
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, BinaryIO

import flask
from flask.signals import request_finished, request_started
from werkzeug.datastructures import Headers
from werkzeug.exceptions import RequestedRangeNotSatisfiable
from werkzeug.http import dump_options_header, http_date, parse_range_header, quote_etag

from ._keys import KEY_PATTERN, is_valid_key
from ._lazy import ProducingIterator, wait_for_body
from ._remote import remote_response
from ._session import matches as session_matches
from ._session import set_cookie as set_session_cookie
from ._streams import BodyIterator, BufferReader
from .entry import Entry
from .errors import BackendUnavailable, EntryGone, EntryNotFound

if TYPE_CHECKING:
    from .service import ServiceData

__all__ = ["make_view"]

log = logging.getLogger("dash_file_cache")

# How long a request for a lazy entry waits for a producer running elsewhere.
LAZY_WAIT_SECONDS = 30.0

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})
# Types a browser may execute or render as a document with script when opened
# directly: served with a CSP sandbox unless the service allows active content.
_ACTIVE_TYPES = frozenset(
    {
        "text/html",
        "application/xhtml+xml",
        "image/svg+xml",
        "text/xml",
        "application/xml",
        "text/javascript",
        "application/javascript",
        "application/x-javascript",
        "text/ecmascript",
        "application/ecmascript",
    }
)
# Request headers that make an answer depend on more than the entry itself.
_CONDITIONAL = (
    "HTTP_RANGE",
    "HTTP_IF_MATCH",
    "HTTP_IF_NONE_MATCH",
    "HTTP_IF_MODIFIED_SINCE",
    "HTTP_IF_UNMODIFIED_SINCE",
    "HTTP_IF_RANGE",
)
_ZERO_SUFFIX = re.compile(r"\s*bytes\s*=\s*-0+\s*")
_EXPOSED = "Content-Disposition, Content-Length, Content-Range, Accept-Ranges, ETag"
_WHOLE_FILE_TAIL = (("Accept-Ranges", "bytes"),)
# Conditions that a front server would evaluate against its own validators: an
# answer to a request with any of them is never offloaded.
_PRECONDITIONS = ("HTTP_IF_MATCH", "HTTP_IF_UNMODIFIED_SINCE", "HTTP_IF_RANGE")
# RFC 5987 attr-char, left unescaped in filename*.
_ATTR_CHARS = "!#$&+-.^_`|~"


def parse_flag(value: str | None) -> bool | None:
    """Parse ``download=`` strictly; ``None`` means the value is not a boolean."""
    if value is None:
        return False
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    return None


def content_disposition(kind: str, file_name: str) -> tuple[str, dict[str, str]]:
    """Value and parameters of ``Content-Disposition`` per RFC 6266 and RFC 5987."""
    try:
        file_name.encode("ascii")
    except UnicodeEncodeError:
        simple = unicodedata.normalize("NFKD", file_name).encode("ascii", "ignore").decode()
        simple = simple.strip() or "download"
        quoted = urllib.parse.quote(file_name, safe=_ATTR_CHARS)
        return kind, {"filename": simple, "filename*": f"UTF-8''{quoted}"}
    return kind, {"filename": file_name}


def _is_active(content_type: str) -> bool:
    mime = content_type.split(";", 1)[0].strip().lower()
    return mime in _ACTIVE_TYPES or mime.endswith("+xml")


class _SecondClock:
    """``http_date()`` of the current second, formatted once per second."""

    def __init__(self) -> None:
        self._last: tuple[int, str] = (-1, "")

    def __call__(self) -> str:
        second = int(time.time())
        last = self._last
        if last[0] != second:
            # A tuple is replaced whole, so concurrent threads never see half of one.
            last = self._last = (second, http_date(second))
        return last[1]


date_now = _SecondClock()
# Last-Modified of the entries served lately: formatting a date costs more than
# the rest of their headers together.
_last_modified = functools.lru_cache(maxsize=1024)(http_date)


def _cross_origin_headers(origin: str) -> tuple[tuple[str, str], ...]:
    if not origin:
        return ()
    allow = (("Access-Control-Allow-Origin", origin), ("Access-Control-Expose-Headers", _EXPOSED))
    if origin == "*":
        return allow
    return (*allow, ("Access-Control-Allow-Credentials", "true"), ("Vary", "Origin"))


def describing_headers(
    service: ServiceData, entry: Entry, download: bool, content_type: str
) -> list[tuple[str, str]]:
    """The headers derived from the entry and the service, in the order they are sent."""
    kind, params = content_disposition("attachment" if download else "inline", entry.file_name)
    headers = [
        ("Content-Disposition", dump_options_header(kind, params)),
        # Revalidate every time: the address is a capability, not for shared caches.
        ("Cache-Control", "no-store" if entry.one_time else "private, no-cache"),
    ]
    if not download and not service.allow_active_content and _is_active(content_type):
        headers.append(("Content-Security-Policy", "sandbox"))
    headers.append(("X-Content-Type-Options", "nosniff"))
    headers += _cross_origin_headers(service.allowed_cross_origin)
    return headers


def file_headers(service: ServiceData, entry: Entry, download: bool) -> list[tuple[str, str]]:
    """The headers of a stored or in-place file, before the range and date headers."""
    headers = [
        ("Content-Type", entry.content_type),
        ("Content-Length", str(entry.size)),
        ("ETag", quote_etag(entry.etag)),
        ("Last-Modified", _last_modified(entry.created)),
    ]
    headers += describing_headers(service, entry, download, entry.content_type)
    return headers


class _Answer:
    """Builds the responses of one request, with the headers every answer shares."""

    def __init__(self, service: ServiceData, request: flask.Request) -> None:
        self.service = service
        self.request = request

    def common(self, headers: Headers) -> None:
        headers["X-Content-Type-Options"] = "nosniff"
        for name, value in _cross_origin_headers(self.service.allowed_cross_origin):
            headers.add(name, value)

    def error(self, status: int, message: str) -> flask.Response:
        accept = self.request.accept_mimetypes
        if accept["application/json"] and not accept["text/plain"]:
            body = json.dumps({"status": status, "error": message})
            mimetype = "application/json"
        else:
            body = message + "\n"
            mimetype = "text/plain"
        resp = flask.Response(body, status=status, mimetype=mimetype)
        resp.headers["Cache-Control"] = "no-store"
        self.common(resp.headers)
        return resp

    def preflight(self) -> flask.Response:
        resp = flask.Response(status=204)
        resp.headers["Allow"] = "GET, HEAD, OPTIONS"
        self.common(resp.headers)
        if self.service.allowed_cross_origin:
            resp.headers["Access-Control-Allow-Methods"] = "GET, HEAD, OPTIONS"
            resp.headers["Access-Control-Allow-Headers"] = (
                "Range, If-Range, If-None-Match, If-Modified-Since"
            )
            resp.headers["Access-Control-Max-Age"] = "600"
        return resp

    def describe(self, resp: flask.Response, entry: Entry, download: bool) -> None:
        """Set the headers derived from the entry."""
        headers = resp.headers
        # None of these names is set yet, so adding them is setting them.
        for name, value in describing_headers(
            self.service, entry, download, resp.content_type or ""
        ):
            headers.add(name, value)

    def file(self, entry: Entry, stream: BinaryIO, download: bool) -> flask.Response:
        body = BodyIterator(stream, entry.size, self.service.chunk_bytes)
        headers = file_headers(self.service, entry, download)
        environ = self.request.environ
        try:
            if any(name in environ for name in _CONDITIONAL):
                resp = flask.Response(body, 200, headers, direct_passthrough=True)
                environ = self._environ_for_ranges(entry.size)
                resp.make_conditional(environ, accept_ranges=True, complete_length=entry.size)
            else:
                # Nothing to evaluate: skip Werkzeug's conditional machinery, which
                # costs a third of the view's time for a small file.
                headers += _WHOLE_FILE_TAIL
                headers.append(("Date", date_now()))
                resp = flask.Response(body, 200, headers, direct_passthrough=True)
        except RequestedRangeNotSatisfiable:
            body.close()
            resp = self.error(416, "the requested range is outside the file")
            resp.headers["Content-Range"] = f"bytes */{entry.size}"
            resp.headers["Accept-Ranges"] = "bytes"
            return resp
        if resp.status_code == 412:
            body.close()
            return self.error(412, "the file does not match If-Match")
        target = self._offload_target(entry, stream, resp.status_code)
        if target is not None:
            body.close()
            return self._offloaded(resp, target)
        if resp.status_code != 200 or self.request.method != "GET":
            return resp
        sent = whole_body(self.service, entry, body, self.request.environ)
        if sent is None:
            body.close()
            return self.error(410, "this one-time file is being or was downloaded")
        resp.response = sent
        return resp

    def _offload_target(self, entry: Entry, stream: BinaryIO, status: int) -> str | None:
        """The header value that hands this answer to the front server, or ``None``.

        Only whole-file and single-range GET answers are handed over: the front
        server would evaluate If-Match, If-Unmodified-Since and If-Range against
        its own validators, and a one-time entry must be consumed only once the
        app knows that its body was sent whole.
        """
        service = self.service
        environ = self.request.environ
        if (
            service.offload is None
            or status not in (200, 206)
            or self.request.method != "GET"
            or entry.one_time
            or any(name in environ for name in _PRECONDITIONS)
        ):
            return None
        if "HTTP_RANGE" in environ and status != 206:
            # The app ignored a Range it cannot parse or a multi-range; the front
            # server might answer those differently.
            return None
        if entry.path is not None:
            roots: tuple[str, ...] = service.offload_roots
        else:
            directory = getattr(service.cache, "directory", None)
            roots = (os.path.realpath(directory),) if isinstance(directory, str) else ()
        path = offload_path(stream, roots)
        if path is None:
            return None
        if service.offload == "x-accel-redirect":
            return service.offload_prefix + urllib.parse.quote(path.lstrip("/"), safe="/")
        return urllib.parse.quote(path, safe="/")

    def _offloaded(self, resp: flask.Response, target: str) -> flask.Response:
        header = "X-Accel-Redirect" if self.service.offload == "x-accel-redirect" else "X-Sendfile"
        if header == "X-Accel-Redirect" and resp.status_code == 200:
            # nginx passes the app's Accept-Ranges on and adds its own to a 200
            # (not to a 206).
            resp.headers.pop("Accept-Ranges", None)
        # The front server sends the file, its length and, for a range, the 206.
        resp.status_code = 200
        resp.response = []
        for name in ("Content-Length", "Content-Range"):
            resp.headers.pop(name, None)
        resp.headers[header] = target
        return resp

    def _environ_for_ranges(self, size: int) -> dict[str, Any]:
        """The request environ, with its Range header put in the form RFC 9110 means.

        A Range header that cannot be parsed or names another unit is ignored, where
        Werkzeug would answer 416. A multi-range request is answered with the whole
        file (200), which the RFC allows. A suffix longer than the file means the
        whole file (206), where Werkzeug would answer 416.
        """
        environ = self.request.environ
        header = environ.get("HTTP_RANGE")
        if header is None:
            return environ
        parsed = parse_range_header(header)
        environ = dict(environ)
        if parsed is None or parsed.units != "bytes" or len(parsed.ranges) != 1:
            del environ["HTTP_RANGE"]
        elif _ZERO_SUFFIX.fullmatch(header):
            # "bytes=-0" asks for no byte at all: unsatisfiable (Werkzeug reads it as 0-).
            environ["HTTP_RANGE"] = f"bytes={size}-"
        elif parsed.ranges[0][0] < -size:
            environ["HTTP_RANGE"] = "bytes=0-"
        return environ

    def lazy(self, entry: Entry, download: bool) -> flask.Response:
        """Run a lazy producer for the first request, or wait for the one running."""
        producer = self.service.take_producer(entry.key)
        cache = self.service.cache
        if producer is None:
            found = wait_for_body(cache, entry.key, LAZY_WAIT_SECONDS)
            if found is None:
                return self.error(503, "this file is still being produced, try again later")
            ready, stream = found
            if stream is None:
                raise EntryNotFound(entry.key)
            return self.file(ready, stream, download)
        resp = flask.Response(
            ProducingIterator(cache, entry, producer),
            content_type=entry.content_type,
            direct_passthrough=True,
        )
        self.describe(resp, entry, download)
        # The first answer has no length, ETag or ranges yet: later ones will.
        resp.headers["Cache-Control"] = "no-store"
        return resp

    def remote(self, entry: Entry, download: bool) -> flask.Response:
        return remote_response(self, entry, download)


def offload_path(stream: BinaryIO, roots: tuple[str, ...]) -> str | None:
    """The real path of the file open as ``stream`` if it lies under one of ``roots``.

    The path comes from the server's own open file, never from the request, and
    must still name that very file (same device and inode), so that a symlink or
    a rename cannot make the front server send another one.
    """
    name = getattr(stream, "name", None)
    fileno = getattr(stream, "fileno", None)
    if not roots or not isinstance(name, str) or fileno is None:
        return None
    try:
        path = os.path.realpath(name)
        opened, found = os.fstat(fileno()), os.stat(path)
    except (OSError, ValueError):
        return None
    if (opened.st_dev, opened.st_ino) != (found.st_dev, found.st_ino):
        return None
    for root in roots:
        if path.startswith(root.rstrip("/") + "/"):
            return path
    return None


def whole_body(
    service: ServiceData, entry: Entry, body: BodyIterator, environ: dict[str, Any]
) -> Iterable[bytes] | None:
    """The WSGI body of a complete GET answer, or ``None`` if a one-time entry is taken.

    A one-time entry is claimed here and consumed once the body was sent whole.
    """
    if entry.one_time:
        cache = service.cache
        if not cache.claim(entry.key):
            return None
        body._on_close = _consume_or_release(cache, entry.key)
        return body
    wrapper = environ.get("wsgi.file_wrapper")
    if wrapper is not None and _has_file_descriptor(body.stream):
        # Let the server send the file itself (sendfile where it can).
        sent: Iterable[bytes] = wrapper(body.stream, service.chunk_bytes)
        return sent
    return body


def _has_file_descriptor(stream: BinaryIO) -> bool:
    """Tell whether ``stream`` is a real file (which a server can sendfile)."""
    if isinstance(stream, BufferReader):
        return False
    try:
        stream.fileno()
    except (OSError, ValueError, AttributeError):
        return False
    return True


def _consume_or_release(cache: Any, key: str) -> Callable[[bool], None]:
    def done(complete: bool) -> None:
        try:
            if complete:
                cache.consume(key)
            else:
                cache.release(key)
        except Exception:  # the response is already sent; keep the server healthy
            log.exception("could not finish one-time entry %s", key)

    return done


def make_view(service: ServiceData) -> Callable[[], flask.Response]:
    """Build the view function that serves ``service``'s entries."""

    def view() -> flask.Response:
        # The request itself rather than its context-local proxy, which costs a
        # lookup on every attribute.
        request: flask.Request = flask.request._get_current_object()  # type: ignore[attr-defined]
        answer = _Answer(service, request)
        method = request.method
        if method == "OPTIONS":
            return answer.preflight()
        if method not in ("GET", "HEAD"):
            resp = answer.error(405, "only GET and HEAD are allowed here")
            resp.headers["Allow"] = "GET, HEAD, OPTIONS"
            return resp
        args = request.args
        uid = args.get("uid")
        if not uid:
            return answer.error(400, "the address has no uid")
        if not is_valid_key(uid):
            return answer.error(400, "the uid is malformed")
        # MultiDict.get builds and catches an exception for a missing key.
        download = parse_flag(args.get("download") if "download" in args else None)
        if download is None:
            return answer.error(400, "download must be true/1/yes or false/0/no")
        cache = service.cache
        try:
            entry, stream = cache.open(uid)
            try:
                if entry.scope == "session" and not session_matches(request, entry.session):
                    # Another browser's entry looks exactly like an unknown one.
                    raise EntryNotFound(uid)
                if entry.lazy:
                    resp = answer.lazy(entry, download)
                elif entry.url is not None:
                    resp = answer.remote(entry, download)
                elif stream is None:
                    raise EntryNotFound(uid)
                else:
                    resp = answer.file(entry, stream, download)
            except BaseException:
                if stream is not None:
                    stream.close()
                raise
            if resp.status_code in (200, 206) and method == "GET":
                offloaded = service.offload is not None and (
                    "X-Accel-Redirect" in resp.headers or "X-Sendfile" in resp.headers
                )
                sent = entry.size if offloaded and resp.status_code == 200 else resp.content_length
                cache.hit(uid, sent or 0)
            return resp
        except EntryGone:
            cache.record("misses")
            return answer.error(410, "this file is gone (already downloaded, expired or removed)")
        except EntryNotFound:
            cache.record("misses")
            return answer.error(404, "no file is registered at this address")
        except (BackendUnavailable, OSError) as exc:
            log.error("cache backend failed while serving %s: %s", uid, exc)
            return answer.error(503, "the file cache is unavailable, try again later")

    view.__name__ = "dash_file_cache_view"
    return view


# The query of an address made by ServiceData.address(): parse_qsl reads it as
# exactly these values, since none of the characters is percent-decoded.
_PLAIN_QUERY = re.compile(rf"uid=({KEY_PATTERN.pattern})(?:&download=([A-Za-z0-9]*))?")


class FastPath:
    """WSGI middleware that answers a service's plain downloads before Flask does.

    It answers a GET or HEAD request for exactly the service's path whose query is
    the one ``register()`` made, without conditional or ``Range`` headers, for a
    stored or in-place file that the view would send whole; the answer is the
    view's own, byte for byte. Every other request goes to ``wsgi_app``, so the
    view answers it.

    Flask's request hooks, signals and session handling do not run for the requests
    answered here. So unless ``forced``, it answers only while the app has no hook
    or signal receiver that would see the route's requests (besides this package's
    own and Dash's one-off set-up), checked on every request: a login check added
    at any time sends the downloads back through Flask.
    """

    def __init__(
        self, wsgi_app: Any, service: ServiceData, path: str, app: flask.Flask, forced: bool
    ) -> None:
        self.wsgi_app = wsgi_app
        self.service = service
        self.path = path
        self.app = app
        self.forced = forced

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if (
            environ.get("PATH_INFO") == self.path
            and environ.get("REQUEST_METHOD") in ("GET", "HEAD")
            and (self.forced or unobserved(self.app))
        ):
            answer = self._answer(environ)
            if answer is not None:
                start_response("200 OK", answer[0])
                return answer[1]
        result: Iterable[bytes] = self.wsgi_app(environ, start_response)
        return result

    def _answer(
        self, environ: dict[str, Any]
    ) -> tuple[list[tuple[str, str]], Iterable[bytes]] | None:
        service = self.service
        if service.offload is not None or any(name in environ for name in _CONDITIONAL):
            return None
        found = _PLAIN_QUERY.fullmatch(environ.get("QUERY_STRING", ""))
        if found is None:
            return None
        download = parse_flag(found.group(2))
        if download is None:
            return None
        uid = found.group(1)
        cache = service.cache
        try:
            entry, stream = cache.open(uid)
        except (EntryNotFound, BackendUnavailable, OSError):
            # The view answers misses and failures, and counts them.
            return None
        if (
            stream is None
            or entry.lazy
            or entry.url is not None
            or entry.scope != "app"
            # The app's session hook may add a cookie to a page.
            or "html" in entry.content_type.lower()
        ):
            if stream is not None:
                stream.close()
            return None
        body = BodyIterator(stream, entry.size, service.chunk_bytes)
        headers = file_headers(service, entry, download)
        headers += _WHOLE_FILE_TAIL
        headers.append(("Date", date_now()))
        if environ["REQUEST_METHOD"] != "GET":
            body.close()
            return headers, []
        try:
            sent = whole_body(service, entry, body, environ)
            if sent is not None:
                cache.hit(uid, entry.size)
        except (BackendUnavailable, OSError):
            sent = None
        if sent is None:
            # Taken by another download meanwhile, or the backend failed: the
            # view answers that.
            body.close()
            return None
        return headers, sent


def _harmless(hook: Any) -> bool:
    """Whether a request hook may be skipped for a download: ours, or Dash's set-up.

    Dash's ``_setup_server`` prepares its own pages and callbacks once; a cached file
    needs none of it, and the next Dash request still runs it.
    """
    if hook is set_session_cookie:
        return True
    owner = getattr(hook, "__self__", None)
    return getattr(hook, "__name__", "") == "_setup_server" and type(owner).__module__.startswith(
        "dash"
    )


def unobserved(app: flask.Flask) -> bool:
    """Whether no hook or signal receiver of ``app`` would see a request of the route."""
    for table in (
        app.before_request_funcs,
        app.after_request_funcs,
        app.teardown_request_funcs,
        app.url_value_preprocessors,
    ):
        hooks = table.get(None)
        if hooks and not all(_harmless(hook) for hook in hooks):
            return False
    return not (_receives(request_started, app) or _receives(request_finished, app))


def _receives(signal: Any, app: flask.Flask) -> bool:
    """Whether a live receiver of ``signal`` would be called for ``app``."""
    # No receiver at all is the common case and the cheap test.
    return bool(signal.receivers) and any(True for _ in signal.receivers_for(app))


def plain_wsgi_app(app: flask.Flask) -> bool:
    """Whether ``app.wsgi_app`` is Flask's own, behind nothing but fast paths.

    Middleware that wraps it before ``serve()`` (an authentication layer, say) would
    sit behind a fast path and be skipped, so then no fast path is put in by default.
    """
    current: Any = app.wsgi_app
    while isinstance(current, FastPath):
        current = current.wsgi_app
    return (
        getattr(current, "__self__", None) is app
        and getattr(current, "__func__", None) is flask.Flask.wsgi_app
    )
