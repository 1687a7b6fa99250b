"""Fixtures for data prep: a migrated embedded context, and a fake Alpha Vantage server.

The fake server is a real ``http.server`` on 127.0.0.1 in a thread, answering
``/query?function=TIME_SERIES_DAILY`` in Alpha Vantage's JSON format (values as strings,
newest day first), and scripted per symbol: error bodies, slow answers, dropped
connections, HTTP errors.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pandas as pd
import pytest

from mlops.context import Context, open_context
from mlops.data_prep import alphavantage as av_module
from mlops.data_prep.sources import load_sample
from mlops.db import migrate
from mlops.db.engine import make_engine

API_KEY = "test-key-0123456789"

# Alpha Vantage's own wording of its error bodies.
ERROR_MESSAGE = {
    "Error Message": "Invalid API call. Please retry or visit the documentation "
    "(https://www.alphavantage.co/documentation/) for TIME_SERIES_DAILY."
}
RATE_LIMIT_INFORMATION = {
    "Information": "Thank you for using Alpha Vantage! Our standard API rate limit is 25 "
    "requests per day. Please subscribe to any of the premium plans at "
    "https://www.alphavantage.co/premium/ to instantly remove all daily rate limits."
}
RATE_LIMIT_NOTE = {
    "Note": "Thank you for using Alpha Vantage! Our standard API call frequency is 5 calls "
    "per minute and 500 calls per day. Please visit https://www.alphavantage.co/premium/ if "
    "you would like to target a higher API call frequency."
}
RATE_LIMIT_PER_SECOND = {
    "Information": "Thank you for using Alpha Vantage! Please consider spreading out your free "
    "API requests more sparingly (1 request per second). You may subscribe to any of the "
    "premium plans at https://www.alphavantage.co/premium/ to lift the free key rate limit "
    "(25 requests per day), raise the per-minute limit to a higher amount corresponding to the "
    "premium membership tier you subscribed to, and remove the daily rate limit."
}
PREMIUM_INFORMATION = {
    "Information": "Thank you for using Alpha Vantage! This is a premium endpoint. You may "
    "subscribe to any of the premium plans at https://www.alphavantage.co/premium/ to "
    "instantly unlock all premium endpoints"
}


@pytest.fixture
def make_ctx(make_settings: Callable[..., Any], tmp_path: Path) -> Callable[..., Context]:
    """``make_ctx(home=None, **env)``: a migrated embedded context (same home, same state)."""

    def build(home: Path | None = None, **env: object) -> Context:
        settings = make_settings(home or tmp_path / "home", **env)
        migrate.upgrade(make_engine(settings.db_url))
        return open_context(settings)

    return build


def daily_payload(symbol: str, bars: pd.DataFrame, outputsize: str) -> dict[str, Any]:
    """A ``TIME_SERIES_DAILY`` answer for ``bars`` (one symbol), as Alpha Vantage sends it."""
    bars = bars.sort_values("date", ascending=False)
    if outputsize == "compact":
        bars = bars.head(100)
    series = {}
    for row in bars.itertuples():
        series[row.date.strftime("%Y-%m-%d")] = {
            "1. open": f"{row.open:.4f}",
            "2. high": f"{row.high:.4f}",
            "3. low": f"{row.low:.4f}",
            "4. close": f"{row.close:.4f}",
            "5. volume": f"{int(row.volume)}",
        }
    last = bars["date"].max().strftime("%Y-%m-%d") if len(bars) else ""
    return {
        "Meta Data": {
            "1. Information": "Daily Prices (open, high, low, close) and Volumes",
            "2. Symbol": symbol,
            "3. Last Refreshed": last,
            "4. Output Size": "Compact" if outputsize == "compact" else "Full size",
            "5. Time Zone": "US/Eastern",
        },
        "Time Series (Daily)": series,
    }


@dataclass
class Answer:
    """One scripted answer: ``kind`` is json, data, slow, drop or status."""

    kind: str = "data"
    body: Any = None
    seconds: float = 0.0
    status: int = 200


@dataclass
class FakeAlphaVantage:
    url: str
    bars: pd.DataFrame  # what the server knows, all symbols
    until: pd.Timestamp | None = None  # the server's "today": no bars after it
    today: pd.Timestamp | None = None  # the client's day (default: ``until``, else the last bar)
    scripts: dict[str, list[Answer]] = field(default_factory=dict)
    requests: list[dict[str, str]] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)

    def script(self, symbol: str, *answers: Answer) -> None:
        """Answers for the next requests of ``symbol``; after them, real data."""
        self.scripts[symbol] = list(answers)

    def now(self) -> datetime:
        """The client's clock: evening (UTC) of ``today``, else of ``until``, else of the
        sample's last day, so that the fetch budget's days follow the server's."""
        day = self.today if self.today is not None else self.until
        day = day if day is not None else self.bars["date"].max()
        return pd.Timestamp(day).normalize().to_pydatetime().replace(hour=22, tzinfo=UTC)

    def requests_for(self, symbol: str) -> list[dict[str, str]]:
        return [r for r in self.requests if r.get("symbol") == symbol]

    def data_for(self, symbol: str, outputsize: str) -> dict[str, Any]:
        bars = self.bars[self.bars["symbol"] == symbol]
        if self.until is not None:
            bars = bars[bars["date"] <= self.until]
        if bars.empty:
            return ERROR_MESSAGE
        return daily_payload(symbol, bars, outputsize)


def _handler(fake: FakeAlphaVantage) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def do_GET(self) -> None:
            query = {k: v[0] for k, v in parse_qs(urlparse(self.path).query).items()}
            fake.requests.append(query)
            symbol = query.get("symbol", "")
            script = fake.scripts.get(symbol) or []
            answer = script.pop(0) if script else Answer()
            if answer.kind == "drop":
                self.close_connection = True
                return  # the connection closes without a byte of answer
            if answer.kind == "slow":
                time.sleep(answer.seconds)
            if answer.kind in {"data", "slow"} and answer.body is None:
                body = json.dumps(fake.data_for(symbol, query.get("outputsize", "compact")))
            elif isinstance(answer.body, bytes | str):
                body = answer.body
            else:
                body = json.dumps(answer.body, indent=4)
            data = body.encode() if isinstance(body, str) else body
            fake.bodies.append(data)
            try:
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up waiting (the slow-answer tests)

    return Handler


@pytest.fixture
def alphavantage() -> Iterator[FakeAlphaVantage]:
    """A fake Alpha Vantage on a free loopback port, serving the bundled sample."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    server.daemon_threads = True
    fake = FakeAlphaVantage(url=f"http://127.0.0.1:{server.server_port}/query", bars=load_sample())
    server.RequestHandlerClass = _handler(fake)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def av_env(alphavantage: FakeAlphaVantage, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """Settings for the fake server, with tiny retry waits and timeouts; the client's clock
    follows the server's day (``FakeAlphaVantage.now``)."""
    monkeypatch.setattr(av_module, "now", alphavantage.now)
    return {
        "DATA_SOURCE": "alphavantage",
        "ALPHAVANTAGE_API_KEY": API_KEY,
        "ALPHAVANTAGE_BASE_URL": alphavantage.url,
        "ALPHAVANTAGE_TIMEOUT_SECONDS": 5,  # loaded machines answer in time; slow tests: their own
        "ALPHAVANTAGE_MAX_ATTEMPTS": 3,
        "ALPHAVANTAGE_RETRY_WAIT_SECONDS": 0.01,
        "SYMBOLS": "AAPL,GOOGL",
    }
