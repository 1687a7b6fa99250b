"""Predictions say what kind of score their model gave (``score_kind``: ``price`` for a
model of the next close, ``return`` for one of the next return, ``probability`` for a
direction classifier's probability of a rise) and keep that output (``score``).

A classifier predicts no close: ``predicted_close`` and ``expected_change`` become
nullable (NULL on a classifier's rows). Rows written before this revision hold a
regressor's predicted close: they get ``price`` and no ``score``, and stay valid.
Independent of every other table.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("predictions") as batch:
        batch.add_column(
            sa.Column("score_kind", sa.String(16), nullable=False, server_default="price")
        )
        batch.add_column(sa.Column("score", sa.Float, nullable=True))
        batch.alter_column("predicted_close", existing_type=sa.Float, nullable=True)
        batch.alter_column("expected_change", existing_type=sa.Float, nullable=True)


def downgrade() -> None:
    op.execute("DELETE FROM predictions WHERE score_kind = 'probability'")
    with op.batch_alter_table("predictions") as batch:
        batch.alter_column("expected_change", existing_type=sa.Float, nullable=False)
        batch.alter_column("predicted_close", existing_type=sa.Float, nullable=False)
        batch.drop_column("score")
        batch.drop_column("score_kind")
