"""The Mastodon connector against a real HTTP server on 127.0.0.1 serving documented shapes."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ingest.cursors import CursorStore
from services.ingest.listening import Brand
from services.ingest.publisher import Publisher
from services.ingest.sources.http import SourceError
from services.ingest.sources.mastodon import MastodonSource, html_to_text
from shared.config import Settings
from shared.events import DeadLetter, RawMention
from tests.ingest.fixture_server import (
    fetch_after_429_and_500,
    give_up_when_down,
    make_poller,
    map_items,
    restart_midway,
)
from tests.ingest.fixture_server import make_source as make_source_for
from tests.ingest.helpers import at_least, consume, consume_topic, parse
from tests.ingest.mastodon_server import MastodonServer


def sid(n: int) -> str:
    """Status ids of the fixture: 109348000000000100…"""
    return f"109348000000000{n:03d}"


BRAND = Brand(
    name="acme",
    accounts={"mastodon": ["@acme@mastodon.social"]},
    hashtags=["#acme"],
    keywords=["rimborso"],
    languages=["en", "it"],
    vip={"mastodon": ["@bigcorp@mastodon.social"]},
)


def make_source(
    server: MastodonServer, name: str = "masto", brand: Brand = BRAND, **settings: Any
) -> MastodonSource:
    return make_source_for(MastodonSource, brand, name, instance=server.url, **settings)


def by_status(mentions: list[RawMention]) -> dict[str, RawMention]:
    return {m.external_id.rsplit(":", 1)[1]: m for m in mentions}


def test_html_to_text_keeps_lines_and_entities() -> None:
    html = '<p>Hi <a href="x">@<span>acme</span></a> &amp; co<br />line two</p><p>next</p>'
    assert html_to_text(html) == "Hi @acme & co\nline two\n\nnext"


async def test_maps_statuses_threads_and_recognises_the_brand(
    mastodon_server: MastodonServer,
) -> None:
    source = make_source(mastodon_server)
    assert list(source.feeds()) == ["tag:acme", "account:acme@mastodon.social"]
    tag = await source.fetch_page("tag:acme", None, None)
    replies = await source.fetch_page("account:acme@mastodon.social", None, None)
    assert tag.cursor == sid(109) and replies.cursor == sid(103)

    result = map_items(source, tag.items + replies.items, key=lambda item: item["id"])
    errors = result.errors
    assert list(errors) == [sid(106)] and "created_at" in errors[sid(106)]
    got = by_status(list(result.mentions.values()))
    # 107 is a boost (not a post), 109 is German (the brand follows en and it)
    assert sorted(got) == [sid(n) for n in (100, 101, 102, 103, 104, 105, 108)]

    host = mastodon_server.host
    dana = got[sid(100)]
    assert dana.source == "mastodon" and dana.brand == "acme"
    assert dana.external_id == f"{host}:{sid(100)}"
    assert dana.text.startswith("@acme Your service has been DOWN") and "<" not in dana.text
    assert dana.author.handle == f"dana_k@{host}" and dana.author.followers == 48200
    assert dana.url == f"https://fosstodon.example/@dana_k/{sid(100)}"
    assert dana.metadata["lang"] == "en" and dana.metadata["mastodon"]["tags"] == ["acme"]
    assert str(dana.created_at) == "2026-11-27 09:00:00+00:00"
    assert not dana.is_brand and not dana.author.vip
    assert got[sid(108)].author.vip  # @bigcorp@mastodon.social is a VIP of the brand

    # The brand's reply answers Giulia's complaint: is_brand, in her conversation; her
    # follow-up (a reply to the brand's reply) stays in it too.
    complaint, answer, follow_up = got[sid(101)], got[sid(103)], got[sid(104)]
    assert (
        complaint.text
        == "@acme Il servizio non funziona da tre giorni, voglio un rimborso!\nAiuto! #acme"
    )
    assert answer.is_brand and answer.author.handle == "acme@mastodon.social"
    assert answer.in_reply_to == complaint.external_id
    assert complaint.conversation_id == f"mastodon:{host}:{sid(101)}"
    assert answer.conversation_id == complaint.conversation_id == follow_up.conversation_id
    # A reply whose parent was never seen: the thread's root comes from /context.
    assert got[sid(105)].conversation_id == f"mastodon:{host}:{sid(899)}"
    assert len(mastodon_server.paths("/api/v1/statuses/")) == 2  # 104 and 105 only
    await source.aclose()


async def test_poll_publishes_dead_letters_and_saves_cursors(
    mastodon_server: MastodonServer,
    settings: Settings,
    publisher: Publisher,
    engine: AsyncEngine,
) -> None:
    source = make_source(mastodon_server)
    p = make_poller(source, settings, publisher, engine)
    report = await p.poll_once()
    assert (report.published, report.filtered, len(report.dead)) == (7, 2, 1)

    records = await consume(settings, at_least(7))
    got = by_status([parse(r) for r in records])
    assert len(records) == 7 and len(got) == 7
    assert {r.key for r in records if parse(r).external_id.endswith(sid(103))} == {
        got[sid(101)].conversation_id.encode()
    }
    assert got[sid(103)].is_brand and got[sid(103)].ingested_at > got[sid(103)].created_at

    [letter_record] = await consume_topic(settings, settings.topic_dlq, at_least(1))
    letter = DeadLetter.model_validate_json(letter_record.value)
    assert letter.stage == "ingest:masto" and "created_at" in letter.reason
    assert json.loads(base64.b64decode(letter.original_b64))["id"] == sid(106)
    assert source.health.dead_lettered == 1 and source.health.items == 7

    saved = await CursorStore(engine).load("masto")
    assert saved == {"tag:acme": sid(109), "account:acme@mastodon.social": sid(103)}
    again = await p.poll_once()  # from the cursors: nothing new
    assert (again.published, again.duplicates, len(again.dead)) == (0, 0, 0)
    assert mastodon_server.paths("/api/v1/timelines/tag/")[-1].query["min_id"] == [sid(109)]
    await source.aclose()


async def test_paging_and_a_restart_midway_lose_and_repeat_nothing(
    mastodon_server: MastodonServer,
    settings: Settings,
    publisher: Publisher,
    engine: AsyncEngine,
) -> None:
    template = mastodon_server.statuses[sid(102)]
    mastodon_server.statuses = {sid(102): template}
    cfg = {"limit": 3, "brand_replies": False}

    first = make_source(mastodon_server, **cfg)
    assert (await make_poller(first, settings, publisher, engine).poll_once()).published == 1

    new = [str(110000000000000000 + i) for i in range(8)]
    for n in new:
        mastodon_server.add_status(template, n, created_at="2026-11-27T10:00:00.000Z")

    # Runner A stops after its first page (published, cursor saved); runner B dies between
    # publishing its next page and saving the cursor; runner C starts from the saved
    # cursor: repeats B's page (deduped), then the rest.
    run = await restart_midway(
        lambda: make_source(mastodon_server, **cfg), settings, publisher, engine
    )
    assert run.after_a == run.after_b == {"tag:acme": new[2]}
    assert (run.report.published, run.report.duplicates) == (2, 3)
    assert run.after_c == {"tag:acme": new[-1]}

    records = await consume(settings, at_least(9))
    ids = sorted(parse(r).external_id.rsplit(":", 1)[1] for r in records)
    assert ids == sorted([sid(102), *new])  # every post exactly once

    # Pages were followed through the Link header (rel="prev": newer, by min_id).
    min_ids = [r.query.get("min_id", [None])[0] for r in mastodon_server.paths("/api/v1/timel")]
    assert min_ids == [None, sid(102), new[2], new[2], new[5], new[7]]


async def test_429_with_retry_after_and_500_are_retried(
    mastodon_server: MastodonServer,
) -> None:
    source = make_source(mastodon_server)
    tag = "/api/v1/timelines/tag/"
    page = await fetch_after_429_and_500(mastodon_server, source, "tag:acme", tag)
    assert len(page.items) == 9
    h = source.health
    # 3 for the page, 2 thread contexts (replies whose parent was not seen)
    assert h.requests == 5 == len(mastodon_server.requests)
    assert h.quota_limit == 300 and h.quota_remaining == 295 and h.quota_reset_at is not None
    await give_up_when_down(mastodon_server, source, "tag:acme")
    await source.aclose()


async def test_notifications_and_search_need_the_token(
    mastodon_server: MastodonServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    anonymous = make_source(mastodon_server)
    assert "notifications" not in anonymous.feeds()
    with pytest.raises(SourceError, match="HTTP 401"):
        await anonymous.fetch_page("notifications", None, None)

    monkeypatch.setenv("MASTO_TOKEN", "brand-token")
    source = make_source(mastodon_server, token_env="MASTO_TOKEN", limit=1)
    assert list(source.feeds()) == [
        "tag:acme",
        "account:acme@mastodon.social",
        "search:rimborso",
        "notifications",
    ]
    page = await source.fetch_page("notifications", None, None)
    # Only mentions; the cursor is the notification's id (from the Link header).
    [status] = page.items
    assert status["id"] == sid(110) and page.cursor == "34975861"
    m = source.to_mention(status)
    assert m is not None and m.text == "@acme my invoice is charged twice, please help"
    call = mastodon_server.paths("/api/v1/notifications")[-1]
    assert call.headers["authorization"] == "Bearer brand-token"
    assert call.query["types[]"] == ["mention"]

    # Search has no Link header: a full page pages on by ids.
    first = await source.fetch_page("search:rimborso", None, None)
    assert [s["id"] for s in first.items] == [sid(103)] and first.cursor == sid(103)
    assert first.next_token is not None and "min_id=" in first.next_token
    await anonymous.aclose()
    await source.aclose()
