"""The audit table of model management: who did what to which model, when and why.

Every ``mlops models`` action (promote, rollback, archive, pause, resume, retrain), the
same actions from the dashboard, and each champion move by training's promotion gate
add one row; rows are never updated or deleted. Independent of every other table.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_actions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("model_version", sa.String(32), nullable=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("details", sa.Text, nullable=True),
    )
    op.create_index("ix_model_actions_model_name", "model_actions", ["model_name"])


def downgrade() -> None:
    op.drop_index("ix_model_actions_model_name", "model_actions")
    op.drop_table("model_actions")
