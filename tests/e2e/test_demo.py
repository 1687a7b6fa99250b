"""End to end: a short replay of `mlops demo` on embedded defaults, checked in its stores."""

from __future__ import annotations

from datetime import date
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import create_engine, select

from mlops.db.schema import orders, predictions, stage_runs, trade_decisions

pytestmark = pytest.mark.slow


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: object) -> None:
        self.tags.add(tag)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):
    from mlops.demo import run

    home = tmp_path_factory.mktemp("demo")
    summary = run(days=4, home=home, quiet=True, threshold=0.0005)
    return home, summary


def test_predictions_are_stored_for_every_scored_symbol_and_day(demo):
    _, summary = demo
    engine = create_engine(summary.database_url)
    with engine.connect() as conn:
        rows = pd.read_sql(select(predictions), conn)
    assert len(rows) == summary.predictions > 0
    # Four replayed days (2017-06-01..06) with five symbols trading each day.
    assert rows.groupby("prediction_date")["symbol"].nunique().tolist() == [5, 5, 5, 5]
    assert not rows.duplicated(["symbol", "prediction_date", "model_name", "model_version"]).any()
    # The regressors predict a close; the direction classifier (scored in shadow) a
    # probability of a rise, and no close.
    regressors = rows[rows["score_kind"] != "probability"]
    assert len(regressors) > 0 and (regressors["predicted_close"] > 0).all()
    classifier = rows[rows["score_kind"] == "probability"]
    assert set(classifier["model_name"]) == {"stock-direction"}
    assert classifier["score"].between(0, 1).all() and classifier["predicted_close"].isna().all()


def test_champion_alias_points_at_a_registered_version(demo):
    from mlflow import MlflowClient

    _, summary = demo
    client = MlflowClient(summary.mlflow_tracking_uri, summary.mlflow_tracking_uri)
    mv = client.get_model_version_by_alias("stock-close", "champion")
    assert str(mv.version) == summary.champion_version
    assert mv.tags["promotion"] == "promoted"
    assert float(mv.tags["holdout_mape"]) < summary.trainings[0]["baseline_mape"]
    run = client.get_run(mv.run_id)
    assert run.data.tags["dataset_version"] == mv.tags["dataset_version"]
    assert {"train_mape", "validation_mape", "holdout_mape", "baseline_holdout_mape"} <= set(
        run.data.metrics
    )


def test_monitoring_reports_are_html(demo):
    _, summary = demo
    assert summary.reports
    for uri in summary.reports:
        path = Path(uri.removeprefix("file://"))
        parser = _Tags()
        parser.feed(path.read_text(encoding="utf-8"))
        assert {"html", "body", "script"} <= parser.tags


def test_orders_follow_the_strategy_and_the_predictions(demo):
    _, summary = demo
    engine = create_engine(summary.database_url)
    threshold = summary.threshold
    with engine.connect() as conn:
        decisions = pd.read_sql(select(trade_decisions), conn)
        placed = pd.read_sql(select(orders), conn)
        runs = pd.read_sql(select(stage_runs), conn)
    assert set(runs["status"]) == {"succeeded"}
    assert len(placed) == sum(summary.orders.values()) > 0
    for _, order in placed.iterrows():
        decision = decisions[
            (decisions["decision_date"] == order["decision_date"])
            & (decisions["symbol"] == order["symbol"])
        ].iloc[0]
        assert decision["action"] == order["side"]
        day = decisions[decisions["decision_date"] == order["decision_date"]]
        if order["side"] == "buy":
            assert decision["expected_change"] >= threshold
            # the best not-held candidate that day
            others = day[(day["action"] == "hold") & day["expected_change"].notna()]
            not_held = others[~others["reason"].str.startswith("held")]
            assert (not_held["expected_change"] <= decision["expected_change"]).all()
        else:
            assert decision["expected_change"] < -threshold
    # Buy days bought exactly one symbol.
    assert (decisions[decisions["action"] == "buy"].groupby("decision_date").size() == 1).all()


def test_dashboard_shows_the_replay(demo):
    from mlops.context import open_context
    from mlops.dashboard.app import create_app, render_sections, section
    from mlops.settings import load_settings

    _, summary = demo
    ctx = open_context(load_settings(MLOPS_HOME=summary.home))
    client = create_app(ctx).server.test_client()
    assert client.get("/healthz").get_json() == {"status": "ok"}
    assert client.get("/").status_code == 200
    sections = render_sections(ctx, "mape")
    quality, window = section(sections, "quality-chart"), section(sections, "quality-window-chart")
    assert quality.layout.title.text.startswith("MAPE of each session")
    assert [t.name for t in quality.data][-1] == "naive forecast" and len(quality.data) >= 2
    assert window.layout.title.text.startswith("MAPE over the trailing 20-session window")
    models = client.get("/api/models").get_json()
    assert {m["name"] for m in models} == {m["model"] for m in summary.models}
    metrics = client.get("/api/metrics").get_json()
    assert [m["metric_date"] for m in metrics][-1] == summary.end
    day = summary.end
    report = client.get(f"/reports/{day}/drift.html")
    assert report.status_code == 200 and report.text.lstrip().lower().startswith("<!doctype html")
    assert b"SQLite format" not in client.get("/reports/2017-06-01/../../mlops.db").data
    assert client.get("/reports/1999-01-01/drift.html").status_code == 404


def test_the_summary_has_one_row_per_catalog_model(demo):
    _, summary = demo
    rows = {m["model"]: m for m in summary.models}
    assert list(rows) == ["stock-close", "stock-close-mlp", "stock-close-pooled", "stock-direction"]
    assert rows["stock-close"]["champion"] == summary.champion_version
    trained = {t["model"] for t in summary.trainings}
    assert trained == set(rows), "the demo trains every catalog model first"
    for name, row in rows.items():
        assert row["versions"] >= 1 and not row["paused"]
        if name == "stock-direction":  # its accuracy and AUC against the base rate's
            assert row["holdout_mape"] is None
            assert row["holdout_log_loss"] > 0 and row["naive_log_loss"] > 0
            assert 0 <= row["holdout_accuracy"] <= 1 and 0 <= row["holdout_auc"] <= 1
            # Scored in shadow over the replay: its live figures against the base rate's.
            assert row["champion"] is not None or row["challenger"] is not None
            assert 0 <= row["live_accuracy"] <= 1 and 0 <= row["live_auc"] <= 1
            assert 0 <= row["live_naive_accuracy"] <= 1
        else:
            assert row["holdout_mape"] is not None and row["naive_mape"] is not None


def test_the_backtest_table_trades_the_replays_forecasts_by_both_rules(demo):
    """Both rules side by side on the forecasts that fed trading: the threshold rule's
    backtest makes the replay's own trades, and each column is ``mlops backtest``'s
    simulation of those forecasts under its rule.
    """
    from dataclasses import replace

    from rich.console import Console

    from mlops.context import open_context
    from mlops.contracts import datasets
    from mlops.demo import print_summary
    from mlops.settings import load_settings
    from mlops.trading.backtest import compare, rules_from

    _, summary = demo
    backtest = summary.backtest
    assert list(backtest["rules"]) == ["threshold", "rotation"]
    assert backtest["sessions"] == summary.days and backtest["threshold"] == summary.threshold
    engine = create_engine(summary.database_url)
    with engine.connect() as conn:
        traded = pd.read_sql(
            select(predictions).where(
                predictions.c.model_name == "stock-close", predictions.c.role == "champion"
            ),
            conn,
        )
        placed = pd.read_sql(select(orders), conn)
    bars = traded.assign(date=pd.to_datetime(traded["prediction_date"]))
    settings = load_settings(MLOPS_HOME=summary.home, TRADE_THRESHOLD=summary.threshold)
    ctx = open_context(settings)
    _, frame = datasets.load(ctx.store, datasets.latest_version(ctx.engine))
    window = frame[frame["date"].isin(bars["date"].unique())].reset_index(drop=True)
    predicted = window.merge(bars[["date", "symbol", "predicted_close"]], how="left")
    for rule in ("threshold", "rotation"):
        comparison = compare(
            window, predicted["predicted_close"], replace(rules_from(settings), rule=rule)
        )
        assert backtest["rules"][rule] == pytest.approx(comparison.figures["model"]), rule
        if rule == "threshold":  # the replay's own trades (the last day's fill after it)
            fills = {(f.decided, f.symbol, f.side) for f in comparison.runs["model"].fills}
            last = date.fromisoformat(summary.end)
            live = placed[placed["decision_date"] < last]
            orders_ = zip(live["decision_date"], live["symbol"], live["side"], strict=True)
            assert fills == set(orders_)
    console = Console(record=True, width=240)
    print_summary(console, summary)
    text = console.export_text()
    assert "rule threshold" in text and "rule rotation" in text
