"""An app module whose CacheFile (temporary directory) is built at import time."""

from __future__ import annotations

from typing import Any

import flask
from proc_app_common import register_with

import dash_file_cache as dfc

cache = dfc.CacheFile()
service = dfc.ServiceData(cache)
server = flask.Flask(__name__)
service.serve(server)


def child_register(conn: Any, kind: str, size: int, seed: int = 0, path: str | None = None) -> None:
    """A child target using this module's ``service`` (re-imported when spawned)."""
    register_with(service, conn, kind, size, seed, path)
