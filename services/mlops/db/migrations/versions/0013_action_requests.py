"""Requests for work the dashboard (or ``mlops models retrain`` in a pod) asks for:
"retrain MODEL" and "run monitoring now". The one who asks only writes a row; a runner
does the work and records its progress on that row: on one machine a background
``mlops requests run ID`` process, in the cluster the controller (``mlops requests
process``, the orchestrator's identity), which creates a Job from a fixed template.

``status`` goes queued -> running -> succeeded | failed, with the exit code and one
sentence (``result``). ``open_key`` (``retrain:<model>``, ``monitor``) is set while the
request is queued or running and cleared when it ends: its unique constraint refuses a
second request for the same work while one is open, race-free on every database.
Independent of every other table.

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "action_requests",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("model_name", sa.String(128), nullable=True),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("runner", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("open_key", sa.String(160), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("exit_code", sa.Integer, nullable=True),
        sa.Column("result", sa.Text, nullable=True),
        sa.Column("job", sa.String(63), nullable=True),
        sa.Column("pid", sa.Integer, nullable=True),
        sa.Column("host", sa.String(255), nullable=True),
        sa.UniqueConstraint("open_key", name="uq_action_requests_open_key"),
    )
    op.create_index("ix_action_requests_status", "action_requests", ["status"])


def downgrade() -> None:
    op.drop_index("ix_action_requests_status", "action_requests")
    op.drop_table("action_requests")
