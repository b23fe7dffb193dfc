"""The only place where entry ids are made and checked."""

from __future__ import annotations

import re
import secrets

# 24 random bytes -> 32 URL-safe characters: 192 bits, more than the 128 we promise.
_KEY_BYTES = 24
KEY_PATTERN = re.compile(r"[A-Za-z0-9_-]{32}")


def new_key() -> str:
    """Return a fresh, unguessable entry id."""
    return secrets.token_urlsafe(_KEY_BYTES)


def is_valid_key(value: object) -> bool:
    """Tell whether ``value`` has the exact shape of an id made by ``new_key``.

    Every id a client sends goes through this check before any backend sees it,
    so no client string can reach a file path, a SQL query or a Redis key.
    """
    return isinstance(value, str) and KEY_PATTERN.fullmatch(value) is not None
