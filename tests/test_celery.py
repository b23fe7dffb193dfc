"""The Celery demo end to end: a real Redis, a real Celery worker and a real browser.

The web app runs in this process (``dash_duo``); the background job runs in a
Celery worker subprocess, which registers the file through ``CacheRedis``. The
browser then fetches the address from the web app, so the entry must have
travelled through Redis.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from dash.testing.wait import until
from demo_support import DEMOS, ROOT, free_port
from redis_server import RedisServer, running_redis

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    # dash[testing] pins selenium<=4.2.0, which still reads response headers with
    # urllib3's deprecated HTTPResponse.getheader().
    pytest.mark.filterwarnings(
        "ignore:HTTPResponse.getheader:DeprecationWarning:selenium.webdriver.remote"
    ),
]

_READY_SECONDS = 30.0
_STOP_SECONDS = 15.0


@pytest.fixture(autouse=True)
def _chromium_temp_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: Any) -> None:
    # Chromium leaves its singleton socket directory in TMPDIR even after a clean
    # quit; keep it inside pytest's temporary tree, which pytest prunes.
    monkeypatch.setenv("TMPDIR", str(tmp_path_factory.mktemp("chromium")))


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private Redis: the broker's queues and results do not mix with other tests'."""
    directory = tmp_path / "redis"
    directory.mkdir()
    with running_redis(directory) as server:
        yield server


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no output)"


@contextlib.contextmanager
def celery_worker(environ: dict[str, str], directory: Path) -> Iterator[Path]:
    """Run one solo Celery worker for the demo; yield its log once it takes jobs."""
    log = directory / "worker.log"
    output = directory / "worker.out"
    command = [
        sys.executable,
        "-m",
        "celery",
        "--app",
        "demos.celery_app:celery_app",
        "worker",
        "--pool",
        "solo",
        "--hostname",
        "dfc-test@%h",
        "--loglevel",
        "INFO",
        "--logfile",
        str(log),
        # No waiting for, or talking to, other workers: there are none.
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    env = {**os.environ, **environ, "PYTHONPATH": str(ROOT)}
    with output.open("wb") as sink:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink
        )
    try:
        deadline = time.monotonic() + _READY_SECONDS
        while not (log.exists() and " ready." in log.read_text(errors="replace")):
            if process.poll() is not None:
                raise RuntimeError(
                    f"the Celery worker exited with {process.returncode}:\n{_tail(output)}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the Celery worker was not ready after {_READY_SECONDS} s:\n{_tail(output)}"
                )
            time.sleep(0.05)
        yield log
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _require_celery() -> None:
    if importlib.util.find_spec("celery") is not None:
        return
    reason = 'Celery is not installed (pip install -e ".[test]")'
    # As with Redis and the browser: skipped locally, a failure in CI.
    if os.environ.get("CI") == "true":
        pytest.fail(f"the Celery test must run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def celery_demo(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A loader of ``demos/celery_app.py`` with the given environment; cleans up after."""
    _require_celery()
    loaded: list[types.ModuleType] = []

    def load(**environ: str) -> types.ModuleType:
        for key, value in environ.items():
            monkeypatch.setenv(key, value)
        name = f"dfc_demo_celery_app_{len(loaded)}"
        spec = importlib.util.spec_from_file_location(name, DEMOS / "celery_app.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        # Dash looks its module up by name to find its folder.
        sys.modules[name] = module
        loaded.append(module)
        spec.loader.exec_module(module)
        return module

    yield load
    for module in loaded:
        sys.modules.pop(module.__name__, None)
        if hasattr(module, "cache"):
            module.cache.close()
        if hasattr(module, "celery_app"):
            module.celery_app.close()


# Redis comes first so that it stops last, after the browser and the app.
def test_celery_worker_builds_and_registers_the_picture(
    redis_server: RedisServer, celery_demo: Any, dash_duo: Any, tmp_path: Path
) -> None:
    environ = {"DFC_DEMO_REDIS_URL": redis_server.url, "DFC_DEMO_STEP_SECONDS": "0.1"}
    demo = celery_demo(**environ)
    assert f"redis://127.0.0.1:{redis_server.port}/1" == demo.CACHE_URL
    with celery_worker(environ, tmp_path) as log:
        dash_duo.start_server(demo.app, port=free_port())
        dash_duo.wait_for_text_to_equal("#percent", "0%")
        dash_duo.find_element("#build").click()
        dash_duo.wait_for_text_to_equal("#percent", "100%", timeout=30)
        progress = dash_duo.find_element("#progress")
        assert progress.get_attribute("value") == progress.get_attribute("max") == str(demo.STEPS)

        image = dash_duo.wait_for_element("#picture[src]", timeout=30)
        loaded = "const i = arguments[0]; return i.complete && i.naturalWidth > 0;"
        until(lambda: dash_duo.driver.execute_script(loaded, image), timeout=30)
        size = dash_duo.driver.execute_script(
            "return [arguments[0].naturalWidth, arguments[0].naturalHeight];", image
        )
        assert size == [demo.WIDTH, demo.HEIGHT]

        src = image.get_attribute("src")
        assert src.startswith(f"{dash_duo.server_url}/cached-data?uid=")
        resp = requests.get(src, timeout=30)
        assert resp.status_code == 200
        assert resp.headers["Content-Type"] == "image/png"
        assert resp.content == demo.picture()
        until(lambda: dash_duo.find_element("#build").is_enabled(), timeout=10)
        # The job ran in the worker, which logs its end just after storing the result.
        until(lambda: "succeeded" in log.read_text(errors="replace"), timeout=10)
    # The entry lives in Redis, where any web process can read it.
    uid = src.rpartition("uid=")[2]
    assert demo.service.info(uid)["size"] == len(demo.picture())
    assert dash_duo.get_logs() == []
