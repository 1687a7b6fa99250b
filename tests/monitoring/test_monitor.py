"""``mlops monitor`` on a week of shadow scoring: figures per model, version and symbol,
live paired tests, each session's IC and Rank IC, the calibrated drift alarm and the day's
trigger flags; the direction classifier scored beside the regressors gets a classifier's
figures against its base rate.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import date

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sqlalchemy import select

from inference.shadow import OTHER_MODEL, shadow_home
from inference.trained_model import CLASSIFIER, Trained
from mlops.contracts import datasets, keys
from mlops.contracts.columns import DRIFT_FEATURES
from mlops.contracts.predictions import realized
from mlops.db.schema import monitoring_metrics, predictions, retrain_requests
from mlops.metrics import diebold_mariano
from mlops.monitoring import drift
from mlops.store import get_json, put_json

DAYS = [date(2017, 6, d) for d in (1, 2, 5, 6, 7, 8, 9)]
MONITOR_DAY = date(2017, 6, 12)
FIGURES = {
    "mae",
    "rmse",
    "mape",
    "wmape",
    "directional_accuracy",
    "naive_mae",
    "naive_rmse",
    "naive_mape",
    "naive_wmape",
    "n",
}
pytestmark = pytest.mark.slow


def _metrics(ctx) -> pd.DataFrame:
    with ctx.engine.connect() as conn:
        return pd.read_sql(select(monitoring_metrics), conn)


def _value(
    metrics: pd.DataFrame,
    name: str,
    version: str,
    metric: str,
    symbol: str = "ALL",
    session: pd.Timestamp | None = None,
):
    """The window's figure, or with ``session`` that session's own (window_days 1)."""
    kind = (
        (metrics.window_days == 1) & (pd.to_datetime(metrics.metric_date) == session)
        if session is not None
        else metrics.window_days != 1
    )
    hit = metrics[
        (metrics.model_name == name)
        & (metrics.model_version == version)
        & (metrics.symbol == symbol)
        & (metrics.metric == metric)
        & kind
    ]
    return None if hit.empty else hit["value"].item()


@pytest.fixture(scope="module")
def week(trained: Trained, tmp_path_factory):
    """A home where every version was scored each day of a week, then monitored."""
    from mlops.inference import stage as batch_infer
    from mlops.monitoring import stage as monitor

    home = shadow_home(trained, tmp_path_factory.mktemp("week"), classifier=True)
    for day in DAYS:
        home.prepare(day)
        batch_infer.run(home.ctx, as_of=day)
    home.prepare(MONITOR_DAY)
    result = monitor.run(home.ctx, as_of=MONITOR_DAY)
    yield home, result
    home.close()


def test_every_version_gets_its_figures_per_symbol_and_overall(week):
    home, result = week
    ctx, v1, v2 = home.ctx, home.champion, home.challenger
    metrics = _metrics(ctx)
    versions = {("stock-close", v1), ("stock-close", v2), (OTHER_MODEL, "1")}
    for name, version in versions:
        for symbol in ["ALL", "AAPL", "COKE", "GOOGL", "TSLA", "YHOO"]:
            got = set(
                metrics[
                    (metrics.model_name == name)
                    & (metrics.model_version == version)
                    & (metrics.symbol == symbol)
                ]["metric"]
            )
            assert got >= FIGURES, (name, version, symbol)
    # Checked against the stored predictions and the closes that came true.
    with ctx.engine.connect() as conn:
        preds = pd.read_sql(select(predictions), conn)
    _, bars = datasets.load(ctx.store, datasets.latest_version(ctx.engine, MONITOR_DAY))
    joined = realized(preds, bars)
    mine = joined[(joined.model_name == "stock-close") & (joined.model_version == v2)]
    error = (mine.predicted_close - mine.actual_close).abs()
    assert _value(metrics, "stock-close", v2, "n") == len(mine) == 5 * len(DAYS)
    assert _value(metrics, "stock-close", v2, "mae") == pytest.approx(error.mean())
    assert _value(metrics, "stock-close", v2, "wmape") == pytest.approx(
        error.sum() / mine.actual_close.sum()
    )
    up = np.sign(mine.predicted_close - mine.last_close) == np.sign(
        mine.actual_close - mine.last_close
    )
    assert _value(metrics, "stock-close", v2, "directional_accuracy") == pytest.approx(up.mean())
    naive = (mine.last_close - mine.actual_close).abs()
    assert _value(metrics, "stock-close", v2, "naive_mae") == pytest.approx(naive.mean())
    # Each session also has its own figures, on its own rows.
    for session, day in mine.groupby("target_date"):
        ape = ((day.predicted_close - day.actual_close).abs() / day.actual_close).mean()
        assert _value(metrics, "stock-close", v2, "mape", session=session) == pytest.approx(ape)
        assert _value(metrics, "stock-close", v2, "n", session=session) == len(day)
    # The other name carries the champion's artifacts: the same figures, its own rows.
    assert _value(metrics, OTHER_MODEL, "1", "mape") == pytest.approx(
        _value(metrics, "stock-close", v1, "mape")
    )
    assert {(v.model_name, v.model_version, v.role) for v in result.versions} == {
        ("stock-close", v1, "champion"),
        ("stock-close", v2, "challenger"),
        (OTHER_MODEL, "1", "champion"),
        (CLASSIFIER, "1", "champion"),
    }
    # The retrain rule reads the trading champion's figures alone.
    assert result.model_version == v1 and result.evaluated == 5 * len(DAYS)
    assert result.metrics["mape"] == pytest.approx(_value(metrics, "stock-close", v1, "mape"))


def test_live_paired_tests_against_naive_and_the_champion(week):
    home, _ = week
    ctx, v1, v2 = home.ctx, home.champion, home.challenger
    metrics = _metrics(ctx)
    with ctx.engine.connect() as conn:
        preds = pd.read_sql(select(predictions), conn)
    _, bars = datasets.load(ctx.store, datasets.latest_version(ctx.engine, MONITOR_DAY))
    joined = realized(preds, bars)
    joined["ape"] = (joined.predicted_close - joined.actual_close).abs() / joined.actual_close
    joined["naive_ape"] = (joined.last_close - joined.actual_close).abs() / joined.actual_close
    trading = joined[joined.model_name == "stock-close"]
    daily = trading.pivot_table(index="prediction_date", columns="model_version", values="ape")
    naive = trading[trading.model_version == v2].groupby("prediction_date")["naive_ape"].mean()
    expected_champion = diebold_mariano(daily[v2].to_numpy(), daily[v1].to_numpy()).p_value
    expected_naive = diebold_mariano(daily[v2].to_numpy(), naive.to_numpy()).p_value
    assert _value(metrics, "stock-close", v2, "dm_p_champion") == pytest.approx(expected_champion)
    assert _value(metrics, "stock-close", v2, "dm_p_naive") == pytest.approx(expected_naive)
    # Champions are not tested against themselves; every version against naive.
    assert _value(metrics, "stock-close", v1, "dm_p_champion") is None
    assert _value(metrics, OTHER_MODEL, "1", "dm_p_champion") is None
    assert _value(metrics, "stock-close", v1, "dm_p_naive") is not None
    assert _value(metrics, OTHER_MODEL, "1", "dm_p_naive") is not None


def test_each_session_gets_its_ic_and_rank_ic_as_scipy_computes_them(week):
    home, result = week
    ctx = home.ctx
    metrics = _metrics(ctx)
    rows = metrics[metrics.metric.isin(["ic", "rank_ic"])]
    assert set(rows.symbol) == {"ALL"} and set(rows.window_days) == {1}
    assert rows["value"].notna().all()
    with ctx.engine.connect() as conn:
        preds = pd.read_sql(select(predictions), conn)
    _, bars = datasets.load(ctx.store, datasets.latest_version(ctx.engine, MONITOR_DAY))
    joined = realized(preds, bars)
    joined["p"] = joined.predicted_close / joined.last_close - 1.0
    classifier = joined.score_kind == "probability"  # ranks by its probability of a rise
    joined.loc[classifier, "p"] = joined.loc[classifier, "score"]
    joined["r"] = joined.actual_close / joined.last_close - 1.0
    versions = {(v.model_name, v.model_version): v for v in result.versions}
    for (name, version), scored in joined.groupby(["model_name", "model_version"]):
        expected = {}
        for session, day in scored.groupby("target_date"):
            assert len(day) == 5  # every symbol, once: a cross-section
            expected[(session.date(), "ic")] = stats.pearsonr(day.p, day.r)[0]
            expected[(session.date(), "rank_ic")] = stats.spearmanr(day.p, day.r)[0]
        mine = rows[(rows.model_name == name) & (rows.model_version == version)]
        got = {(r.metric_date, r.metric): r.value for r in mine.itertuples()}
        # One row per session the predictions came true on: the day after each of DAYS.
        assert sorted({day for day, _ in got}) == [*DAYS[1:], MONITOR_DAY]
        assert got == pytest.approx(expected, abs=1e-12), (name, version)
        # The result: the latest session's IC and the mean over the window's sessions.
        figures = versions[(name, version)]
        assert figures.ic_date == MONITOR_DAY and figures.ic_sessions == len(DAYS)
        assert figures.ic == pytest.approx(expected[(MONITOR_DAY, "ic")], abs=1e-12)
        assert figures.rank_ic == pytest.approx(expected[(MONITOR_DAY, "rank_ic")], abs=1e-12)
        daily = [v for (_, metric), v in expected.items() if metric == "ic"]
        assert figures.ic_mean == pytest.approx(np.mean(daily), abs=1e-12)
    summary = get_json(ctx.store, f"{keys.monitoring_reports_prefix(MONITOR_DAY)}/summary.json")
    assert {(v["model_name"], v["ic_date"]) for v in summary["versions"]} == {
        ("stock-close", "2017-06-12"),
        (OTHER_MODEL, "2017-06-12"),
        (CLASSIFIER, "2017-06-12"),
    }
    assert all(isinstance(v["rank_ic_mean"], float) for v in summary["versions"])


def test_drift_is_recorded_with_its_calibrated_threshold_and_the_triggers(week):
    home, result = week
    ctx, v1 = home.ctx, home.champion
    metrics = _metrics(ctx)
    champion_rows = metrics[
        (metrics.model_name == "stock-close")
        & (metrics.model_version == v1)
        & (metrics.symbol == "ALL")
        & (metrics.metric_date == MONITOR_DAY)
    ].set_index("metric")["value"]
    assert {f"drift_p:{c}" for c in DRIFT_FEATURES} <= set(champion_rows.index)
    assert result.drift_p_values == pytest.approx(
        {c: champion_rows[f"drift_p:{c}"] for c in DRIFT_FEATURES}
    )
    share = sum(p <= 0.05 for p in result.drift_p_values.values()) / len(DRIFT_FEATURES)
    assert champion_rows["drift_share"] == result.drift_share == pytest.approx(share)
    # The threshold comes from the cached calibration of this champion version.
    cached = get_json(ctx.store, keys.drift_calibration_key("stock-close", v1))
    assert cached["window_days"] == ctx.settings.monitor_window_days
    assert len(cached["shares"]) >= drift.MIN_CALIBRATION_WINDOWS
    assert result.drift_threshold_source == "calibrated"
    assert (
        champion_rows["drift_threshold"]
        == result.drift_threshold
        == drift.quantile_threshold(cached["shares"], ctx.settings.monitor_drift_false_alarm_rate)
    )
    flags = {k: champion_rows[k] for k in ("trigger_mape", "trigger_naive_ratio", "trigger_drift")}
    assert set(flags.values()) <= {0.0, 1.0}
    assert flags["trigger_drift"] == float(result.drift_share > result.drift_threshold)
    assert result.retrain == any(flags.values())


def test_the_cached_calibration_decides_the_alarm(week):
    """Planted in the store, a calibration that says any drift is rare raises the alarm."""
    from mlops.monitoring import stage as monitor

    home, first = week
    ctx, v1 = home.ctx, home.champion
    assert first.drift_share and first.drift_share > 0
    key = keys.drift_calibration_key("stock-close", v1)
    planted = drift.Calibration(
        "stock-close", v1, ctx.settings.monitor_window_days, list(DRIFT_FEATURES), [0.0] * 20
    )
    put_json(ctx.store, key, asdict(planted))
    again = monitor.run(ctx, as_of=MONITOR_DAY)
    assert again.drift_threshold == 0.0 and again.triggers["trigger_drift"]
    assert any("calibrated threshold" in r for r in again.reasons)
    with ctx.engine.connect() as conn:
        (request,) = conn.execute(select(retrain_requests)).mappings().all()
    assert request["requested_date"] == MONITOR_DAY and "drift share" in request["reason"]


def test_the_classifier_gets_accuracy_auc_brier_and_log_loss_against_its_base_rate(week):
    home, result = week
    ctx = home.ctx
    metrics = _metrics(ctx)
    with ctx.engine.connect() as conn:
        preds = pd.read_sql(select(predictions).where(predictions.c.model_name == CLASSIFIER), conn)
    assert set(preds.score_kind) == {"probability"} and preds.predicted_close.isna().all()
    _, bars = datasets.load(ctx.store, datasets.latest_version(ctx.engine, MONITOR_DAY))
    mine = realized(preds, bars)
    y = (mine.actual_close > mine.last_close).to_numpy(dtype=float)
    p = mine.score.to_numpy()
    rate = float(ctx.mlflow.get_model_version(CLASSIFIER, "1").tags["train_up_rate"])
    assert 0.3 < rate < 0.7

    def log_loss(q):
        return float(np.mean(-(y * np.log(q) + (1 - y) * np.log(1 - q))))

    auc = stats.mannwhitneyu(p[y == 1], p[y == 0]).statistic / ((y == 1).sum() * (y == 0).sum())
    expected = {
        "n": 5 * len(DAYS),
        "log_loss": log_loss(p),
        "brier": float(np.mean((p - y) ** 2)),
        "accuracy": float(np.mean((p >= 0.5) == (y == 1))),
        "auc": auc,
        "up_rate": y.mean(),
        "naive_log_loss": log_loss(np.full_like(p, rate)),
        "naive_brier": float(np.mean((rate - y) ** 2)),
        "naive_accuracy": float(np.mean((rate >= 0.5) == (y == 1))),
    }
    for metric, value in expected.items():
        assert _value(metrics, CLASSIFIER, "1", metric) == pytest.approx(value, abs=1e-12), metric
    assert _value(metrics, CLASSIFIER, "1", "mape") is None  # no regression figure
    per_symbol = metrics[(metrics.model_name == CLASSIFIER) & (metrics.symbol == "TSLA")]
    assert {"accuracy", "log_loss", "brier", "naive_log_loss"} <= set(per_symbol.metric)
    # The paired test on the days' mean log loss against the base rate.
    daily = (
        pd.DataFrame(
            {
                "day": mine.prediction_date,
                "model": -(y * np.log(p) + (1 - y) * np.log(1 - p)),
                "naive": -(y * np.log(rate) + (1 - y) * np.log(1 - rate)),
            }
        )
        .groupby("day")[["model", "naive"]]
        .mean()
    )
    expected_p = diebold_mariano(daily["model"].to_numpy(), daily["naive"].to_numpy()).p_value
    assert _value(metrics, CLASSIFIER, "1", "dm_p_naive") == pytest.approx(expected_p)
    (figures,) = [v for v in result.versions if v.model_name == CLASSIFIER]
    assert figures.mape is None and figures.log_loss == pytest.approx(expected["log_loss"])
    assert figures.auc == pytest.approx(auc) and figures.naive_log_loss is not None


def _ece(y: np.ndarray, p: np.ndarray) -> float:
    """The expected calibration error from scikit-learn's reliability curve (10 bins of
    equal width, right-closed) and its counts per bin."""
    from sklearn.calibration import calibration_curve

    observed, mean = calibration_curve(y, p, n_bins=10, strategy="uniform")
    counts = np.bincount(np.searchsorted(np.linspace(0, 1, 11)[1:-1], p), minlength=10)
    counts = counts[counts > 0]
    return float(np.sum(counts * np.abs(observed - mean)) / len(p))


def test_the_classifier_champion_gets_its_calibration_per_day_and_window_and_a_report(week):
    """The expected calibration error as scikit-learn's reliability curve gives it, stored
    for the window, each session and each symbol; the champion's evidently report holds
    the classification preset and the reliability curve with the same error.
    """
    from pathlib import Path

    home, result = week
    ctx = home.ctx
    metrics = _metrics(ctx)
    with ctx.engine.connect() as conn:
        preds = pd.read_sql(select(predictions).where(predictions.c.model_name == CLASSIFIER), conn)
    _, bars = datasets.load(ctx.store, datasets.latest_version(ctx.engine, MONITOR_DAY))
    mine = realized(preds, bars)
    y = (mine.actual_close > mine.last_close).to_numpy(dtype=float)
    p = mine.score.to_numpy()
    window = _ece(y, p)
    assert 0 < window < 1
    assert _value(metrics, CLASSIFIER, "1", "ece") == pytest.approx(window, abs=1e-12)
    rate = float(ctx.mlflow.get_model_version(CLASSIFIER, "1").tags["train_up_rate"])
    assert _value(metrics, CLASSIFIER, "1", "naive_ece") == pytest.approx(abs(y.mean() - rate))
    for session, day in mine.groupby("target_date"):
        rose = (day.actual_close > day.last_close).to_numpy(dtype=float)
        expected = _ece(rose, day.score.to_numpy())
        assert _value(metrics, CLASSIFIER, "1", "ece", session=session) == pytest.approx(expected)
    tsla = mine[mine.symbol == "TSLA"]
    expected = _ece((tsla.actual_close > tsla.last_close).to_numpy(dtype=float), tsla.score)
    assert _value(metrics, CLASSIFIER, "1", "ece", "TSLA") == pytest.approx(expected)
    (figures,) = [v for v in result.versions if v.model_name == CLASSIFIER]
    assert figures.ece == pytest.approx(window)
    # The report: evidently's classification preset, the reliability curve and the ECE.
    uri = result.reports[f"classification-{CLASSIFIER}"]
    page = Path(uri.removeprefix("file://")).read_text(encoding="utf-8")
    for shown in ("Reliability curve", "Expected calibration error", "LogLoss", "ROC Curve"):
        assert shown in page, shown
    assert f"{window:.4f}" in page
    # Regressor champions get none; the trading champion keeps its quality report.
    assert {k for k in result.reports if k.startswith("classification-")} == {
        f"classification-{CLASSIFIER}"
    }
    assert "quality" in result.reports
