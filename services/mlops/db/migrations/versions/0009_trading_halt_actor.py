"""The kill switch records who halted or resumed trading (``actor``: ``cli:<login>``,
``dashboard:<user>``) and what the halt did at the broker (``details``: JSON with the
orders it canceled and the closing orders it sent). Rows written before this revision
get an empty actor and no details. Independent of every other table.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "trading_halts",
        sa.Column("actor", sa.String(128), nullable=False, server_default=""),
    )
    op.add_column("trading_halts", sa.Column("details", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("trading_halts") as batch:
        batch.drop_column("details")
        batch.drop_column("actor")
