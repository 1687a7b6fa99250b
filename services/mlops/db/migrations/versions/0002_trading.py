"""Trading: orders, decisions and equity per broker account; order lifecycle; kill switch.

* ``account`` on orders, trade decisions and equity snapshots, in their unique keys, so
  two brokers or two accounts never share a decision, a client order id or a snapshot;
* orders: ``planned`` for what was not sent yet (it was ``new``, Alpaca's word for an
  accepted order), the broker's status verbatim, filled quantity, attempts, updated_at;
* ``trading_halts`` (the kill switch) and ``backtest_runs``.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("trade_decisions") as batch:
        batch.add_column(sa.Column("account", sa.String(64), nullable=False, server_default=""))
        batch.drop_constraint("uq_trade_decisions_key", type_="unique")
        batch.create_unique_constraint(
            "uq_trade_decisions_key", ["decision_date", "symbol", "broker", "account"]
        )
    with op.batch_alter_table("orders") as batch:
        batch.alter_column("status", type_=sa.String(32), existing_nullable=False)
        batch.add_column(sa.Column("account", sa.String(64), nullable=False, server_default=""))
        batch.add_column(sa.Column("broker_status", sa.String(32), nullable=True))
        batch.add_column(sa.Column("filled_quantity", sa.Float, nullable=True))
        batch.add_column(sa.Column("attempts", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("updated_at", TZ, nullable=True))
    with op.batch_alter_table("equity_snapshots") as batch:
        batch.add_column(sa.Column("account", sa.String(64), nullable=False, server_default=""))
        batch.add_column(
            sa.Column("source", sa.String(16), nullable=False, server_default="closes")
        )
        batch.drop_constraint("uq_equity_snapshots_key", type_="unique")
        batch.create_unique_constraint(
            "uq_equity_snapshots_key", ["snapshot_date", "broker", "account"]
        )

    # What was there: the paper broker's account is "paper"; an order never sent was "new".
    for table in ("trade_decisions", "orders", "equity_snapshots"):
        op.execute(f"UPDATE {table} SET account = 'paper' WHERE broker = 'paper'")
    op.execute("UPDATE orders SET status = 'planned' WHERE status = 'new' AND broker = 'paper'")
    op.execute(
        "UPDATE orders SET status = 'planned' "
        "WHERE status = 'new' AND broker_order_id IS NULL AND broker <> 'paper'"
    )
    op.execute(
        "UPDATE orders SET broker_status = status "
        "WHERE broker_order_id IS NOT NULL AND status <> 'planned'"
    )
    op.execute("UPDATE orders SET filled_quantity = quantity WHERE status = 'filled'")
    op.execute("UPDATE orders SET attempts = 1 WHERE status <> 'planned'")

    op.create_table(
        "trading_halts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("halted", sa.Boolean, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
    )
    op.create_table(
        "backtest_runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_key", sa.String(64), nullable=False, unique=True),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("model_version", sa.String(32), nullable=True),
        sa.Column("start_date", sa.Date, nullable=False),
        sa.Column("end_date", sa.Date, nullable=False),
        sa.Column("symbols", sa.Integer, nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("table_key", sa.String(512), nullable=False),
        sa.Column("chart_key", sa.String(512), nullable=False),
        sa.Column("mlflow_run_id", sa.String(64), nullable=True),
        sa.Column("created_at", TZ, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("backtest_runs")
    op.drop_table("trading_halts")
    op.execute("UPDATE orders SET status = 'new' WHERE status = 'planned'")
    with op.batch_alter_table("equity_snapshots") as batch:
        batch.drop_constraint("uq_equity_snapshots_key", type_="unique")
        batch.create_unique_constraint("uq_equity_snapshots_key", ["snapshot_date", "broker"])
        batch.drop_column("source")
        batch.drop_column("account")
    with op.batch_alter_table("orders") as batch:
        for column in ("updated_at", "attempts", "filled_quantity", "broker_status", "account"):
            batch.drop_column(column)
        batch.alter_column("status", type_=sa.String(16), existing_nullable=False)
    with op.batch_alter_table("trade_decisions") as batch:
        batch.drop_constraint("uq_trade_decisions_key", type_="unique")
        batch.create_unique_constraint(
            "uq_trade_decisions_key", ["decision_date", "symbol", "broker"]
        )
        batch.drop_column("account")
