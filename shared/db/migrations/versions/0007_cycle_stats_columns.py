"""stats columns on response_cycles (copied from the case and the opening post), one first
cycle per case

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27 20:00:00

Existing cycles are filled here; new ones get the values when they are inserted. On
PostgreSQL the fill runs in batches of ids, each committed on its own (a single UPDATE of a
large table would hold every row's lock, and stall the alert writers, until it ends), and
the unique index is built CONCURRENTLY; so a run that stops half way can simply be run
again (the columns and the filled rows stay, the batches skip them).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shared.db.types

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
COLUMNS = (
    ("source", sa.String(length=64)),
    ("brand", sa.String(length=128)),
    ("language", sa.String(length=16)),
    ("team_id", ID),
    ("assignee_id", ID),
    ("sentiment", sa.String(length=16)),
    ("complaint_score", sa.Float()),
    ("ingest_lag_seconds", sa.Float()),
)

BATCH = 50_000  # cycles per committed UPDATE on PostgreSQL

# One batch of ids (each row rewritten once): the case is always there, the post may not be.
FILL_POSTGRES = """
UPDATE response_cycles AS rc
SET source = f.source, brand = f.brand, language = f.language, team_id = f.team_id,
    assignee_id = f.assignee_id, sentiment = f.sentiment, complaint_score = f.complaint_score,
    ingest_lag_seconds = CAST(extract(epoch FROM f.ingested_at - f.created_at) AS float8)
FROM (
    SELECT r.id, c.source, c.brand, c.language, c.team_id, c.assignee_id, m.sentiment,
           m.complaint_score, m.created_at, m.ingested_at
    FROM response_cycles r
    JOIN cases c ON c.id = r.case_id
    LEFT JOIN mentions m ON m.event_id = r.started_event_id
    WHERE r.id >= :lo AND r.id < :hi AND r.source IS NULL
) AS f
WHERE f.id = rc.id
"""


def _fill_postgres() -> None:
    conn = op.get_bind()
    lo, hi = conn.execute(sa.text("SELECT min(id), max(id) FROM response_cycles")).one()
    if lo is None:
        return
    for start in range(lo, hi + 1, BATCH):
        conn.execute(sa.text(FILL_POSTGRES), {"lo": start, "hi": start + BATCH})


def _fill_sqlite() -> None:
    """SQLite keeps times as text: the lag is computed here, exactly, not by julianday."""
    conn = op.get_bind()
    when = shared.db.types.UTCDateTime()
    cycles = sa.table(
        "response_cycles",
        sa.column("id"),
        sa.column("case_id"),
        sa.column("started_event_id"),
        *(sa.column(name) for name, _ in COLUMNS),
    )
    case_columns = ("source", "brand", "language", "team_id", "assignee_id")
    cases = sa.table("cases", sa.column("id"), *(sa.column(n) for n in case_columns))
    posts = sa.table(
        "mentions",
        sa.column("event_id"),
        sa.column("sentiment"),
        sa.column("complaint_score"),
        sa.column("created_at", when),
        sa.column("ingested_at", when),
    )
    rows = conn.execute(
        sa.select(
            cycles.c.id,
            cases.c.source,
            cases.c.brand,
            cases.c.language,
            cases.c.team_id,
            cases.c.assignee_id,
            posts.c.sentiment,
            posts.c.complaint_score,
            posts.c.created_at,
            posts.c.ingested_at,
        )
        .select_from(cycles)
        .join(cases, cases.c.id == cycles.c.case_id)
        .outerjoin(posts, posts.c.event_id == cycles.c.started_event_id)
    ).all()
    values = [
        {
            "v_id": r.id,
            "v_source": r.source,
            "v_brand": r.brand,
            "v_language": r.language,
            "v_team_id": r.team_id,
            "v_assignee_id": r.assignee_id,
            "v_sentiment": r.sentiment,
            "v_complaint_score": r.complaint_score,
            "v_ingest_lag_seconds": (
                None if r.created_at is None else (r.ingested_at - r.created_at).total_seconds()
            ),
        }
        for r in rows
    ]
    if values:
        conn.execute(
            cycles.update()
            .where(cycles.c.id == sa.bindparam("v_id"))
            .values({name: sa.bindparam(f"v_{name}") for name, _ in COLUMNS}),
            values,
        )


def upgrade() -> None:
    have = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("response_cycles")}
    for name, kind in COLUMNS:
        if name not in have:  # a run stopped half way added them already
            op.add_column("response_cycles", sa.Column(name, kind, nullable=True))
    first = sa.text("kind = 'first'")
    if op.get_bind().dialect.name != "postgresql":
        _fill_sqlite()
        op.create_index(
            "uq_response_cycles_first",
            "response_cycles",
            ["case_id"],
            unique=True,
            sqlite_where=first,
        )
        return
    with op.get_context().autocommit_block():  # every statement commits on its own
        _fill_postgres()
        op.execute("DROP INDEX IF EXISTS uq_response_cycles_first")  # an invalid leftover
        op.create_index(
            "uq_response_cycles_first",
            "response_cycles",
            ["case_id"],
            unique=True,
            postgresql_where=first,
            postgresql_concurrently=True,
        )


def downgrade() -> None:
    op.drop_index("uq_response_cycles_first", table_name="response_cycles")
    with op.batch_alter_table("response_cycles") as batch:
        for name, _ in reversed(COLUMNS):
            batch.drop_column(name)
