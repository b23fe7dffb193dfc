"""The backend contract that every cache implements.

A backend stores ``Entry`` records and their bodies
under ids made by the service. Six methods make a backend:

``put(entry, body)``
    Store ``body`` (``bytes``, or a binary stream read to its end) under
    ``entry.key``, replacing any entry of that key. The entry becomes visible
    atomically and only once the whole body is stored, so that a reader never sees a
    half-written entry. ``body`` is ``None`` for entries served in place (a path) or
    streamed from elsewhere (a URL).
``get(key)``
    Return ``(entry, stream)``: a fresh, seekable, read-only binary stream of the
    body for every call (``None`` when the entry has no stored body). Raise
    ``EntryGone`` when the backend knows the entry existed and is gone,
    ``EntryNotFound`` otherwise.
``delete(key, gone=True)``
    Remove the entry (idempotent) and, with ``gone``, remember the id as gone.
``claim(key)`` / ``release(key)``
    Reserve a one-time entry for a single download, atomically across every process
    that shares the backend; ``release`` gives it back after an aborted transfer.
``keys()``
    The ids currently stored.

Everything else (``open``, ``info``, ``__contains__``, and the 0.2.0 names ``is_in``,
``remove``, ``dump``, ``load``, ``load_info``, ``load_data``) is derived here.
Nothing in ``caches`` knows about HTTP.
"""

from __future__ import annotations

import abc
import io
import os
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, BinaryIO

from ..entry import Entry
from ..errors import EntryGone, EntryNotFound

__all__ = ["Body", "CacheAbstract"]

Body = bytes | BinaryIO


class CacheAbstract(abc.ABC):
    """Base of every backend: implement the six abstract methods described in the module."""

    @abc.abstractmethod
    def put(self, entry: Entry, body: Body | None) -> None:
        """Store ``body`` under ``entry.key``; visible only once complete."""

    @abc.abstractmethod
    def get(self, key: str) -> tuple[Entry, BinaryIO | None]:
        """Return the entry and a fresh stream of its body."""

    @abc.abstractmethod
    def delete(self, key: str, gone: bool = True) -> bool:
        """Remove the entry; return whether it was stored."""

    @abc.abstractmethod
    def claim(self, key: str) -> bool:
        """Reserve a one-time entry for one download; ``False`` if already taken."""

    @abc.abstractmethod
    def release(self, key: str) -> None:
        """Undo ``claim`` after a transfer that did not complete."""

    @abc.abstractmethod
    def keys(self) -> list[str]:
        """The ids currently stored."""

    # Derived API --------------------------------------------------------------

    def open(self, key: str) -> tuple[Entry, BinaryIO | None]:
        """Like ``get``, but also opens entries served in place from a path.

        A path removed or replaced by a non-file since registration is reported as
        ``EntryGone``. Remote (URL) entries come back with no stream.
        """
        entry, stream = self.get(key)
        if entry.path is None:
            return entry, stream
        try:
            fobj = open(entry.path, "rb")  # noqa: SIM115 - closed by the response
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise EntryGone(f"the file of entry {key} no longer exists") from exc
        stat = os.fstat(fobj.fileno())
        # The file may have changed since registration: describe what is there now.
        version = f"{entry.etag}.{stat.st_mtime_ns:x}.{stat.st_size:x}"
        return entry.replace(size=stat.st_size, created=stat.st_mtime, etag=version), fobj

    def info(self, key: str) -> Entry:
        """Return the metadata of an entry without keeping its body open."""
        entry, stream = self.get(key)
        if stream is not None:
            stream.close()
        return entry

    def is_in(self, key: str) -> bool:
        """Tell whether ``key`` is stored (the 0.2.0 name)."""
        try:
            self.info(key)
        except EntryNotFound:
            return False
        return True

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.is_in(key)

    def remove(self, key: str) -> Entry:
        """Delete an entry and return its metadata (the 0.2.0 name)."""
        entry = self.info(key)
        self.delete(key)
        return entry

    # dash-file-cache 0.2.0 names, for code that used a cache directly -------------

    def dump(self, key: str, info: Mapping[str, Any], data: Mapping[str, Any]) -> None:
        """Store an item described the 0.2.0 way (``info`` and ``data`` dicts)."""
        kind = data.get("type")
        body: Body | None = None
        path = url = None
        headers: dict[str, str] = {}
        if kind == "path":
            path = os.path.abspath(os.fspath(data["path"]))
        elif kind == "request":
            url, headers = str(data["url"]), dict(data.get("headers") or {})
        elif kind in ("str", "bytes"):
            value = data["data"]
            raw = value.getvalue() if hasattr(value, "getvalue") else value.read()
            body = raw.encode("utf-8") if isinstance(raw, str) else bytes(raw)
        else:
            raise ValueError(f"data['type'] must be path, str, bytes or request, not {kind!r}")
        mime = str(info.get("mime_type") or "application/octet-stream")
        entry = Entry(
            key=key,
            size=len(body) if isinstance(body, bytes) else int(info.get("data_size") or 0),
            mime_type=mime,
            content_type=str(info.get("content_type") or mime),
            file_name=str(info.get("file_name") or key),
            created=time.time(),
            one_time=bool(info.get("one_time_service")),
            path=path,
            url=url,
            url_headers=headers,
            etag=key,
        )
        self.put(entry, body)

    def load(self, key: str) -> tuple[dict[str, Any], Callable[[], dict[str, Any]]]:
        """Return the 0.2.0 ``(info, deferred data)`` pair of an entry."""
        entry = self.info(key)
        kind = {"path": "path", "url": "request"}.get(entry.kind, "bytes")
        info = {
            "type": kind,
            "data_size": entry.size,
            "file_name": entry.file_name,
            "content_type": entry.content_type,
            "mime_type": entry.mime_type,
            "one_time_service": entry.one_time,
        }

        def deferred() -> dict[str, Any]:
            if entry.path is not None:
                return {"type": "path", "path": entry.path}
            if entry.url is not None:
                return {"type": "request", "url": entry.url, "headers": dict(entry.url_headers)}
            _, stream = self.get(key)
            assert stream is not None
            with stream:
                return {"type": "bytes", "data": io.BytesIO(stream.read())}

        return info, deferred

    def load_info(self, key: str) -> dict[str, Any]:
        """The 0.2.0 metadata dict of an entry."""
        return self.load(key)[0]

    def load_data(self, key: str) -> dict[str, Any]:
        """The 0.2.0 data dict of an entry."""
        return self.load(key)[1]()

    def __len__(self) -> int:
        return len(self.keys())

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())


def raise_missing(key: str, gone: bool) -> EntryNotFound:
    """Build the right miss error for ``key``."""
    if gone:
        return EntryGone(f"entry {key} is gone (consumed, expired or deleted)")
    return EntryNotFound(f"no entry {key} is stored")
