"""Explicit waits for the browser tests (no sleeps)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

# Generous: a loaded 2-core machine may take long to start the server or draw the page.
WAIT_SECONDS = 120


def wait(browser: Any, condition: Callable[[Any], Any], what: str) -> Any:
    """Wait (explicitly, up to WAIT_SECONDS) until ``condition(browser)`` is truthy.

    An element that React replaced while the condition read it (stale) or that is not
    drawn yet counts as "not yet": the condition is asked again.
    """
    from selenium.common.exceptions import (
        NoSuchElementException,
        StaleElementReferenceException,
        TimeoutException,
    )
    from selenium.webdriver.support.ui import WebDriverWait

    ignored = (NoSuchElementException, StaleElementReferenceException)
    waiter = WebDriverWait(browser, WAIT_SECONDS, poll_frequency=0.2, ignored_exceptions=ignored)
    try:
        return waiter.until(condition)
    except TimeoutException:
        pytest.fail(f"Timed out waiting for {what}.")
