"""What the child processes of the process tests run, and what the parent expects back.

Nothing here builds a cache: the ``proc_app_*`` modules that do are imported by
spawned children, and this one must stay cheap to import.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable
from typing import Any

KINDS = ("bytes", "BytesIO", "StringIO", "path")

# (file name given to register(), expected Content-Type) per kind; a path entry takes
# its name from the file.
NAMES = {
    "bytes": ("data.bin", "application/octet-stream"),
    "BytesIO": ("table.csv", "text/csv"),
    "StringIO": ("notes.txt", "text/plain; charset=utf-8"),
    "path": ("", "text/csv"),
}


def body(size: int, seed: int = 0) -> bytes:
    """Deterministic bytes that both sides of a test can build."""
    return random.Random(seed).randbytes(size)


def text(size: int, seed: int = 0) -> str:
    """Deterministic non-ASCII text of about ``size`` characters."""
    words = ["grüße", "naïve", "Ωmega", "plain", "line\n", "日本"]
    rng = random.Random(seed)
    return "".join(rng.choice(words) for _ in range(max(size // 5, 1)))


def expected(kind: str, size: int, seed: int = 0) -> bytes:
    """The bytes the parent must serve for an input of ``kind``."""
    if kind == "StringIO":
        return text(size, seed).encode("utf-8")
    return body(size, seed)


def make_input(kind: str, size: int, seed: int = 0, path: str | None = None) -> Any:
    """The object a child hands to ``register()``."""
    if kind == "bytes":
        return body(size, seed)
    if kind == "BytesIO":
        return io.BytesIO(body(size, seed))
    if kind == "StringIO":
        return io.StringIO(text(size, seed))
    if kind == "path":
        assert path is not None
        return path
    raise ValueError(f"unknown kind {kind!r}")


# Upper bound on how long a child waits for the parent to let it exit.
HOLD_SECONDS = 60


def report(conn: Any, action: Callable[[], Any]) -> None:
    """Run ``action``, send ``("ok", result)`` or ``("error", type, message)``, then wait.

    The child stays alive until the parent sends anything (a forked child also
    holds the parent's end of the pipe, so it would never see EOF), so the parent
    can use what the child registered while the child still runs, right after
    ``register()`` returned there.
    """
    try:
        outcome: tuple[Any, ...] = ("ok", action())
    except Exception as exc:
        outcome = ("error", type(exc).__name__, str(exc))
    try:
        conn.send(outcome)
        conn.poll(HOLD_SECONDS)
    finally:
        conn.close()


def register_with(
    service: Any, conn: Any, kind: str, size: int, seed: int = 0, path: str | None = None
) -> None:
    """Register one input with ``service`` and send the address back."""
    name, _ = NAMES[kind]
    report(
        conn,
        lambda: service.register(make_input(kind, size, seed, path), file_name=name),
    )


def register_in_cache(
    conn: Any, cache: Any, kind: str, size: int, seed: int = 0, path: str | None = None
) -> None:
    """A child target given a cache (inherited or pickled) and serving it its own way."""
    import dash_file_cache as dfc

    register_with(dfc.ServiceData(cache), conn, kind, size, seed, path)


def register_in_service(
    conn: Any, service: Any, kind: str, size: int, seed: int = 0, path: str | None = None
) -> None:
    """A child target given the app's service (inherited or pickled)."""
    register_with(service, conn, kind, size, seed, path)
