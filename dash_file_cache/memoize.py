"""Memoized assets: the same inputs give the same address without recomputing."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import pickle
import struct
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, ParamSpec

if TYPE_CHECKING:
    from .service import ServiceData

__all__ = ["Memoized", "function_fingerprint", "hash_arguments"]

P = ParamSpec("P")


def _feed_code(code: types.CodeType, digest: Any) -> None:
    digest.update(code.co_code)
    digest.update(repr(code.co_names).encode())
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _feed_code(const, digest)
        else:
            digest.update(repr(const).encode())


def function_fingerprint(func: Callable[..., Any], version: str) -> str:
    """A digest that changes when the function's code or ``version`` changes."""
    digest = hashlib.sha256(version.encode())
    target = inspect.unwrap(func)
    code = getattr(target, "__code__", None)
    if code is not None:
        _feed_code(code, digest)
    else:  # a callable object or a builtin: its source is what we can see
        try:
            digest.update(inspect.getsource(type(target)).encode())
        except (OSError, TypeError):
            digest.update(repr(target).encode())
    return digest.hexdigest()[:16]


def _feed(value: Any, digest: Any) -> None:
    """Feed a canonical encoding of ``value``: equal inputs give equal digests."""
    if value is None or isinstance(value, bool):
        digest.update(b"c" + repr(value).encode())
    elif isinstance(value, int):
        digest.update(b"i" + str(value).encode() + b";")
    elif isinstance(value, float):
        digest.update(b"f" + struct.pack("<d", value))
    elif isinstance(value, str):
        data = value.encode("utf-8", "surrogatepass")
        digest.update(b"s" + str(len(data)).encode() + b":" + data)
    elif isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
        digest.update(b"b" + str(len(data)).encode() + b":" + data)
    elif isinstance(value, list | tuple):
        digest.update(b"l" if isinstance(value, list) else b"t")
        digest.update(str(len(value)).encode() + b":")
        for item in value:
            _feed(item, digest)
    elif isinstance(value, dict):
        digest.update(b"d" + str(len(value)).encode() + b":")
        for encoded, item in sorted((_encode(k), v) for k, v in value.items()):
            digest.update(encoded)
            _feed(item, digest)
    elif isinstance(value, set | frozenset):
        digest.update(b"S" + str(len(value)).encode() + b":")
        for encoded in sorted(_encode(item) for item in value):
            digest.update(encoded)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        digest.update(b"D" + type(value).__qualname__.encode())
        for f in dataclasses.fields(value):
            _feed(f.name, digest)
            _feed(getattr(value, f.name), digest)
    elif hasattr(value, "tobytes") and hasattr(value, "dtype") and hasattr(value, "shape"):
        digest.update(b"A" + str(value.dtype).encode() + repr(tuple(value.shape)).encode())
        digest.update(value.tobytes())
    else:
        try:
            data = pickle.dumps(value, protocol=5)
        except Exception as exc:
            raise TypeError(
                f"cannot memoize on an argument of type {type(value).__name__}: it is "
                "neither a plain value nor picklable; pass something that identifies it "
                "(an id, a path, a version string) instead"
            ) from exc
        digest.update(b"p" + str(len(data)).encode() + b":" + data)


def _encode(value: Any) -> bytes:
    digest = hashlib.sha256()
    _feed(value, digest)
    return digest.digest()


def hash_arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """Digest of a call's arguments; keyword order does not matter."""
    digest = hashlib.sha256()
    _feed(args, digest)
    _feed(kwargs, digest)
    return digest.hexdigest()[:32]


class Memoized(Generic[P]):
    """A function whose result is registered once per distinct set of arguments.

    Calling it returns the address of the entry made by the first call with the
    same arguments while that entry lives; otherwise it calls the function, under a
    lock shared by every process of the backend so that concurrent callers run it
    once, and registers the result. ``max_entries`` keeps only the most recent
    results of this function; a new ``version`` or new code forgets the old ones.
    """

    def __init__(
        self,
        service: ServiceData,
        func: Callable[P, Any],
        *,
        ttl: float | None,
        max_entries: int | None,
        version: str,
        register_options: dict[str, Any],
    ) -> None:
        if max_entries is not None and (not isinstance(max_entries, int) or max_entries < 1):
            raise ValueError(f"max_entries must be a positive int or None, got {max_entries!r}")
        self._service = service
        self._func = func
        self._ttl = ttl
        self._max_entries = max_entries
        self._options = register_options
        self._family = f"memo:{func.__module__}.{func.__qualname__}:"
        self._prefix = self._family + function_fingerprint(func, str(version)) + ":"
        self._swept = False
        functools.update_wrapper(self, func)

    def name_for(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """The entry name the call with these arguments is stored under."""
        name = self._prefix + hash_arguments(args, kwargs)
        if self._options.get("scope") == "session":
            from ._session import current_session

            name += ":" + current_session()[:32]
        return name

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> str:
        cache = self._service.cache
        download = bool(self._options.get("download"))
        name = self.name_for(*args, **kwargs)
        key = cache.find(name)
        if key is not None:
            return self._service.address(key, download=download)
        with cache.lock(name):
            key = cache.find(name)
            if key is not None:
                return self._service.address(key, download=download)
            self._forget_other_versions()
            result = self._func(*args, **kwargs)
            address = self._service.register(result, key=name, ttl=self._ttl, **self._options)
            self._trim()
            return address

    def _forget_other_versions(self) -> None:
        if self._swept:
            return
        self._swept = True
        cache = self._service.cache
        for entry in cache.named(self._family):
            if not entry.name.startswith(self._prefix):
                cache.delete(entry.key, reason="deleted")

    def _trim(self) -> None:
        if self._max_entries is None:
            return
        cache = self._service.cache
        mine = sorted(cache.named(self._prefix), key=lambda e: e.created)
        for entry in mine[: max(len(mine) - self._max_entries, 0)]:
            cache.delete(entry.key, reason="evicted")

    def cache_clear(self) -> int:
        """Delete every stored result of this function; return how many."""
        cache = self._service.cache
        count = 0
        for entry in cache.named(self._family):
            count += cache.delete(entry.key, reason="deleted")
        return count
