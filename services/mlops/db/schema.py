"""Tables of the application database (SQLAlchemy Core).

The DDL lives in the versioned migrations under ``migrations/versions``; a test checks
that applying them yields exactly these tables.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from mlops.symbols import SYMBOL_MAX_LENGTH  # the data prep's rule fits these columns

metadata = MetaData()

# The strategy of the rows written before strategies existed, and of every row when there
# is no strategies file (mlops.contracts.strategies); migration 0012 sets it as the
# ``strategy`` columns' default. A kill-switch row for every strategy at once says ALL.
DEFAULT_STRATEGY = "default"
ALL_STRATEGIES = "*"
STRATEGY_MAX_LENGTH = 32

stage_runs = Table(
    "stage_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(64), nullable=False, unique=True),
    Column("stage", String(32), nullable=False, index=True),
    Column("run_date", Date, nullable=True),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Column("status", String(16), nullable=False),
    Column("error", Text, nullable=True),
    Column("details", Text, nullable=True),
    # The lease (migration 0003): the process's last sign of life, where it runs, and the
    # key only one running run may hold (cleared when the run ends).
    Column("heartbeat_at", DateTime(timezone=True), nullable=True),
    Column("host", String(255), nullable=True),
    Column("pid", Integer, nullable=True),
    Column("lease_key", String(200), nullable=True),
    Index("ix_stage_runs_lease_key", "lease_key", unique=True),
    Index("ix_stage_runs_status", "status"),
)

datasets = Table(
    "datasets",
    metadata,
    Column("version", String(64), primary_key=True),
    Column("as_of", Date, nullable=False, index=True),
    Column("manifest_key", String(512), nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("rows", Integer, nullable=False),
    Column("symbols", Text, nullable=False),
    Column("first_date", Date, nullable=False),
    Column("last_date", Date, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

predictions = Table(
    "predictions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("symbol", String(SYMBOL_MAX_LENGTH), nullable=False),
    Column("prediction_date", Date, nullable=False, index=True),
    Column("model_name", String(128), nullable=False),
    Column("model_version", String(32), nullable=False),
    # A regressor's predicted close and change; NULL for a classifier (migration 0010).
    Column("predicted_close", Float, nullable=True),
    Column("last_close", Float, nullable=False),
    Column("expected_change", Float, nullable=True),
    Column("dataset_version", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # champion (feeds trading) or challenger (scored in shadow); migration 0005.
    Column("role", String(16), nullable=False, server_default="champion"),
    # What the model output (migration 0010): price (a close), return, or probability (of
    # a rise: a direction classifier's), and that output; rows before 0007: price, NULL.
    Column("score_kind", String(16), nullable=False, server_default="price"),
    Column("score", Float, nullable=True),
    UniqueConstraint(
        "symbol", "prediction_date", "model_name", "model_version", name="uq_predictions_key"
    ),
)

trade_decisions = Table(
    "trade_decisions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("decision_date", Date, nullable=False, index=True),
    Column("symbol", String(SYMBOL_MAX_LENGTH), nullable=False),
    Column("action", String(8), nullable=False),
    Column("quantity", Float, nullable=False),
    Column("expected_change", Float, nullable=True),
    Column("predicted_close", Float, nullable=True),
    Column("last_close", Float, nullable=True),
    Column("model_version", String(32), nullable=True),
    Column("broker", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # The broker's account (Alpaca's account number; "paper" for the built-in broker).
    Column("account", String(64), nullable=False, server_default=""),
    # The strategy that decided (migration 0012): two strategies decide the same day.
    Column("strategy", String(STRATEGY_MAX_LENGTH), nullable=False, server_default="default"),
    UniqueConstraint(
        "decision_date", "symbol", "broker", "account", "strategy", name="uq_trade_decisions_key"
    ),
)

orders = Table(
    "orders",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    # Up to Alpaca's 128 characters (migration 0012: a strategy's token is in it).
    Column("client_order_id", String(128), nullable=False, unique=True),
    Column("decision_date", Date, nullable=False, index=True),
    Column("symbol", String(SYMBOL_MAX_LENGTH), nullable=False),
    Column("side", String(4), nullable=False),
    Column("quantity", Float, nullable=False),
    Column("broker", String(16), nullable=False),
    # The lifecycle state (mlops.trading.lifecycle): "planned" until the broker has it,
    # then the broker's own status; "unplaced" when it could not be placed.
    Column("status", String(32), nullable=False),
    Column("broker_order_id", String(64), nullable=True),
    Column("submitted_at", DateTime(timezone=True), nullable=False),
    Column("filled_at", DateTime(timezone=True), nullable=True),
    Column("fill_date", Date, nullable=True),
    # Average fill price of the filled quantity (partial fills included).
    Column("fill_price", Float, nullable=True),
    Column("error", Text, nullable=True),
    Column("account", String(64), nullable=False, server_default=""),
    # The status word the broker last answered, verbatim.
    Column("broker_status", String(32), nullable=True),
    Column("filled_quantity", Float, nullable=True),
    # Submissions tried; a planned order with attempts > 0 is looked up before a resend.
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("updated_at", DateTime(timezone=True), nullable=True),
    # The limit a limit order was placed with (TRADE_ORDER_TYPE=limit, migration 0011);
    # NULL: a market order.
    Column("limit_price", Float, nullable=True),
    Column("strategy", String(STRATEGY_MAX_LENGTH), nullable=False, server_default="default"),
)

equity_snapshots = Table(
    "equity_snapshots",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("snapshot_date", Date, nullable=False),
    Column("broker", String(16), nullable=False),
    Column("cash", Float, nullable=False),
    Column("positions_value", Float, nullable=False),
    Column("equity", Float, nullable=False),
    Column("benchmark_equity", Float, nullable=True),
    Column("positions", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("account", String(64), nullable=False, server_default=""),
    # Where the figures come from: "broker" (the broker's account) or "closes" (the data).
    Column("source", String(16), nullable=False, server_default="closes"),
    Column("strategy", String(STRATEGY_MAX_LENGTH), nullable=False, server_default="default"),
    UniqueConstraint(
        "snapshot_date", "broker", "account", "strategy", name="uq_equity_snapshots_key"
    ),
)

# The kill switch: `mlops trading halt` / `resume` add a row; for a strategy, the newest row
# of that strategy or of all of them ("*") is in force.
trading_halts = Table(
    "trading_halts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("halted", Boolean, nullable=False),
    Column("reason", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # Who halted or resumed (migration 0009): cli:<login>, dashboard:<user>.
    Column("actor", String(128), nullable=False, server_default=""),
    # What the halt did at the broker (JSON: orders canceled, closing orders sent).
    Column("details", Text, nullable=True),
    # Whose book (migration 0012): a strategy's name, or "*" for every strategy.
    Column("strategy", String(STRATEGY_MAX_LENGTH), nullable=False, server_default="default"),
)

# `mlops backtest` runs: their figures, and where the table and the chart are stored.
backtest_runs = Table(
    "backtest_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_key", String(64), nullable=False, unique=True),
    Column("model", String(64), nullable=False),
    Column("model_version", String(32), nullable=True),
    Column("start_date", Date, nullable=False),
    Column("end_date", Date, nullable=False),
    Column("symbols", Integer, nullable=False),
    Column("summary", Text, nullable=False),
    Column("table_key", String(512), nullable=False),
    Column("chart_key", String(512), nullable=False),
    Column("mlflow_run_id", String(64), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# Walk-forward runs (migration 0006): claimed at the start (the MLflow parent run every
# retrain point nests under), given their summary when finalized.
walkforward_runs = Table(
    "walkforward_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_key", String(64), nullable=False, unique=True),
    # running: points are being trained; finalizing: one runner combines them; succeeded.
    Column("status", String(16), nullable=False),
    Column("start_date", Date, nullable=False),
    Column("end_date", Date, nullable=False),
    Column("retrain_every", Integer, nullable=False),
    Column("window", String(32), nullable=False),
    Column("models", Text, nullable=False),
    Column("points", Integer, nullable=False),
    Column("dataset_version", String(64), nullable=False),
    Column("mlflow_run_id", String(64), nullable=True),
    Column("summary", Text, nullable=True),
    Column("summary_key", String(512), nullable=True),
    Column("report_key", String(512), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=True),
)

monitoring_metrics = Table(
    "monitoring_metrics",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("metric_date", Date, nullable=False, index=True),
    Column("model_name", String(128), nullable=False),
    Column("model_version", String(32), nullable=False),
    Column("symbol", String(SYMBOL_MAX_LENGTH), nullable=False),
    Column("metric", String(32), nullable=False),
    Column("value", Float, nullable=True),
    Column("window_days", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint(
        "metric_date",
        "model_name",
        "model_version",
        "symbol",
        "metric",
        "window_days",  # a session's own figure (1) beside its window's (N); migration 0007
        name="uq_metrics_key",
    ),
)

retrain_requests = Table(
    "retrain_requests",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("requested_date", Date, nullable=False, unique=True),
    Column("model_version", String(32), nullable=True),
    Column("reason", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("resolved_at", DateTime(timezone=True), nullable=True),
    Column("resolved_by", String(64), nullable=True),
)

# The audit trail of model management (migration 0004): one row per action done or
# refused, never changed.
model_actions = Table(
    "model_actions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # Who: "cli:<user>", "dashboard:<user>", "train" (the promotion gate).
    Column("actor", String(128), nullable=False),
    # What: promote, rollback, archive, pause, resume, retrain.
    Column("action", String(32), nullable=False),
    Column("model_name", String(128), nullable=False, index=True),
    Column("model_version", String(32), nullable=True),
    Column("reason", Text, nullable=False),
    # JSON: the figures the action was decided on (p-values, the previous champion...).
    Column("details", Text, nullable=True),
    # done, or refused (migration 0008): a refusal's reason is its sentence.
    Column("outcome", String(16), nullable=False, server_default="done"),
)

# Alerts sent or attempted (mlops.alerts, migration 0011): one row per alert, whether the
# webhook took it or not; the dashboard lists the newest.
alerts = Table(
    "alerts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("created_at", DateTime(timezone=True), nullable=False, index=True),
    # The event: "mlops trade failed", "orders not placed", "trading halted", ...
    Column("kind", String(64), nullable=False),
    Column("text", Text, nullable=False),
    Column("delivered", Boolean, nullable=False),
    # Why it was not delivered (the webhook's answer, redacted); NULL when it was.
    Column("detail", Text, nullable=True),
)


# Requests for work (migration 0013): "retrain MODEL", "run monitoring now". The dashboard
# writes a row; a runner (a background process on one machine, the controller in the
# cluster) does the work and records queued -> running -> succeeded | failed on it.
action_requests = Table(
    "action_requests",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    # What: retrain (model_name names the model) or monitor.
    Column("kind", String(16), nullable=False),
    Column("model_name", String(128), nullable=True),
    Column("actor", String(128), nullable=False),
    Column("reason", Text, nullable=False),
    # Who runs it: local (a background `mlops requests run ID`) or kubernetes (a Job).
    Column("runner", String(16), nullable=False),
    Column("status", String(16), nullable=False, index=True),
    # Set while queued or running, cleared at the end: one open request per work.
    Column("open_key", String(160), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=True),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Column("exit_code", Integer, nullable=True),
    # One sentence: what came of it (or why it failed).
    Column("result", Text, nullable=True),
    # The cluster's Job, or the local runner's process and host.
    Column("job", String(63), nullable=True),
    Column("pid", Integer, nullable=True),
    Column("host", String(255), nullable=True),
    UniqueConstraint("open_key", name="uq_action_requests_open_key"),
)
