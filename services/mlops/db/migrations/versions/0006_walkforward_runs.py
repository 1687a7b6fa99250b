"""Walk-forward runs (``mlops walk-forward``): one row per run key, claimed when the run
starts (the row names the MLflow parent run every retrain point nests under) and given
its summary when the run is finalized. Independent of every other table.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "walkforward_runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_key", sa.String(64), nullable=False, unique=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("start_date", sa.Date, nullable=False),
        sa.Column("end_date", sa.Date, nullable=False),
        sa.Column("retrain_every", sa.Integer, nullable=False),
        sa.Column("window", sa.String(32), nullable=False),
        sa.Column("models", sa.Text, nullable=False),
        sa.Column("points", sa.Integer, nullable=False),
        sa.Column("dataset_version", sa.String(64), nullable=False),
        sa.Column("mlflow_run_id", sa.String(64), nullable=True),
        sa.Column("summary", sa.Text, nullable=True),
        sa.Column("summary_key", sa.String(512), nullable=True),
        sa.Column("report_key", sa.String(512), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("walkforward_runs")
