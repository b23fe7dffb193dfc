"""ServiceData: register files produced at run time, serve them over plain HTTP."""

from __future__ import annotations

import os
import time
import urllib.parse
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any, Literal, ParamSpec

from . import _inputs
from ._keys import is_valid_key, new_key
from ._lazy import Producers, is_producer
from ._process import in_background_job
from ._session import current_session
from ._session import install as install_session
from .caches.base import CacheAbstract
from .entry import Entry
from .errors import CacheProcessError
from .memoize import Memoized

if TYPE_CHECKING:
    import flask

__all__ = ["ServiceData"]

P = ParamSpec("P")


def _as_flask(app: Any) -> flask.Flask:
    import flask

    if isinstance(app, flask.Flask):
        return app
    server = getattr(app, "server", None)
    if isinstance(server, flask.Flask):
        return server
    raise TypeError(
        f"app must be a dash.Dash or a flask.Flask, not {type(app).__name__}; for a "
        "Dash app created with server=False, call serve() after app.init_app(server)"
    )


class ServiceData:
    """Registers files in a cache backend and serves them from one Flask route.

    ``register()`` stores a file and returns its address, ``<service_name>?uid=<id>``;
    ``serve(app)`` (or ``init_app(app)``) adds the GET route that answers it. The
    address is a capability: anyone who has it can fetch the file while it lives.

    ``chunk_size`` is in MiB, as in 0.2.0. ``allowed_cross_origin`` sets
    ``Access-Control-Allow-Origin`` on responses. ``max_entry_bytes`` rejects larger
    entries at ``register()``. Active content (HTML, SVG, XML, JavaScript) is sent
    with ``Content-Security-Policy: sandbox`` so that a registered file cannot run
    script on the app's origin; ``allow_active_content=True`` turns that off.

    ``offload`` hands the sending of files to the web server in front of the app:
    ``"x-accel-redirect"`` (nginx) or ``"x-sendfile"`` (Apache mod_xsendfile). The
    view still checks the id, the conditions and the range and sets every header,
    then answers with an empty body and the header that names the file; the front
    server sends the bytes. Only entries that live in a file under an allowed
    directory are offloaded: ``CacheFile`` bodies (under the cache directory) and
    paths under one of ``offload_roots``. For nginx the internal address is
    ``offload_prefix`` followed by the percent-encoded absolute path of the file,
    which an ``internal`` location maps back to the file. One-time entries, HEAD
    requests and requests with ``If-Match``, ``If-Unmodified-Since`` or ``If-Range``
    are always served by the app, so that every answer is exactly the one it gives
    without offload. Without such a front server the offload answers are empty:
    turn it on only behind one.
    """

    def __init__(
        self,
        cache: CacheAbstract,
        service_name: str = "/cached-data",
        chunk_size: int = 1,
        allowed_cross_origin: str | None = None,
        *,
        max_entry_bytes: int | None = None,
        allow_active_content: bool = False,
        remote_hosts: Collection[str] | None = None,
        remote_timeout: float = 30.0,
        offload: str | None = None,
        offload_prefix: str = "/_dfc_internal/",
        offload_roots: Collection[str | os.PathLike[str]] = (),
    ) -> None:
        if not isinstance(cache, CacheAbstract):
            raise TypeError(
                f"cache must be a dash_file_cache cache (CachePlain, CacheQueue, CacheFile, "
                f"...), not {type(cache).__name__}"
            )
        self._cache = cache
        self._service_name = _check_service_name(service_name)
        self.chunk_size = chunk_size
        self._allowed_cross_origin = _inputs.check_header_text(
            "allowed_cross_origin", allowed_cross_origin or ""
        )
        if max_entry_bytes is not None and (
            not isinstance(max_entry_bytes, int) or max_entry_bytes < 0
        ):
            raise ValueError(
                f"max_entry_bytes must be a non-negative int or None, got {max_entry_bytes!r}"
            )
        self.max_entry_bytes = max_entry_bytes
        self.allow_active_content = bool(allow_active_content)
        self.remote_hosts = (
            None if remote_hosts is None else frozenset(h.lower() for h in remote_hosts)
        )
        self.remote_timeout = float(remote_timeout)
        self.offload = _check_offload(offload)
        self.offload_prefix = _check_offload_prefix(offload_prefix)
        if isinstance(offload_roots, (str, os.PathLike)):
            raise TypeError(
                "offload_roots must be a collection of directories, such as "
                f"[{os.fspath(offload_roots)!r}], not a single path"
            )
        self.offload_roots = tuple(os.path.realpath(os.fspath(root)) for root in offload_roots)
        self._prefix = ""
        self._producers = Producers()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._service_name!r} cache={self._cache!r}>"

    def __getstate__(self) -> dict[str, Any]:
        # Lazy producers run only in the process that registered them.
        state = dict(self.__dict__)
        del state["_producers"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._producers = Producers()

    @property
    def cache(self) -> CacheAbstract:
        """The cache backend holding the entries."""
        return self._cache

    @property
    def service_name(self) -> str:
        """The route path of the service, such as ``/cached-data``."""
        return self._service_name

    @property
    def chunk_size(self) -> int:
        """Size in MiB of the pieces a body is streamed in."""
        return self._chunk_bytes >> 20

    @chunk_size.setter
    def chunk_size(self, value: int) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"chunk_size must be an int of at least 1 (MiB), got {value!r}")
        self._chunk_bytes = value << 20

    @property
    def chunk_bytes(self) -> int:
        """Size in bytes of the pieces a body is streamed in."""
        return self._chunk_bytes

    @property
    def allowed_cross_origin(self) -> str:
        """The value sent as ``Access-Control-Allow-Origin``, or ``""`` for none."""
        return self._allowed_cross_origin

    # Registration -------------------------------------------------------------

    def register(
        self,
        fobj: Any,
        file_name: str = "",
        content_type: str = "",
        mime_type: str = "",
        one_time_service: bool = False,
        download: bool = False,
        *,
        ttl: float | None = None,
        key: str | None = None,
        scope: str = "app",
    ) -> str:
        """Store a file and return the address that serves it.

        ``fobj`` is a path (``str`` or ``os.PathLike``, served in place, and it must be
        a regular file now), ``bytes``, ``io.BytesIO``, ``io.StringIO`` (sent as UTF-8),
        or any readable binary file object. In-memory inputs are copied, so changing
        or closing them afterwards does not change what is served. A generator, or a
        callable returning an iterable of bytes, is a lazy producer: it runs when the
        address is first fetched, in this process, and its output is then cached.

        ``mime_type`` is guessed from ``file_name`` (or the path) when empty, falling
        back to ``application/octet-stream``; ``content_type`` defaults to it. With
        ``one_time_service`` the entry is deleted once a complete download was sent.
        With ``download`` the address makes the browser save the file as
        ``file_name`` (derived from the path, or the id plus an extension).

        ``ttl`` (seconds) overrides the cache's default lifetime for this entry.
        ``key`` stores the entry under a stable name: registering the same name
        again replaces the body and keeps the address. ``scope="session"`` serves
        the entry only to the browser session that registered it (see the docs on
        sessions); ``"app"`` (the default) serves it to anyone with the address.
        """
        file_name = _inputs.check_header_text("file_name", file_name)
        mime_type = _inputs.check_mime_type(mime_type)
        content_type = _inputs.check_content_type(content_type)
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int | float)):
            raise TypeError(f"ttl must be a number of seconds or None, not {type(ttl).__name__}")
        if ttl is not None and ttl <= 0:
            raise ValueError(f"ttl must be positive, got {ttl}")
        if scope not in ("app", "session"):
            raise ValueError(f'scope must be "app" or "session", got {scope!r}')
        name = _check_entry_name(key)
        session = current_session() if scope == "session" else ""
        lazy = is_producer(fobj)
        if lazy and in_background_job():
            raise CacheProcessError(
                "a lazy producer runs in the process that registered it, and this is a "
                "background job (a child process or a Celery task) that will not serve "
                "the address; produce the bytes here and register them instead"
            )
        source = _inputs.Source(body=None, size=0) if lazy else _inputs.read_source(fobj)
        try:
            if self.max_entry_bytes is not None and source.size > self.max_entry_bytes:
                raise ValueError(
                    f"the file is {source.size} bytes, more than max_entry_bytes="
                    f"{self.max_entry_bytes}; register a smaller file or raise the limit"
                )
            found = self._cache.find(name) if name else None
            uid = found or new_key()
            shown = file_name or source.default_name
            mime = mime_type or (
                _inputs.guess_mime_type(shown) if shown else "application/octet-stream"
            )
            if not shown:
                shown = uid + _inputs.guess_extension(mime)
            ctype = content_type or mime
            if source.text and ctype.startswith("text/") and "charset" not in ctype:
                ctype += "; charset=utf-8"
            now = self._cache.bounds.clock()
            entry = Entry(
                key=uid,
                size=source.size,
                mime_type=mime,
                content_type=ctype,
                file_name=shown,
                created=now,
                one_time=bool(one_time_service),
                expires=None if ttl is None else now + ttl,
                path=source.path,
                etag=new_key(),
                name=name,
                scope=scope,
                session=session,
                lazy=lazy,
            )
            if lazy:
                self._producers.add(uid, fobj)
            else:
                self._producers.discard(uid)
            self._cache.put(entry, source.body, fresh=found is None)
        finally:
            close = getattr(source.body, "close", None)
            if close is not None:
                close()
        return self.address(uid, download=download)

    def register_request(
        self,
        url: str | urllib.parse.ParseResult,
        headers: Mapping[str, str] | None = None,
        file_name_fallback: str = "",
        download: bool = True,
    ) -> str:
        """Register a remote http(s) file that the service streams through on request.

        ``headers`` are sent upstream (for example an ``Authorization`` header); the
        browser's own headers are not, except ``Range``. The browser only sees the
        type, length, range and file-name headers of the upstream answer. The file
        is named after the URL's last path segment, else the upstream
        ``Content-Disposition`` name, else ``file_name_fallback``.

        Upstream errors are answered with 502, an upstream that does not answer
        within the service's ``remote_timeout`` with 504. Redirects are followed
        only to the same host or a host in ``remote_hosts`` (without the
        ``Authorization`` and ``Cookie`` headers), and ``remote_hosts`` restricts
        which hosts may be registered at all. Raises ``ValueError`` for a URL that
        is not absolute http(s), has credentials in it or a bad port, and for
        header names or values that HTTP cannot carry (such as CR or LF).
        """
        from ._remote import file_name_part

        parsed = urllib.parse.urlparse(url) if isinstance(url, str) else url
        if not isinstance(parsed, urllib.parse.ParseResult):
            raise TypeError(f"url must be a str or a ParseResult, not {type(url).__name__}")
        if parsed.scheme.lower() not in ("http", "https") or not parsed.hostname:
            raise ValueError(
                f"url must be an absolute http:// or https:// address, got {parsed.geturl()!r}"
            )
        try:
            _ = parsed.port  # parsed lazily: a malformed port only raises here
        except ValueError as exc:
            raise ValueError(f"url has an invalid port ({exc}), got {parsed.geturl()!r}") from None
        if parsed.username is not None or parsed.password is not None:
            raise ValueError(
                "url must not contain credentials (user:password@host); send them with "
                "headers={'Authorization': ...} instead"
            )
        host = parsed.hostname.lower()
        if self.remote_hosts is not None and host not in self.remote_hosts:
            raise ValueError(
                f"the host {host!r} is not in this service's remote_hosts; add it there to allow it"
            )
        if headers is not None and not isinstance(headers, Mapping):
            raise TypeError(
                f"headers must be a mapping of header names to values, not {type(headers).__name__}"
            )
        request_headers: dict[str, str] = {}
        for raw_name, raw_value in (headers or {}).items():
            name = _inputs.check_header_name(str(raw_name))
            value = _inputs.check_header_text(f"header {name} value", str(raw_value))
            try:
                value.encode("latin-1")
            except UnicodeEncodeError:
                raise ValueError(
                    f"header {name} value {value!r} has characters outside Latin-1, which "
                    "HTTP cannot carry; percent-encode or base64-encode it"
                ) from None
            request_headers[name] = value
        fallback = _inputs.check_header_text("file_name_fallback", file_name_fallback)
        key = new_key()
        name = file_name_part(urllib.parse.unquote(parsed.path))
        entry = Entry(
            key=key,
            size=0,
            mime_type="application/octet-stream",
            content_type="",
            file_name=name or fallback,
            created=time.time(),
            url=parsed.geturl(),
            url_headers=request_headers,
            etag=new_key(),
        )
        self._cache.put(entry, None, fresh=True)
        return self.address(key, download=download)

    def address(self, key: str, download: bool = False) -> str:
        """The address of the entry ``key`` as seen by the browser."""
        # An id made by new_key() is URL-safe as it is.
        query = "uid=" + key if is_valid_key(key) else urllib.parse.urlencode({"uid": key})
        return f"{self._prefix}{self._service_name}?{query}" + (
            "&download=true" if download else ""
        )

    # Serving ------------------------------------------------------------------

    def serve(
        self, app: Any, endpoint: str | None = None, *, fast: bool | Literal["auto"] = "auto"
    ) -> None:
        """Add the GET route of this service to a ``dash.Dash`` or ``flask.Flask`` app.

        For a Dash app the route honours ``routes_pathname_prefix`` and the
        addresses honour ``requests_pathname_prefix``.

        ``fast`` decides whether a WSGI middleware in front of the app answers the
        plain downloads (a GET or HEAD of a registered address, without conditional
        or ``Range`` headers) before Flask routes them: the same answers, with much
        less work per request, but without Flask's request hooks and signals. With
        ``"auto"`` (the default) it answers only while the app has no hook or
        receiver that would see the route's requests (a login check in
        ``before_request``, say), and it is left out when the app's ``wsgi_app`` is
        already wrapped or routes match by host. ``True`` answers them even past
        such hooks; ``False`` sends every request through Flask.
        """
        from ._http import FastPath, make_view, plain_wsgi_app

        # By identity: 1 and 0 compare equal to True and False but are not flags.
        if not (fast is True or fast is False or fast == "auto"):
            raise ValueError(f"fast must be True, False or 'auto', not {fast!r}")
        server = _as_flask(app)
        by_host = server.url_map.host_matching or server.subdomain_matching
        if fast is True and by_host:
            raise ValueError(
                "fast=True answers by path alone, and this app matches routes by host "
                "or subdomain; serve the files with fast=False"
            )
        if fast == "auto" and (by_host or not plain_wsgi_app(server)):
            fast = False
        route_prefix = request_prefix = ""
        config = getattr(app, "config", None)
        if app is not server and config is not None:
            route_prefix = str(config.get("routes_pathname_prefix") or "/").rstrip("/")
            request_prefix = str(config.get("requests_pathname_prefix") or "/").rstrip("/")
        name = (endpoint or "").strip() or "dash_file_cache" + self._service_name.replace("/", ".")
        if name in server.view_functions:
            raise ValueError(
                f"the app already has an endpoint {name!r}; give this service another "
                "service_name or pass endpoint=..."
            )
        server.add_url_rule(
            route_prefix + self._service_name,
            endpoint=name,
            view_func=make_view(self),
            methods=["GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"],
            provide_automatic_options=False,
        )
        self._prefix = request_prefix
        install_session(server)
        if fast:
            server.wsgi_app = FastPath(  # type: ignore[method-assign]
                server.wsgi_app, self, route_prefix + self._service_name, server, fast is True
            )

    init_app = serve

    # Management -------------------------------------------------------------------

    def info(self, uid: str) -> dict[str, Any]:
        """Metadata of a live entry: id, name, size, types, file name, scope, times, hits.

        Raises ``EntryNotFound`` (``EntryGone`` when known to be gone).
        """
        entry = self._cache.info(uid)
        return _describe(entry, self._cache.hits(uid))

    def entries(self, prefix: str | None = None) -> list[dict[str, Any]]:
        """Metadata of every live entry, or of those whose name starts with ``prefix``."""
        found = self._cache.entries() if prefix is None else self._cache.named(prefix)
        return [_describe(e, self._cache.hits(e.key)) for e in found]

    def delete(self, uid: str) -> bool:
        """Delete an entry; its address answers 410 from then on."""
        self._producers.discard(uid)
        return self._cache.delete(uid)

    def clear(self) -> int:
        """Delete every entry; return how many there were."""
        return self._cache.clear()

    def stats(self) -> dict[str, Any]:
        """Entries, bytes, hits, misses, bytes served and evictions by reason."""
        return self._cache.stats()

    def memoize(
        self,
        ttl: float | None = None,
        max_entries: int | None = None,
        mime_type: str = "",
        version: str = "",
        *,
        file_name: str = "",
        content_type: str = "",
        download: bool = False,
        scope: str = "app",
    ) -> Callable[[Callable[P, Any]], Memoized[P]]:
        """Decorate a function that makes a file, so that it returns an address.

        The function returns anything ``register()`` accepts. Calls with the same
        arguments (keyword order does not matter) return the same address without
        calling the function again while the entry lives; concurrent calls with the
        same arguments run it once, across every process that shares the cache
        (``CacheFile``, ``CacheRedis``). A new ``version``, or a change to the
        function's code, starts afresh. ``max_entries`` keeps only the most recent
        results of the function.
        """
        options = {
            "file_name": file_name,
            "content_type": content_type,
            "mime_type": mime_type,
            "download": download,
            "scope": scope,
        }

        def decorate(func: Callable[P, Any]) -> Memoized[P]:
            return Memoized(
                self,
                func,
                ttl=ttl,
                max_entries=max_entries,
                version=version,
                register_options=options,
            )

        return decorate

    def take_producer(self, uid: str) -> Any:
        """The lazy producer of ``uid`` if this process holds it (taken once)."""
        return self._producers.take(uid)


def _describe(entry: Entry, hits: int) -> dict[str, Any]:
    return {
        "id": entry.key,
        "name": entry.name,
        "kind": entry.kind if not entry.lazy else "lazy",
        "size": entry.size,
        "mime_type": entry.mime_type,
        "content_type": entry.content_type,
        "file_name": entry.file_name,
        "scope": entry.scope,
        "one_time": entry.one_time,
        "created": entry.created,
        "expires": entry.expires,
        "hits": hits,
    }


_OFFLOAD_MODES = ("x-accel-redirect", "x-sendfile")


def _check_offload(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or value.lower() not in _OFFLOAD_MODES:
        raise ValueError(
            f"offload must be None, 'x-accel-redirect' (nginx) or 'x-sendfile' (Apache), "
            f"got {value!r}"
        )
    return value.lower()


def _check_offload_prefix(value: object) -> str:
    prefix = _inputs.check_header_text("offload_prefix", value)
    if not prefix.startswith("/") or not prefix.endswith("/") or any(c in prefix for c in "?#%"):
        raise ValueError(
            "offload_prefix must be a path that starts and ends with '/', without '?', "
            f"'#' or '%', such as '/_dfc_internal/', got {value!r}"
        )
    return prefix


def _check_service_name(value: object) -> str:
    name = _inputs.check_header_text("service_name", value).strip()
    if not name.startswith("/") or "?" in name or "#" in name or name.rstrip("/") == "":
        raise ValueError(f"service_name must be a path such as '/cached-data', got {value!r}")
    return name.rstrip("/")


def _check_entry_name(value: object) -> str:
    if value is None:
        return ""
    name = _inputs.check_header_text("key", value)
    if not name or len(name) > 512:
        raise ValueError(f"key must be a non-empty name of at most 512 characters, got {value!r}")
    return name
