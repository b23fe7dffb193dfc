"""Entry: the metadata of one registered file, stored beside its body."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Entry"]


@dataclass(frozen=True, slots=True)
class Entry:
    """A frozen record describing one registered file.

    An entry has exactly one source: a body stored by the backend (the usual case),
    a ``path`` served in place, or a remote ``url`` streamed through the service;
    a ``lazy`` entry has no body until its producer first ran. ``size`` counts
    bytes; for a path it is the size seen at registration time and the size of the
    file at request time is what gets served. ``expires`` is a ``time.time()``
    instant. ``name`` is the stable name the entry was registered under, if any;
    ``scope`` is ``"app"`` (anyone with the address) or ``"session"`` (only the
    browser whose session token hashes to ``session``).
    """

    key: str
    size: int
    mime_type: str
    content_type: str
    file_name: str
    created: float
    one_time: bool = False
    expires: float | None = None
    path: str | None = None
    url: str | None = None
    url_headers: dict[str, str] = field(default_factory=dict)
    etag: str = ""
    name: str = ""
    scope: str = "app"
    session: str = ""
    lazy: bool = False

    @property
    def kind(self) -> str:
        """``"path"``, ``"url"`` or ``"body"``: where the bytes come from."""
        if self.path is not None:
            return "path"
        if self.url is not None:
            return "url"
        return "body"

    def to_json(self) -> str:
        """Serialise as JSON; storage never pickles metadata."""
        # Every field is a plain JSON value (url_headers a flat dict of strings),
        # so no deep copy is needed: the encoder only reads them.
        return _ENCODE({name: getattr(self, name) for name in _FIELDS})

    @classmethod
    def from_json(cls, text: str | bytes) -> Entry:
        """Rebuild an entry written by ``to_json``."""
        data: dict[str, Any] = json.loads(text)
        return cls(**{k: v for k, v in data.items() if k in _FIELD_SET})

    def replace(self, **changes: Any) -> Entry:
        """Return a copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)


_FIELDS = tuple(f.name for f in dataclasses.fields(Entry))
_FIELD_SET = frozenset(_FIELDS)
_ENCODE = json.JSONEncoder(separators=(",", ":")).encode
