"""The quality gate: quarantine with reasons, refusal of a bad batch, gaps, jumps, stale."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import talib
from sqlalchemy import select

from mlops.contracts import datasets
from mlops.data_prep.quality import QualityGate, row_reasons, series_breaks, stale_symbols
from mlops.data_prep.sources import load_sample
from mlops.data_prep.stage import run
from mlops.db.schema import datasets as datasets_table
from mlops.errors import DataError
from mlops.store import get_parquet
from mlops.symbols import NOT_A_SYMBOL, SYMBOL_MAX_LENGTH

LAST = date(2017, 12, 29)


def _bars(**overrides: list) -> pd.DataFrame:
    base = {
        "date": pd.to_datetime(["2017-01-03", "2017-01-04", "2017-01-05"]),
        "symbol": pd.array(["AAA", "AAA", "AAA"], dtype="string"),
        "open": [10.0, 10.0, 10.0],
        "high": [11.0, 11.0, 11.0],
        "low": [9.0, 9.0, 9.0],
        "close": [10.5, 10.5, 10.5],
        "volume": [100.0, 100.0, 100.0],
    }
    base.update(overrides)
    return pd.DataFrame(base)


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("date", pd.NaT, "date does not parse"),
        ("symbol", pd.NA, "symbol is empty"),
        ("symbol", "../../EVIL", NOT_A_SYMBOL),
        ("symbol", "Q'\"X; DROP TABLE DATASETS;--", NOT_A_SYMBOL),
        ("symbol", "A" * (SYMBOL_MAX_LENGTH + 1), NOT_A_SYMBOL),
        ("symbol", "BRK..B", NOT_A_SYMBOL),
        ("close", np.nan, "a price is missing"),
        ("open", 0.0, "a price is not positive"),
        ("low", -1.0, "a price is not positive"),
        ("volume", -5.0, "volume is missing or negative"),
        ("volume", np.nan, "volume is missing or negative"),
        ("high", 10.2, "high is below open or close"),
        ("low", 10.2, "low is above open or close"),
    ],
)
def test_each_row_rule(column: str, value: object, reason: str) -> None:
    bars = _bars()
    bars.loc[1, column] = value
    reasons = row_reasons(bars)
    assert reasons[0] == "" and reasons[2] == ""
    assert reason in reasons[1].split("; ")


def test_tickers_with_a_dot_or_a_hyphen_and_the_longest_pass() -> None:
    good = ["BRK.B", "BF-B", "A", "X" * SYMBOL_MAX_LENGTH]
    bars = _bars(
        date=pd.to_datetime(["2017-01-03"] * 4),
        symbol=pd.array(good, dtype="string"),
        **{c: [v[0]] * 4 for c, v in _bars().drop(columns=["date", "symbol"]).items()},
    )
    assert list(row_reasons(bars)) == [""] * 4


def test_duplicates_are_all_quarantined() -> None:
    bars = _bars(date=pd.to_datetime(["2017-01-03", "2017-01-03", "2017-01-05"]))
    assert list(row_reasons(bars)) == ["duplicate (symbol, date)"] * 2 + [""]


def _write(frame: pd.DataFrame, path: Path) -> str:
    frame.to_csv(path, index=False)
    return str(path)


def test_bad_rows_are_quarantined_with_reasons_and_never_filled(make_ctx, tmp_path) -> None:
    bars = load_sample()
    bad_close = (bars["symbol"] == "AAPL") & (bars["date"] == "2016-03-01")
    bad_high = (bars["symbol"] == "TSLA") & (bars["date"] == "2016-03-02")
    bars.loc[bad_close, "close"] = np.nan
    bars.loc[bad_high, "high"] = bars.loc[bad_high, "low"] / 2
    path = _write(bars, tmp_path / "bars.csv")
    ctx = make_ctx(DATA_SOURCE="files", DATA_FILES=path)

    result = run(ctx)
    manifest, frame = datasets.load(ctx.store, result.version)
    assert result.quarantined == manifest.quarantined_rows == 2
    # Named by content: a rerun with other bad rows keeps both files.
    assert re.fullmatch(
        rf"quarantine/2017-12-29/{manifest.version}-[0-9a-f]{{12}}\.parquet",
        manifest.quarantine_key or "",
    )
    quarantine = get_parquet(ctx.store, manifest.quarantine_key)
    reasons = dict(zip(quarantine["symbol"], quarantine["reason"], strict=True))
    assert reasons["AAPL"] == "a price is missing"
    assert "high is below open or close" in reasons["TSLA"]
    # The bad rows are gone from the dataset, not filled with zeros or neighbours.
    assert frame[(frame["symbol"] == "AAPL") & (frame["date"] == "2016-03-01")].empty
    assert frame[(frame["symbol"] == "TSLA") & (frame["date"] == "2016-03-02")].empty
    assert (frame[["open", "high", "low", "close"]] > 0).all().all()
    assert len(frame) == len(bars) - 2


def test_a_bad_batch_is_refused_whole_and_nothing_is_published(make_ctx, tmp_path) -> None:
    bars = load_sample()
    bars.loc[bars.index[::20], "volume"] = -1.0  # 5% of rows, limit 1%
    path = _write(bars, tmp_path / "bars.csv")
    ctx = make_ctx(DATA_SOURCE="files", DATA_FILES=path)
    with pytest.raises(DataError) as caught:
        run(ctx)
    message = str(caught.value)
    assert message.startswith("182 of 3634 rows (5.0%) failed the quality gate")
    assert "above the limit of 1.0%" in message
    assert "most often: volume is missing or negative, e.g." in message
    assert "nothing was published; the bad rows, with their reasons, are in " in message
    assert "\n" not in message
    # No dataset, no part; only the refused rows, in the file the sentence names.
    (refused,) = ctx.store.list("")
    assert re.fullmatch(r"quarantine/2017-12-29/refused-[0-9a-f]{24}\.parquet", refused)
    assert message.endswith(f" {refused}.")
    rows = get_parquet(ctx.store, refused)
    assert len(rows) == 182 and set(rows["reason"]) == {"volume is missing or negative"}
    with ctx.engine.connect() as conn:
        assert conn.execute(select(datasets_table)).all() == []
    # The same batch passes under a looser limit.
    loose = make_ctx(DATA_SOURCE="files", DATA_FILES=path, QUALITY_MAX_BAD_SHARE=0.06)
    assert run(loose).quarantined == 182


def test_series_breaks_flag_gaps_and_jumps() -> None:
    dates = pd.to_datetime(
        ["2017-01-02", "2017-01-03", "2017-01-13", "2017-01-16", "2017-01-17", "2017-01-18"]
    )
    bars = _bars(
        date=dates,
        symbol=["AAA"] * 6,
        open=[10.0] * 6,
        high=[30.0] * 6,
        low=[1.0] * 6,
        close=[10.0, 10.0, 10.0, 10.0, 4.0, 4.0],
        volume=[1.0] * 6,
    )
    starts, flags = series_breaks(bars, max_gap_days=5, max_jump_factor=1.8)
    # 2017-01-04 .. 01-12 are 7 missing weekdays; 10 -> 4 is x0.4.
    assert starts.tolist() == [False, False, True, False, True, False]
    assert [(f.date, f.rule) for f in flags] == [("2017-01-13", "gap"), ("2017-01-17", "jump")]
    assert "7 trading days missing" in flags[0].detail
    assert "possible split" in flags[1].detail
    starts, flags = series_breaks(bars, max_gap_days=7, max_jump_factor=3.0)
    assert not starts.any() and flags == []


def test_a_split_and_a_gap_restart_the_indicators(make_ctx, tmp_path) -> None:
    bars = load_sample()
    aapl = bars["symbol"] == "AAPL"
    split = aapl & (bars["date"] >= "2016-06-01")  # a 2:1 split
    bars.loc[split, ["open", "high", "low", "close"]] /= 2
    bars.loc[split, "volume"] *= 2
    gap = (bars["symbol"] == "COKE") & bars["date"].between("2016-09-01", "2016-09-20")
    bars = bars[~gap]
    path = _write(bars, tmp_path / "bars.csv")
    ctx = make_ctx(DATA_SOURCE="files", DATA_FILES=path)

    manifest, frame = datasets.load(ctx.store, run(ctx).version)
    flags = {(f["symbol"], f["date"], f["rule"]) for f in manifest.quality_flags}
    assert flags == {("AAPL", "2016-06-01", "split"), ("COKE", "2016-09-21", "gap")}
    split = next(f for f in manifest.quality_flags if f["rule"] == "split")
    assert split["detail"].startswith("matches a 2:1 split (x0.500)")
    assert manifest.quality_flag_count == 2
    for symbol, start in (("AAPL", "2016-06-01"), ("COKE", "2016-09-21")):
        rows = frame[frame["symbol"] == symbol].reset_index(drop=True)
        at = int(rows.index[rows["date"] == start][0])
        # No target crosses the break; indicators warm up again after it.
        assert np.isnan(rows.loc[at - 1, "next_close"])
        assert rows.loc[at : at + 17, "warmup"].all()
        assert not rows.loc[at + 18 :, "warmup"].any()
        after = rows.loc[at:]
        np.testing.assert_allclose(
            after["dema_10"].to_numpy()[18:],
            talib.DEMA(after["close"].to_numpy(), timeperiod=10)[18:],
            rtol=0,
            atol=1e-9,
        )
    # The rows are kept (flagged, not quarantined).
    assert manifest.quarantined_rows == 0
    assert len(frame) == len(bars)


def test_stale_symbol_keeps_its_history_but_not_the_latest_day(make_ctx) -> None:
    ctx = make_ctx()
    result = run(ctx)
    manifest, frame = datasets.load(ctx.store, result.version)
    assert result.stale_symbols == manifest.stale_symbols == ["YHOO"]
    yhoo = frame[frame["symbol"] == "YHOO"]
    assert len(yhoo) == 619 and yhoo["date"].max() == pd.Timestamp("2017-06-16")
    latest = frame[frame["date"] == frame["date"].max()]
    assert sorted(latest["symbol"]) == ["AAPL", "COKE", "GOOGL", "TSLA"]

    # Replayed on YHOO's last day, it is not stale yet; a week later it is.
    assert run(ctx, as_of=date(2017, 6, 16)).stale_symbols == []
    assert run(ctx, as_of=date(2017, 6, 23)).stale_symbols == []  # 5 trading days
    assert run(ctx, as_of=date(2017, 6, 26)).stale_symbols == ["YHOO"]  # 6
    relaxed = make_ctx(home=ctx.settings.mlops_home, STALE_AFTER_DAYS=200)
    assert run(relaxed).stale_symbols == []


def test_every_symbol_stale_means_a_stale_source_and_nothing_is_published(make_ctx) -> None:
    ctx = make_ctx()
    with pytest.raises(DataError, match=r"Every symbol's last bar is more than STALE_AFTER_DAYS"):
        run(ctx, as_of=date(2018, 3, 1))
    assert ctx.store.list("") == []


def test_stale_symbols_counts_trading_days() -> None:
    last = {"A": date(2017, 12, 22), "B": date(2017, 12, 21), "C": date(2017, 12, 29)}
    # Fri 2017-12-29: A misses 25..29 (5 weekdays), B also the 22nd (6).
    assert stale_symbols(last, LAST, 5) == ["B"]


def test_gate_counts_across_symbols() -> None:
    gate = QualityGate(max_bad_share=0.2)
    gate.check(_bars())
    check = gate.check(_bars(close=[10.5, np.nan, 10.5]))
    assert len(check.good) == 2 and list(check.quarantined["reason"]) == ["a price is missing"]
    assert (gate.total_rows, gate.bad_rows) == (6, 1)
    gate.verify()  # 16.7% <= 20%
    gate.check(_bars(volume=[-1.0, -1.0, 1.0]))
    with pytest.raises(DataError, match=r"3 of 9 rows \(33.3%\)"):
        gate.verify()
