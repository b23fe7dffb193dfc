"""What the memory scripts share: code run in a fresh interpreter, and how to run it.

A probe runs under the Python being measured (this tree, or the published 0.2.0 in
its own virtualenv), so it is source text, not an import.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV_020 = HERE / ".venv-020" / "bin" / "python"

# Defines ``me`` (this process), ``PeakRss().start()`` and ``.stop()``, which
# returns the highest resident memory seen, sampled every 2 ms, in bytes.
PEAK_RSS = textwrap.dedent(
    """
    import threading, time
    import psutil

    me = psutil.Process()

    class PeakRss:
        def __init__(self):
            self.peak = me.memory_info().rss
            self._done = threading.Event()
            self._thread = threading.Thread(target=self._run)

        def _run(self):
            while not self._done.is_set():
                self.peak = max(self.peak, me.memory_info().rss)
                time.sleep(0.002)

        def start(self):
            self._thread.start()
            return self

        def stop(self):
            self._done.set()
            self._thread.join()
            return max(self.peak, me.memory_info().rss)
    """
)


def run_probe(python: str, code: str, *args: str, label: str) -> str:
    """Run ``code`` (after ``PEAK_RSS``) under ``python``; return what it printed."""
    done = subprocess.run(
        [python, "-c", PEAK_RSS + textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
        # 0.2.0 runs away from this checkout, so that it imports its own package.
        cwd=HERE.parent if label == "ours" else tempfile.gettempdir(),
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    return done.stdout
