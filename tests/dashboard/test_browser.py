"""The dashboard in a real browser: Debian's headless chromium, through selenium, on the
real `mlops dashboard` server over a real MLflow registry (SQLite) with three models.

Each test loads the page afresh and waits explicitly for what it checks; screenshots
go to test-artifacts/dashboard/.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from mlops.dashboard import data
from mlops.db.schema import model_actions

from .helpers import wait
from .seed import CHAMPIONS, DAYS, MODELS, OPERATOR, WINDOW, day_mape, window_mape
from .walkforward_seed import KEY, OLD_MODEL, RUNNING_KEY

QUALITY_LEGEND = "#quality-chart .legendtext"


def _open(browser: Any, url: str) -> None:
    from selenium.webdriver.common.by import By

    browser.get(url)
    wait(
        browser,
        lambda b: (
            b.find_elements(By.CSS_SELECTOR, QUALITY_LEGEND)
            and b.find_elements(By.CSS_SELECTOR, "table.models tbody tr")
        ),
        "the quality chart and the models table",
    )


def _fill(browser: Any, **fields: str) -> None:
    from selenium.webdriver.common.by import By

    for name, value in fields.items():
        box = browser.find_element(By.ID, name)
        box.clear()
        box.send_keys(value)
        wait(
            browser,
            lambda b, n=name, v=value: b.find_element(By.ID, n).get_attribute("value") == v,
            name,
        )


def _press_and_confirm(browser: Any, button: str) -> str:
    """Click an action's button, accept the confirm dialog; returns what it asked."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions

    browser.find_element(By.ID, f"btn-{button}").click()
    alert = wait(browser, expected_conditions.alert_is_present(), "the confirm dialog")
    asked = alert.text
    alert.accept()
    # Pressing a button empties the previous result; the server's answer fills it.
    wait(browser, lambda b: b.find_element(By.ID, "action-result").text, "the action's result")
    return asked


def test_the_page_shows_every_model_and_version(browser, dashboard_url, seeded, screenshot):
    from selenium.webdriver.common.by import By

    _open(browser, dashboard_url)
    expected = {f"{name}:{v}" for name in MODELS for v in ("1", "2")}
    wait(
        browser,
        lambda b: expected <= {e.text for e in b.find_elements(By.CSS_SELECTOR, QUALITY_LEGEND)},
        "a line per model version",
    )
    legend = {e.text for e in browser.find_elements(By.CSS_SELECTOR, QUALITY_LEGEND)}
    assert legend == expected | {"naive forecast"}
    # The quality chart's last point of a version is that day's own MAPE, the window
    # chart's the trailing window's, and the window chart says its length.
    drawn = browser.execute_script(
        "const last = id => Object.fromEntries(document.querySelector(`#${id} .js-plotly-plot`)"
        ".data.map(t => [t.name, t.y[t.y.length - 1]]));"
        "return [last('quality-chart'), last('quality-window-chart')];"
    )
    final = len(DAYS) - 1
    assert drawn[0]["stock-close:1"] == pytest.approx(day_mape("stock-close", "1", final))
    assert drawn[1]["stock-close:1"] == pytest.approx(window_mape("stock-close", "1", final))
    window_title = browser.find_element(By.CSS_SELECTOR, "#quality-window-chart .gtitle").text
    assert window_title.startswith(f"MAPE over the trailing {WINDOW}-session window")
    # Every chart drew: quality, champion vs challengers, per symbol, drift (the share and
    # per feature), triggers, two accounts,
    # the newest walk-forward's equity and IC per period.
    charts = (
        "quality-window-chart",
        "versus-chart",
        "symbols-chart",
        "drift-chart",
        "feature-drift-chart",
        "trigger-chart",
        "equity-0",
        "equity-1",
    )
    for chart in (*charts, "walkforward-equity", "walkforward-ic"):
        wait(
            browser,
            lambda b, c=chart: b.find_elements(By.CSS_SELECTOR, f"#{c} .main-svg"),
            f"the chart {chart}",
        )
    titles = browser.find_element(By.ID, "equity-charts").text
    assert "alpaca PA1" in titles and "strategy red, paper" in titles
    standings = browser.find_elements(By.CSS_SELECTOR, "table.leaderboard tbody tr")
    assert [r.find_elements(By.TAG_NAME, "td")[1].text for r in standings] == [
        "default",
        "default",
        "red",
    ]
    rows = browser.find_elements(By.CSS_SELECTOR, "table.models tbody tr")
    assert len(rows) == sum(len(v) for v in MODELS.values())
    assert {r.find_elements(By.TAG_NAME, "td")[0].text for r in rows} == set(MODELS)
    # The walk-forward section: every run, a stored model name shown as text (no script
    # ran: an alert would have stopped selenium), the newest finished run's timeline.
    runs = browser.find_element(By.ID, "walkforward-runs").text
    sessions = data.walkforward_run(seeded.engine, KEY)["summary"]["sessions"]
    assert f"0 of {sessions} sessions in sample" in runs and OLD_MODEL in runs
    assert f"{RUNNING_KEY}: " in runs and "(running, started" in runs
    assert len(browser.find_elements(By.CSS_SELECTOR, "table.walkforward-headline")) == 2
    timeline = browser.find_elements(By.CSS_SELECTOR, "table.walkforward-timeline tbody tr")
    assert len(timeline) == 4 and "rejected" in timeline[1].text
    # Another metric redraws the headline chart.
    browser.find_element(By.CSS_SELECTOR, "#metric input[value='wmape']").click()
    wait(
        browser,
        lambda b: "WMAPE of each session" in b.find_element(By.ID, "quality-chart").text,
        "the WMAPE chart",
    )
    screenshot("page")


def test_promote_moves_the_alias_after_confirmation(browser, dashboard_url, seeded, screenshot):
    from selenium.webdriver.common.by import By

    client = seeded.mlflow
    assert str(client.get_model_version_by_alias("stock-close", "champion").version) == "1"
    _open(browser, dashboard_url)
    _fill(browser, user=OPERATOR[0], password=OPERATOR[1], model="stock-close", version="2")
    _fill(browser, reason="beats v1 live")
    asked = _press_and_confirm(browser, "promote")
    assert asked.startswith("Promote stock-close version 2 to champion")
    result = browser.find_element(By.ID, "action-result")
    assert result.text.startswith("Done: promote stock-close version 2"), result.text
    assert str(client.get_model_version_by_alias("stock-close", "champion").version) == "2"
    with seeded.engine.connect() as conn:
        (row,) = conn.execute(
            select(model_actions).where(
                model_actions.c.model_name == "stock-close", model_actions.c.outcome == "done"
            )
        ).mappings()
    assert (row["action"], row["model_version"], row["actor"]) == (
        "promote",
        "2",
        "dashboard:tester",
    )
    assert row["reason"] == "beats v1 live"
    # The page was redrawn: the models table shows the new champion.
    wait(
        browser,
        lambda b: any(
            [td.text for td in tr.find_elements(By.TAG_NAME, "td")][:3]
            == ["stock-close", "2", "champion"]
            for tr in b.find_elements(By.CSS_SELECTOR, "table.models tbody tr")
        ),
        "the models table to show version 2 as champion",
    )
    screenshot("promoted")


def test_an_action_without_signing_in_is_refused(browser, dashboard_url, seeded, screenshot):
    from selenium.webdriver.common.by import By

    name = "stock-close-mlp"
    _open(browser, dashboard_url)
    _fill(browser, model=name, version="2", reason="not signed in")
    _press_and_confirm(browser, "promote")
    result = browser.find_element(By.ID, "action-result")
    assert result.text.startswith("Refused: sign in (user and password) to act")
    assert result.get_attribute("class") == "refused"
    # A wrong password is refused too.
    _fill(browser, user=OPERATOR[0], password="not-the-password")
    _press_and_confirm(browser, "halt")
    assert browser.find_element(By.ID, "action-result").text.startswith("Refused")
    client = seeded.mlflow
    assert str(client.get_model_version_by_alias(name, "champion").version) == CHAMPIONS[name]
    with seeded.engine.connect() as conn:
        audit = conn.execute(
            select(model_actions.c.outcome).where(model_actions.c.model_name == name)
        )
        assert audit.scalars().all() == ["refused"]  # audited, not done
    from mlops.trading.switch import status

    assert status(seeded)["halted"] is False
    screenshot("refused")
