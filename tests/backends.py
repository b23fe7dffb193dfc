"""The backend fixture shared by the contract and HTTP suites: one run per backend."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis_server import NAMESPACE as REDIS_NAMESPACE
from redis_server import redis_url_for_test

import dash_file_cache as dfc

BACKENDS = ["plain", "queue", "file", "redis"]


def make_backend(
    name: str,
    tmp_path: Path,
    cache_size: int | None = None,
    redis_url: str = "",
    **bounds: Any,
) -> dfc.CacheAbstract:
    """A backend of kind ``name``; ``bounds`` are max_bytes, ttl and clock."""
    if name == "plain":
        return dfc.CachePlain(cache_size or 16, **bounds)
    if name == "queue":
        return dfc.CacheQueue(cache_size or 16, **bounds)
    if name == "file":
        return dfc.CacheFile(tmp_path / "cache", cache_size=cache_size, **bounds)
    if name == "redis":
        return dfc.CacheRedis(redis_url, namespace=REDIS_NAMESPACE, cache_size=cache_size, **bounds)
    raise ValueError(name)


def close_backend(cache: dfc.CacheAbstract) -> None:
    if isinstance(cache, dfc.CacheRedis | dfc.CacheFile):
        cache.close()


@pytest.fixture(params=BACKENDS)
def backend_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _redis_url(backend_name: str, request: pytest.FixtureRequest) -> str:
    return redis_url_for_test(request) if backend_name == "redis" else ""


@pytest.fixture
def cache(
    backend_name: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[dfc.CacheAbstract]:
    made = make_backend(backend_name, tmp_path, redis_url=_redis_url(backend_name, request))
    yield made
    close_backend(made)


@pytest.fixture
def backend_factory(
    backend_name: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Callable[..., dfc.CacheAbstract]:
    redis_url = _redis_url(backend_name, request)

    def factory(cache_size: int = 16) -> dfc.CacheAbstract:
        return make_backend(backend_name, tmp_path / f"c{cache_size}", cache_size, redis_url)

    return factory


@pytest.fixture
def bounded(
    backend_name: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., dfc.CacheAbstract]]:
    """Make backends of the current kind with given bounds (cache_size, max_bytes, ttl)."""
    redis_url = _redis_url(backend_name, request)
    made: list[dfc.CacheAbstract] = []

    def factory(**bounds: Any) -> dfc.CacheAbstract:
        cache = make_backend(
            backend_name, tmp_path / f"b{len(made)}", redis_url=redis_url, **bounds
        )
        made.append(cache)
        return cache

    yield factory
    for cache in made:
        close_backend(cache)
