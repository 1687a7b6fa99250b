"""The Alpha Vantage fetch budget, against the fake server (see conftest.py): a rerun the
same day makes no request, a delisted symbol is asked at most weekly, a per-day limit
notice stops fetching at once, and the result counts the requests."""

from __future__ import annotations

import logging

import pandas as pd

from mlops.contracts import keys
from mlops.data_prep.stage import run
from mlops.store import get_json

from .conftest import RATE_LIMIT_INFORMATION, Answer


def test_a_rerun_the_same_day_makes_no_request(make_ctx, av_env, alphavantage) -> None:
    """Tuesday morning: Alpha Vantage's newest bar is Friday's; asked once, not again."""
    ctx = make_ctx(**(av_env | {"SYMBOLS": "AAPL,GOOGL"}))
    alphavantage.today = pd.Timestamp("2018-01-02")
    first = run(ctx)
    assert first.requests == 2 and len(alphavantage.requests) == 2
    assert get_json(ctx.store, keys.raw_fetch_log_key("AAPL")) == {
        "day": "2018-01-02",
        "outcome": "bars",
        "last_bar": "2017-12-29",
    }
    again = run(ctx)
    assert again.requests == 0 and len(alphavantage.requests) == 2
    assert (again.version, again.new) == (first.version, False)


def test_a_delisted_symbol_is_asked_at_most_once_a_week(make_ctx, av_env, alphavantage) -> None:
    """YHOO's last bar is 2017-06-16: stale from its first fetch on, asked again a week later."""
    ctx = make_ctx(**(av_env | {"SYMBOLS": "AAPL,YHOO"}))
    asked = {}
    for day in ["2017-12-29", "2018-01-02", "2018-01-04", "2018-01-05"]:
        alphavantage.today = pd.Timestamp(day)
        result = run(ctx)
        asked[day] = (result.requests, len(alphavantage.requests_for("YHOO")))
        assert result.stale_symbols == ["YHOO"]  # its history stays in the dataset
        assert result.version is not None and "YHOO" in result.symbols
    # AAPL is asked every day; YHOO on its first day and a week later, with compact.
    assert asked == {
        "2017-12-29": (2, 1),
        "2018-01-02": (1, 1),
        "2018-01-04": (1, 1),
        "2018-01-05": (2, 2),
    }
    sizes = [r["outputsize"] for r in alphavantage.requests_for("YHOO")]
    assert sizes == ["full", "compact"]


def test_a_daily_limit_notice_stops_fetching_at_once(
    make_ctx, av_env, alphavantage, caplog
) -> None:
    ctx = make_ctx(**(av_env | {"SYMBOLS": "AAPL,GOOGL,TSLA,COKE"}))
    alphavantage.until = pd.Timestamp("2017-10-31")  # an earlier day stored all but COKE
    ctx_first = make_ctx(**(av_env | {"SYMBOLS": "AAPL,GOOGL,TSLA"}))
    assert run(ctx_first).requests == 3

    alphavantage.until = pd.Timestamp("2017-12-29")
    alphavantage.script("GOOGL", *[Answer("json", RATE_LIMIT_INFORMATION)] * 3)
    with caplog.at_level(logging.WARNING):
        result = run(ctx)
    # AAPL fetched, GOOGL refused once (not retried), TSLA and COKE not asked at all.
    assert [r["symbol"] for r in alphavantage.requests[3:]] == ["AAPL", "GOOGL"]
    assert result.requests == 2
    # What was fetched is published; the others keep their stored bars (stale now), or
    # are skipped when they have none.
    assert result.symbols == ["AAPL", "GOOGL", "TSLA"]
    assert result.stale_symbols == ["GOOGL", "TSLA"]
    assert result.skipped_symbols == {"COKE": "not fetched: Alpha Vantage's daily request limit"}
    (sentence,) = [r.getMessage() for r in caplog.records if "fetching stopped" in r.getMessage()]
    assert sentence.startswith("Alpha Vantage's daily request limit is reached: Thank you")
    assert "fetching stopped after 2 requests: 3 symbols were not fetched (GOOGL, TSLA, COKE)" in (
        sentence
    )
    assert get_json(ctx.store, keys.raw_fetch_log_key("GOOGL"))["outcome"] == "daily limit"
