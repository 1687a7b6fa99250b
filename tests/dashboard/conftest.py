"""The dashboard's fixtures: a seeded world, the real `mlops dashboard` server on a free
loopback port, and Debian's headless chromium driven by selenium.

Screenshots go to ``test-artifacts/dashboard/`` (gitignored), one per browser test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import clean_environ, free_port

from .helpers import WAIT_SECONDS
from .seed import seed, users_setting

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "dashboard"
CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromedriver")


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A context over a fresh home with the three models and their monitoring rows."""
    from mlops.settings import load_settings

    home = tmp_path_factory.mktemp("dashboard-home")
    return seed(load_settings(MLOPS_HOME=str(home)))


@pytest.fixture(scope="module")
def dashboard_url(seeded: Any) -> Iterator[str]:
    """`mlops dashboard` serving the seeded home, with an operator in DASHBOARD_USERS."""
    import requests

    port = free_port()
    env = clean_environ(
        {"MLOPS_HOME": str(seeded.settings.mlops_home), "DASHBOARD_USERS": users_setting()}
    )
    log_path = Path(seeded.settings.mlops_home, "dashboard.log")
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "mlops.cli", "dashboard", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + WAIT_SECONDS
            while True:
                if server.poll() is not None:
                    pytest.fail(f"mlops dashboard exited: {log_path.read_text()[-3000:]}")
                try:
                    if requests.get(f"{url}/healthz", timeout=5).status_code == 200:
                        break
                except requests.RequestException:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"mlops dashboard did not answer: {log_path.read_text()[-3000:]}")
                time.sleep(0.2)
            yield url
        finally:
            # SIGINT: gunicorn's quick shutdown (SIGTERM would wait graceful_timeout for the
            # browser's kept-alive connections).
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless chromium (Debian's, with its chromedriver) through selenium."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    missing = [p for p in CHROMIUM if not os.access(p, os.X_OK)]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not found: run `make chromium` (or `make test`, which "
            "installs Debian's chromium and chromium-driver).",
            pytrace=False,
        )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM[0]
    for argument in (
        "--headless=new",
        "--no-sandbox",  # as root (CI)
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,2400",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(CHROMIUM[1]))
    driver.set_page_load_timeout(WAIT_SECONDS)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def screenshot(browser: Any, request: pytest.FixtureRequest) -> Callable[[str], Path]:
    """``screenshot(step)`` saves the page as test-artifacts/dashboard/<test>-<step>.png."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def take(step: str) -> Path:
        path = ARTIFACTS / f"{request.node.name}-{step}.png"
        browser.save_screenshot(str(path))
        return path

    return take
