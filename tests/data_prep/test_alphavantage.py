"""The real Alpha Vantage client against a fake server on 127.0.0.1 (see conftest.py)."""

from __future__ import annotations

import json
import logging
from datetime import date

import numpy as np
import pandas as pd
import pytest

from mlops.contracts import datasets
from mlops.data_prep.alphavantage import bars_key, load_alphavantage, responses_prefix
from mlops.data_prep.sources import load_sample
from mlops.data_prep.stage import run
from mlops.errors import ConfigError, DataError
from mlops.store import get_parquet

from .conftest import (
    API_KEY,
    ERROR_MESSAGE,
    PREMIUM_INFORMATION,
    RATE_LIMIT_NOTE,
    RATE_LIMIT_PER_SECOND,
    Answer,
)

LAST = date(2017, 12, 29)


def _sample(symbol: str) -> pd.DataFrame:
    bars = load_sample()
    return bars[bars["symbol"] == symbol].sort_values("date").reset_index(drop=True)


def _responses(store, symbol: str) -> list[str]:
    return store.list(responses_prefix(symbol))


def test_full_fetch_parses_strings_stores_bars_and_archives_answers(
    make_ctx, av_env, alphavantage
) -> None:
    ctx = make_ctx(**av_env)
    bars = load_alphavantage(ctx.settings, ctx.store, until=LAST)

    for symbol in ("AAPL", "GOOGL"):
        got = bars[bars["symbol"] == symbol].sort_values("date").reset_index(drop=True)
        pd.testing.assert_frame_equal(got, _sample(symbol))  # "170.5200" -> 170.52
        assert got["volume"].dtype == "float64"
        stored = get_parquet(ctx.store, bars_key(symbol))
        pd.testing.assert_frame_equal(stored.reset_index(drop=True), _sample(symbol))
        (request,) = alphavantage.requests_for(symbol)
        assert request == {
            "function": "TIME_SERIES_DAILY",
            "symbol": symbol,
            "outputsize": "full",
            "datatype": "json",
            "apikey": API_KEY,
        }
        (archived,) = _responses(ctx.store, symbol)
        assert archived.endswith(".json")
        # Archived exactly as received, before parsing.
        assert ctx.store.get_bytes(archived) in alphavantage.bodies
        assert "Time Series (Daily)" in json.loads(ctx.store.get_bytes(archived))


def test_incremental_fetch_asks_compact_for_few_missing_days_then_nothing(
    make_ctx, av_env, alphavantage
) -> None:
    ctx = make_ctx(**(av_env | {"SYMBOLS": "AAPL"}))
    alphavantage.until = pd.Timestamp("2017-10-31")
    load_alphavantage(ctx.settings, ctx.store, until=date(2017, 10, 31))
    first = get_parquet(ctx.store, bars_key("AAPL"))
    assert first["date"].max() == pd.Timestamp("2017-10-31")

    # Two months later: about 43 trading days are missing, under 100 -> compact.
    alphavantage.until = pd.Timestamp("2017-12-29")
    bars = load_alphavantage(ctx.settings, ctx.store, until=LAST)
    sizes = [r["outputsize"] for r in alphavantage.requests_for("AAPL")]
    assert sizes == ["full", "compact"]
    pd.testing.assert_frame_equal(bars.reset_index(drop=True), _sample("AAPL"))
    pd.testing.assert_frame_equal(get_parquet(ctx.store, bars_key("AAPL")), _sample("AAPL"))

    # Up to date: no request at all, the stored bars are used.
    again = load_alphavantage(ctx.settings, ctx.store, until=LAST)
    assert len(alphavantage.requests_for("AAPL")) == 2
    pd.testing.assert_frame_equal(again.reset_index(drop=True), _sample("AAPL"))
    assert len(_responses(ctx.store, "AAPL")) == 2


def test_incremental_fetch_asks_full_when_100_or_more_days_are_missing(
    make_ctx, av_env, alphavantage
) -> None:
    ctx = make_ctx(**(av_env | {"SYMBOLS": "AAPL"}))
    alphavantage.until = pd.Timestamp("2017-03-31")
    load_alphavantage(ctx.settings, ctx.store, until=date(2017, 3, 31))
    alphavantage.until = None
    bars = load_alphavantage(ctx.settings, ctx.store, until=LAST)
    assert [r["outputsize"] for r in alphavantage.requests_for("AAPL")] == ["full", "full"]
    pd.testing.assert_frame_equal(bars.reset_index(drop=True), _sample("AAPL"))


def test_unknown_symbol_is_reported_and_skipped_without_failing_the_others(
    make_ctx, av_env, alphavantage, caplog
) -> None:
    ctx = make_ctx(**(av_env | {"SYMBOLS": "AAPL,NOSUCH,GOOGL"}))
    with caplog.at_level(logging.WARNING):
        bars = load_alphavantage(ctx.settings, ctx.store, until=LAST)
    assert sorted(bars["symbol"].unique()) == ["AAPL", "GOOGL"]
    assert len(alphavantage.requests_for("NOSUCH")) == 1  # not retried
    assert any("NOSUCH" in r.getMessage() and "skipped" in r.getMessage() for r in caplog.records)
    assert not ctx.store.exists(bars_key("NOSUCH"))
    (archived,) = _responses(ctx.store, "NOSUCH")
    assert json.loads(ctx.store.get_bytes(archived)) == ERROR_MESSAGE


@pytest.mark.parametrize(
    "notice", [RATE_LIMIT_PER_SECOND, RATE_LIMIT_NOTE], ids=["per-second", "per-minute"]
)
def test_rate_limit_is_retried_with_backoff(make_ctx, av_env, alphavantage, notice) -> None:
    ctx = make_ctx(**(av_env | {"SYMBOLS": "AAPL"}))
    alphavantage.script("AAPL", Answer("json", notice), Answer("json", notice))
    bars = load_alphavantage(ctx.settings, ctx.store, until=LAST)
    assert len(alphavantage.requests_for("AAPL")) == 3
    pd.testing.assert_frame_equal(bars.reset_index(drop=True), _sample("AAPL"))
    # Every answer was archived, the refusals too.
    archived = _responses(ctx.store, "AAPL")
    assert len(archived) == 3
    assert sum(json.loads(ctx.store.get_bytes(k)) == notice for k in archived) == 2


@pytest.mark.parametrize(
    "notice", [RATE_LIMIT_PER_SECOND, RATE_LIMIT_NOTE], ids=["per-second", "per-minute"]
)
def test_persistent_rate_limit_fails_that_symbol_clearly(
    make_ctx, av_env, alphavantage, notice
) -> None:
    ctx = make_ctx(**(av_env | {"SYMBOLS": "AAPL,GOOGL"}))
    alphavantage.script("AAPL", *[Answer("json", notice)] * 5)
    with pytest.raises(DataError) as caught:
        load_alphavantage(ctx.settings, ctx.store, until=LAST)
    message = str(caught.value)
    assert "Alpha Vantage failed for 1 of 2 symbols" in message
    assert "AAPL still failed after 3 attempts" in message
    assert "rate limit notice" in message
    assert "nothing was published" in message
    assert "\n" not in message
    assert len(alphavantage.requests_for("AAPL")) == 3  # bounded
    # The other symbol was still fetched and stored for the next run.
    assert ctx.store.exists(bars_key("GOOGL"))
    assert not ctx.store.exists(bars_key("AAPL"))


def test_premium_only_answer_is_not_retried_and_named(make_ctx, av_env, alphavantage) -> None:
    ctx = make_ctx(**(av_env | {"SYMBOLS": "AAPL,GOOGL"}))
    # The full history is premium; so is the compact answer asked instead.
    alphavantage.script("AAPL", *[Answer("json", PREMIUM_INFORMATION)] * 5)
    with pytest.raises(DataError) as caught:
        load_alphavantage(ctx.settings, ctx.store, until=LAST)
    message = str(caught.value)
    assert "AAPL only on a premium plan" in message and "rate limit" not in message
    assert [r["outputsize"] for r in alphavantage.requests_for("AAPL")] == ["full", "compact"]
    assert ctx.store.exists(bars_key("GOOGL"))


def test_premium_full_history_falls_back_to_the_latest_100_bars(
    make_ctx, av_env, alphavantage, caplog
) -> None:
    ctx = make_ctx(**(av_env | {"SYMBOLS": "AAPL"}))
    premium_full = {
        "Information": "Thank you for using Alpha Vantage! The **outputsize=full** parameter "
        "value is a premium feature for the TIME_SERIES_DAILY endpoint. You may subscribe to "
        "any of the premium plans at https://www.alphavantage.co/premium/ to instantly unlock "
        "all premium features"
    }
    alphavantage.script("AAPL", Answer("json", premium_full))
    with caplog.at_level(logging.WARNING):
        bars = load_alphavantage(ctx.settings, ctx.store, until=LAST)
    assert [r["outputsize"] for r in alphavantage.requests_for("AAPL")] == ["full", "compact"]
    assert len(bars) == 100
    assert any("latest 100 bars" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "answer",
    [
        {
            "Error Message": "the parameter apikey is invalid or missing. Please claim your "
            "free API key on (https://www.alphavantage.co/support/#api-key). It should take "
            "less than 20 seconds."
        },
        {
            "Information": "The **demo** API key is for demo purposes only. Please claim your "
            "free API key at (https://www.alphavantage.co/support/#api-key) to explore our "
            "full API offerings. It takes fewer than 20 seconds."
        },
    ],
    ids=["invalid", "demo"],
)
def test_refused_api_key_stops_the_run_and_publishes_nothing(
    make_ctx, av_env, alphavantage, answer
) -> None:
    ctx = make_ctx(**(av_env | {"SYMBOLS": "AAPL,GOOGL,MSFT"}))
    for symbol in ("AAPL", "GOOGL", "MSFT"):
        alphavantage.script(symbol, *[Answer("json", answer)] * 3)
    with pytest.raises(ConfigError) as caught:
        run(ctx, as_of=LAST)
    message = str(caught.value)
    assert "Alpha Vantage refused ALPHAVANTAGE_API_KEY" in message
    assert "nothing was published" in message and API_KEY not in message
    assert len(alphavantage.requests) == 1  # the first refusal stops the run, no retry
    assert ctx.store.list("datasets/") == []


def test_unknown_symbol_keeps_its_stored_history(make_ctx, av_env, alphavantage, caplog) -> None:
    ctx = make_ctx(**(av_env | {"SYMBOLS": "AAPL,GOOGL"}))
    alphavantage.until = pd.Timestamp("2017-10-31")
    load_alphavantage(ctx.settings, ctx.store, until=date(2017, 10, 31))
    alphavantage.until = None
    # Later the API stops knowing GOOGL (renamed, delisted, a bad day): its history stays.
    alphavantage.script("GOOGL", Answer("json", ERROR_MESSAGE))
    with caplog.at_level(logging.WARNING):
        result = run(ctx, as_of=LAST)
    assert result.symbols == ["AAPL", "GOOGL"]
    assert result.stale_symbols == ["GOOGL"]
    assert any("stored bars" in r.getMessage() for r in caplog.records)
    assert get_parquet(ctx.store, bars_key("GOOGL"))["date"].max() == pd.Timestamp("2017-10-31")


@pytest.mark.parametrize(
    "body",
    [
        {"Meta Data": {"2. Symbol": "AAPL"}},
        {},
        {"Time Series (Daily)": "oops"},
        [1, 2, 3],
    ],
    ids=["meta-only", "empty-object", "series-not-object", "not-an-object"],
)
def test_answer_without_time_series_is_a_failure(make_ctx, av_env, alphavantage, body) -> None:
    ctx = make_ctx(**(av_env | {"SYMBOLS": "AAPL"}))
    alphavantage.script("AAPL", Answer("json", body))
    with pytest.raises(DataError, match="AAPL"):
        load_alphavantage(ctx.settings, ctx.store, until=LAST)
    assert len(alphavantage.requests_for("AAPL")) == 1  # a malformed answer is not retried
    assert len(_responses(ctx.store, "AAPL")) == 1


def test_slow_answer_times_out_and_is_retried(make_ctx, av_env, alphavantage) -> None:
    ctx = make_ctx(**(av_env | {"SYMBOLS": "AAPL", "ALPHAVANTAGE_TIMEOUT_SECONDS": 1.0}))
    alphavantage.script("AAPL", Answer("slow", seconds=3.0))
    bars = load_alphavantage(ctx.settings, ctx.store, until=LAST)
    assert len(alphavantage.requests_for("AAPL")) == 2
    pd.testing.assert_frame_equal(bars.reset_index(drop=True), _sample("AAPL"))


def test_always_slow_answer_fails_clearly(make_ctx, av_env, alphavantage) -> None:
    ctx = make_ctx(**(av_env | {"SYMBOLS": "AAPL", "ALPHAVANTAGE_TIMEOUT_SECONDS": 0.2}))
    alphavantage.script("AAPL", *[Answer("slow", seconds=1.0)] * 3)
    expected = r"AAPL still failed after 3 attempts: no answer within 0\.2 s"
    with pytest.raises(DataError, match=expected):
        load_alphavantage(ctx.settings, ctx.store, until=LAST)
    assert len(alphavantage.requests_for("AAPL")) == 3


def test_dropped_connection_is_retried(make_ctx, av_env, alphavantage) -> None:
    ctx = make_ctx(**(av_env | {"SYMBOLS": "AAPL"}))
    alphavantage.script("AAPL", Answer("drop"), Answer("drop"))
    bars = load_alphavantage(ctx.settings, ctx.store, until=LAST)
    assert len(alphavantage.requests_for("AAPL")) == 3
    pd.testing.assert_frame_equal(bars.reset_index(drop=True), _sample("AAPL"))


def test_always_dropped_connection_fails_clearly_without_leaking_the_key(
    make_ctx, av_env, alphavantage, caplog
) -> None:
    ctx = make_ctx(**(av_env | {"SYMBOLS": "AAPL"}))
    alphavantage.script("AAPL", *[Answer("drop")] * 3)
    with caplog.at_level(logging.DEBUG), pytest.raises(DataError) as caught:
        load_alphavantage(ctx.settings, ctx.store, until=LAST)
    assert "AAPL still failed after 3 attempts: the connection failed" in str(caught.value)
    assert API_KEY not in str(caught.value)
    assert all(API_KEY not in r.getMessage() for r in caplog.records)


def test_server_errors_are_retried(make_ctx, av_env, alphavantage) -> None:
    ctx = make_ctx(**(av_env | {"SYMBOLS": "AAPL"}))
    alphavantage.script("AAPL", Answer("json", "<html>Bad gateway</html>", status=502))
    bars = load_alphavantage(ctx.settings, ctx.store, until=LAST)
    assert len(bars) == len(_sample("AAPL"))
    archived = _responses(ctx.store, "AAPL")
    assert any(k.endswith("-http502.txt") for k in archived)


def test_values_that_are_not_numbers_are_quarantined_never_zero(
    make_ctx, av_env, alphavantage
) -> None:
    payload = alphavantage.data_for("AAPL", "full")
    day = "2017-06-01"
    payload["Time Series (Daily)"][day]["4. close"] = "n/a"
    alphavantage.script("AAPL", Answer("json", payload))
    ctx = make_ctx(**(av_env | {"SYMBOLS": "AAPL"}))
    result = run(ctx, as_of=LAST)
    manifest, frame = datasets.load(ctx.store, result.version)
    assert pd.Timestamp(day) not in set(frame["date"])
    assert (frame["close"] > 0).all()
    quarantine = get_parquet(ctx.store, manifest.quarantine_key)
    assert list(quarantine["date"]) == [pd.Timestamp(day)]
    assert np.isnan(quarantine["close"].iloc[0])
    assert "a price is missing" in quarantine["reason"].iloc[0]


def test_stage_on_alphavantage_gives_the_same_features_as_the_sample(
    make_ctx, av_env, alphavantage, tmp_path
) -> None:
    ctx = make_ctx(**av_env)
    result = run(ctx, as_of=LAST)
    _, frame = datasets.load(ctx.store, result.version)
    assert result.symbols == ["AAPL", "GOOGL"]
    reference = make_ctx(home=tmp_path / "sample", SYMBOLS="AAPL,GOOGL")
    expected = datasets.load(reference.store, run(reference, as_of=LAST).version)[1]
    pd.testing.assert_frame_equal(frame, expected)
    # A second run the same day asks nothing and publishes the same version.
    again = run(ctx, as_of=LAST)
    assert (again.version, again.new) == (result.version, False)
    assert len(alphavantage.requests) == 2


def test_alphavantage_needs_symbols(make_settings, tmp_path) -> None:
    with pytest.raises(ConfigError, match="SYMBOLS must list at least one symbol"):
        make_settings(tmp_path, DATA_SOURCE="alphavantage", ALPHAVANTAGE_API_KEY="k")
