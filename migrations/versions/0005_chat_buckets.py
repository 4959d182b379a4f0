"""chat-format buckets: buckets.format, examples.messages

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 11:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Every bucket so far holds {prompt, target} examples: the server default says so.
    with op.batch_alter_table("buckets", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("format", sa.String(length=16), server_default="completion", nullable=False)
        )
        batch_op.create_check_constraint(
            op.f("ck_buckets_format"), "format IN ('completion', 'chat')"
        )
    with op.batch_alter_table("examples", schema=None) as batch_op:
        batch_op.add_column(sa.Column("messages", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("examples", schema=None) as batch_op:
        batch_op.drop_column("messages")
    with op.batch_alter_table("buckets", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_buckets_format"), type_="check")
        batch_op.drop_column("format")
