"""Where are we running: the serving process, or a child started for a background job?

Dash's ``DiskcacheManager`` runs each background callback in a child made by the
``multiprocess`` package (a fork of ``multiprocessing``); other code may use
``multiprocessing`` itself. Both packages are checked.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
from types import FrameType, ModuleType
from typing import Any

__all__ = [
    "BuildSites",
    "in_background_job",
    "in_celery_task",
    "in_child_process",
    "inherited_from_parent",
    "is_inheriting",
    "publish_for_children",
    "withdraw_for_children",
]


def _packages() -> list[ModuleType]:
    mods = []
    for name in ("multiprocessing", "multiprocess"):
        mod = sys.modules.get(name)
        if mod is not None:
            mods.append(mod)
    return mods


def in_child_process() -> bool:
    """Tell whether this process was started by ``multiprocessing`` or ``multiprocess``."""
    for mod in _packages():
        try:
            if mod.parent_process() is not None:
                return True
        except AttributeError:  # pragma: no cover - very old multiprocess
            continue
    return False


def in_celery_task() -> bool:
    """Tell whether a Celery task is running here (a Dash ``CeleryManager`` job)."""
    celery = sys.modules.get("celery")
    if celery is None:
        return False
    task: Any = getattr(celery, "current_task", None)
    try:
        return bool(task) and getattr(task.request, "id", None) is not None
    except Exception:  # a proxy without a task behind it
        return False


def in_background_job() -> bool:
    """Tell whether this code runs where the serving process cannot see its memory."""
    return in_child_process() or in_celery_task()


def is_inheriting() -> bool:
    """Tell whether a spawned child is still importing its parent's modules.

    Objects built at that moment are module-level globals re-created in the child,
    not objects the child made for itself.
    """
    for mod in _packages():
        proc = getattr(mod, "process", None)
        current = getattr(proc, "current_process", None)
        if current is not None and getattr(current(), "_inheriting", False):
            return True
    return False


def publish_for_children(kind: str, site: str, value: str) -> None:
    """Leave ``value`` in the environment that spawned children inherit.

    A spawned child re-imports the app's modules and so builds its own copy of
    every module-level cache; the cache of ``kind`` built at ``site`` (see
    ``BuildSites``) in the child finds here what the same cache of its parent
    uses (a socket, a directory). Values published by an ancestor are kept: a
    directory stays valid for every descendant.
    """
    global _environ_busy
    with _environ_lock:
        _environ_busy = True
        try:
            table = _table(kind)
            table[site] = [os.getpid(), value]
            os.environ[_variable(kind)] = json.dumps(table)
        finally:
            _environ_busy = False
        _withdraw_pending()


def withdraw_for_children(kind: str, site: str, value: str) -> None:
    """Undo ``publish_for_children`` once ``value`` is no longer valid.

    Children started later then fail clearly instead of reaching a closed socket,
    and the variable does not grow with every cache an app builds and drops.
    Called from finalizers, so it may run inside another update of the same
    thread (a garbage collection during it): then that update finishes this one.
    """
    with _environ_lock:
        _environ_withdrawn.append((kind, site, value))
        if not _environ_busy:
            _withdraw_pending()


def _withdraw_pending() -> None:
    global _environ_busy
    while _environ_withdrawn:
        kind, site, value = _environ_withdrawn.pop()
        _environ_busy = True
        try:
            table = _table(kind)
            if table.get(site) == [os.getpid(), value]:
                del table[site]
                os.environ[_variable(kind)] = json.dumps(table)
        finally:
            _environ_busy = False


def inherited_from_parent(kind: str, site: str) -> tuple[int, str] | None:
    """Return ``(pid, value)`` published by ``publish_for_children`` in an ancestor."""
    found = _table(kind).get(site)
    if (
        not isinstance(found, list)
        or len(found) != 2
        or not isinstance(found[0], int)
        or not isinstance(found[1], str)
        or found[0] == os.getpid()
    ):
        return None
    return found[0], found[1]


# Each kind is one table in one variable, read and rewritten whole. Reentrant: a
# finalizer that withdraws may run in a thread that is already updating a table.
_environ_lock = threading.RLock()
_environ_busy = False
_environ_withdrawn: list[tuple[str, str, str]] = []


def _fresh_environ_lock() -> None:
    # A lock held by another thread at fork time would never be released in the child.
    global _environ_lock, _environ_busy
    _environ_lock = threading.RLock()
    _environ_busy = False
    _environ_withdrawn.clear()


os.register_at_fork(after_in_child=_fresh_environ_lock)


def _variable(kind: str) -> str:
    return f"DASH_FILE_CACHE_{kind.upper()}"


def _table(kind: str) -> dict[str, Any]:
    try:
        table = json.loads(os.environ.get(_variable(kind), "{}"))
    except ValueError:
        return {}
    return table if isinstance(table, dict) else {}


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _build_site() -> str:
    """The app code that is building an object, up to the module-level statement.

    Each frame outside this package, from the innermost to the first that runs a
    module's top level, as ``file:line``. A spawned child re-importing that module
    runs the same statements, so it reaches the same site; the order in which
    modules are imported does not matter, unlike a plain count would.
    """
    frame: FrameType | None = sys._getframe(1)
    parts: list[str] = []
    while frame is not None:
        filename = frame.f_code.co_filename
        if not filename.startswith(_PACKAGE_DIR):
            if not filename.startswith("<"):
                filename = os.path.abspath(filename)
            parts.append(f"{filename}:{frame.f_lineno}")
            if frame.f_code.co_name == "<module>":
                break
        frame = frame.f_back
    return " < ".join(parts)


class BuildSites:
    """Names the objects of one kind by where the app built them, per process.

    The name digests the build site and how many objects that site has built so
    far in this process, so that caches made in a loop are matched one by one. A
    digest keeps the environment variable small: Linux refuses to start a process
    whose single environment string exceeds 128 KiB.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[str, int] = {}

    def name(self) -> str:
        site = _build_site()
        with self._lock:
            count = self._seen.get(site, 0) + 1
            self._seen[site] = count
        return hashlib.blake2b(f"{site} #{count}".encode(), digest_size=12).hexdigest()
