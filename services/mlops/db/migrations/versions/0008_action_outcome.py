"""The audit of model actions records refusals too: each row says whether the action was
``done`` or ``refused`` (wrong or missing credentials, a role that may not, a throttled
client, a check of the action itself); the reason of a refusal is its sentence.

Every row written before this revision was a done action, so existing rows get
``done``. Independent of every other table.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "model_actions",
        sa.Column("outcome", sa.String(16), nullable=False, server_default="done"),
    )


def downgrade() -> None:
    with op.batch_alter_table("model_actions") as batch:
        batch.drop_column("outcome")
