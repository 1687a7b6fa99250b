"""Predictions say which role their model version had when it scored: ``champion`` (the
version that feeds trading) or ``challenger`` (scored in shadow beside it).

Every row written before this revision was a champion's (batch inference scored the
champion alone), so existing rows get ``champion``. Independent of every other table.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "predictions",
        sa.Column("role", sa.String(16), nullable=False, server_default="champion"),
    )


def downgrade() -> None:
    with op.batch_alter_table("predictions") as batch:
        batch.drop_column("role")
