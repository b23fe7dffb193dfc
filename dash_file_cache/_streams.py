"""Readers and response iterators shared by the backends and the HTTP view."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import BinaryIO, cast

__all__ = ["BodyIterator", "BufferReader", "reader", "seek_position"]


def seek_position(current: int, length: int, offset: int, whence: int) -> int:
    """The position a ``seek(offset, whence)`` moves to, for a stream of ``length`` bytes."""
    if whence == io.SEEK_SET:
        pos = offset
    elif whence == io.SEEK_CUR:
        pos = current + offset
    elif whence == io.SEEK_END:
        pos = length + offset
    else:
        raise ValueError(f"whence must be 0, 1 or 2, not {whence!r}")
    if pos < 0:
        raise ValueError("cannot seek before the start of the stream")
    return pos


class BufferReader(io.RawIOBase):
    """A read-only, seekable stream over an immutable buffer, without copying it.

    Each request gets its own reader, so concurrent downloads of one entry never
    share a file position.
    """

    def __init__(self, buffer: bytes | bytearray | memoryview) -> None:
        super().__init__()
        self._view = memoryview(buffer).cast("B")
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, target: bytearray | memoryview) -> int:  # type: ignore[override]
        end = min(self._pos + len(target), len(self._view))
        count = max(end - self._pos, 0)
        memoryview(target).cast("B")[:count] = self._view[self._pos : end]
        self._pos += count
        return count

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            size = len(self._view) - self._pos
        end = min(self._pos + size, len(self._view))
        data = self._view[self._pos : end].tobytes() if end > self._pos else b""
        self._pos = max(end, self._pos)
        return data

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._pos = seek_position(self._pos, len(self._view), offset, whence)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        self._view.release()
        super().close()


def reader(buffer: bytes | bytearray | memoryview) -> BinaryIO:
    """A fresh ``BufferReader`` over ``buffer``, typed as a binary stream."""
    return cast(BinaryIO, BufferReader(buffer))


class BodyIterator:
    """Yields exactly ``length`` bytes of ``stream`` in chunks, as a WSGI body.

    It is seekable, so Werkzeug's range wrapper seeks to the first byte instead of
    reading and discarding everything before it. ``on_complete`` runs only when the
    server asked for the chunk after the last one, i.e. after every byte was handed
    over without error; ``on_close`` runs in every case.
    """

    def __init__(
        self,
        stream: BinaryIO,
        length: int,
        chunk_size: int,
        on_close: Callable[[bool], None] | None = None,
    ) -> None:
        self._stream = stream
        self._length = length
        self._chunk_size = chunk_size
        self._pos = 0
        self._on_close = on_close
        self._complete = False
        self._closed = False

    @property
    def stream(self) -> BinaryIO:
        """The stream the body is read from."""
        return self._stream

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int) -> None:
        self._stream.seek(pos)
        self._pos = pos

    def tell(self) -> int:
        return self._pos

    def __iter__(self) -> BodyIterator:
        return self

    def __next__(self) -> bytes:
        remaining = self._length - self._pos
        if remaining <= 0:
            self._complete = True
            raise StopIteration
        data = self._stream.read(min(self._chunk_size, remaining))
        if not data:
            # The source shrank after its length was announced: fail the transfer
            # rather than send a body shorter than Content-Length.
            raise OSError(f"the stored body ended after {self._pos} of {self._length} bytes")
        self._pos += len(data)
        return data

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._stream.close()
        finally:
            if self._on_close is not None:
                self._on_close(self._complete)
