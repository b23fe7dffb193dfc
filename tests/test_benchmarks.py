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
    # A full cache, evicting on every registration, loses no round trip either.
    assert roundtrip["plain-full"]["per_s"] > 0
    assert roundtrip["plain-full"]["failed"] == 0
    assert {"plain", "file"} <= set(report["register"]["ours"])
    assert "large path / send_file (gthread)" in report["ratios"]
    assert "Targets" in done.stdout


def test_quick_soak_keeps_plain_and_file_caches_within_their_bounds(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [
            sys.executable,
            "benchmarks/soak.py",
            "--quick",
            "--backends",
            "plain,file",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    report = json.loads(out.read_text())
    assert set(report) == {"meta", "settings", "backends", "checks", "skipped", "ok"}
    assert report["ok"] is True
    assert report["skipped"] == []
    settings = report["settings"]
    assert settings["quick"] is True
    assert settings["backends"] == ["plain", "file"]
    assert list(report["backends"]) == ["plain", "file"]
    for soaked in report["backends"].values():
        assert soaked["entries"] == settings["entries"]
        assert soaked["registered_bytes"] > 10 * settings["max_bytes"]
        assert soaked["largest_entry"] <= settings["max_entry"]
        assert soaked["final_stats"]["evicted_count"] > 0
        assert soaked["final_stats"]["bytes"] <= settings["max_bytes"]
    assert set(report["backends"]["plain"]["peaks"]) == {"held_bytes", "rss_growth"}
    assert {"disk_bytes", "index_bytes", "du_bytes", "diskcache_volume"} <= set(
        report["backends"]["file"]["peaks"]
    )
    assert report["backends"]["file"]["details"]["du_minus_walk_max"] == 0
    judged = [check for check in report["checks"] if check["ok"] is not None]
    assert {(c["backend"], c["figure"]) for c in judged} >= {
        ("plain", "held body bytes (stats)"),
        ("file", "disk, all files + dirs"),
    }
    assert all(check["ok"] and check["peak"] <= check["bound"] for check in judged)
    assert "All bounds hold." in done.stdout


def test_register_keeps_at_most_one_copy_of_a_large_body_and_frees_it(tmp_path: Path) -> None:
    out = tmp_path / "memory.json"
    command = [sys.executable, "benchmarks/register_memory.py", "--mib", "64", "--no-020"]
    done = subprocess.run(
        [*command, "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    rows = {row["input"]: row for row in json.loads(out.read_text())}
    assert set(rows) == {"bytes", "bytearray", "memoryview", "BytesIO", "BytesIO written"}
    for kind, row in rows.items():
        assert row["stored"] and row["evicted"], kind
        assert row["input_size"] > 0.9, kind  # the probe did build the body
        # Mutable inputs are copied once; bytes and BytesIO are shared, not copied.
        allowed = 1.1 if kind in ("bytearray", "memoryview") else 0.1
        assert row["peak_extra"] <= allowed, (kind, row)
        assert row["left_after_eviction"] <= 0.1, (kind, row)
