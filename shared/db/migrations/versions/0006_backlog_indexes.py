"""backlog indexes: waiting cycles and open cases (partial)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27 19:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# name, table, key columns, predicate, covered columns (PostgreSQL's INCLUDE).
INDEXES = (
    (
        "ix_response_cycles_waiting",
        "response_cycles",
        "started_at id",
        "answered_at IS NULL",
        "case_id seq kind priority due_at paused_at breached",
    ),
    (
        "ix_cases_open",
        "cases",
        "id",
        "status = 'open'",
        "source priority brand language team_id assignee_id waiting_on_customer snoozed_until",
    ),
)


def upgrade() -> None:
    for name, table, columns, where, include in INDEXES:
        op.create_index(
            name,
            table,
            columns.split(),
            postgresql_where=sa.text(where),
            sqlite_where=sa.text(where),
            postgresql_include=include.split(),
        )


def downgrade() -> None:
    for name, table, *_ in reversed(INDEXES):
        op.drop_index(name, table_name=table)
