"""Settings: defaults, and one sentence naming the variable for every bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops.errors import ConfigError
from mlops.settings import load_settings, parse_date


def test_defaults(embedded_settings, tmp_path: Path) -> None:
    s = embedded_settings
    assert s.mlops_home == tmp_path
    assert s.store_backend == "local"
    assert s.store_root == tmp_path / "store"
    assert s.db_url == f"sqlite:///{(tmp_path / 'mlops.db').resolve()}"
    assert s.tracking_uri == f"sqlite:///{(tmp_path / 'mlflow.db').resolve()}"
    assert s.mlflow_artifact_root == (tmp_path / "mlartifacts").resolve().as_uri()
    assert s.data_source == "sample"
    assert s.broker == "paper"
    assert s.trade_threshold == 0.005
    assert s.log_format == "text"
    assert s.log_level == "INFO"
    assert s.symbol_list == []
    assert s.column_map == {}
    assert s.database_url is None
    assert s.aws_access_key_id is None


def test_environment_is_read(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    monkeypatch.setenv("TRADE_THRESHOLD", "0.01")
    monkeypatch.setenv("LOG_LEVEL", "debug")
    monkeypatch.setenv("SYMBOLS", " aapl, ,googl ")
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg2://u@db:5432/mlops")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    s = load_settings()
    assert s.mlops_home == tmp_path
    assert s.trade_threshold == 0.01
    assert s.log_level == "DEBUG"
    assert s.symbol_list == ["AAPL", "GOOGL"]
    assert s.db_url == "postgresql+psycopg2://u@db:5432/mlops"
    assert s.tracking_uri == "http://mlflow:5000"
    assert s.mlflow_artifact_root is None


def test_overrides_win_over_environment(monkeypatch, make_settings, tmp_path: Path) -> None:
    monkeypatch.setenv("BROKER", "alpaca")  # would fail without keys
    assert make_settings(tmp_path, BROKER="paper").broker == "paper"


@pytest.mark.parametrize(
    ("env", "variable", "detail"),
    [
        ({"TRADE_THRESHOLD": "abc"}, "TRADE_THRESHOLD", "'abc'"),
        ({"TRADE_THRESHOLD": "2"}, "TRADE_THRESHOLD", "less than 1"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT", "'xml'"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL", "LOUD"),
        ({"STORE_BACKEND": "ftp"}, "STORE_BACKEND", "'ftp'"),
        ({"TRAIN_EPOCHS": "0"}, "TRAIN_EPOCHS", "greater than or equal to 1"),
        ({"ALPACA_LIVE_TRADING": "maybe"}, "ALPACA_LIVE_TRADING", "true alone"),
        # Issue 18: 1, yes and on used to turn live trading on; only the word true does.
        ({"ALPACA_LIVE_TRADING": "1"}, "ALPACA_LIVE_TRADING", "true or false"),
        ({"ALPACA_LIVE_TRADING": "yes"}, "ALPACA_LIVE_TRADING", "true or false"),
        ({"ALPACA_LIVE_TRADING": "on"}, "ALPACA_LIVE_TRADING", "true or false"),
        # A URL without its scheme passed the live guard, then ended in a traceback file.
        ({"ALPACA_BASE_URL": "api.alpaca.markets"}, "ALPACA_BASE_URL", "its scheme and host"),
        ({"BROKER": "alpaca"}, "ALPACA_API_KEY", "BROKER=alpaca"),
        (
            {"BROKER": "alpaca", "ALPACA_API_KEY": "PKREALLOOKING"},
            "ALPACA_SECRET_KEY",
            "BROKER=alpaca",
        ),
        (
            {"BROKER": "alpaca", "ALPACA_API_KEY": " ", "ALPACA_SECRET_KEY": "x"},
            "ALPACA_API_KEY",
            "",
        ),
        ({"DATA_SOURCE": "files"}, "DATA_FILES", "DATA_SOURCE=files"),
        ({"DATA_SOURCE": "alphavantage"}, "ALPHAVANTAGE_API_KEY", ""),
    ],
)
def test_bad_value_names_the_variable(
    monkeypatch, tmp_path: Path, env: dict[str, str], variable: str, detail: str
) -> None:
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert variable in message
    assert detail in message
    assert "\n" not in message
    assert "pydantic" not in message.lower()


def test_bad_override_names_the_variable(make_settings, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="TRADE_THRESHOLD"):
        make_settings(tmp_path, TRADE_THRESHOLD="abc")


@pytest.mark.parametrize("placeholder", ["changeme", "CHANGEME", " replace-me ", "your-key-here"])
@pytest.mark.parametrize("variable", ["ALPACA_API_KEY", "ALPACA_SECRET_KEY"])
def test_placeholder_secrets_are_refused(
    make_settings, tmp_path: Path, variable: str, placeholder: str
) -> None:
    keys = {"ALPACA_API_KEY": "PKREALKEY", "ALPACA_SECRET_KEY": "real-secret"}
    keys[variable] = placeholder
    with pytest.raises(ConfigError) as info:
        make_settings(tmp_path, BROKER="alpaca", **keys)
    message = str(info.value)
    assert variable in message
    assert "placeholder" in message
    # The secret itself is never echoed back.
    assert placeholder.strip() not in message


def test_real_alpaca_keys_are_accepted(make_settings, tmp_path: Path) -> None:
    s = make_settings(
        tmp_path, BROKER="alpaca", ALPACA_API_KEY="PKREALKEY", ALPACA_SECRET_KEY="real"
    )
    assert s.alpaca_api_key.get_secret_value() == "PKREALKEY"
    assert "PKREALKEY" not in repr(s)


# Each server's password, and the settings that make the command log in to that server.
SERVERS = {
    "PGPASSWORD": {"DATABASE_URL": "postgresql+psycopg2://db:5432/mlops"},
    "DATABASE_URL's password": {},
    "AWS_SECRET_ACCESS_KEY": {"STORE_BACKEND": "s3", "AWS_ACCESS_KEY_ID": "mlops-data-prep"},
    "MLFLOW_TRACKING_PASSWORD": {"MLFLOW_TRACKING_URI": "http://mlflow:5000"},
}


def _with_password(name: str, password: str) -> dict[str, str]:
    if name == "DATABASE_URL's password":
        return {"DATABASE_URL": f"postgresql+psycopg2://mlops_trade:{password}@db:5432/mlops"}
    return {**SERVERS[name], name: password}


@pytest.mark.parametrize("name", list(SERVERS))
@pytest.mark.parametrize(
    ("password", "why"),
    [("changeme", "placeholder"), (" CHANGEME ", "placeholder"), ("s3cr3t-pw", "shorter than 12")],
)
def test_server_passwords_placeholder_or_short_are_refused_at_start(
    make_settings, tmp_path: Path, name: str, password: str, why: str
) -> None:
    """Postgres, the S3 store (MinIO) and MLflow: the template's changeme, or a password
    shorter than 12 characters, stops every command at start (the value never shown)."""
    with pytest.raises(ConfigError) as info:
        make_settings(tmp_path, **_with_password(name, password))
    message = str(info.value)
    assert name in message and why in message
    assert password.strip() not in message.lower()
    assert make_settings(tmp_path, **_with_password(name, "a5f0c3e9b7d21486"))


def test_the_embedded_defaults_need_no_passwords(make_settings, tmp_path: Path) -> None:
    """No server, nothing sent: a short or placeholder value left in the environment for
    a server that is not used is not checked."""
    s = make_settings(
        tmp_path,
        PGPASSWORD="x",
        AWS_SECRET_ACCESS_KEY="changeme",
        MLFLOW_TRACKING_PASSWORD="x",
        DATABASE_URL="sqlite:///" + str(tmp_path / "m.db"),
    )
    assert s.store_backend == "local" and s.tracking_uri.startswith("sqlite")


def test_data_files_source(make_settings, tmp_path: Path) -> None:
    s = make_settings(tmp_path, DATA_SOURCE="files", DATA_FILES=str(tmp_path / "bars.csv"))
    assert s.data_source == "files"
    assert s.data_files == str(tmp_path / "bars.csv")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", {}),
        ("date=Date", {"date": "Date"}),
        (" date = Date , symbol=Ticker,", {"date": "Date", "symbol": "Ticker"}),
        ("CLOSE=Adj Close", {"close": "Adj Close"}),
    ],
)
def test_column_map_parsing(make_settings, tmp_path: Path, text: str, expected: dict) -> None:
    assert make_settings(tmp_path, DATA_COLUMN_MAP=text).column_map == expected


@pytest.mark.parametrize("text", ["date", "date=", "=Date", "date=Date,close"])
def test_bad_column_map_names_the_variable(make_settings, tmp_path: Path, text: str) -> None:
    s = make_settings(tmp_path, DATA_COLUMN_MAP=text)
    with pytest.raises(ConfigError, match="DATA_COLUMN_MAP"):
        _ = s.column_map


def test_parse_date() -> None:
    from datetime import date

    assert parse_date(None) is None
    assert parse_date("2017-12-01") == date(2017, 12, 1)
    with pytest.raises(ConfigError, match=r"--as-of must be a date.*'12/01/2017'"):
        parse_date("12/01/2017")
