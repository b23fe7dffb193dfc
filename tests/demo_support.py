"""Paths and ports shared by the demo and browser tests."""

from __future__ import annotations

import pathlib

from servers import free_port

__all__ = ["DEMOS", "ROOT", "free_port"]

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEMOS = ROOT / "demos"
