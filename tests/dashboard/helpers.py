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


def post_action(
    client: Any,
    pending: dict[str, Any],
    *,
    user: str = "",
    password: str = "",
    headers: dict[str, str] | None = None,
    client_address: str = "127.0.0.1",
) -> Any:
    """The confirmed action posted to Dash's callback endpoint as the page does (the
    pending request, the user and password fields); the HTTP answer."""
    body = {
        "output": "..action-result.children...action-result.className...refresh.data..",
        "outputs": [
            {"id": "action-result", "property": "children"},
            {"id": "action-result", "property": "className"},
            {"id": "refresh", "property": "data"},
        ],
        "inputs": [{"id": "confirm", "property": "submit_n_clicks", "value": 1}],
        "changedPropIds": ["confirm.submit_n_clicks"],
        "state": [
            {"id": "pending", "property": "data", "value": pending},
            {"id": "user", "property": "value", "value": user},
            {"id": "password", "property": "value", "value": password},
            {"id": "refresh", "property": "data", "value": 0},
        ],
    }
    return client.post(
        "/_dash-update-component",
        json=body,
        headers=headers or {},
        environ_base={"REMOTE_ADDR": client_address},
    )


def action_result(answer: Any) -> dict[str, Any]:
    """The action's sentence and class from a 200 answer of :func:`post_action`."""
    import json

    assert answer.status_code == 200, answer.text
    return dict(json.loads(answer.text)["response"]["action-result"])


def audit_rows(engine: Any, **where: Any) -> list[dict[str, Any]]:
    """The audit table's rows (oldest first) whose columns equal ``where``."""
    from sqlalchemy import select

    from mlops.db.schema import model_actions

    query = select(model_actions).order_by(model_actions.c.id)
    for column, value in where.items():
        query = query.where(model_actions.c[column] == value)
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def render_page(
    app: Any, client: Any, *, user: str = "", password: str = "", headers: Any = None
) -> Any:
    """The page's sections as the page's first callback draws them (metric MAPE), for
    the user and password of the sign-in fields; the HTTP answer."""
    (key,) = [k for k in app.callback_map if "auth-state.children" in k]
    outputs = []
    for part in key.strip(".").split("..."):
        component, _, prop = part.rpartition(".")
        outputs.append({"id": component, "property": prop})
    body = {
        "output": key,
        "outputs": outputs,
        "inputs": [
            {"id": "refresh", "property": "data", "value": 0},
            {"id": "metric", "property": "value", "value": "mape"},
            {"id": "btn-signin", "property": "n_clicks", "value": 1},
        ],
        "changedPropIds": ["btn-signin.n_clicks"],
        "state": [
            {"id": "user", "property": "value", "value": user},
            {"id": "password", "property": "value", "value": password},
        ],
    }
    return client.post("/_dash-update-component", json=body, headers=headers or {})
