"""CacheQueue: entries kept by the serving process, registered from child processes too.

The serving process listens on a Unix socket in a private (0700) temporary
directory. A child process (a Dash background callback under ``DiskcacheManager``,
forked or spawned) that registers an entry streams it to that socket in chunks and
waits for the acknowledgement, so the address it returns is servable at once. The
body crosses one socket once and lands in one pre-sized buffer: the server's memory
grows by the body's size, not several times over as with a ``Manager`` queue.

A child finds the socket in one of three ways: the cache object it inherited by
``fork``, the object it unpickled (it pickles as its address), or, when a spawned
child re-imports the module that builds the cache, an environment variable the
server sets for its children.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import queue
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from multiprocessing.connection import Client, Connection, Listener
from typing import Any, BinaryIO, Union, cast

from .._process import (
    BuildSites,
    in_child_process,
    inherited_from_parent,
    publish_for_children,
    withdraw_for_children,
)
from ..entry import Entry
from ..errors import BackendUnavailable, CacheProcessError
from .base import Body
from .memory import CachePlain

__all__ = ["CacheQueue"]

_CHUNK = 1 << 20
# What a child may ask the serving process besides storing an entry.
_FORWARDED = frozenset(
    {"delete", "find", "mark_get", "mark_set", "mark_add", "mark_delete", "mark_incr"}
)
_sites = BuildSites()
_instances: weakref.WeakSet[CacheQueue] = weakref.WeakSet()

QueueLike = Union["queue.Queue[Any]", Any]


class _Server:
    """The listening side, living in the serving process."""

    def __init__(self, cache: CacheQueue, site: str) -> None:
        self.pid = os.getpid()
        self.site = site
        self.directory = tempfile.mkdtemp(prefix="dash-file-cache-queue-")
        self.address = os.path.join(self.directory, "socket")
        self._listener = Listener(self.address, family="AF_UNIX")
        self._cache_ref = weakref.ref(cache)
        self._closed = False
        self._thread = threading.Thread(
            target=self._accept_loop, name="dash-file-cache-queue", daemon=True
        )
        self._thread.start()
        self._finalizer = weakref.finalize(cache, self.close)
        atexit.register(self.close)
        publish_for_children("queues", site, self.address)

    def close(self) -> None:
        if os.getpid() != self.pid or self._closed:
            return
        self._closed = True
        withdraw_for_children("queues", self.site, self.address)
        # Closing a socket does not wake a thread blocked in accept() on it: connect
        # once, so that the accept loop sees the flag and ends instead of leaking.
        with contextlib.suppress(OSError):
            Client(self.address, family="AF_UNIX").close()
        with contextlib.suppress(OSError):
            self._listener.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    def _accept_loop(self) -> None:
        while True:
            try:
                conn = self._listener.accept()
            except OSError:
                return
            if self._closed:
                conn.close()
                return
            threading.Thread(
                target=self._serve, args=(conn,), name="dash-file-cache-queue-conn", daemon=True
            ).start()

    def _serve(self, conn: Connection) -> None:
        with conn:
            try:
                header = json.loads(conn.recv_bytes())
                cache = self._cache_ref()
                if cache is None:
                    raise RuntimeError("the cache was closed")
                op = header["op"]
                result: Any = None
                if op == "put":
                    entry = Entry.from_json(header["entry"])
                    data = _receive_body(conn, entry.size) if header["body"] else b""
                    # The buffer is never written again: it stands as the entry's body.
                    cache.put(entry, cast(bytes, data), fresh=header.get("fresh") is True)
                elif op in _FORWARDED:
                    result = getattr(cache, op)(*header["args"])
                else:
                    raise ValueError(f"unknown operation {op!r}")
                conn.send_bytes(b"ok" + json.dumps(result).encode())
            except (EOFError, OSError):
                return
            except Exception as exc:  # reported back to the child, which raises it
                try:
                    conn.send_bytes(f"error: {type(exc).__name__}: {exc}".encode())
                except OSError:
                    return


def _receive_body(conn: Connection, size: int) -> bytearray:
    data = bytearray(size)
    offset = 0
    while True:
        if offset == size:
            if conn.recv_bytes(1) != b"":
                raise ValueError("the child sent more bytes than the entry's size")
            return data
        got = conn.recv_bytes_into(data, offset)
        if got == 0:
            raise ValueError(f"the child sent {offset} of {size} bytes")
        offset += got


class CacheQueue(CachePlain):
    """An in-process LRU cache that background-callback child processes can fill.

    Use it exactly like ``CachePlain``; ``register()`` also works inside a Dash
    background callback run by ``DiskcacheManager`` (``fork`` or ``spawn``), with no
    queue, manager or mirror to set up. ``qobj`` (a queue, or a callable returning
    one) is accepted for code written for dash-file-cache 0.2.0; entries do not need
    it and travel through the cache's own acknowledged channel instead.
    """

    def __init__(
        self,
        cache_size: int,
        qobj: QueueLike | Callable[[], QueueLike] | None = None,
        *,
        max_bytes: int | None = None,
        ttl: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(cache_size, max_bytes=max_bytes, ttl=ttl, clock=clock)
        self._qobj = qobj
        self._site = _sites.name()
        self._server: _Server | None = None
        self._address: str | None = None
        self._server_pid: int | None = None
        if self._copied_into_child:
            found = inherited_from_parent("queues", self._site)
            if found is not None:
                self._server_pid, self._address = found
        else:
            self._ensure_server()
        _instances.add(self)

    def __getstate__(self) -> dict[str, Any]:
        self._ensure_server()
        return {
            "cache_size": self._cache_size,
            "max_bytes": self.bounds.max_bytes,
            "ttl": self.bounds.ttl,
            "address": self._address,
            "server_pid": self._server_pid,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        CachePlain.__init__(
            self, state["cache_size"], max_bytes=state["max_bytes"], ttl=state["ttl"]
        )
        self._qobj = None
        self._site = ""
        self._server = None
        self._address = state["address"]
        self._server_pid = state["server_pid"]
        self._copied_into_child = True
        _instances.add(self)

    @property
    def qobj(self) -> QueueLike | None:
        """The queue given for 0.2.0 compatibility (not used to carry entries)."""
        if callable(self._qobj) and not hasattr(self._qobj, "put"):
            self._qobj = self._qobj()
        return self._qobj

    @qobj.setter
    def qobj(self, value: QueueLike | None) -> None:
        self._qobj = value

    @property
    def mirror(self) -> CacheQueue:
        """The cache itself: it already works in child processes (0.2.0 name)."""
        return self

    def _is_client(self) -> bool:
        return in_child_process() and (self._copied_into_child or self._server_pid != os.getpid())

    def _ensure_server(self) -> None:
        """Make this process the serving side, unless it is a background child."""
        if self._server_pid == os.getpid() or self._is_client():
            return
        with self._lock:
            if self._server_pid == os.getpid():
                return
            self._server = _Server(self, self._site)
            self._address = self._server.address
            self._server_pid = os.getpid()

    def _send(self, header: dict[str, Any], body: Body | None = None) -> Any:
        if self._address is None:
            raise CacheProcessError(
                "this CacheQueue was created in a child process that cannot find the "
                "serving process; create the cache at module level in the app (so the "
                "server builds it first) or use CacheFile"
            )
        try:
            conn = Client(self._address, family="AF_UNIX")
        except OSError as exc:
            raise BackendUnavailable(
                f"cannot reach the serving process's CacheQueue at {self._address}: {exc}"
            ) from exc
        with conn:
            conn.send_bytes(json.dumps(header).encode())
            if body is not None:
                _send_body(conn, body)
                conn.send_bytes(b"")
            try:
                reply = conn.recv_bytes()
            except EOFError as exc:
                raise BackendUnavailable(
                    "the serving process closed the CacheQueue channel"
                ) from exc
        if not reply.startswith(b"ok"):
            raise RuntimeError(f"the serving process refused the call ({reply.decode()})")
        return json.loads(reply[2:])

    def _forward(self, op: str, *args: Any) -> Any:
        return self._send({"op": op, "args": list(args)})

    def put(self, entry: Entry, body: Body | None, *, fresh: bool = False) -> None:
        if self._is_client():
            header = {"op": "put", "entry": entry.to_json(), "body": body is not None}
            self._send({**header, "fresh": fresh}, body)
            return
        self._ensure_server()
        super().put(entry, body, fresh=fresh)

    def delete(self, key: str, gone: bool = True, reason: str = "deleted") -> bool:
        if self._is_client():
            return bool(self._forward("delete", key, gone, reason))
        return super().delete(key, gone, reason)

    # In a child, names and marks live in the serving process too, so that stable
    # names, memoize and its lock work from background callbacks.

    def find(self, name: str) -> str | None:
        if self._is_client():
            found = self._forward("find", name)
            return None if found is None else str(found)
        return super().find(name)

    def mark_get(self, name: str) -> str | None:
        if self._is_client():
            value = self._forward("mark_get", name)
            return None if value is None else str(value)
        return super().mark_get(name)

    def mark_set(self, name: str, value: str, ttl: float | None = None) -> None:
        if self._is_client():
            self._forward("mark_set", name, value, ttl)
            return
        super().mark_set(name, value, ttl)

    def mark_add(self, name: str, value: str, ttl: float | None = None) -> bool:
        if self._is_client():
            return bool(self._forward("mark_add", name, value, ttl))
        return super().mark_add(name, value, ttl)

    def mark_delete(self, name: str) -> None:
        if self._is_client():
            self._forward("mark_delete", name)
            return
        super().mark_delete(name)

    def mark_incr(self, name: str, amount: int = 1) -> int:
        if self._is_client():
            return int(self._forward("mark_incr", name, amount))
        return super().mark_incr(name, amount)


def _send_body(conn: Connection, body: Body) -> None:
    if isinstance(body, bytes):
        view = memoryview(body)
        for start in range(0, len(view), _CHUNK):
            conn.send_bytes(view[start : start + _CHUNK])
        return
    stream: BinaryIO = body
    while chunk := stream.read(_CHUNK):
        conn.send_bytes(chunk)


def _before_fork() -> None:
    # A forked background child must inherit the address of a server living in
    # its parent, e.g. a gunicorn worker forked from a preloading master.
    for cache in list(_instances):
        cache._ensure_server()


os.register_at_fork(before=_before_fork)
