"""per-probe evaluation results; pending adapter versions; reset registry events

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 14:05:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_STATUSES = "status IN ('candidate', 'promoted', 'rejected', 'retired')"
NEW_STATUSES = "status IN ('pending', 'candidate', 'promoted', 'rejected', 'retired')"
OLD_ACTIONS = "action IN ('promote', 'rollback', 'force')"
NEW_ACTIONS = "action IN ('promote', 'rollback', 'force', 'reset')"


def _replace_check(table: str, name: str, condition: str) -> None:
    with op.batch_alter_table(table, schema=None) as batch_op:
        batch_op.drop_constraint(op.f(f"ck_{table}_{name}"), type_="check")
        batch_op.create_check_constraint(op.f(f"ck_{table}_{name}"), condition)


def upgrade() -> None:
    op.create_table(
        "probe_results",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("adapter_version", sa.Integer(), nullable=True),
        sa.Column("example_id", sa.Integer(), nullable=False),
        sa.Column("bucket_id", sa.Integer(), nullable=False),
        sa.Column("correct", sa.Boolean(), nullable=False),
        sa.Column("answer", sa.Text(), nullable=False),
        sa.Column("at_step", sa.Integer(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["adapter_version"],
            ["adapter_versions.version"],
            name=op.f("fk_probe_results_adapter_version_adapter_versions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["bucket_id"],
            ["buckets.id"],
            name=op.f("fk_probe_results_bucket_id_buckets"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["example_id"],
            ["examples.id"],
            name=op.f("fk_probe_results_example_id_examples"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_probe_results")),
    )
    with op.batch_alter_table("probe_results", schema=None) as batch_op:
        batch_op.create_index(
            "ix_probe_results_bucket_version", ["bucket_id", "adapter_version"], unique=False
        )
        batch_op.create_index(
            "ix_probe_results_version_example", ["adapter_version", "example_id"], unique=False
        )
    _replace_check("adapter_versions", "status", NEW_STATUSES)
    _replace_check("registry_events", "action", NEW_ACTIONS)


def downgrade() -> None:
    # Rows that the old constraints do not allow are mapped to their nearest old meaning.
    op.execute("DELETE FROM registry_events WHERE action = 'reset'")
    op.execute("UPDATE adapter_versions SET status = 'retired' WHERE status = 'pending'")
    _replace_check("registry_events", "action", OLD_ACTIONS)
    _replace_check("adapter_versions", "status", OLD_STATUSES)
    with op.batch_alter_table("probe_results", schema=None) as batch_op:
        batch_op.drop_index("ix_probe_results_version_example")
        batch_op.drop_index("ix_probe_results_bucket_version")
    op.drop_table("probe_results")
