"""Lazy producers: a body made only when its address is first fetched.

``register()`` accepts a generator, or a callable returning an iterable of bytes.
The producer stays in the process that registered it; the first request for the
address runs it and streams each piece to the browser while writing it to a
private spool, which becomes the stored body once the producer is done. Later
requests (and ranges) are served from the cache. If the first browser goes away
early, the producer still runs to the end in a background thread, so that the
body is stored anyway.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO, cast

from .caches.base import CacheAbstract
from .entry import Entry
from .errors import EntryNotFound

__all__ = ["Producer", "Producers", "ProducingIterator", "is_producer"]

log = logging.getLogger("dash_file_cache")

Producer = Iterable[bytes] | Callable[[], Iterable[bytes]]
_SPOOL_BYTES = 8 << 20


def is_producer(fobj: object) -> bool:
    """Tell whether ``register()`` should treat ``fobj`` as a lazy producer."""
    if isinstance(fobj, str | bytes | bytearray | memoryview) or hasattr(fobj, "read"):
        return False
    if isinstance(fobj, Iterator):
        return True
    return callable(fobj) and not isinstance(fobj, type)


class Producers:
    """The producers registered in this process, taken at most once each."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[str, Producer] = {}

    def add(self, key: str, producer: Producer) -> None:
        with self._lock:
            self._items[key] = producer

    def take(self, key: str) -> Producer | None:
        with self._lock:
            return self._items.pop(key, None)

    def discard(self, key: str) -> None:
        with self._lock:
            self._items.pop(key, None)


def wait_for_body(
    cache: CacheAbstract, key: str, timeout: float
) -> tuple[Entry, BinaryIO | None] | None:
    """Wait (bounded) for another request or process to finish producing ``key``."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while time.monotonic() < deadline:
        time.sleep(delay)
        delay = min(delay * 2, 0.25)
        try:
            entry, stream = cache.open(key)
        except EntryNotFound:
            return None
        if not entry.lazy:
            return entry, stream
        if stream is not None:
            stream.close()
    return None


class ProducingIterator:
    """Streams a producer's pieces to the browser and stores them as the body."""

    def __init__(self, cache: CacheAbstract, entry: Entry, producer: Producer) -> None:
        self._cache = cache
        self._entry = entry
        iterable = producer() if callable(producer) else producer
        self._pieces: Iterator[bytes] = iter(iterable)
        self._spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)  # noqa: SIM115
        self._size = 0
        self._done = False
        self._closed = False

    def __iter__(self) -> ProducingIterator:
        return self

    def __next__(self) -> bytes:
        try:
            piece = next(self._pieces)
        except StopIteration:
            self._finish()
            raise
        except Exception:
            self._fail()
            raise
        if isinstance(piece, str):
            piece = piece.encode("utf-8")
        if not isinstance(piece, bytes | bytearray | memoryview):
            self._fail()
            raise TypeError(
                f"a lazy producer must yield bytes (or str), not {type(piece).__name__}"
            )
        piece = bytes(piece)
        self._spool.write(piece)
        self._size += len(piece)
        return piece

    def _finish(self) -> None:
        if self._done:
            return
        self._done = True
        entry = self._entry
        try:
            if entry.one_time:
                self._cache.consume(entry.key)
                return
            self._spool.seek(0)
            stored = entry.replace(lazy=False, size=self._size)
            self._cache.put(stored, cast(BinaryIO, self._spool))
        finally:
            self._spool.close()

    def _fail(self) -> None:
        """A producer that failed leaves no entry behind: its address answers 410."""
        self._done = True
        self._spool.close()
        log.error("the lazy producer of entry %s failed", self._entry.key)
        self._cache.delete(self._entry.key, reason="deleted")

    def _drain(self) -> None:
        try:
            for _ in self:
                pass
        except Exception:
            log.exception("the lazy producer of entry %s failed", self._entry.key)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self._done:
            # The browser left early: finish in the background so the body is kept.
            threading.Thread(
                target=self._drain, name="dash-file-cache-producer", daemon=True
            ).start()
