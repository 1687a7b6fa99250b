"""The dashboard's Walk-forward section and routes, over walk-forwards seeded without
training (:mod:`.walkforward_seed`): the figures it shows are the summary's, the charts
and the timeline are the output files', every stored string is escaped, and the page
works without any walk-forward and with runs from before a field existed."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from html import escape
from typing import Any

import pandas as pd
import pytest

from mlops.dashboard import data, walkforward
from mlops.dashboard.app import create_app
from mlops.dashboard.tables import NO_SCRIPT_HEADERS
from mlops.db import migrate
from mlops.db.engine import make_engine
from mlops.db.schema import walkforward_runs

from .walkforward_seed import (
    HOSTILE,
    KEY,
    MODELS,
    OLD_KEY,
    OLD_MODEL,
    REPORT,
    RUNNING_KEY,
    seed_walkforwards,
)


def _home(make_settings: Any, path: Any) -> Any:
    from mlops.context import open_context

    settings = make_settings(path)
    migrate.upgrade(make_engine(settings.db_url))
    return open_context(settings)


@pytest.fixture(scope="module")
def walked(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict[str, Any]]:
    """A home with the three seeded walk-forwards (no models, no registry needed)."""
    from mlops.settings import load_settings

    home = tmp_path_factory.mktemp("walkforward-home")
    ctx = _home(lambda p: load_settings(MLOPS_HOME=str(p)), home)
    return ctx, seed_walkforwards(ctx)


def text(component: Any) -> str:
    """Every string a Dash component tree shows, space-joined."""
    if component is None:
        return ""
    if isinstance(component, str | int | float):
        return str(component)
    if isinstance(component, list | tuple):
        return " ".join(text(c) for c in component)
    return text(getattr(component, "children", None))


def _headline_cells(summary: dict[str, Any], model: str) -> list[str]:
    forecast = summary["models"][model]["forecast"]
    trading = summary["models"][model]["trading"]
    return [
        f"model {model}",
        f"{forecast['ic_mean']:.4f} (t {forecast['ic_t']:.2f})",
        f"{forecast['rank_ic_mean']:.4f} (t {forecast['rank_ic_t']:.2f})",
        f"{forecast['mape']:.4%}",
        f"{forecast['naive_mape']:.4%}",
        f"{forecast['dm_p_value_naive']:.4f}",
        f"{trading['total_return']:+.2%}",
        f"{trading['sharpe']:.2f} [{trading['sharpe_ci_low']:.2f}, "
        f"{trading['sharpe_ci_high']:.2f}]",
        f"{trading['max_drawdown']:.2%}",
        f"{trading['trades']:.0f}",
    ]


def _rows(table: Any) -> list[list[str]]:
    body = table.children[1]
    return [[text(td) for td in tr.children] for tr in body.children]


def test_the_section_lists_the_runs_newest_first_with_the_summary_figures(walked):
    ctx, written = walked
    parts, options, chosen = walkforward.render_runs(ctx)
    headings = [text(p) for p in parts if type(p).__name__ == "H3"]
    assert [h.split(":")[0] for h in headings] == [RUNNING_KEY, KEY, OLD_KEY]
    running, new, old = headings
    assert "running, started 2018-07-02 06:00 UTC" in running and "report" not in running
    summary = written[KEY]["summary"]
    assert summary["in_sample_sessions"] == 0 and summary["sessions"] > 100
    assert f"0 of {summary['sessions']} sessions in sample" in new
    assert "2017-07-03 to 2017-12-29" in new and "retrained every 63 sessions" in new
    assert "(expanding window), 2 retrain points; models stock-close, stock-close-mlp" in new
    fills = sum(int(summary["models"][m]["trading"]["trades"]) for m in MODELS)
    assert f"trades ({fills} model fills)" in new
    # The run's headline table: each model's figures beside naive and buy-and-hold.
    tables = [p for p in parts if type(p).__name__ == "Table"]
    assert len(tables) == 2  # the running run has none yet
    rows = _rows(tables[0])
    assert rows[: len(MODELS)] == [_headline_cells(summary, m) for m in MODELS]
    hold = summary["benchmarks"]["buy_and_hold"]
    assert rows[-1][0] == "buy-and-hold" and rows[-1][-4] == f"{hold['total_return']:+.2%}"
    assert rows[-2][0] == "naive forecast" and rows[-2][1] == "-"
    # A run from before the Sharpe interval, the t-statistics and the in-sample count.
    assert "in sample" not in old and f"models {OLD_MODEL}" in old
    (model_row, *_) = _rows(tables[1])
    trading = written[OLD_KEY]["summary"]["models"][OLD_MODEL]["trading"]
    assert model_row[7] == f"{trading['sharpe']:.2f}"  # no interval
    assert " (t " not in model_row[1]
    # Only finished runs can be chosen; the newest by default, a chosen one kept.
    assert [o["value"] for o in options] == [KEY, OLD_KEY] and chosen == KEY
    assert walkforward.render_runs(ctx, OLD_KEY)[2] == OLD_KEY
    assert walkforward.render_runs(ctx, "gone")[2] == KEY


def test_the_chosen_run_draws_equity_ic_per_period_and_the_timeline(walked):
    ctx, written = walked
    heading, equity, ic, _, scrolled = walkforward.render_detail(ctx, KEY)
    timeline = scrolled.children
    assert "report" in text(heading) and "timeline" in text(heading)
    curves = written[KEY]["curves"]
    names = [t.name for t in equity.figure.data]
    assert names == [f"model {m}" for m in MODELS] + ["naive forecast", "buy-and-hold"]
    for trace, column in zip(equity.figure.data, [*MODELS, "naive", "buy_and_hold"], strict=True):
        assert list(trace.y) == pytest.approx(list(curves[column]))
    champions = written[KEY]["champions"]
    bars = {t.name: list(t.y) for t in ic.figure.data}
    for model in MODELS:
        mine = champions[champions["model"] == model]
        assert bars[f"model {model} IC"] == pytest.approx(list(mine["forecast_ic_mean"]))
        assert bars[f"model {model} Rank IC"] == pytest.approx(list(mine["forecast_rank_ic_mean"]))
    rows = _rows(timeline)
    assert len(rows) == len(champions)
    first, second = rows[0], rows[1]  # stock-close: promoted at point 0, rejected at point 1
    assert first[:3] == ["stock-close", "2017-07-03 to 2017-10-02", "63"]
    assert first[3] == "point 0 (trained to 2017-06-30)" and first[5] == "promoted"
    assert second[3] == "point 0 (trained to 2017-06-30)"  # the champion kept serving
    assert second[4] == "1 (trained to 2017-10-02)" and second[5] == "rejected"
    assert second[7] == champions.iloc[1]["reason"]
    assert first[8] == f"{champions.iloc[0]['forecast_ic_mean']:.4f}"
    # A run from before the period figures: the timeline without them.
    *_, old_timeline = walkforward.render_detail(ctx, OLD_KEY)
    assert [r[8] for r in _rows(old_timeline.children)] == ["-", "-"]
    assert text(walkforward.render_detail(ctx, RUNNING_KEY)) == (
        f"Walk-forward {RUNNING_KEY} has not finished."
    )


def test_the_routes_answer_the_report_the_trades_and_the_timeline(walked):
    ctx, written = walked
    client = create_app(ctx).server.test_client()
    report = client.get(f"/walkforward/{KEY}/report")
    assert report.status_code == 200 and report.text == REPORT
    for name, value in NO_SCRIPT_HEADERS.items():
        assert report.headers[name] == value
    trades = client.get(f"/walkforward/{KEY}/trades")
    fills = written[KEY]["trades"]
    assert trades.status_code == 200 and trades.headers["Content-Security-Policy"]
    assert trades.text.count("<tr") == len(fills) + 1  # the header and one row per fill
    assert f"{len(fills)} fills" in trades.text and "0 of 124 sessions in sample" in trades.text
    assert "<td>stock-close-mlp</td>" in trades.text
    timeline = client.get(f"/walkforward/{KEY}/timeline")
    assert timeline.status_code == 200 and "DM p vs champion" in timeline.text
    assert timeline.text.count("<tr") == len(written[KEY]["champions"]) + 1
    # Unknown keys, a missing report, a run still running: 404 with a sentence.
    for what in ("report", "trades", "timeline"):
        answer = client.get(f"/walkforward/nope/{what}")
        assert answer.status_code == 404 and "No walk-forward nope." in answer.text
    missing = client.get(f"/walkforward/{OLD_KEY}/report")
    assert missing.status_code == 404
    assert f"The report of walk-forward {OLD_KEY} is missing." in missing.text
    assert str(ctx.settings.mlops_home) not in missing.text and "store" not in missing.text
    running = client.get(f"/walkforward/{RUNNING_KEY}/trades")
    assert running.status_code == 404 and "(the run is running)" in running.text
    # Other files are not served (the path is Dash's catch-all: the page).
    assert b"PAR1" not in client.get(f"/walkforward/{KEY}/predictions").data


def test_markup_in_a_model_name_or_a_reason_is_escaped(walked):
    ctx, _ = walked
    client = create_app(ctx).server.test_client()
    for what in ("trades", "timeline"):
        page = client.get(f"/walkforward/{OLD_KEY}/{what}")
        assert page.status_code == 200
        assert "<script" not in page.text.lower() and escape(HOSTILE, quote=False) in page.text
    assert page.text.count("&lt;script&gt;") == 1 + 2 + 1  # the models line, 2 rows, a reason
    unknown = client.get("/walkforward/<script>alert(1)/report")
    assert unknown.status_code == 404 and "<script>" not in unknown.text
    # In the page, a stored string is a text child (React escapes it), never markup.
    answer = client.post("/_dash-update-component", json=_runs_callback())
    assert answer.status_code == 200
    shown = json.loads(answer.text)["response"]["walkforward-runs"]["children"]
    kinds = {c["type"] for c in _components(shown)}
    assert kinds <= {"H3", "A", "Table", "Thead", "Tbody", "Tr", "Th", "Td"}
    assert any(HOSTILE in s for s in _strings(shown))


def test_no_walk_forward_yet_and_a_run_without_its_outputs(make_settings, tmp_path):
    ctx = _home(make_settings, tmp_path)
    client = create_app(ctx).server.test_client()
    assert walkforward.render_runs(ctx)[1:] == ([], None)
    assert text(walkforward.render_runs(ctx)[0]) == "None yet: run mlops walk-forward."
    assert text(walkforward.render_detail(ctx, None)) == "No finished walk-forward yet."
    assert client.get("/").status_code == 200
    answer = client.post("/_dash-update-component", json=_runs_callback())
    assert answer.status_code == 200, answer.text
    # A finished row whose summary and outputs are gone (or never had the figures).
    with ctx.engine.begin() as conn:
        conn.execute(
            walkforward_runs.insert().values(
                run_key="bare",
                status="succeeded",
                start_date=date(2017, 1, 3),
                end_date=date(2017, 3, 31),
                retrain_every=21,
                window="expanding",
                models="stock-close",
                points=3,
                dataset_version="2017-03-31-abc",
                created_at=datetime(2017, 4, 1, tzinfo=UTC),
            )
        )
    parts, _, chosen = walkforward.render_runs(ctx)
    assert chosen == "bare" and "trades (0 model fills)" in text(parts)
    assert "2017-01-03 to 2017-03-31; retrained every 21 sessions" in text(parts)
    said = text(walkforward.render_detail(ctx, "bare"))
    assert said == "The outputs of walk-forward bare cannot be read from the store."
    for what in ("report", "trades", "timeline"):
        answer = client.get(f"/walkforward/bare/{what}")
        assert answer.status_code == 404 and "of walk-forward bare is missing." in answer.text
        assert str(tmp_path) not in answer.text


def test_the_headline_of_a_summary_without_figures():
    assert data.walkforward_headline({}).empty
    frame = data.walkforward_headline({"models": {"m": {}}, "benchmarks": {"buy_and_hold": {}}})
    assert frame.iloc[0].tolist() == ["model m", *["-"] * 9]
    assert data.walkforward_timeline(pd.DataFrame()).empty
    assert data.walkforward_period_ic(pd.DataFrame()).empty


def _runs_callback() -> dict[str, Any]:
    return {
        "output": "..walkforward-runs.children...walkforward-run.options...walkforward-run.value..",
        "outputs": [
            {"id": "walkforward-runs", "property": "children"},
            {"id": "walkforward-run", "property": "options"},
            {"id": "walkforward-run", "property": "value"},
        ],
        "inputs": [{"id": "refresh", "property": "data", "value": 0}],
        "changedPropIds": ["refresh.data"],
        "state": [{"id": "walkforward-run", "property": "value", "value": None}],
    }


def _components(tree: Any) -> list[dict[str, Any]]:
    if isinstance(tree, list):
        return [c for t in tree for c in _components(t)]
    if isinstance(tree, dict) and "type" in tree:
        return [tree, *_components(tree.get("props", {}).get("children"))]
    return []


def _strings(tree: Any) -> list[str]:
    if isinstance(tree, str):
        return [tree]
    if isinstance(tree, list):
        return [s for t in tree for s in _strings(t)]
    if isinstance(tree, dict):
        return _strings(tree.get("props", {}).get("children"))
    return []
