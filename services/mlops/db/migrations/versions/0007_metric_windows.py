"""A figure is keyed by its window too: monitoring records each session's own figures
(``window_days`` 1, dated the session) beside the trailing window's (``window_days`` N,
dated the monitored day), under the same metric names, so the monitored day's MAPE of the
day and of the window are two rows.

Every existing row keeps its key (the old key was narrower). Independent of every other
table.

Revision ID: 0007
Revises: 0006
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

OLD = ["metric_date", "model_name", "model_version", "symbol", "metric"]


def upgrade() -> None:
    with op.batch_alter_table("monitoring_metrics") as batch:
        batch.drop_constraint("uq_metrics_key", type_="unique")
        batch.create_unique_constraint("uq_metrics_key", [*OLD, "window_days"])


def downgrade() -> None:
    op.execute(
        "DELETE FROM monitoring_metrics WHERE window_days = 1 AND metric NOT IN ('ic', 'rank_ic')"
    )
    with op.batch_alter_table("monitoring_metrics") as batch:
        batch.drop_constraint("uq_metrics_key", type_="unique")
        batch.create_unique_constraint("uq_metrics_key", OLD)
