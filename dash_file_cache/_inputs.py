"""Turn whatever ``register()`` accepts into a snapshot body, a size and a name."""

from __future__ import annotations

import io
import mimetypes
import os
import re
import stat
import tempfile
from dataclasses import dataclass
from typing import IO, Any, BinaryIO, cast

__all__ = [
    "Source",
    "check_header_text",
    "guess_extension",
    "guess_mime_type",
    "read_source",
]

# CR, LF, NUL and every other control character would let a file name or a type
# break out of its header.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_TOKEN_ONLY = re.compile(_TOKEN)
_MIME = re.compile(rf"{_TOKEN}/{_TOKEN}")
_CONTENT_TYPE = re.compile(rf"{_TOKEN}/{_TOKEN}(\s*;\s*{_TOKEN}=({_TOKEN}|\"[^\"\\]*\"))*")

# Bodies of unknown size bigger than this are spooled to a temporary file while
# they are snapshotted, not held in memory.
_SPOOL_BYTES = 8 << 20


@dataclass(frozen=True, slots=True)
class Source:
    """A snapshot of one ``register()`` input."""

    body: bytes | BinaryIO | None
    size: int
    path: str | None = None
    default_name: str = ""
    text: bool = False


def check_header_text(name: str, value: object, pattern: re.Pattern[str] | None = None) -> str:
    """Validate a value that will end up in a response header."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    if _CONTROL.search(value):
        raise ValueError(
            f"{name} {value!r} contains a control character (such as CR, LF or NUL); "
            "remove it, it would corrupt the response headers"
        )
    if pattern is not None and value and pattern.fullmatch(value.strip()) is None:
        raise ValueError(
            f"{name} {value!r} is not a valid media type; expected a form such as "
            "'text/csv' or 'text/csv; charset=utf-8'"
        )
    return value.strip()


def check_header_name(value: str) -> str:
    """Validate an HTTP header name (an RFC 9110 token)."""
    name = check_header_text("header name", value)
    if _TOKEN_ONLY.fullmatch(name) is None:
        raise ValueError(
            f"header name {name!r} is not a valid HTTP header name; use letters, digits "
            "and !#$%&'*+-.^_`|~ only"
        )
    return name


def check_mime_type(value: object) -> str:
    """Validate a bare ``type/subtype``."""
    return check_header_text("mime_type", value, _MIME)


def check_content_type(value: object) -> str:
    """Validate a media type with optional parameters."""
    return check_header_text("content_type", value, _CONTENT_TYPE)


def guess_mime_type(file_name: str) -> str:
    """Guess a media type from a file name, falling back to ``application/octet-stream``."""
    guessed, _ = mimetypes.guess_type(file_name, strict=False)
    return guessed or "application/octet-stream"


def guess_extension(mime_type: str) -> str:
    """Return a file extension for ``mime_type``, or ``""``."""
    return mimetypes.guess_extension(mime_type, strict=False) or ""


def read_source(fobj: Any) -> Source:
    """Snapshot ``fobj`` so that later changes by the caller cannot alter what is served."""
    if isinstance(fobj, (str, os.PathLike)):
        return _path_source(fobj)
    if isinstance(fobj, (bytes, bytearray, memoryview)):
        data = bytes(fobj)
        return Source(body=data, size=len(data))
    if isinstance(fobj, io.StringIO):
        data = fobj.getvalue().encode("utf-8")
        return Source(body=data, size=len(data), text=True)
    if isinstance(fobj, io.BytesIO):
        data = fobj.getvalue()
        return Source(body=data, size=len(data))
    if isinstance(fobj, io.TextIOBase):
        if fobj.seekable():
            fobj.seek(0)
        data = fobj.read().encode("utf-8")
        return Source(body=data, size=len(data), text=True)
    if callable(getattr(fobj, "read", None)):
        return _stream_source(fobj)
    raise TypeError(
        "fobj must be a path (str or os.PathLike), bytes, io.BytesIO, io.StringIO or a "
        f"readable binary file object, not {type(fobj).__name__}"
    )


def _path_source(fobj: str | os.PathLike[str]) -> Source:
    path = os.path.abspath(os.fspath(fobj))
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"cannot register {path!r}: no such file; create it first, or pass its "
            "content as bytes or a file object"
        ) from None
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"cannot register {path!r}: it is not a regular file")
    if not os.access(path, os.R_OK):
        raise PermissionError(f"cannot register {path!r}: the file is not readable")
    return Source(body=None, size=info.st_size, path=path, default_name=os.path.basename(path))


def _is_real_file(fobj: IO[Any]) -> bool:
    try:
        return stat.S_ISREG(os.fstat(fobj.fileno()).st_mode)
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return False


class _Limited(io.RawIOBase):
    """Reads at most ``size`` bytes of a caller's stream, and never closes it."""

    def __init__(self, stream: IO[bytes], size: int) -> None:
        super().__init__()
        self._stream = stream
        self._left = size

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        wanted = self._left if size is None or size < 0 else min(size, self._left)
        chunks = []
        while wanted > 0:
            data = self._stream.read(wanted)
            if not data:
                raise ValueError("the file shrank while it was being registered; register it again")
            chunks.append(data)
            wanted -= len(data)
            self._left -= len(data)
        return b"".join(chunks)

    def readall(self) -> bytes:
        return self.read(-1)


def _stream_source(fobj: IO[Any]) -> Source:
    """Copy a binary stream into a private spooled file, from its start when seekable."""
    name = getattr(fobj, "name", "")
    default_name = os.path.basename(name) if isinstance(name, str) else ""
    seekable = bool(getattr(fobj, "seekable", None) and fobj.seekable())
    if seekable:
        fobj.seek(0)
    first = fobj.read(0)
    if isinstance(first, str):
        raise TypeError(
            "fobj is a text stream; open the file in binary mode ('rb') or pass an io.StringIO"
        )
    if seekable and _is_real_file(fobj):
        # Every backend copies the body before register() returns, which is the
        # snapshot: no need for a spool copy first. The caller keeps its file open.
        size = fobj.seek(0, os.SEEK_END)
        fobj.seek(0)
        limited = cast(BinaryIO, _Limited(fobj, size))
        return Source(body=limited, size=size, default_name=default_name)
    spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)  # noqa: SIM115 - handed on
    size = 0
    while chunk := fobj.read(1 << 20):
        spool.write(chunk)
        size += len(chunk)
    spool.seek(0)
    if size <= _SPOOL_BYTES:
        data = spool.read()
        spool.close()
        return Source(body=data, size=size, default_name=default_name)
    return Source(body=spool, size=size, default_name=default_name)  # type: ignore[arg-type]
