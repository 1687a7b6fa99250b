"""One typed settings object, read from the environment.

The variable names are the keys of the ConfigMaps and Secrets in ``config-maps/``.
Settings are built inside each command (``load_settings``), never at import.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mlops.errors import ConfigError
from mlops.symbols import SYMBOL_RULE, is_symbol

PLACEHOLDER_SECRETS = {"changeme", "change-me", "replace-me", "your-key-here"}
# The shortest password accepted for a server of the pipeline (Postgres, the S3 store,
# MLflow); the template asks for 32 hex characters.
MIN_PASSWORD_LENGTH = 12
# The trading model when MODEL_NAME is not set, by DATA_BARS: the packaged catalog's.
DEFAULT_MODEL_NAMES = {"ohlcv": "stock-close", "close_only": "stock-close-only"}


class Settings(BaseSettings):
    """Every knob of the pipeline, named as its environment variable."""

    model_config = SettingsConfigDict(
        env_file=None, extra="ignore", case_sensitive=False, populate_by_name=True
    )

    # Where embedded state lives: the object store, SQLite files and MLflow on SQLite.
    mlops_home: Path = Field(default=Path("var"), alias="MLOPS_HOME")

    # Object store.
    store_backend: Literal["local", "s3"] = Field(default="local", alias="STORE_BACKEND")
    store_local_root: Path | None = Field(default=None, alias="STORE_LOCAL_ROOT")
    s3_bucket: str = Field(default="mlops", alias="S3_BUCKET")
    s3_endpoint_url: str | None = Field(default=None, alias="S3_ENDPOINT_URL")
    s3_region: str = Field(default="us-east-1", alias="S3_REGION")
    aws_access_key_id: SecretStr | None = Field(default=None, alias="AWS_ACCESS_KEY_ID")
    aws_secret_access_key: SecretStr | None = Field(default=None, alias="AWS_SECRET_ACCESS_KEY")
    # Time limits on every S3 call: connecting, waiting for an answer, attempts in all.
    s3_connect_timeout_seconds: float = Field(
        default=5.0, gt=0, le=600, alias="S3_CONNECT_TIMEOUT_SECONDS"
    )
    s3_read_timeout_seconds: float = Field(
        default=60.0, gt=0, le=3600, alias="S3_READ_TIMEOUT_SECONDS"
    )
    s3_max_attempts: int = Field(default=4, ge=1, le=20, alias="S3_MAX_ATTEMPTS")

    # Database: Postgres (postgresql+psycopg2://...) in the cluster, SQLite by default.
    # DATABASE_URL names no user or password there: libpq takes them from PGUSER and
    # PGPASSWORD (read here only to refuse a placeholder or short one at start).
    database_url: str | None = Field(default=None, alias="DATABASE_URL")
    pgpassword: SecretStr | None = Field(default=None, alias="PGPASSWORD")
    database_connect_attempts: int = Field(
        default=10, ge=1, le=100, alias="DATABASE_CONNECT_ATTEMPTS"
    )
    # A server that accepts the connection but never answers fails after this (libpq
    # connect_timeout, whole seconds); a query running longer than the statement limit is
    # cancelled by Postgres (0: no limit). SQLite waits this long for a locked database.
    database_connect_timeout_seconds: int = Field(
        default=5, ge=1, le=600, alias="DATABASE_CONNECT_TIMEOUT_SECONDS"
    )
    database_statement_timeout_seconds: float = Field(
        default=300.0, ge=0, le=86_400, alias="DATABASE_STATEMENT_TIMEOUT_SECONDS"
    )

    # MLflow tracking and registry. Behind basic auth, the client sends
    # MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (the password is read here only
    # to refuse a placeholder or short one at start).
    mlflow_tracking_uri: str | None = Field(default=None, alias="MLFLOW_TRACKING_URI")
    mlflow_tracking_password: SecretStr | None = Field(
        default=None, alias="MLFLOW_TRACKING_PASSWORD"
    )
    mlflow_experiment: str = Field(default="stock-close", alias="MLFLOW_EXPERIMENT")
    # Behind basic auth: the MLflow users given EDIT on a model `mlops models create` makes
    # (comma-separated; the dashboard's pod: mlops-train). Empty: no grants (no auth).
    mlflow_model_editors: str = Field(default="", alias="MLFLOW_MODEL_EDITORS")
    # The trading model: its champion feeds trading and serving. Every model of the
    # catalog (MODEL_CONFIGS_DIR) is registered under its own name; the champions and
    # challengers of the others are scored in shadow.
    # Default: stock-close, or stock-close-only with DATA_BARS=close_only (DEFAULT_MODEL_NAMES).
    model_name: str = Field(default="stock-close", alias="MODEL_NAME")
    champion_alias: str = Field(default="champion", alias="CHAMPION_ALIAS")
    # Time limits on MLflow's HTTP calls (set as MLflow's own MLFLOW_HTTP_REQUEST_TIMEOUT
    # and MLFLOW_HTTP_REQUEST_MAX_RETRIES before the client is made), and how often the
    # tracking server is asked whether it is up before a command gives up on it.
    mlflow_timeout_seconds: int = Field(default=60, ge=1, le=3600, alias="MLFLOW_TIMEOUT_SECONDS")
    mlflow_max_retries: int = Field(default=2, ge=0, le=10, alias="MLFLOW_MAX_RETRIES")
    mlflow_connect_attempts: int = Field(default=5, ge=1, le=100, alias="MLFLOW_CONNECT_ATTEMPTS")

    # Data prep.
    data_source: Literal["sample", "files", "alphavantage"] = Field(
        default="sample", alias="DATA_SOURCE"
    )
    data_files: str | None = Field(default=None, alias="DATA_FILES")
    data_column_map: str = Field(default="", alias="DATA_COLUMN_MAP")
    symbols: str = Field(default="", alias="SYMBOLS")
    alphavantage_api_key: SecretStr | None = Field(default=None, alias="ALPHAVANTAGE_API_KEY")
    alphavantage_base_url: str = Field(
        default="https://www.alphavantage.co/query", alias="ALPHAVANTAGE_BASE_URL"
    )
    alphavantage_timeout_seconds: float = Field(
        default=30.0, gt=0, alias="ALPHAVANTAGE_TIMEOUT_SECONDS"
    )
    alphavantage_connect_timeout_seconds: float = Field(
        default=10.0, gt=0, alias="ALPHAVANTAGE_CONNECT_TIMEOUT_SECONDS"
    )
    alphavantage_max_attempts: int = Field(
        default=4, ge=1, le=10, alias="ALPHAVANTAGE_MAX_ATTEMPTS"
    )
    # First wait before retrying a rate limit or dropped connection; it doubles, capped at 120 s.
    alphavantage_retry_wait_seconds: float = Field(
        default=15.0, ge=0, alias="ALPHAVANTAGE_RETRY_WAIT_SECONDS"
    )
    quality_max_bad_share: float = Field(default=0.01, ge=0, le=1, alias="QUALITY_MAX_BAD_SHARE")
    # Trading days are weekdays (Mon-Fri) in the two rules below.
    stale_after_days: int = Field(default=5, ge=1, alias="STALE_AFTER_DAYS")
    quality_max_gap_days: int = Field(default=5, ge=1, alias="QUALITY_MAX_GAP_DAYS")
    quality_max_jump_factor: float = Field(default=1.8, gt=1, alias="QUALITY_MAX_JUMP_FACTOR")
    # Prices put on the scale of an adjusted close (splits and dividends): "auto" for files
    # that carry one (not the bundled sample, whose datasets stay as published), "always"
    # wherever there is one (the sample too), "never".
    data_adjust_prices: Literal["auto", "always", "never"] = Field(
        default="auto", alias="DATA_ADJUST_PRICES"
    )
    # What a bar holds: "ohlcv" (open, high, low, close, volume) or "close_only" (a date, a
    # symbol and a close: index levels, fund prices). Close-only data gets the features
    # computable from closes alone, and the packaged model catalog is the close-only one.
    data_bars: Literal["ohlcv", "close_only"] = Field(default="ohlcv", alias="DATA_BARS")
    # Kubernetes Indexed Job: DATA_PREP_SHARDS = completions; the index is set by Kubernetes.
    data_prep_shards: int = Field(default=1, ge=1, le=1000, alias="DATA_PREP_SHARDS")
    job_completion_index: int = Field(default=0, ge=0, alias="JOB_COMPLETION_INDEX")

    # Training.
    # The model catalog: a folder of named Ludwig configs, ``<model name>.yaml`` each
    # (default: the packaged set). MODEL_CONFIG_PATH, when set, is MODEL_NAME's config.
    model_configs_dir: Path | None = Field(default=None, alias="MODEL_CONFIGS_DIR")
    model_config_path: Path | None = Field(default=None, alias="MODEL_CONFIG_PATH")
    # Promotion: when set, a candidate must also beat the naive forecast (and the champion)
    # with a Diebold-Mariano p-value at most this (off by default: reported only).
    promotion_max_p_value: float | None = Field(
        default=None, gt=0, le=1, alias="PROMOTION_MAX_P_VALUE"
    )
    train_epochs: int | None = Field(default=None, ge=1, alias="TRAIN_EPOCHS")
    validation_days: int = Field(default=60, ge=5, alias="VALIDATION_DAYS")
    holdout_days: int = Field(default=60, ge=5, alias="HOLDOUT_DAYS")
    random_seed: int = Field(default=42, alias="RANDOM_SEED")

    # Serving (`mlops serve`): address, how often to look for a new champion, and an
    # optional bearer token (from a Secret) required on /predict, /batch_predict, /model
    # and /metrics.
    serve_host: str = Field(default="127.0.0.1", alias="SERVE_HOST")
    serve_port: int = Field(default=8080, ge=1, le=65535, alias="SERVE_PORT")
    serve_poll_seconds: float = Field(default=10.0, gt=0, alias="SERVE_POLL_SECONDS")
    serve_api_token: SecretStr | None = Field(default=None, alias="SERVE_API_TOKEN")
    # POST /admin/reload (look at the registry now) needs this token; unset: disabled.
    serve_admin_token: SecretStr | None = Field(default=None, alias="SERVE_ADMIN_TOKEN")
    # A body must arrive within this; the idle time allowed between requests on a kept-
    # alive connection; bodies over SERVE_LARGE_BODY_BYTES (or chunked) read at once.
    serve_body_timeout_seconds: float = Field(
        default=30.0, gt=0, alias="SERVE_BODY_TIMEOUT_SECONDS"
    )
    serve_idle_timeout_seconds: int = Field(default=5, ge=1, alias="SERVE_IDLE_TIMEOUT_SECONDS")
    serve_large_body_bytes: int = Field(
        default=1024 * 1024, ge=1024, alias="SERVE_LARGE_BODY_BYTES"
    )
    serve_max_large_bodies: int = Field(default=2, ge=1, alias="SERVE_MAX_LARGE_BODIES")

    # Dashboard (`mlops dashboard`) and `mlops models` (mlops.access): named users with
    # roles (viewer, operator, admin) from a Secret of password hashes, one
    # `name:role:hash` entry per line (or comma-separated, or a JSON object), inline or in
    # a file (the Secret mounted as one); `mlops users hash` makes an entry. The older
    # single shared token (DASHBOARD_TOKEN, at least 16 characters) still works, as one
    # admin named "token"; set one of the three, not several. None set: read-only.
    dashboard_users: SecretStr | None = Field(default=None, alias="DASHBOARD_USERS")
    dashboard_users_file: Path | None = Field(default=None, alias="DASHBOARD_USERS_FILE")
    dashboard_token: SecretStr | None = Field(default=None, alias="DASHBOARD_TOKEN")
    # `mlops models` actions when DASHBOARD_USERS is set: who acts (the audit's
    # cli:<name>) and their password (else asked for on a terminal).
    mlops_user: str | None = Field(default=None, alias="MLOPS_USER")
    mlops_password: SecretStr | None = Field(default=None, alias="MLOPS_PASSWORD")
    # Viewing: open to anyone who reaches the page (true), or only to signed-in users
    # (false: every route but /healthz asks for HTTP basic auth).
    dashboard_anonymous_view: bool = Field(default=True, alias="DASHBOARD_ANONYMOUS_VIEW")
    # Wrong credentials: after this many from one client address within the window,
    # that client is answered 429 until the window has passed (every failure audited).
    dashboard_max_failures: int = Field(default=5, ge=1, alias="DASHBOARD_MAX_FAILURES")
    dashboard_failure_window_seconds: float = Field(
        default=300.0, gt=0, alias="DASHBOARD_FAILURE_WINDOW_SECONDS"
    )
    # Origins (scheme://host:port) besides the dashboard's own Host that may post actions
    # (a proxy that rewrites the Host header); comma-separated.
    dashboard_allowed_origins: str = Field(default="", alias="DASHBOARD_ALLOWED_ORIGINS")

    # Trading.
    # The strategies file (docs/trading.md, "Strategies"): named strategies, each with its
    # own trading settings and account. Unset: one strategy, "default", these settings.
    strategies_file: Path | None = Field(default=None, alias="STRATEGIES_FILE")
    broker: Literal["paper", "alpaca"] = Field(default="paper", alias="BROKER")
    # How long an order is good for at the broker: day (from the next open to the close;
    # sent after the close, it joins the next session's first trades) or opg (the opening
    # auction only: the open the backtest fills at; Alpaca takes it from 19:00 to 9:28 New
    # York time). docs/trading.md, "Execution".
    trade_time_in_force: Literal["day", "opg"] = Field(default="day", alias="TRADE_TIME_IN_FORCE")
    # Market orders (take the session's price) or limit orders at the decision day's close
    # moved by TRADE_LIMIT_BUFFER_BPS (a buy at close x (1 + buffer), a sell at close x
    # (1 - buffer)): a limit the session does not reach does not fill, and the day order
    # expires. The paper broker and the backtest fill by the same rule. docs/trading.md.
    trade_order_type: Literal["market", "limit"] = Field(default="market", alias="TRADE_ORDER_TYPE")
    trade_limit_buffer_bps: float = Field(
        default=50.0, ge=0, le=1000, alias="TRADE_LIMIT_BUFFER_BPS"
    )
    trade_threshold: float = Field(default=0.005, gt=0, lt=1, alias="TRADE_THRESHOLD")
    # A direction classifier as the trading model (docs/trading.md): buy the highest
    # probability of a rise at or above this, sell a held position below 1 minus it.
    trade_probability_threshold: float = Field(
        default=0.55, gt=0.5, lt=1, alias="TRADE_PROBABILITY_THRESHOLD"
    )
    # The rule (docs/trading.md): threshold buys the best forecast at or past
    # TRADE_THRESHOLD and sells held positions forecast to fall past it; rotation also
    # sells every held position forecast lower than that candidate (after the original
    # project's buy_best_gain_stock).
    trade_rule: Literal["threshold", "rotation"] = Field(default="threshold", alias="TRADE_RULE")
    # Which held positions forecast to fall past the threshold are sold: every one, or only
    # the one forecast to fall most.
    trade_sell: Literal["all_losers", "worst_loser"] = Field(
        default="all_losers", alias="TRADE_SELL"
    )
    trade_max_position_value: float = Field(
        default=10_000.0, gt=0, alias="TRADE_MAX_POSITION_VALUE"
    )
    paper_initial_cash: float = Field(default=100_000.0, gt=0, alias="PAPER_INITIAL_CASH")
    alpaca_api_key: SecretStr | None = Field(default=None, alias="ALPACA_API_KEY")
    alpaca_secret_key: SecretStr | None = Field(default=None, alias="ALPACA_SECRET_KEY")
    alpaca_base_url: str | None = Field(default=None, alias="ALPACA_BASE_URL")
    alpaca_live_trading: bool = Field(default=False, alias="ALPACA_LIVE_TRADING")
    # Alpaca calls: transient failures (5xx, 429, dropped connections, timeouts) are retried
    # this many times in all, waiting ALPACA_RETRY_WAIT_SECONDS, doubling, at most 30 s.
    alpaca_max_attempts: int = Field(default=4, ge=1, le=10, alias="ALPACA_MAX_ATTEMPTS")
    alpaca_retry_wait_seconds: float = Field(default=1.0, ge=0, alias="ALPACA_RETRY_WAIT_SECONDS")
    alpaca_timeout_seconds: float = Field(default=10.0, gt=0, alias="ALPACA_TIMEOUT_SECONDS")
    # Kill switch (also `mlops trading halt`): no decision and no order while true.
    trading_halted: bool = Field(default=False, alias="TRADING_HALTED")
    # Positions the strategy did not open (bought by hand on the same account) are left
    # alone unless this is true.
    trade_manage_all_positions: bool = Field(default=False, alias="TRADE_MANAGE_ALL_POSITIONS")
    # Reconciliation (before every `mlops trade`, and `mlops trading reconcile`): a position
    # or open order the book cannot explain leaves its symbol untraded; when true, it stops
    # the run instead (exit 5).
    reconcile_strict: bool = Field(default=False, alias="RECONCILE_STRICT")

    # Alerts (mlops/alerts.py): a Slack-compatible webhook that gets one JSON POST per
    # failed stage, halt, resume, reconciliation difference, retrain request and
    # promotion. A secret (Slack's carries its token): from a Secret, never logged. Each
    # attempt waits at most ALERT_TIMEOUT_SECONDS; ALERT_MAX_ATTEMPTS in all.
    alert_webhook_url: SecretStr | None = Field(default=None, alias="ALERT_WEBHOOK_URL")
    alert_timeout_seconds: float = Field(default=5.0, gt=0, le=60, alias="ALERT_TIMEOUT_SECONDS")
    alert_max_attempts: int = Field(default=3, ge=1, le=10, alias="ALERT_MAX_ATTEMPTS")
    # Risk controls, checked on every buy (docs/trading.md).
    risk_max_open_positions: int = Field(default=10, ge=1, alias="RISK_MAX_OPEN_POSITIONS")
    risk_max_gross_exposure: float = Field(default=1.0, gt=0, le=4, alias="RISK_MAX_GROSS_EXPOSURE")
    risk_max_order_value: float = Field(default=20_000.0, gt=0, alias="RISK_MAX_ORDER_VALUE")
    risk_price_buffer: float = Field(default=0.01, ge=0, lt=1, alias="RISK_PRICE_BUFFER")
    risk_daily_loss_limit: float = Field(default=0.05, gt=0, le=1, alias="RISK_DAILY_LOSS_LIMIT")

    # Backtest (`mlops backtest`): fills at the next session's open (limit orders, with
    # TRADE_ORDER_TYPE=limit: as the paper broker fills them), moved against the order by
    # the slippage (never past a limit), plus a commission per share.
    backtest_slippage_bps: float = Field(default=1.0, ge=0, le=1000, alias="BACKTEST_SLIPPAGE_BPS")
    backtest_commission_per_share: float = Field(
        default=0.0, ge=0, alias="BACKTEST_COMMISSION_PER_SHARE"
    )

    # Monitoring.
    monitor_window_days: int = Field(default=20, ge=2, alias="MONITOR_WINDOW_DAYS")
    monitor_mape_threshold: float = Field(default=0.03, gt=0, alias="MONITOR_MAPE_THRESHOLD")
    monitor_baseline_ratio: float = Field(default=1.25, gt=0, alias="MONITOR_BASELINE_RATIO")
    monitor_drift_method: str = Field(default="ks", alias="MONITOR_DRIFT_METHOD")
    # Whoever runs the day (mlops daily, mlops demo) trains when a retrain request is open
    # and at least this many weekdays passed since the last training.
    retrain_cooldown_days: int = Field(default=5, ge=0, alias="RETRAIN_COOLDOWN_DAYS")
    # `mlops daily --catch-up` runs at most this many missed sessions (more: refused).
    daily_catch_up_max_sessions: int = Field(default=10, ge=1, alias="DAILY_CATCH_UP_MAX_SESSIONS")
    monitor_drift_share_threshold: float = Field(
        default=0.6, gt=0, le=1, alias="MONITOR_DRIFT_SHARE_THRESHOLD"
    )
    # The drift alarm is calibrated on the training history: its threshold is the drift
    # share that past windows tested the same way exceed this often (false-alarm rate).
    monitor_drift_false_alarm_rate: float = Field(
        default=0.05, gt=0, lt=1, alias="MONITOR_DRIFT_FALSE_ALARM_RATE"
    )

    # Stage runs are leases: a running stage writes a heartbeat this often, and the next
    # command marks a run whose heartbeat is older than STAGE_LEASE_SECONDS "abandoned".
    stage_heartbeat_seconds: float = Field(
        default=15.0, gt=0, le=3600, alias="STAGE_HEARTBEAT_SECONDS"
    )
    stage_lease_seconds: float = Field(default=120.0, gt=0, le=86_400, alias="STAGE_LEASE_SECONDS")

    # Backups (mlops backup / restore): how many to keep in the object store, and where
    # pg_dump and pg_restore are when not on the PATH.
    backup_retention: int = Field(default=7, ge=1, le=1000, alias="BACKUP_RETENTION")
    postgres_bin_dir: Path | None = Field(default=None, alias="POSTGRES_BIN_DIR")

    # Logging.
    log_format: Literal["text", "json"] = Field(default="text", alias="LOG_FORMAT")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", alias="LOG_LEVEL"
    )
    # Where the traceback of an unexpected failure is saved (default: <temp>/mlops-errors).
    error_log_dir: Path | None = Field(default=None, alias="ERROR_LOG_DIR")

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("alpaca_live_trading", mode="before")
    @classmethod
    def _only_the_word_true(cls, value: object) -> object:
        """Live trading is turned on by ``true`` alone (any case), never by 1, yes or on."""
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text not in {"true", "false", ""}:
            raise ValueError("must be true or false (live trading is turned on by true alone)")
        return text == "true"

    @field_validator("alert_webhook_url", mode="after")
    @classmethod
    def _webhook_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        parts = urlsplit(value.get_secret_value().strip())
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError("must be an http(s) URL with its host (the value is not shown)")
        return SecretStr(value.get_secret_value().strip())

    @field_validator("alpaca_base_url", mode="after")
    @classmethod
    def _url_with_scheme(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError(
                "must be a URL with its scheme and host, e.g. https://paper-api.alpaca.markets"
            )
        return value.strip()

    @field_validator("trade_rule", "trade_sell", "data_bars", mode="before")
    @classmethod
    def _lower_choice(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_combinations(self) -> Settings:
        if "model_name" not in self.model_fields_set:
            self.model_name = DEFAULT_MODEL_NAMES[self.data_bars]
        if self.data_source == "files" and not self.data_files:
            raise ValueError("DATA_FILES must name a file or folder when DATA_SOURCE=files")
        if self.data_source == "alphavantage" and self.alphavantage_api_key is None:
            raise ValueError("ALPHAVANTAGE_API_KEY must be set when DATA_SOURCE=alphavantage")
        if self.data_source == "alphavantage" and not self.symbol_list:
            raise ValueError("SYMBOLS must list at least one symbol when DATA_SOURCE=alphavantage")
        wrong = [s for s in self.symbol_list if not is_symbol(s)]
        if wrong:
            listed = ", ".join(repr(s) for s in wrong)
            raise ValueError(f"SYMBOLS holds {listed}, not a ticker ({SYMBOL_RULE})")
        if self.broker == "alpaca":
            for name, secret in (
                ("ALPACA_API_KEY", self.alpaca_api_key),
                ("ALPACA_SECRET_KEY", self.alpaca_secret_key),
            ):
                if secret is None or not secret.get_secret_value().strip():
                    raise ValueError(f"{name} must be set when BROKER=alpaca")
                if secret.get_secret_value().strip().lower() in PLACEHOLDER_SECRETS:
                    raise ValueError(f"{name} is still the template's placeholder value")
        if self.store_backend == "s3" and not self.s3_bucket:
            raise ValueError("S3_BUCKET must be set when STORE_BACKEND=s3")
        for name, password in self._server_passwords():
            _check_password(name, password)
        if self.stage_lease_seconds < 2 * self.stage_heartbeat_seconds:
            raise ValueError(
                f"STAGE_LEASE_SECONDS ({self.stage_lease_seconds:g}) must be at least twice "
                f"STAGE_HEARTBEAT_SECONDS ({self.stage_heartbeat_seconds:g}), or a live run "
                "could be taken for abandoned"
            )
        return self

    def _server_passwords(self) -> list[tuple[str, str]]:
        """(setting, password) of each server this configuration logs in to; the embedded
        defaults (SQLite, the local store, MLflow on SQLite) have none."""
        found: list[tuple[str, str]] = []
        if self.database_url and not self.database_url.startswith("sqlite"):
            in_url = urlsplit(self.database_url).password
            if in_url is not None:
                found.append(("DATABASE_URL's password", in_url))
            if self.pgpassword is not None:
                found.append(("PGPASSWORD", self.pgpassword.get_secret_value()))
        if self.store_backend == "s3" and self.aws_secret_access_key is not None:
            found.append(("AWS_SECRET_ACCESS_KEY", self.aws_secret_access_key.get_secret_value()))
        tracking = (self.mlflow_tracking_uri or "").strip().lower()
        if tracking.startswith(("http://", "https://")) and self.mlflow_tracking_password:
            found.append(
                ("MLFLOW_TRACKING_PASSWORD", self.mlflow_tracking_password.get_secret_value())
            )
        return found

    # Derived locations of the embedded defaults.
    @property
    def store_root(self) -> Path:
        return self.store_local_root or self.mlops_home / "store"

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.mlops_home / 'mlops.db').resolve()}"

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{(self.mlops_home / 'mlflow.db').resolve()}"

    @property
    def mlflow_artifact_root(self) -> str | None:
        """Artifact folder for the embedded MLflow; a tracking server decides its own."""
        if self.mlflow_tracking_uri and not self.mlflow_tracking_uri.startswith("sqlite"):
            return None
        return (self.mlops_home / "mlartifacts").resolve().as_uri()

    @property
    def column_map(self) -> dict[str, str]:
        """``DATA_COLUMN_MAP`` such as ``date=Date,symbol=Ticker`` as a dict."""
        pairs = [p.strip() for p in self.data_column_map.split(",") if p.strip()]
        result = {}
        for pair in pairs:
            ours, sep, theirs = pair.partition("=")
            if not sep or not ours.strip() or not theirs.strip():
                raise ConfigError(
                    f"Setting DATA_COLUMN_MAP is invalid: {pair!r} is not canonical=theirs."
                )
            result[ours.strip().lower()] = theirs.strip()
        return result

    @property
    def symbol_list(self) -> list[str]:
        return [s.strip().upper() for s in self.symbols.split(",") if s.strip()]


def password_problem(name: str, password: str) -> str | None:
    """Why ``password`` may not be used (the template's placeholder, or too short), or None."""
    if password.strip().lower() in PLACEHOLDER_SECRETS:
        return (
            f"{name} is still the template's placeholder value: set the password from the "
            "Secret (secrets.env)"
        )
    if len(password) < MIN_PASSWORD_LENGTH:
        return (
            f"{name} is shorter than {MIN_PASSWORD_LENGTH} characters (the value is not "
            "shown): use the password from the Secret (secrets.env)"
        )
    return None


def _check_password(name: str, password: str) -> None:
    problem = password_problem(name, password)
    if problem is not None:
        raise ValueError(problem)


def load_settings(**overrides: object) -> Settings:
    """Build the settings from the environment; a bad value raises ``ConfigError``."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError(_one_sentence(exc)) from None


def load_settings_from(base: Settings, overrides: Mapping[str, object]) -> Settings:
    """``base`` with some settings given other values (by their variable names), checked
    as a whole like the environment's; a bad value raises ``ConfigError``."""
    values: dict[str, object] = {name: getattr(base, name) for name in Settings.model_fields}
    for alias, value in overrides.items():
        values[_field_of(alias)] = value
    try:
        return Settings(**values)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError(_one_sentence(exc)) from None


def _field_of(alias: str) -> str:
    for name, info in Settings.model_fields.items():
        if alias.upper() in (name.upper(), (info.alias or "").upper()):
            return name
    raise ConfigError(f"There is no setting {alias}.")


def _one_sentence(exc: ValidationError) -> str:
    error = exc.errors()[0]
    loc = error.get("loc") or ()
    field = str(loc[0]) if loc else ""
    alias = _alias_of(field)
    message = str(error.get("msg", "is invalid")).removeprefix("Value error, ")
    if not alias:
        return f"Invalid settings: {message}."
    value = error.get("input")
    secret = any(
        "SecretStr" in str(info.annotation)
        for name, info in Settings.model_fields.items()
        if alias in (name, info.alias)
    )
    hidden = secret or isinstance(value, dict) or value is None
    shown = "" if hidden else f" (got {value!r})"
    return f"Setting {alias} is invalid: {message}{shown}."


def _alias_of(field: str) -> str:
    info = Settings.model_fields.get(field)
    if info is not None and info.alias:
        return info.alias
    return field.upper() if field else ""


def parse_date(text: str | None, name: str = "--as-of") -> date | None:
    """Parse an ISO date given on the command line."""
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{name} must be a date like 2017-12-01, got {text!r}.") from None
