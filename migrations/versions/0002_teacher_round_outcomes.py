"""teacher round outcomes: policy, steps, accuracy, loss and reward of each decision

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 15:57:52.170598
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("teacher_decisions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("policy", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("steps", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("accuracy", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("loss", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("reward", sa.Float(), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_teacher_decisions_bucket_id"), ["bucket_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("teacher_decisions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_teacher_decisions_bucket_id"))
        batch_op.drop_column("reward")
        batch_op.drop_column("loss")
        batch_op.drop_column("accuracy")
        batch_op.drop_column("steps")
        batch_op.drop_column("policy")
