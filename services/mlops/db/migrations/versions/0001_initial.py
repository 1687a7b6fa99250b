"""Initial schema: stage runs, datasets, predictions, trading, equity, monitoring, retraining.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "stage_runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(64), nullable=False, unique=True),
        sa.Column("stage", sa.String(32), nullable=False),
        sa.Column("run_date", sa.Date, nullable=True),
        sa.Column("started_at", TZ, nullable=False),
        sa.Column("finished_at", TZ, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("details", sa.Text, nullable=True),
    )
    op.create_index("ix_stage_runs_stage", "stage_runs", ["stage"])

    op.create_table(
        "datasets",
        sa.Column("version", sa.String(64), primary_key=True),
        sa.Column("as_of", sa.Date, nullable=False),
        sa.Column("manifest_key", sa.String(512), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("symbols", sa.Text, nullable=False),
        sa.Column("first_date", sa.Date, nullable=False),
        sa.Column("last_date", sa.Date, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
    )
    op.create_index("ix_datasets_as_of", "datasets", ["as_of"])

    op.create_table(
        "predictions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("symbol", sa.String(16), nullable=False),
        sa.Column("prediction_date", sa.Date, nullable=False),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("model_version", sa.String(32), nullable=False),
        sa.Column("predicted_close", sa.Float, nullable=False),
        sa.Column("last_close", sa.Float, nullable=False),
        sa.Column("expected_change", sa.Float, nullable=False),
        sa.Column("dataset_version", sa.String(64), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.UniqueConstraint(
            "symbol", "prediction_date", "model_name", "model_version", name="uq_predictions_key"
        ),
    )
    op.create_index("ix_predictions_prediction_date", "predictions", ["prediction_date"])

    op.create_table(
        "trade_decisions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("decision_date", sa.Date, nullable=False),
        sa.Column("symbol", sa.String(16), nullable=False),
        sa.Column("action", sa.String(8), nullable=False),
        sa.Column("quantity", sa.Float, nullable=False),
        sa.Column("expected_change", sa.Float, nullable=True),
        sa.Column("predicted_close", sa.Float, nullable=True),
        sa.Column("last_close", sa.Float, nullable=True),
        sa.Column("model_version", sa.String(32), nullable=True),
        sa.Column("broker", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.UniqueConstraint("decision_date", "symbol", "broker", name="uq_trade_decisions_key"),
    )
    op.create_index("ix_trade_decisions_decision_date", "trade_decisions", ["decision_date"])

    op.create_table(
        "orders",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("client_order_id", sa.String(64), nullable=False, unique=True),
        sa.Column("decision_date", sa.Date, nullable=False),
        sa.Column("symbol", sa.String(16), nullable=False),
        sa.Column("side", sa.String(4), nullable=False),
        sa.Column("quantity", sa.Float, nullable=False),
        sa.Column("broker", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("broker_order_id", sa.String(64), nullable=True),
        sa.Column("submitted_at", TZ, nullable=False),
        sa.Column("filled_at", TZ, nullable=True),
        sa.Column("fill_date", sa.Date, nullable=True),
        sa.Column("fill_price", sa.Float, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
    )
    op.create_index("ix_orders_decision_date", "orders", ["decision_date"])

    op.create_table(
        "equity_snapshots",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("snapshot_date", sa.Date, nullable=False),
        sa.Column("broker", sa.String(16), nullable=False),
        sa.Column("cash", sa.Float, nullable=False),
        sa.Column("positions_value", sa.Float, nullable=False),
        sa.Column("equity", sa.Float, nullable=False),
        sa.Column("benchmark_equity", sa.Float, nullable=True),
        sa.Column("positions", sa.Text, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.UniqueConstraint("snapshot_date", "broker", name="uq_equity_snapshots_key"),
    )

    op.create_table(
        "monitoring_metrics",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("metric_date", sa.Date, nullable=False),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("model_version", sa.String(32), nullable=False),
        sa.Column("symbol", sa.String(16), nullable=False),
        sa.Column("metric", sa.String(32), nullable=False),
        sa.Column("value", sa.Float, nullable=True),
        sa.Column("window_days", sa.Integer, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.UniqueConstraint(
            "metric_date", "model_name", "model_version", "symbol", "metric", name="uq_metrics_key"
        ),
    )
    op.create_index("ix_monitoring_metrics_metric_date", "monitoring_metrics", ["metric_date"])

    op.create_table(
        "retrain_requests",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("requested_date", sa.Date, nullable=False, unique=True),
        sa.Column("model_version", sa.String(32), nullable=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("resolved_at", TZ, nullable=True),
        sa.Column("resolved_by", sa.String(64), nullable=True),
    )


def downgrade() -> None:
    for table in (
        "retrain_requests",
        "monitoring_metrics",
        "equity_snapshots",
        "orders",
        "trade_decisions",
        "predictions",
        "datasets",
        "stage_runs",
    ):
        op.drop_table(table)
