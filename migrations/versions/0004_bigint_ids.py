"""64-bit ids for the tables that grow without bound, and the columns that refer to them

On PostgreSQL a 32-bit ``serial`` runs out after about two billion values, and every
conflicting ``INSERT ... ON CONFLICT DO NOTHING`` burns one, so ingestion alone can exhaust
``examples.id``. The columns become ``bigint`` and their sequences ``AS bigint`` (a serial's
sequence is ``AS integer``, which caps its maximum). SQLite's ``INTEGER`` is 64-bit already
(and only ``INTEGER PRIMARY KEY`` autoincrements), so there both directions are no-ops.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Primary keys filled by a sequence; PostgreSQL named each one <table>_id_seq.
SERIAL_IDS = (
    "examples",
    "difficulty_scores",
    "probe_results",
    "teacher_state",
    "teacher_decisions",
    "evaluations",
    "registry_events",
    "control_commands",
)
# Columns that refer to examples.id.
EXAMPLE_REFERENCES = ("replay_state", "difficulty_scores", "item_difficulty", "probe_results")


def _columns() -> list[tuple[str, str]]:
    return [(t, "id") for t in SERIAL_IDS] + [(t, "example_id") for t in EXAMPLE_REFERENCES]


def _retype(new: sa.types.TypeEngine[int], old: sa.types.TypeEngine[int], sql: str) -> None:
    if op.get_context().dialect.name != "postgresql":
        return  # SQLite: INTEGER is 64-bit; rebuilding the tables would change nothing
    for table, column in _columns():
        op.alter_column(table, column, type_=new, existing_type=old, existing_nullable=False)
    for table in SERIAL_IDS:
        op.execute(f"ALTER SEQUENCE {table}_id_seq AS {sql}")


def upgrade() -> None:
    _retype(sa.BigInteger(), sa.Integer(), "bigint")


def downgrade() -> None:
    # Fails (and changes nothing: PostgreSQL's DDL is transactional) once an id or a
    # sequence has passed 2**31 - 1; such a database cannot go back to 32-bit ids.
    _retype(sa.Integer(), sa.BigInteger(), "integer")
