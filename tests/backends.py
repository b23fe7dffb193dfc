"""The backend fixture shared by the contract and HTTP suites: one run per backend."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import dash_file_cache as dfc

BACKENDS = ["plain", "queue", "file"]


def make_backend(name: str, tmp_path: Path, cache_size: int = 16) -> dfc.CacheAbstract:
    if name == "plain":
        return dfc.CachePlain(cache_size)
    if name == "queue":
        return dfc.CacheQueue(cache_size)
    if name == "file":
        return dfc.CacheFile(tmp_path / "cache")
    raise ValueError(name)


@pytest.fixture(params=BACKENDS)
def backend_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def cache(backend_name: str, tmp_path: Path) -> Iterator[dfc.CacheAbstract]:
    made = make_backend(backend_name, tmp_path)
    yield made
    close = getattr(getattr(made, "cache", None), "close", None)
    if backend_name == "file" and callable(close):
        close()


@pytest.fixture
def backend_factory(backend_name: str, tmp_path: Path) -> Callable[..., dfc.CacheAbstract]:
    def factory(cache_size: int = 16) -> dfc.CacheAbstract:
        return make_backend(backend_name, tmp_path / f"c{cache_size}", cache_size)

    return factory
