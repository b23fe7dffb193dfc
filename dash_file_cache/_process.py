"""Where are we running: the serving process, or a child started for a background job?

Dash's ``DiskcacheManager`` runs each background callback in a child made by the
``multiprocess`` package (a fork of :mod:`multiprocessing`); other code may use
:mod:`multiprocessing` itself. Both packages are checked.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from types import ModuleType

__all__ = [
    "Counter",
    "in_child_process",
    "inherited_from_parent",
    "is_inheriting",
    "publish_for_children",
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


def publish_for_children(kind: str, index: int, value: str) -> None:
    """Leave ``value`` in the environment that spawned children inherit.

    A spawned child re-imports the app's modules and so builds its own copy of
    every module-level cache; the ``index``-th cache of ``kind`` built in the child
    finds here what the same cache of its parent uses (a socket, a directory).
    """
    var = f"DASH_FILE_CACHE_{kind.upper()}"
    try:
        table = json.loads(os.environ.get(var, "{}"))
    except ValueError:
        table = {}
    if not isinstance(table, dict) or table.get("pid") != os.getpid():
        table = {"pid": os.getpid(), "values": {}}
    table["values"][str(index)] = value
    os.environ[var] = json.dumps(table)


def inherited_from_parent(kind: str, index: int) -> tuple[int, str] | None:
    """Return ``(parent pid, value)`` published by :func:`publish_for_children`."""
    try:
        table = json.loads(os.environ.get(f"DASH_FILE_CACHE_{kind.upper()}", "{}"))
        pid = int(table["pid"])
        value = table["values"][str(index)]
    except (ValueError, KeyError, TypeError):
        return None
    if pid == os.getpid() or not isinstance(value, str):
        return None
    return pid, value


class Counter:
    """Numbers the caches of one kind in construction order, per process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value = 0

    def next(self) -> int:
        with self._lock:
            self._value += 1
            return self._value
