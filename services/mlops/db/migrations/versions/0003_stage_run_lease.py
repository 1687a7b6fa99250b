"""Stage runs are leases: heartbeat, host and pid of the process, and the lease key.

``lease_key`` (stage, day and part) is set while a run is ``running`` and cleared when it
ends; its unique index lets only one process hold a stage and day at a time (NULLs do
not collide). Independent of every other table.

Revision ID: 0003
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("stage_runs", sa.Column("heartbeat_at", sa.DateTime(timezone=True)))
    op.add_column("stage_runs", sa.Column("host", sa.String(255)))
    op.add_column("stage_runs", sa.Column("pid", sa.Integer))
    op.add_column("stage_runs", sa.Column("lease_key", sa.String(200)))
    op.create_index("ix_stage_runs_lease_key", "stage_runs", ["lease_key"], unique=True)
    op.create_index("ix_stage_runs_status", "stage_runs", ["status"])


def downgrade() -> None:
    op.drop_index("ix_stage_runs_status", "stage_runs")
    op.drop_index("ix_stage_runs_lease_key", "stage_runs")
    with op.batch_alter_table("stage_runs") as batch:
        for column in ("lease_key", "pid", "host", "heartbeat_at"):
            batch.drop_column(column)
