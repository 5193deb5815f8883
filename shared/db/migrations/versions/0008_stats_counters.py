"""stats counters for /metrics, counted once here from the rows; index of unfired breaches

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27 20:30:00

From here on the application adds to the counters as events happen
(services/alert/stats/counters.py). The bucket bounds below are the ones it uses.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shared.db.types

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RESPONSE = (30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 28800, 86400)
LAG = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
UNFIRED = (
    "answered_at IS NULL AND breached IS false AND paused_at IS NULL AND target_seconds IS NOT NULL"
)


def _le(value_sql: str, bounds: tuple[float, ...]) -> str:
    whens = " ".join(f"WHEN {value_sql} <= {b} THEN '{float(b)!r}'" for b in bounds)
    return f"CASE {whens} ELSE '+Inf' END"


def _count_sql(lag_in_sql: bool) -> list[str]:
    lag = "CAST(extract(epoch FROM ingested_at - created_at) AS float8)"
    out = [
        f"""INSERT INTO stats_counters (metric, source, priority, le, events, total)
        SELECT 'first_response', source, '', {_le("response_seconds", RESPONSE)}, count(*),
               sum(response_seconds)
        FROM response_cycles
        WHERE kind = 'first' AND response_seconds IS NOT NULL AND source IS NOT NULL
        GROUP BY 2, 4""",
        """INSERT INTO stats_counters (metric, source, priority, le, events, total)
        SELECT 'breach', source, priority, '', count(*), 0.0
        FROM response_cycles
        WHERE target_seconds IS NOT NULL AND source IS NOT NULL
          AND (breached OR (answered_at IS NOT NULL AND due_at IS NOT NULL
                            AND answered_at > due_at))
        GROUP BY 2, 3""",
    ]
    if lag_in_sql:
        out.append(
            f"""INSERT INTO stats_counters (metric, source, priority, le, events, total)
            SELECT 'mention', source, '', {_le(lag, LAG)}, count(*), sum({lag})
            FROM mentions GROUP BY 2, 4"""
        )
    return out


def _count_mentions_here() -> None:
    """SQLite keeps times as text: lags are computed here, exactly."""
    when = shared.db.types.UTCDateTime()
    posts = sa.table(
        "mentions",
        sa.column("source"),
        sa.column("created_at", when),
        sa.column("ingested_at", when),
    )
    counted: dict[tuple[str, str], list[float]] = {}
    conn = op.get_bind()
    for source, created, ingested in conn.execute(
        sa.select(posts.c.source, posts.c.created_at, posts.c.ingested_at)
    ):
        lag = (ingested - created).total_seconds()
        le = next((repr(float(b)) for b in LAG if lag <= b), "+Inf")
        n, total = counted.get((source, le), (0, 0.0))
        counted[(source, le)] = [n + 1, total + lag]
    if counted:
        conn.execute(
            sa.text(
                "INSERT INTO stats_counters (metric, source, priority, le, events, total) "
                "VALUES ('mention', :source, '', :le, :n, :total)"
            ),
            [{"source": s, "le": le, "n": n, "total": t} for (s, le), (n, t) in counted.items()],
        )


def upgrade() -> None:
    op.create_table(
        "stats_counters",
        sa.Column("metric", sa.String(length=32), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("priority", sa.String(length=2), nullable=False),
        sa.Column("le", sa.String(length=16), nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.Column("total", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("metric", "source", "priority", "le", name="pk_stats_counters"),
    )
    op.create_index(
        "ix_response_cycles_unfired",
        "response_cycles",
        ["due_at"],
        postgresql_where=sa.text(UNFIRED),
        sqlite_where=sa.text(UNFIRED),
        postgresql_include=["source", "priority"],
    )
    postgres = op.get_bind().dialect.name == "postgresql"
    for statement in _count_sql(lag_in_sql=postgres):
        op.execute(statement)
    if not postgres:
        _count_mentions_here()


def downgrade() -> None:
    op.drop_index("ix_response_cycles_unfired", table_name="response_cycles")
    op.drop_table("stats_counters")
