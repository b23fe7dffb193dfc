"""Paths and ports shared by the demo and browser tests."""

from __future__ import annotations

import pathlib
import socket

__all__ = ["DEMOS", "ROOT", "free_port"]

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEMOS = ROOT / "demos"


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
