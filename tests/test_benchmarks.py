"""The benchmark script still runs: a few seconds of its smoke mode, without 0.2.0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def test_quick_benchmark_run_writes_its_report(tmp_path: Path) -> None:
    out = tmp_path / "quick.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--quick", "--no-020", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(out.read_text())
    assert set(report) >= {
        "meta",
        "settings",
        "large",
        "roundtrip",
        "get_only",
        "register",
        "ratios",
        "targets",
    }
    assert report["settings"]["quick"] is True
    assert report["meta"]["nproc"] >= 1
    large = {(row["server"], row["case"]) for row in report["large"]}
    assert {("ours-gthread", "path"), ("ours-gthread", "send_file")} <= large
    assert all(row["mib_per_s"] > 0 for row in report["large"])
    roundtrip = {row["case"]: row for row in report["roundtrip"]}
    assert roundtrip["plain"]["per_s"] > 0
    assert roundtrip["plain"]["failed"] == 0
    assert {"plain", "file"} <= set(report["register"]["ours"])
    assert "large path / send_file (gthread)" in report["ratios"]
    assert "Targets" in done.stdout
