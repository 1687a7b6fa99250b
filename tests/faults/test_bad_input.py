"""The bad-input corpus: data files, settings, command-line arguments and Alpha Vantage
answers, each with the one sentence (and exit code) it must end in.

Every case runs the real command in this process on the embedded defaults (SQLite, a
local store) in its own folder; Alpha Vantage is a fake server on loopback that answers
in Alpha Vantage's own words (see ``tests/data_prep/conftest.py``). Cases that must
succeed despite their flaw (a bar from the future) say what they must report instead.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from data_prep.conftest import (
    API_KEY,
    ERROR_MESSAGE,
    PREMIUM_INFORMATION,
    RATE_LIMIT_NOTE,
    Answer,
    FakeAlphaVantage,
    _handler,
)
from faults.conftest import assert_fails, assert_ok
from mlops.data_prep.sources import load_sample
from mlops.training.model_config import default_config_path

INVALID_KEY = {
    "Error Message": "the parameter apikey is invalid or missing. Please claim your free API "
    "key on (https://www.alphavantage.co/support/#api-key). It should take less than 20 seconds."
}
DEMO_KEY = {
    "Information": "The **demo** API key is for demo purposes only. Please claim your free API "
    "key at (https://www.alphavantage.co/support/#api-key) to explore our full API offerings."
}


@dataclass
class Case:
    args: list[str]
    code: int
    fragments: list[str]
    env: dict[str, str] = field(default_factory=dict)
    files: Callable[[Path], dict[str, str]] | None = None  # writes files, returns more env
    answers: list[Answer] | None = None  # Alpha Vantage's answers for AAPL
    migrate: bool = True
    check: Callable[[Any], None] | None = None  # for cases that succeed


def _csv(text: str | bytes, name: str = "bars.csv") -> Callable[[Path], dict[str, str]]:
    def write(folder: Path) -> dict[str, str]:
        path = folder / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return {"DATA_SOURCE": "files", "DATA_FILES": str(path)}

    return write


def _sample(change: Callable[[pd.DataFrame], pd.DataFrame], name: str = "bars.csv"):
    def write(folder: Path) -> dict[str, str]:
        path = folder / name
        frame = change(load_sample())
        if name.endswith(".parquet"):
            frame.to_parquet(path, index=False)
        else:
            frame.to_csv(path, index=False)
        return {"DATA_SOURCE": "files", "DATA_FILES": str(path)}

    return write


def _folder(*names: str) -> Callable[[Path], dict[str, str]]:
    def write(folder: Path) -> dict[str, str]:
        data = folder / "data"
        data.mkdir()
        for name in names:
            (data / name).write_text("x\n")
        return {"DATA_SOURCE": "files", "DATA_FILES": str(data)}

    return write


def _model_config(text: str) -> Callable[[Path], dict[str, str]]:
    def write(folder: Path) -> dict[str, str]:
        path = folder / "model.yaml"
        path.write_text(text)
        return {"MODEL_CONFIG_PATH": str(path)}

    return write


def _future_bar(frame: pd.DataFrame) -> pd.DataFrame:
    bar = frame.iloc[-1:].copy()
    bar["date"] = pd.Timestamp("2030-01-02")
    return pd.concat([frame, bar])


def _quarantined_one(result: dict) -> None:
    assert result["quarantined"] == 1 and result["as_of"] == "2017-12-29"


HEADER = "date,symbol,open,high,low,close,volume\n"
PREP = ["data-prep", "--as-of", "2017-06-01"]
AV = {
    "DATA_SOURCE": "alphavantage",
    "ALPHAVANTAGE_API_KEY": API_KEY,
    "SYMBOLS": "AAPL",
    "ALPHAVANTAGE_MAX_ATTEMPTS": "2",
    "ALPHAVANTAGE_RETRY_WAIT_SECONDS": "0.01",
    "ALPHAVANTAGE_TIMEOUT_SECONDS": "1",  # a loaded machine answers in time
}
AV_PREP = ["data-prep", "--as-of", "2017-12-29"]

CASES: dict[str, Case] = {
    # Data files.
    "file-missing-close-column": Case(
        PREP,
        3,
        ["has no column close (its columns: date, symbol, open, high, low, volume)"],
        files=_sample(lambda f: f.drop(columns="close")),
    ),
    "file-binary-csv": Case(PREP, 3, ["bars.csv cannot be read"], files=_csv(os.urandom(2048))),
    "file-binary-parquet": Case(
        PREP, 3, ["bars.parquet cannot be read"], files=_csv(os.urandom(2048), "bars.parquet")
    ),
    "file-ragged-csv": Case(
        PREP, 3, ["cannot be read"], files=_csv(HEADER + "2017-01-03,AAPL,1,2\n" + "x," * 40)
    ),
    "file-header-only": Case(PREP, 3, ["holds no rows"], files=_csv(HEADER)),
    "file-zero-bytes": Case(PREP, 3, ["cannot be read", "No columns to parse"], files=_csv(b"")),
    "file-does-not-exist": Case(
        PREP,
        3,
        ["DATA_FILES points at", "which does not exist"],
        env={"DATA_SOURCE": "files", "DATA_FILES": "/nonexistent/bars.csv"},
    ),
    "folder-without-data-files": Case(
        PREP, 3, ["holds no .csv or .parquet files"], files=_folder("notes.txt")
    ),
    "file-wrong-extension": Case(
        PREP, 3, ["is neither a .csv nor a .parquet file"], files=_csv(HEADER, "bars.txt")
    ),
    "file-no-numbers": Case(
        PREP,
        3,
        ["failed the quality gate", "a price is missing", "nothing was published"],
        files=_sample(lambda f: f.assign(open="n/a", high="n/a", low="n/a", close="n/a")),
    ),
    "file-negative-prices": Case(
        PREP,
        3,
        ["failed the quality gate", "a price is not positive"],
        files=_sample(lambda f: f.assign(low=-f["low"])),
    ),
    "file-every-row-twice": Case(
        PREP,
        3,
        ["failed the quality gate", "duplicate (symbol, date)"],
        files=_sample(lambda f: pd.concat([f, f])),
    ),
    "file-dates-unparseable": Case(
        PREP,
        3,
        ["failed the quality gate", "date does not parse"],
        files=_sample(lambda f: f.assign(date="someday")),
    ),
    "file-high-below-low": Case(
        PREP,
        3,
        ["failed the quality gate", "high is below open or close"],
        files=_sample(lambda f: f.assign(high=f["low"] * 0.5)),
    ),
    "file-bar-from-the-future": Case(
        ["data-prep"], 0, [], files=_sample(_future_bar), check=_quarantined_one
    ),
    "file-every-symbol-stale": Case(
        ["data-prep", "--as-of", "2019-06-03"],
        3,
        ["Every symbol's last bar is more than STALE_AFTER_DAYS", "nothing was published"],
    ),
    "as-of-before-the-data": Case(
        ["data-prep", "--as-of", "2001-01-02"], 3, ["returned no bars on or before 2001-01-02"]
    ),
    # DATA_COLUMN_MAP.
    "column-map-typo": Case(
        PREP,
        2,
        ["Setting DATA_COLUMN_MAP is invalid", "'clsoe'", "did you mean close?"],
        env={"DATA_COLUMN_MAP": "clsoe=Close"},
        files=_sample(lambda f: f),
    ),
    "column-map-four-to-one": Case(
        PREP,
        2,
        ["open, high, low, close are all mapped to the one column 'Price'"],
        env={"DATA_COLUMN_MAP": "open=Price,high=Price,low=Price,close=Price"},
        files=_sample(lambda f: f),
    ),
    "column-map-column-absent": Case(
        PREP,
        2,
        ["DATA_COLUMN_MAP maps close to 'Adj Close'", "(its columns: date, symbol"],
        env={"DATA_COLUMN_MAP": "close=Adj Close"},
        files=_sample(lambda f: f),
    ),
    "column-map-section-matches-nothing": Case(
        PREP,
        2,
        ["section 'prices_*.csv' matches none of the files (bars.csv)"],
        env={"DATA_COLUMN_MAP": "prices_*.csv: close=Last"},
        files=_sample(lambda f: f),
    ),
    "column-map-bad-json": Case(
        PREP,
        2,
        ["starts with '{' but is not JSON"],
        env={"DATA_COLUMN_MAP": '{"close": '},
        files=_sample(lambda f: f),
    ),
    "column-map-twice": Case(
        PREP,
        2,
        ["close is mapped twice"],
        env={"DATA_COLUMN_MAP": "close=Close,close=Last"},
        files=_sample(lambda f: f),
    ),
    # Settings.
    "files-without-data-files": Case(
        PREP,
        2,
        ["DATA_FILES must name a file or folder when DATA_SOURCE=files"],
        env={"DATA_SOURCE": "files"},
        migrate=False,
    ),
    "unknown-data-source": Case(
        PREP,
        2,
        ["Setting DATA_SOURCE is invalid", "'ftp'"],
        env={"DATA_SOURCE": "ftp"},
        migrate=False,
    ),
    "bad-share-out-of-range": Case(
        PREP,
        2,
        ["Setting QUALITY_MAX_BAD_SHARE is invalid", "(got '2')"],
        env={"QUALITY_MAX_BAD_SHARE": "2"},
        migrate=False,
    ),
    "bad-database-url": Case(
        PREP,
        2,
        ["Setting DATABASE_URL is invalid"],
        env={"DATABASE_URL": "nosuchdialect://x"},
        migrate=False,
    ),
    "s3-without-bucket": Case(
        PREP,
        2,
        ["S3_BUCKET must be set when STORE_BACKEND=s3"],
        env={"STORE_BACKEND": "s3", "S3_BUCKET": ""},
        migrate=False,
    ),
    "alpaca-without-keys": Case(
        ["trade"],
        2,
        ["ALPACA_API_KEY must be set when BROKER=alpaca"],
        env={"BROKER": "alpaca"},
        migrate=False,
    ),
    "alpaca-placeholder-key": Case(
        ["trade"],
        2,
        ["ALPACA_API_KEY is still the template's placeholder value"],
        env={"BROKER": "alpaca", "ALPACA_API_KEY": "changeme", "ALPACA_SECRET_KEY": "s"},
        migrate=False,
    ),
    "unknown-log-level": Case(
        PREP,
        2,
        ["Setting LOG_LEVEL is invalid", "'LOUD'"],
        env={"LOG_LEVEL": "loud"},
        migrate=False,
    ),
    "lease-shorter-than-two-heartbeats": Case(
        PREP,
        2,
        ["STAGE_LEASE_SECONDS (10) must be at least twice STAGE_HEARTBEAT_SECONDS (15)"],
        env={"STAGE_LEASE_SECONDS": "10"},
        migrate=False,
    ),
    "zero-connect-timeout": Case(
        PREP,
        2,
        ["Setting DATABASE_CONNECT_TIMEOUT_SECONDS is invalid"],
        env={"DATABASE_CONNECT_TIMEOUT_SECONDS": "0"},
        migrate=False,
    ),
    "model-config-missing": Case(
        ["train"],
        2,
        ["MODEL_CONFIG_PATH points at /nonexistent/model.yaml, which does not exist"],
        env={"MODEL_CONFIG_PATH": "/nonexistent/model.yaml"},
    ),
    "model-config-not-yaml": Case(
        ["train"],
        2,
        ["is not valid YAML at line"],
        files=_model_config("input_features: [\n  - x\n"),
    ),
    "model-config-not-a-mapping": Case(
        ["train"],
        2,
        ["must be a mapping of Ludwig settings"],
        files=_model_config("- a\n- b\n"),
    ),
    "shard-index-out-of-range": Case(
        PREP,
        2,
        ["JOB_COMPLETION_INDEX 2 must be below DATA_PREP_SHARDS (2)"],
        env={"DATA_PREP_SHARDS": "2", "JOB_COMPLETION_INDEX": "2"},
    ),
    "shards-without-as-of": Case(
        ["data-prep"],
        2,
        ["every shard needs the same --as-of"],
        env={"DATA_PREP_SHARDS": "2"},
    ),
    "alphavantage-without-key": Case(
        PREP,
        2,
        ["ALPHAVANTAGE_API_KEY must be set when DATA_SOURCE=alphavantage"],
        env={"DATA_SOURCE": "alphavantage", "SYMBOLS": "AAPL"},
        migrate=False,
    ),
    # Command-line arguments.
    "as-of-not-iso": Case(
        ["batch-infer", "--as-of", "12/01/2017"],
        2,
        ["--as-of must be a date like 2017-12-01, got '12/01/2017'"],
        migrate=False,
    ),
    "as-of-impossible-day": Case(
        ["monitor", "--as-of", "2017-02-30"], 2, ["--as-of must be a date like"], migrate=False
    ),
    "unknown-option": Case(
        ["data-prep", "--nope"],
        2,
        ["No such option: --nope (see `mlops data-prep --help`)"],
        migrate=False,
    ),
    "unknown-command": Case(
        ["prep"], 2, ["No such command 'prep'", "(see `mlops --help`)"], migrate=False
    ),
    "demo-zero-days": Case(
        ["demo", "--days", "0"], 2, ["Invalid value for '--days'"], migrate=False
    ),
    "serve-port-out-of-range": Case(
        ["serve", "--port", "70000"], 2, ["Invalid value for '--port'"], migrate=False
    ),
    "finalize-without-as-of": Case(
        ["data-prep", "--finalize"],
        2,
        ["--finalize needs --as-of"],
        env={"DATA_PREP_SHARDS": "2"},
    ),
    "finalize-without-shards": Case(
        ["data-prep", "--finalize", "--as-of", "2017-06-01"],
        2,
        ["--finalize combines shards: set DATA_PREP_SHARDS"],
    ),
    "day-without-a-dataset": Case(
        ["batch-infer", "--as-of", "2017-06-01"],
        3,
        ["No dataset has been published for 2017-06-01 or earlier", "mlops data-prep --as-of"],
    ),
    "stage-before-migrate": Case(
        ["trade"],
        6,
        ["The database schema is empty", "run `mlops migrate` first"],
        migrate=False,
    ),
    # Alpha Vantage's answers.
    "alphavantage-invalid-key": Case(
        AV_PREP,
        2,
        ["Alpha Vantage refused ALPHAVANTAGE_API_KEY", "nothing was published"],
        env=AV,
        answers=[Answer("json", INVALID_KEY)],
    ),
    "alphavantage-demo-key": Case(
        AV_PREP,
        2,
        ["Alpha Vantage refused ALPHAVANTAGE_API_KEY", "demo"],
        env=AV,
        answers=[Answer("json", DEMO_KEY)],
    ),
    "alphavantage-unknown-only-symbol": Case(
        AV_PREP,
        3,
        ["The data source returned no bars on or before 2017-12-29"],
        env=AV,
        answers=[Answer("json", ERROR_MESSAGE)],
    ),
    "alphavantage-rate-limit": Case(
        AV_PREP,
        3,
        ["AAPL still failed after 2 attempts: rate limit notice", "run it again later"],
        env=AV,
        answers=[Answer("json", RATE_LIMIT_NOTE)] * 2,
    ),
    "alphavantage-premium-only": Case(
        AV_PREP,
        3,
        ["Alpha Vantage answers AAPL only on a premium plan"],
        env=AV,
        answers=[Answer("json", PREMIUM_INFORMATION)] * 2,
    ),
    "alphavantage-bad-gateway": Case(
        AV_PREP,
        3,
        ["AAPL still failed after 2 attempts: HTTP 502"],
        env=AV,
        answers=[Answer("json", "<html>Bad gateway</html>", status=502)] * 2,
    ),
    "alphavantage-no-time-series": Case(
        AV_PREP,
        3,
        ["has no 'Time Series (Daily)' (its keys: Meta Data)"],
        env=AV,
        answers=[Answer("json", {"Meta Data": {}})],
    ),
    "alphavantage-not-json": Case(
        AV_PREP,
        3,
        ["AAPL still failed after 2 attempts: the answer is not JSON"],
        env=AV,
        answers=[Answer("json", "<html>maintenance</html>")] * 2,
    ),
    "alphavantage-forbidden": Case(
        AV_PREP,
        3,
        ["Alpha Vantage answered HTTP 403 for AAPL"],
        env=AV,
        answers=[Answer("json", "forbidden", status=403)],
    ),
    "alphavantage-never-answers-in-time": Case(
        AV_PREP,
        3,
        ["AAPL still failed after 2 attempts: no answer within 1 s"],
        env=AV,
        answers=[Answer("slow", seconds=3.0)] * 2,
    ),
}


@pytest.fixture
def alphavantage() -> Iterator[FakeAlphaVantage]:
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


def test_the_corpus_has_at_least_40_kinds() -> None:
    assert len(CASES) >= 40


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name: str, tmp_path: Path, cli, alphavantage) -> None:
    case = CASES[name]
    env = {
        "MLOPS_HOME": str(tmp_path / "home"),
        "ERROR_LOG_DIR": str(tmp_path / "errors"),
        "MODEL_CONFIG_PATH": str(default_config_path()),
        **case.env,
    }
    if case.files is not None:
        env.update(case.files(tmp_path))
    if case.answers is not None:
        env["ALPHAVANTAGE_BASE_URL"] = alphavantage.url
        alphavantage.script("AAPL", *case.answers)
    if case.migrate:
        assert cli({"MLOPS_HOME": env["MLOPS_HOME"]}, "migrate").code == 0
    outcome = cli(env, *case.args)
    if case.code == 0:
        result = assert_ok(outcome)
        assert case.check is not None
        case.check(result)
        return
    sentence = assert_fails(outcome, case.code, *case.fragments)
    if os.environ.get("PRINT_BAD_INPUT_CORPUS"):  # for the notes: name, exit code, sentence
        print(f"\nCORPUS|{name}|{case.code}|{sentence}")
    assert API_KEY not in outcome.stderr
    assert len(sentence) < 600
    assert not (tmp_path / "home" / "store" / "datasets").exists() or case.code == 6
