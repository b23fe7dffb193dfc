"""Shared test set-up: demo scripts loaded by path, and the Chromium of browser tests."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import types
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from demo_support import DEMOS

CHROME_ARGUMENTS = (
    "--headless=new",
    # Chromium refuses to start its sandbox as root, which is how containers run.
    "--no-sandbox",
    "--disable-gpu",
    # /dev/shm is tiny in containers; Chromium then crashes on larger pages.
    "--disable-dev-shm-usage",
    # No update checks, sync or first-run dialogs: nothing but the test talks.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--window-size=1280,900",
)


def chromium_binary() -> str | None:
    """The Chromium (or Chrome) to drive: ``DASH_TEST_CHROMEPATH``, else the first on PATH."""
    configured = os.environ.get("DASH_TEST_CHROMEPATH")
    if configured:
        return configured
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _browser_missing() -> str:
    """Why browser tests cannot run here, or ``""`` when they can."""
    if chromium_binary() is None:
        return "no Chromium found (apt-get install chromium)"
    if shutil.which("chromedriver") is None:
        return "no chromedriver on PATH (apt-get install chromium-driver)"
    try:
        import dash.testing.browser  # noqa: F401
    except ImportError:
        return 'dash[testing] is not installed (pip install -e ".[test]")'
    return ""


@pytest.hookimpl(optionalhook=True)
def pytest_setup_options() -> Any:
    """Chrome options for the ``dash_duo`` fixture of ``dash[testing]``."""
    from selenium.webdriver.chrome.options import Options

    options = Options()
    for argument in CHROME_ARGUMENTS:
        options.add_argument(argument)
    binary = chromium_binary()
    if binary is not None:
        options.binary_location = binary
    return options


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("browser") is None:
        return
    missing = _browser_missing()
    if not missing:
        return
    # Locally a missing browser only skips; CI installs one, so there it is a failure.
    if os.environ.get("CI") == "true":
        pytest.fail(f"browser tests must run in CI: {missing}", pytrace=False)
    pytest.skip(missing)


@pytest.fixture
def load_demo(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., types.ModuleType]]:
    """Import ``demos/<name>.py`` afresh, with environment variables set while it loads.

    Every call makes a new module (and so a new app and cache), which lets one test
    load the same demo with two configurations.
    """
    loaded: list[types.ModuleType] = []

    def load(name: str, **environ: str) -> types.ModuleType:
        for key, value in environ.items():
            monkeypatch.setenv(key, value)
        module_name = f"dfc_demo_{name}_{len(loaded)}"
        spec = importlib.util.spec_from_file_location(module_name, DEMOS / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        # Dash and Flask look their module up by name to find its folder.
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[module_name]
            raise
        loaded.append(module)
        return module

    yield load
    for module in loaded:
        sys.modules.pop(module.__name__, None)
        manager = getattr(module, "manager", None)
        handle = getattr(manager, "handle", None)
        # A DiskcacheManager's handle is a diskcache folder of the demo's own; a
        # CeleryManager's is the Celery app, whose broker the test owns.
        directory = getattr(handle, "directory", None)
        if handle is not None and isinstance(directory, str):
            handle.close()
            shutil.rmtree(directory, ignore_errors=True)
