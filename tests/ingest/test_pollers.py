"""The poller framework: several sources at once, health and metrics, the listening file,
cursors on both databases, header parsing, and ``thirdring sources``."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ingest.cursors import CursorStore
from services.ingest.listening import ListeningError, build_sources, load_listening
from services.ingest.sources.http import parse_link_header, parse_reset, parse_retry_after
from services.ingest.worker import run_ingest
from shared.config import Settings
from shared.db.engine import make_engine
from shared.ports import free_port
from tests.ingest.helpers import at_least, consume, parse
from tests.ingest.mastodon_server import MastodonServer
from tests.ingest.test_mastodon import make_source

ROOT = Path(__file__).resolve().parents[2]
THIRDRING = str(Path(sys.executable).parent / "thirdring")


async def test_three_sources_one_failing_the_others_go_on(settings: Settings) -> None:
    a = MastodonServer.with_fixtures().start()
    b = MastodonServer.with_fixtures().start()
    broken = MastodonServer.with_fixtures().start()
    broken.down = True
    port = free_port()
    cfg = settings.model_copy(update={"ingest_port": port})
    # Metrics live for the whole test session: names unique to this run.
    run = uuid.uuid4().hex[:6]
    name_a, name_b, name_bad = f"a-{run}", f"b-{run}", f"broken-{run}"
    pollers = [
        make_source(a, name_a),
        make_source(b, name_b, brand_replies=False),
        make_source(broken, name_bad, max_attempts=2),
    ]
    stop = asyncio.Event()
    task = asyncio.create_task(run_ingest(cfg, sources=[], stop=stop, pollers=pollers))
    try:
        # a: 6 from the hashtag + the brand's reply; b: the hashtag only (6).
        records = await consume(cfg, at_least(13))
        by_source: dict[str, int] = {}
        for r in records:
            name = parse(r).metadata["source_name"]
            by_source[name] = by_source.get(name, 0) + 1
        assert by_source == {name_a: 7, name_b: 6}

        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            async with asyncio.timeout(15):
                while True:  # the broken source has failed at least twice by now
                    health = (await client.get("/health")).json()
                    if health["sources"][name_bad]["consecutive_failures"] >= 2:
                        break
                    await asyncio.sleep(0.1)
            assert health["status"] == "degraded" and health["failing"] == [name_bad]
            bad = health["sources"][name_bad]
            assert bad["up"] is False and "HTTP 500" in bad["last_error"]
            assert bad["last_ok_at"] is None and bad["requests"] >= 4
            good = health["sources"][name_a]
            assert good["up"] is True and good["consecutive_failures"] == 0
            assert good["items"] == 7 and good["dead_lettered"] == 1
            assert good["quota_remaining"] is not None

            text = (await client.get("/metrics")).text
        assert f'thirdring_source_up{{source="{name_bad}"}} 0.0' in text
        assert f'thirdring_source_up{{source="{name_a}"}} 1.0' in text
        assert f'thirdring_ingest_lag_seconds_count{{source="{name_a}"}} 7.0' in text
        assert f'thirdring_ingest_items_total{{outcome="published",source="{name_b}"}} 6.0' in text
        assert (
            f'thirdring_ingest_items_total{{outcome="dead_lettered",source="{name_a}"}} 1.0' in text
        )
        assert f'thirdring_source_requests_total{{source="{name_bad}",status="500"}}' in text
        assert f'thirdring_source_quota_remaining{{source="{name_a}"}}' in text

        engine = make_engine(cfg.resolved_database_url)
        rows = {r.source: r for r in await CursorStore(engine).all()}
        await engine.dispose()
        assert rows[name_bad].consecutive_failures >= 1 and rows[name_bad].last_error
        assert rows[name_a].cursor["tag:acme"] == "109348000000000109"
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        for server in (a, b, broken):
            server.stop()
    assert task.exception() is None


# --- the listening file -----------------------------------------------------------------


def test_example_listening_file_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_listening(ROOT / "deploy" / "listening.example.yaml")
    acme = config.brand("acme")
    assert acme.hashtags == ["acme", "acmesupport"] and acme.languages == ["en", "it", "et"]
    assert [s.name for s in config.sources] == ["mastodon-social", "fosstodon"]
    monkeypatch.setenv("THIRDRING_MASTODON_SOCIAL_TOKEN", "t")
    [source] = build_sources(config)  # fosstodon is disabled
    assert source.name == "mastodon-social" and source.token == "t"
    assert "notifications" in source.feeds()
    monkeypatch.delenv("THIRDRING_MASTODON_SOCIAL_TOKEN")
    with pytest.raises(ListeningError, match="THIRDRING_MASTODON_SOCIAL_TOKEN is not set"):
        build_sources(config)


def test_listening_errors_name_the_file_and_the_fields(tmp_path: Path) -> None:
    path = tmp_path / "listening.yaml"
    path.write_text(
        """
brands:
  - name: acme
    hashtags: [acme]
sources:
  - {name: one, type: mastodon, brand: acme, settings: {instance: "ftp://x", limt: 3}}
  - {name: two, type: myspace, brand: acme}
  - {name: one, type: mastodon, brand: nobody, settings: {instance: "https://m.example"}}
  - {name: Bad Name, type: mastodon, brand: acme, interval_seconds: 0}
"""
    )
    with pytest.raises(ListeningError) as info:
        load_listening(path)
    message = str(info.value)
    assert str(path) in message
    assert "sources[3].name: String should match pattern" in message
    assert "sources[3].interval_seconds: Input should be greater than 0" in message

    path.write_text(
        """
brands: [{name: acme}]
sources:
  - {name: one, type: mastodon, brand: acme, settings: {instance: "ftp://x", limt: 3}}
  - {name: two, type: myspace, brand: acme}
  - {name: one, type: mastodon, brand: nobody, settings: {instance: "https://m.example"}}
"""
    )
    with pytest.raises(ListeningError) as info:
        load_listening(path)
    message = str(info.value)
    assert "sources[0].settings.instance: Value error, must be the server's URL" in message
    assert "sources[0].settings.limt: Extra inputs are not permitted" in message
    assert "sources[1].type: unknown source type 'myspace'" in message
    assert "sources[2].name: duplicate source 'one'" in message
    assert "sources[2].brand: unknown brand 'nobody'" in message

    path.write_text("brands: [name: acme\n")
    with pytest.raises(ListeningError, match=f"invalid YAML in listening config {path}"):
        load_listening(path)
    with pytest.raises(ListeningError, match="cannot read listening config"):
        load_listening(tmp_path / "missing.yaml")


# --- cursors ----------------------------------------------------------------------------


async def test_cursor_store_round_trip(engine: AsyncEngine) -> None:
    store = CursorStore(engine)
    assert await store.load("s") == {}
    await store.record_poll("s", ok=False, error="HTTP 500", consecutive_failures=1)
    await store.save("s", {"tag:acme": "1"})
    await store.save("s", {"tag:acme": "2", "notifications": "9"})
    assert await store.load("s") == {"tag:acme": "2", "notifications": "9"}
    [row] = await store.all()
    assert (row.last_error, row.consecutive_failures, row.last_ok_at) == ("HTTP 500", 1, None)
    await store.record_poll("s", ok=True, error=None, consecutive_failures=0)
    [row] = await store.all()
    assert row.last_error is None and row.last_ok_at is not None
    assert row.cursor == {"tag:acme": "2", "notifications": "9"}  # health leaves it alone


# --- headers ----------------------------------------------------------------------------


def test_retry_after_reset_and_link_headers() -> None:
    now = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
    assert parse_retry_after("7", now) == 7.0
    assert parse_retry_after("Fri, 27 Nov 2026 10:00:30 GMT", now) == 30.0
    assert parse_retry_after("soon", now) is None and parse_retry_after(None) is None
    assert parse_reset("2026-11-27T10:05:00.000Z", now) == now + timedelta(minutes=5)
    assert parse_reset("60", now) == now + timedelta(seconds=60)  # seconds from now
    assert parse_reset("1795780800", now) == datetime.fromtimestamp(1795780800, UTC)
    links = parse_link_header(
        '<https://m.example/api/v1/x?max_id=1>; rel="next", '
        '<https://m.example/api/v1/x?min_id=9>; rel="prev"'
    )
    assert links == {
        "next": "https://m.example/api/v1/x?max_id=1",
        "prev": "https://m.example/api/v1/x?min_id=9",
    }


# --- the CLI ----------------------------------------------------------------------------


async def test_sources_cli_check_list_and_backfill(
    settings: Settings, mastodon_server: MastodonServer, tmp_path: Path
) -> None:
    listening = tmp_path / "listening.yaml"
    listening.write_text(
        json.dumps(
            {
                "brands": [
                    {
                        "name": "acme",
                        "accounts": {"mastodon": ["@acme@mastodon.social"]},
                        "hashtags": ["acme"],
                    }
                ],
                "sources": [
                    {
                        "name": "masto",
                        "type": "mastodon",
                        "brand": "acme",
                        "settings": {"instance": mastodon_server.url, "brand_replies": False},
                    },
                    {
                        "name": "down",
                        "type": "mastodon",
                        "brand": "acme",
                        "settings": {"instance": "http://127.0.0.1:1", "max_attempts": 1},
                    },
                ],
            }
        )
    )
    env = {
        **os.environ,
        "COLUMNS": "200",
        "THIRDRING_LISTENING_FILE": str(listening),
        "THIRDRING_DATABASE_URL": settings.database_url,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "THIRDRING_TOPIC_RAW": settings.topic_raw,
        "THIRDRING_TOPIC_DLQ": settings.topic_dlq,
        "THIRDRING_PARTITIONS": "3",
    }

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [THIRDRING, "sources", *args], capture_output=True, text=True, env=env, timeout=120
        )

    check = await asyncio.to_thread(cli, "check")
    assert check.returncode == 1, check.stderr  # one source is down
    assert "✓ masto" in check.stdout and "7 to ingest" in check.stdout
    assert "would dead-letter" in check.stdout and "created_at" in check.stdout
    assert "Your service has been DOWN" in check.stdout
    assert "✗ down" in check.stdout and "ConnectError" in check.stdout

    backfill = await asyncio.to_thread(cli, "backfill", "masto", "--limit", "4")
    assert backfill.returncode == 0, backfill.stderr
    # the newest 4: 106 (malformed), 107 (a boost), 108 and 109
    assert "masto: published 2, duplicates 0, dead-lettered 1" in backfill.stderr
    records = await consume(settings, at_least(2))
    assert len(records) == 2 and all(parse(r).backfill for r in records)

    listed = await asyncio.to_thread(cli, "list")
    assert listed.returncode == 0, listed.stderr
    assert "masto" in listed.stdout and "tag:acme: 109348000000000109" in listed.stdout
