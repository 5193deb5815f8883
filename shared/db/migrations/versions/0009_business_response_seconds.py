"""business-clock response time stored on each answered cycle

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-28 12:30:00

The stats read ``business_response_seconds`` in SQL like the wall clock; before, each
business-clock report walked the calendar of every cycle of its range in Python. From here
on ``answer()`` sets it with ``answered_at``. Answered cycles are filled here: in SQL where
the wall clock counts (no business hours, or no policy version), with the policy version's
calendar where business hours count. The calendar arithmetic is the application's own
(``services.alert.sla``), imported rather than copied, so the filled values equal what
``answer()`` writes. On PostgreSQL the fill runs in batches of ids, each committed on its own
(like 0007), so a run that stops half way can be run again: filled rows are skipped.
"""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

import shared.db.types

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 50_000  # cycles per committed UPDATE on PostgreSQL

# Counted time is wall time when the cycle does not count business hours or its case has no
# policy version to take a calendar from.
FILL_WALL = """
UPDATE response_cycles
SET business_response_seconds = CASE WHEN response_seconds - paused_seconds > 0
                                     THEN response_seconds - paused_seconds ELSE 0 END
WHERE id >= :lo AND id < :hi AND answered_at IS NOT NULL
  AND business_response_seconds IS NULL
  AND NOT (business_time AND EXISTS (
      SELECT 1 FROM cases c JOIN sla_policies p ON p.id = c.policy_id
      WHERE c.id = response_cycles.case_id))
"""

when = shared.db.types.UTCDateTime()
cycles = sa.table(
    "response_cycles",
    sa.column("id"),
    sa.column("case_id"),
    sa.column("started_at", when),
    sa.column("answered_at", when),
    sa.column("paused_seconds"),
    sa.column("business_time"),
    sa.column("business_response_seconds"),
)
cases = sa.table("cases", sa.column("id"), sa.column("policy_id"))
policies = sa.table("sla_policies", sa.column("id"), sa.column("spec", sa.JSON()))


def _fill_business(conn: sa.Connection, lo: int, hi: int, calendars: dict[int, Any]) -> None:
    """Cycles that count business hours: counted time in their policy version's calendar."""
    from services.alert.sla.calendars import seconds_between
    from services.alert.sla.policies import SlaPolicy

    rows = conn.execute(
        sa.select(
            cycles.c.id,
            cycles.c.started_at,
            cycles.c.answered_at,
            cycles.c.paused_seconds,
            policies.c.id.label("policy_id"),
            policies.c.spec,
        )
        .select_from(cycles)
        .join(cases, cases.c.id == cycles.c.case_id)
        .join(policies, policies.c.id == cases.c.policy_id)
        .where(
            cycles.c.id >= lo,
            cycles.c.id < hi,
            cycles.c.answered_at.is_not(None),
            cycles.c.business_response_seconds.is_(None),
            cycles.c.business_time.is_(True),
        )
    ).all()
    values = []
    for r in rows:
        if r.policy_id not in calendars:
            calendars[r.policy_id] = SlaPolicy.model_validate(r.spec).calendar
        started: datetime = r.started_at
        counted = seconds_between(calendars[r.policy_id], started, r.answered_at)
        values.append({"v_id": r.id, "v_value": max(0.0, counted - (r.paused_seconds or 0.0))})
    if values:
        conn.execute(
            cycles.update()
            .where(cycles.c.id == sa.bindparam("v_id"))
            .values(business_response_seconds=sa.bindparam("v_value")),
            values,
        )


def _fill(conn: sa.Connection, batch: int) -> None:
    lo, hi = conn.execute(sa.text("SELECT min(id), max(id) FROM response_cycles")).one()
    if lo is None:
        return
    calendars: dict[int, Any] = {}
    for start in range(lo, hi + 1, batch):
        conn.execute(sa.text(FILL_WALL), {"lo": start, "hi": start + batch})
        _fill_business(conn, start, start + batch, calendars)


def upgrade() -> None:
    have = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("response_cycles")}
    if "business_response_seconds" not in have:  # a run stopped half way added it already
        op.add_column(
            "response_cycles", sa.Column("business_response_seconds", sa.Float(), nullable=True)
        )
    if op.get_bind().dialect.name != "postgresql":
        _fill(op.get_bind(), batch=10**12)  # SQLite: one transaction, one pass
        return
    with op.get_context().autocommit_block():  # every batch commits on its own
        _fill(op.get_bind(), batch=BATCH)


def downgrade() -> None:
    op.drop_column("response_cycles", "business_response_seconds")
