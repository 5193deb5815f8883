"""The `thirdring` command as a user runs it (a real subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

THIRDRING = str(Path(sys.executable).parent / "thirdring")


def run(
    *args: str, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [THIRDRING, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def test_classify_scores_stdin_and_reports_a_broken_line() -> None:
    lines = [
        json.dumps(
            {"id": 1, "text": "My package never arrived and support ignores me. Refund now!"}
        ),
        "{broken",
        json.dumps({"id": "b", "text": "Grazie mille, servizio eccellente!"}),
    ]
    result = run("classify", "--input", "-", "--output", "-", stdin="\n".join(lines) + "\n")
    assert result.returncode == 1  # a failed line makes the exit code say so
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert [o["id"] for o in out] == [1, "b"]
    first = out[0]
    assert set(first) >= {"id", "lang", "sentiment", "complaint", "urgency", "model_version"}
    assert set(first["sentiment"]["scores"]) == {"negative", "neutral", "positive"}
    assert first["complaint"]["is_complaint"] is True
    assert first["urgency"]["level"] in {"P1", "P2", "P3"} and first["urgency"]["reasons"]
    assert out[1]["lang"] == "it" and out[1]["sentiment"]["label"] == "positive"
    assert '"line": 2' in result.stderr


def test_service_without_broker_says_what_is_missing() -> None:
    result = run("run", "classify", env={"KAFKA_BOOTSTRAP_SERVERS": ""})
    assert result.returncode == 2
    assert "KAFKA_BOOTSTRAP_SERVERS" in result.stderr


def test_calibrate_without_data_is_a_clear_error(tmp_path: Path) -> None:
    result = run("model", "calibrate", "--data", str(tmp_path))
    assert result.returncode == 2
    assert "--data" in result.stderr and "sentiment-umsab" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_policy_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "policy.yaml"
    bad.write_text("policies: [{name: gold, targets: {P9: 10}}]\n")
    result = run(
        "run",
        "alert",
        env={"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "THIRDRING_ALERTING_FILE": str(bad)},
    )
    assert result.returncode == 2
    assert "configuration error" in result.stderr and "Traceback" not in result.stderr
    assert "P9" in result.stderr and str(bad) in result.stderr


@pytest.mark.parametrize(
    ("weights", "named"),
    [('{"intents": {"repeats": 0.1}}', "repeats"), ("/nonexistent/weights.json", "cannot read")],
)
def test_bad_urgency_weights_are_a_clear_error(tmp_path: Path, weights: str, named: str) -> None:
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"id": 1, "text": "hi"}\n')
    result = run("classify", "-i", str(inp), env={"THIRDRING_URGENCY_WEIGHTS": weights})
    assert result.returncode == 2
    assert "configuration error" in result.stderr and "Traceback" not in result.stderr
    assert named in result.stderr


def test_unmigrated_database_is_named(tmp_path: Path) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    result = run(
        "run", "alert", env={"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "THIRDRING_DATABASE_URL": db}
    )
    assert result.returncode == 2
    assert "thirdring db upgrade" in result.stderr


def test_stats_prints_the_table_and_writes_csv(tmp_path: Path) -> None:
    import asyncio
    from datetime import timedelta

    from services.alert.cases.service import CaseSettings, apply_scored
    from services.alert.sla.policies import SlaPolicy
    from services.alert.sla.store import sync_policies
    from shared.db.engine import make_engine, make_sessionmaker
    from shared.db.migrate import upgrade
    from shared.events import utcnow
    from tests.factories import raw, scored

    url = f"sqlite+aiosqlite:///{tmp_path / 'stats.db'}"
    upgrade(url)
    t0 = utcnow() - timedelta(hours=2)

    async def fill() -> None:
        engine = make_engine(url)
        async with make_sessionmaker(engine)() as s, s.begin():
            await sync_policies(s, [SlaPolicy()], t0)
            for n, (level, wait) in enumerate([("P1", 60), ("P1", 180), ("P2", 600)]):
                conv = f"c{n}"
                await apply_scored(
                    s, scored(raw(f"{n}a", t0, conversation=conv), level), CaseSettings(), t0
                )
                reply = raw(
                    f"{n}b", t0 + timedelta(seconds=wait), conversation=conv, brand_post=True
                )
                await apply_scored(s, scored(reply, level), CaseSettings(), t0)
        await engine.dispose()

    asyncio.run(fill())
    out = tmp_path / "stats.csv"
    result = run(
        "stats",
        "-g",
        "priority",
        "--csv",
        str(out),
        env={"THIRDRING_DATABASE_URL": url, "COLUMNS": "150"},
    )
    assert result.returncode == 0, result.stderr
    assert "P1" in result.stdout and "P2" in result.stdout and "2m 00s" in result.stdout  # P1 p50
    rows = out.read_text().splitlines()
    assert rows[0].startswith("priority,cases") and len(rows) == 3  # header + P1 + P2
    bad = run("stats", "-g", "colour", env={"THIRDRING_DATABASE_URL": url})
    assert bad.returncode == 2 and "group_by" in bad.stderr

    # Counters lost (rows written around the services): `thirdring db recount` rebuilds them.
    async def counters() -> dict[tuple[str, str, str, str], int]:
        from sqlalchemy import delete

        from services.alert.stats.counters import read
        from shared.db.models import StatsCounter

        engine = make_engine(url)
        async with make_sessionmaker(engine)() as s, s.begin():
            kept = {(c.metric, c.source, c.priority, c.le): c.events for c in await read(s)}
            await s.execute(delete(StatsCounter))
        await engine.dispose()
        return kept

    kept = asyncio.run(counters())
    assert sum(n for key, n in kept.items() if key[0] == "first_response") == 3
    result = run("db", "recount", env={"THIRDRING_DATABASE_URL": url})
    assert result.returncode == 0, result.stderr
    assert f"{len(kept)} rows" in result.stderr  # messages go to stderr
    assert asyncio.run(counters()) == kept
