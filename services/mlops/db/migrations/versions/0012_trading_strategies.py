"""Strategies: decisions, orders, equity snapshots and kill-switch rows belong to one.

* ``strategy`` on ``trade_decisions``, ``orders``, ``equity_snapshots`` and
  ``trading_halts``; every row written before this revision belongs to the default
  strategy (``default``, the server default), which trades exactly as before;
* the unique keys of decisions and snapshots take the strategy, so two strategies decide
  and keep a snapshot on the same day;
* ``orders.client_order_id`` is widened to Alpaca's 128 characters: a strategy's token is
  part of its ids (the default strategy's ids are unchanged).

Independent of every other table.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

DEFAULT = "default"  # mlops.db.schema.DEFAULT_STRATEGY when this revision was written


def _strategy() -> sa.Column:
    return sa.Column("strategy", sa.String(32), nullable=False, server_default=DEFAULT)


def upgrade() -> None:
    with op.batch_alter_table("trade_decisions") as batch:
        batch.add_column(_strategy())
        batch.drop_constraint("uq_trade_decisions_key", type_="unique")
        batch.create_unique_constraint(
            "uq_trade_decisions_key", ["decision_date", "symbol", "broker", "account", "strategy"]
        )
    with op.batch_alter_table("orders") as batch:
        batch.add_column(_strategy())
        batch.alter_column(
            "client_order_id", type_=sa.String(128), existing_type=sa.String(64), nullable=False
        )
    with op.batch_alter_table("equity_snapshots") as batch:
        batch.add_column(_strategy())
        batch.drop_constraint("uq_equity_snapshots_key", type_="unique")
        batch.create_unique_constraint(
            "uq_equity_snapshots_key", ["snapshot_date", "broker", "account", "strategy"]
        )
    with op.batch_alter_table("trading_halts") as batch:
        batch.add_column(_strategy())


def downgrade() -> None:
    # Only the default strategy's rows fit the keys without a strategy.
    for table in ("trade_decisions", "orders", "equity_snapshots", "trading_halts"):
        op.execute(f"DELETE FROM {table} WHERE strategy <> '{DEFAULT}'")
    with op.batch_alter_table("trading_halts") as batch:
        batch.drop_column("strategy")
    with op.batch_alter_table("equity_snapshots") as batch:
        batch.drop_constraint("uq_equity_snapshots_key", type_="unique")
        batch.create_unique_constraint(
            "uq_equity_snapshots_key", ["snapshot_date", "broker", "account"]
        )
        batch.drop_column("strategy")
    with op.batch_alter_table("orders") as batch:
        batch.alter_column(
            "client_order_id", type_=sa.String(64), existing_type=sa.String(128), nullable=False
        )
        batch.drop_column("strategy")
    with op.batch_alter_table("trade_decisions") as batch:
        batch.drop_constraint("uq_trade_decisions_key", type_="unique")
        batch.create_unique_constraint(
            "uq_trade_decisions_key", ["decision_date", "symbol", "broker", "account"]
        )
        batch.drop_column("strategy")
