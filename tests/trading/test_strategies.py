"""Strategies as configuration (issue 18): several strategies, each on its own account, the
same day and at the same time; per-strategy books, kill switch and leaderboard.

Against the real alpaca-py client over HTTP to the local stand-in (one account per key),
and the paper broker (one book per strategy).
"""

from __future__ import annotations

import json
import statistics
import threading
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import yaml

from conftest import run_in_process
from mlops.contracts import strategies
from mlops.db.schema import equity_snapshots, orders, stage_runs, trade_decisions
from mlops.errors import ConfigError
from mlops.runs import run_stage
from mlops.trading import leaderboard
from mlops.trading import stage as trade
from mlops.trading.paper import PaperBroker
from mlops.trading.switch import set_halted, status

from .fake_alpaca import FakeAlpaca
from .helpers import DAY1, DAY2, alpaca_env, count, make_ctx, predict, rows

BUY_COKE = {"AAPL": 0.0, "COKE": 0.03}
ROOT = Path(__file__).resolve().parents[2]


def write_strategies(folder: Path, listed: list[dict]) -> Path:
    path = folder / "strategies.yaml"
    path.write_text(yaml.safe_dump({"strategies": listed}))
    return path


def key_pair(folder: Path, name: str) -> Path:
    """A strategy's credentials folder: the files of its account's Secret."""
    where = folder / "credentials" / name
    where.mkdir(parents=True)
    (where / "ALPACA_API_KEY").write_text(f"{name}-key\n")
    (where / "ALPACA_SECRET_KEY").write_text(f"{name}-secret\n")
    return where


def test_two_strategies_trade_the_same_day_at_once_each_on_its_own_account(
    make_settings, tmp_path, subprocess_env
):
    with FakeAlpaca() as fake:
        fake.after_close_of(DAY1)
        red_account = fake.add_account("red-key", "PARED0001")
        blue_account = fake.add_account("blue-key", "PABLUE001")
        path = write_strategies(
            tmp_path,
            [
                {"name": "red", "credentials": str(key_pair(tmp_path, "red"))},
                {
                    "name": "blue",
                    "credentials": str(key_pair(tmp_path, "blue")),
                    "settings": {"RISK_MAX_ORDER_VALUE": 2000},
                },
            ],
        )
        env = alpaca_env(fake, STRATEGIES_FILE=str(path))
        ctx = make_ctx(make_settings, tmp_path, **env)
        predict(ctx, DAY1, BUY_COKE)
        red = strategies.select(ctx.settings, "red")[0]

        # Red's run holds its lease and waits at the broker while blue's whole run goes.
        red_account.fail("GET", "/v2/account", "hold")
        outcome: dict[str, object] = {}

        def red_run() -> None:
            try:
                outcome["red"] = run_stage(ctx, "trade", trade.run, DAY1, lease="red", strategy=red)
            except BaseException as exc:  # reported by the assertions below
                outcome["red"] = exc

        thread = threading.Thread(target=red_run)
        thread.start()
        try:
            assert red_account.held.wait(timeout=30), "red's run never reached the broker"
            cli_env = subprocess_env(MLOPS_HOME=str(tmp_path), **env)
            done = run_in_process(cli_env, "trade", "--as-of", "2017-06-01", "--strategy", "blue")
            # A second run of red meanwhile: its own lease is held, and the sentence says whose.
            again = run_in_process(cli_env, "trade", "--as-of", "2017-06-01", "--strategy", "red")
        finally:
            red_account.release()
            thread.join(timeout=60)
        assert done.returncode == 0, done.stderr
        assert again.returncode == 11, again.stderr
        assert "Stage trade (red) for 2017-06-01 is already running" in again.stderr
        blue_result = json.loads(done.stdout)
        assert (blue_result["strategy"], blue_result["account"]) == ("blue", "PABLUE001")
        assert blue_result["decisions"]["COKE"] == "buy"
        red_result = outcome["red"]
        assert isinstance(red_result, trade.TradeResult), red_result
        assert (red_result.strategy, red_result.account) == ("red", "PARED0001")
        assert red_result.decisions["COKE"] == "buy"

        # Each bought on its own account, under its own limits; the shared key nothing.
        assert (red_account.posts, blue_account.posts, fake.posts) == (1, 1, 0)
        (red_order,) = red_account.orders.values()
        (blue_order,) = blue_account.orders.values()
        assert float(blue_order["qty"]) < float(red_order["qty"])  # blue's order cap
        assert "-red-20170601-COKE-buy-" in red_order["client_order_id"]
        assert "-blue-20170601-COKE-buy-" in blue_order["client_order_id"]
        book = {(r["strategy"], r["account"]) for r in rows(ctx, orders)}
        assert book == {("red", "PARED0001"), ("blue", "PABLUE001")}
        assert count(ctx, trade_decisions) == 4 and count(ctx, equity_snapshots) == 2

        # A rerun of every strategy, each in turn: nothing is placed twice.
        again = run_in_process(cli_env, "trade", "--as-of", "2017-06-01")
        assert again.returncode == 0, again.stderr
        both = json.loads(again.stdout)["strategies"]
        assert set(both) == {"red", "blue"}
        assert all(r["rerun"] and r["orders_placed"] == [] for r in both.values())
        assert (red_account.posts, blue_account.posts, fake.posts) == (1, 1, 0)
        runs = rows(ctx, stage_runs, stage_runs.c.stage == "trade")
        assert [r["status"] for r in runs] == ["succeeded"] * 4


def test_paper_strategies_keep_one_book_each_and_halt_alone(make_settings, tmp_path):
    path = write_strategies(
        tmp_path,
        [
            {"name": "red", "settings": {"TRADE_THRESHOLD": 0.01}},
            {"name": "blue", "settings": {"TRADE_THRESHOLD": 0.05}},
        ],
    )
    ctx = make_ctx(make_settings, tmp_path, STRATEGIES_FILE=str(path))
    red, blue = strategies.select(ctx.settings)
    predict(ctx, DAY1, BUY_COKE)
    assert trade.run(ctx, as_of=DAY1, strategy=red).decisions["COKE"] == "buy"
    assert trade.run(ctx, as_of=DAY1, strategy=blue).decisions["COKE"] == "hold"  # 3 % < 5 %

    # Red alone is halted: its book stops, blue's goes on (and fills nothing of red's).
    state = set_halted(ctx, True, "red review", actor="test", strategy="red")
    assert state["strategy"] == "red" and state["halted"] is True
    assert status(ctx)["strategies"] == {"blue": False, "red": True}
    predict(ctx, DAY2, {"AAPL": 0.06, "COKE": 0.0})
    assert trade.run(ctx, as_of=DAY2, strategy=red).halted == "`mlops trading halt`: red review"
    blue_day2 = trade.run(ctx, as_of=DAY2, strategy=blue)
    assert blue_day2.halted is None and blue_day2.decisions["AAPL"] == "buy"
    assert PaperBroker(ctx.engine, 1e5, strategy="red").account(DAY2).positions == {}
    assert PaperBroker(ctx.engine, 1e5, strategy="blue").account(DAY2).positions == {}
    (canceled,) = rows(ctx, orders, orders.c.strategy == "red")
    assert canceled["status"] == "canceled"  # the halt canceled red's open buy
    # Each strategy started with its own cash: two curves, never one.
    snapshots = rows(ctx, equity_snapshots)
    assert {(s["strategy"], s["snapshot_date"]) for s in snapshots} == {
        ("red", DAY1),
        ("blue", DAY1),
        ("red", DAY2),
        ("blue", DAY2),
    }
    assert {s["equity"] for s in snapshots} == {100_000.0}
    resumed = set_halted(ctx, False, "done", actor="test", strategy="red")
    assert resumed["message"].startswith("Trading of strategy red resumed: the halt of ")


def test_an_unknown_strategy_or_a_bad_file_is_one_sentence_and_exit_2(
    make_settings, tmp_path, subprocess_env
):
    folder = key_pair(tmp_path, "red")
    path = write_strategies(tmp_path, [{"name": "red", "credentials": str(folder)}])
    make_ctx(make_settings, tmp_path)
    env = subprocess_env(MLOPS_HOME=str(tmp_path), STRATEGIES_FILE=str(path))
    for args in (["trade", "--strategy", "nope"], ["trading", "halt", "--strategy", "nope"]):
        done = run_in_process(env, *args)
        assert done.returncode == 2, done.stderr
        (line,) = done.stderr.strip().splitlines()
        assert line == (
            f"error: There is no strategy 'nope' in STRATEGIES_FILE {path}; the strategies are red."
        )
    assert count(make_ctx(make_settings, tmp_path), stage_runs) == 0

    def refused(listed: list[dict]) -> str:
        bad = tmp_path / "bad.yaml"
        bad.write_text(yaml.safe_dump({"strategies": listed}))
        settings = make_settings(tmp_path, STRATEGIES_FILE=str(bad))
        with pytest.raises(ConfigError) as raised:
            strategies.select(settings)
        return str(raised.value)

    assert refused([{"name": "red", "colour": "red"}]).endswith(
        "is invalid: strategy red has the unknown key 'colour'."
    )
    assert refused([{"name": "red", "settings": {"TRADE_RUEL": "rotation"}}]).startswith(
        f"STRATEGIES_FILE {tmp_path / 'bad.yaml'} is invalid: strategy red: TRADE_RUEL is not "
        "a setting a strategy may set"
    )
    assert refused([{"name": "red", "settings": {"ALPACA_API_KEY": "x"}}]).endswith(
        "ALPACA_API_KEY must not be written in the file: name the folder of the key pair's "
        "files as credentials."
    )
    assert refused([{"name": "red"}, {"name": "red"}]).endswith(
        "the name red is given to two strategies."
    )
    assert refused([{"name": "red", "credentials": str(tmp_path / "none")}]) == (
        f"Strategy red: its credentials file {tmp_path / 'none' / 'ALPACA_API_KEY'} does not exist."
    )
    assert refused([{"name": "red", "settings": {"TRADE_THRESHOLD": 2}}]).startswith(
        "Strategy red: Setting TRADE_THRESHOLD is invalid: Input should be less than 1"
    )
    # Alpaca without credentials: the environment's key pair, which this one lacks.
    assert refused([{"name": "a", "settings": {"BROKER": "alpaca"}}]) == (
        "Strategy a: Invalid settings: ALPACA_API_KEY must be set when BROKER=alpaca."
    )
    shared = [{"name": n, "settings": {"BROKER": "alpaca"}} for n in ("a", "b")]
    assert refused(shared) == (
        f"STRATEGIES_FILE {tmp_path / 'bad.yaml'} is invalid: strategies a and b would both "
        "trade the account of the environment's ALPACA_API_KEY; give each its own "
        "credentials."
    )


def test_without_a_file_the_one_strategy_is_the_settings_as_they_are(make_settings, tmp_path):
    settings = make_settings(tmp_path, TRADE_THRESHOLD="0.02")
    (only,) = strategies.select(settings)
    assert only.name == "default" and only.settings is settings and only.lease == ""
    with pytest.raises(ConfigError, match="STRATEGIES_FILE is not set, so the only strategy"):
        strategies.select(settings, "red")
    # The cluster's default file is that strategy alone.
    config_map = yaml.safe_load((ROOT / "config-maps" / "strategies.yaml").read_text())
    (tmp_path / "strategies.yaml").write_text(config_map["data"]["strategies.yaml"])
    with_file = make_settings(tmp_path, STRATEGIES_FILE=str(tmp_path / "strategies.yaml"))
    (default,) = strategies.select(with_file)
    assert default.name == "default" and default.settings is with_file


def seed_book(ctx) -> None:
    """A small book, written as the trade stage writes it: red's four snapshots and three
    fills against their decisions' closes, one closing sell without a decision; blue's
    two snapshots and no trade."""
    now = datetime(2017, 6, 1, 22, tzinfo=UTC)
    days = [date(2017, 6, 1), date(2017, 6, 2), date(2017, 6, 5), date(2017, 6, 6)]
    curve = {"red": [100_000.0, 101_000.0, 99_990.0, 101_989.8], "blue": [50_000.0, 50_000.0]}
    bench = {"red": 100_500.0, "blue": 50_250.0}
    snapshot_rows = [
        {
            "snapshot_date": day,
            "broker": "paper",
            "account": "paper",
            "strategy": name,
            "cash": equity,
            "positions_value": 0.0,
            "equity": equity,
            "benchmark_equity": bench[name] if n == len(values) - 1 else equity,
            "positions": "{}",
            "created_at": now,
        }
        for name, values in curve.items()
        for n, (day, equity) in enumerate(zip(days, values, strict=False))
    ]
    fills = [  # (cid, decided, symbol, side, fill price, the decision's close or None)
        ("r1", days[0], "AAA", "buy", 10.10, 10.00),  # +100 bp
        ("r2", days[1], "BBB", "sell", 19.80, 20.00),  # +100 bp
        ("r3", days[2], "CCC", "buy", 9.95, 10.00),  # -50 bp
        ("r4", days[2], "DDD", "sell", 5.00, None),  # the kill switch's: no decision
    ]
    order_rows, decision_rows = [], []
    for cid, day, symbol, side, price, close in fills:
        common = {"broker": "paper", "account": "paper", "strategy": "red", "symbol": symbol}
        order_rows.append(
            {
                **common,
                "client_order_id": cid,
                "decision_date": day,
                "side": side,
                "quantity": 10.0,
                "status": "filled",
                "filled_quantity": 10.0,
                "fill_price": price,
                "submitted_at": now,
            }
        )
        if close is not None:
            decision_rows.append(
                {
                    **common,
                    "decision_date": day,
                    "action": side,
                    "quantity": 10.0,
                    "last_close": close,
                    "reason": "test",
                    "created_at": now,
                }
            )
    with ctx.engine.begin() as conn:
        conn.execute(equity_snapshots.insert(), snapshot_rows)
        conn.execute(orders.insert(), order_rows)
        conn.execute(trade_decisions.insert(), decision_rows)


def test_the_leaderboard_matches_a_hand_computation(make_settings, tmp_path, subprocess_env):
    ctx = make_ctx(make_settings, tmp_path)
    seed_book(ctx)
    done = run_in_process(subprocess_env(MLOPS_HOME=str(tmp_path)), "trading", "leaderboard")
    assert done.returncode == 0, done.stderr
    red, blue = json.loads(done.stdout)["strategies"]
    # Red: +1 %, -1 %, +2 % over three sessions from 100,000.
    returns = [0.01, -0.01, 0.02]
    sharpe = statistics.mean(returns) / statistics.stdev(returns) * 252**0.5
    assert red["strategy"] == "red" and red["rank"] == 1 and red["sessions"] == 3
    assert red["equity"] == pytest.approx(101_989.8)
    assert red["total_return"] == pytest.approx(1.01 * 0.99 * 1.02 - 1)
    assert red["benchmark_return"] == pytest.approx(0.005)
    assert red["excess_return"] == pytest.approx(1.01 * 0.99 * 1.02 - 1 - 0.005)
    assert red["sharpe"] == pytest.approx(sharpe)
    assert red["max_drawdown"] == pytest.approx(-0.01)
    assert red["trades"] == 4
    assert red["slippage_bps"] == pytest.approx((100 + 100 - 50) / 3)
    assert red["slippage_fills"] == 3
    # Blue: flat, no trade, no slippage to measure; buy-and-hold did better.
    assert (blue["rank"], blue["total_return"], blue["trades"]) == (2, 0.0, 0)
    assert blue["sharpe"] is None and blue["slippage_bps"] is None
    assert blue["excess_return"] == pytest.approx(-0.005)
    table = done.stderr
    assert "strategy" in table and "slippage (bp)" in table
    assert "+1.99%" in table and "50.00" in table
    assert "Sharpe ratios over fewer than 60 sessions are unreliable." in table
    # The same figures as the command, for the dashboard.
    assert [r.strategy for r in leaderboard.compute(ctx.engine)] == ["red", "blue"]
