"""The alerts sent or attempted (``alerts``: when, which kind, the text, whether the
webhook took it), which the dashboard lists; and the limit price of an order
(``orders.limit_price``: NULL for a market order, the limit a limit order was placed
with under ``TRADE_ORDER_TYPE=limit``). Orders written before this revision were market
orders and keep NULL. Independent of every other table.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("delivered", sa.Boolean, nullable=False),
        sa.Column("detail", sa.Text, nullable=True),
    )
    op.create_index("ix_alerts_created_at", "alerts", ["created_at"])
    op.add_column("orders", sa.Column("limit_price", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("limit_price")
    op.drop_index("ix_alerts_created_at", "alerts")
    op.drop_table("alerts")
