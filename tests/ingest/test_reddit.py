"""The Reddit connector against a real HTTP server on 127.0.0.1 serving documented shapes."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ingest.cursors import CursorStore
from services.ingest.publisher import Publisher
from services.ingest.sources.http import SourceError
from services.ingest.sources.reddit import RedditSource
from shared.config import Settings
from shared.events import DeadLetter, RawMention
from tests.ingest import fixture_server as fx
from tests.ingest.helpers import at_least, consume, consume_topic, parse
from tests.ingest.reddit_server import TOKEN, RedditServer

BASE = 1795770000.0  # 2026-11-27T09:00:00Z: created_utc of t3_1p0a01
BRAND = fx.acme("reddit", "u/acme_official", "bigcorp_it")
FEEDS = [
    "new:AcmeBroadband",
    "comments:AcmeBroadband",
    "search:acme broadband",
    "user:acme_official",
]
ONLY_NEW = {"comments": False, "keywords": [], "brand_replies": False}


@pytest.fixture
def reddit_server() -> Iterator[RedditServer]:
    yield from fx.served(RedditServer.with_fixtures())


def reddit(server: RedditServer, name: str = "reddit", **settings: Any) -> RedditSource:
    settings = {"subreddits": ["r/AcmeBroadband"], "contact": "acme_ops", **settings}
    return fx.make_source(RedditSource, BRAND, name, base_url=server.url, **settings)


def by_name(mentions: list[RawMention]) -> dict[str, RawMention]:
    return {m.external_id: m for m in mentions}


async def test_maps_posts_comments_threads_and_recognises_the_brand(
    reddit_server: RedditServer,
) -> None:
    source = reddit(reddit_server)
    assert list(source.feeds()) == FEEDS
    pages = {f: await source.fetch_page(f, None, None) for f in source.feeds()}
    assert pages["new:AcmeBroadband"].cursor == {"name": "t3_1p0a04", "created": BASE + 300}
    assert pages["user:acme_official"].cursor == {"name": "t1_c0a006", "created": BASE + 540}
    # Oldest first: the post before the comments that answer it.
    assert [t["data"]["id"] for t in pages["new:AcmeBroadband"].items][:2] == ["1p0a00", "1p0a01"]

    items = [item for page in pages.values() for item in page.items]
    result = fx.map_items(source, items, key=lambda item: item["data"]["name"])
    errors, mapped = result.errors, result.mentions
    assert list(errors) == ["t3_1p0a04"] and "yesterday" in errors["t3_1p0a04"]
    assert sorted(result.skipped) == ["t1_c0a004", "t3_1p0a03"]  # removed, deleted
    assert sorted(mapped) == [
        "t1_c0a001",
        "t1_c0a002",
        "t1_c0a003",
        "t1_c0a005",
        "t1_c0a006",
        "t3_1p0a00",
        "t3_1p0a01",
        "t3_1p0a02",
        "t3_1p0a05",
    ]

    dana = mapped["t3_1p0a01"]
    assert dana.source == "reddit" and dana.brand == "acme"
    # title and selftext; raw_json=1: "&" as written, not "&amp;"
    assert dana.text == (
        "Acme Broadband down again in Leeds\n\n"
        "Third outage this week. The support line rings forever & nobody answers."
    )
    assert dana.author.id == "t2_8dk1q" and dana.author.handle == "dana_k"
    assert dana.url.startswith("https://www.reddit.com/r/AcmeBroadband/comments/1p0a01/")
    assert str(dana.created_at) == "2026-11-27 09:00:00+00:00"
    assert dana.metadata["reddit"]["subreddit"] == "AcmeBroadband"
    assert not dana.is_brand and not dana.author.vip and "lang" not in dana.metadata
    assert dana.conversation_id == "reddit:t3_1p0a01" and dana.in_reply_to is None
    bigcorp = mapped["t3_1p0a02"]
    assert bigcorp.author.vip and bigcorp.text == "Acme broadband outage: whole office offline"
    assert bigcorp.metadata["reddit"]["link_url"] == "https://status.example/acme/incidents/42"

    # The brand's comment answers Dana's post: is_brand, in its conversation; her reply to
    # the brand's comment stays in it.
    answer, follow_up = mapped["t1_c0a002"], mapped["t1_c0a003"]
    assert answer.is_brand and answer.author.handle == "acme_official"
    assert answer.in_reply_to == "t3_1p0a01" and follow_up.in_reply_to == "t1_c0a002"
    assert answer.conversation_id == dana.conversation_id == follow_up.conversation_id
    assert follow_up.text == "Still down, nobody came."
    assert follow_up.metadata["reddit"]["link_title"] == "Acme Broadband down again in Leeds"
    # A comment on a post never seen: the post is the root all the same.
    assert mapped["t1_c0a005"].conversation_id == "reddit:t3_1ozz99"
    # The brand's reply in another subreddit, found through its own comments feed.
    assert mapped["t1_c0a006"].is_brand
    assert mapped["t1_c0a006"].conversation_id == mapped["t3_1p0a05"].conversation_id

    calls = {r.path: r for r in reddit_server.requests}
    assert set(calls) == {
        "/r/AcmeBroadband/new.json",
        "/r/AcmeBroadband/comments.json",
        "/search.json",
        "/user/acme_official/comments.json",
    }
    search = calls["/search.json"]
    assert (search.arg("q"), search.arg("sort"), search.arg("type")) == (
        "acme broadband",
        "new",
        "link",
    )
    assert all(r.arg("raw_json") == "1" and r.arg("limit") == "100" for r in calls.values())
    assert search.headers["user-agent"] == "server:thirdring:0.1.0 (by /u/acme_ops)"
    await source.aclose()


async def test_poll_publishes_dead_letters_and_saves_cursors(
    reddit_server: RedditServer, settings: Settings, publisher: Publisher, engine: AsyncEngine
) -> None:
    source = reddit(reddit_server)
    p = fx.make_poller(source, settings, publisher, engine)
    report = await p.poll_once()
    # The search finds 1p0a01 and 1p0a02 again, the brand's feed c0a002: published once.
    assert (report.published, report.duplicates, report.filtered, len(report.dead)) == (9, 3, 2, 1)

    records = await consume(settings, at_least(9))
    got = by_name([parse(r) for r in records])
    assert len(records) == 9 and len(got) == 9
    thread = {r.key for r in records if parse(r).external_id in ("t3_1p0a01", "t1_c0a002")}
    assert thread == {b"reddit:t3_1p0a01"}

    [letter_record] = await consume_topic(settings, settings.topic_dlq, at_least(1))
    letter = DeadLetter.model_validate_json(letter_record.value)
    assert letter.stage == "ingest:reddit" and "yesterday" in letter.reason
    assert json.loads(base64.b64decode(letter.original_b64))["data"]["name"] == "t3_1p0a04"
    assert source.health.dead_lettered == 1 and source.health.items == 9

    saved = await CursorStore(engine).load("reddit")
    assert saved == {
        "new:AcmeBroadband": {"name": "t3_1p0a04", "created": BASE + 300},
        "comments:AcmeBroadband": {"name": "t1_c0a005", "created": BASE + 420},
        "search:acme broadband": {"name": "t3_1p0a05", "created": BASE + 480},
        "user:acme_official": {"name": "t1_c0a006", "created": BASE + 540},
    }
    # From the cursors: nothing new, and the malformed post is not dead-lettered again.
    again = await p.poll_once()
    assert (again.published, again.duplicates, again.filtered, len(again.dead)) == (0, 0, 0, 0)
    assert await CursorStore(engine).load("reddit") == saved
    await source.aclose()


async def test_paging_and_a_restart_midway_lose_and_repeat_nothing(
    reddit_server: RedditServer, settings: Settings, publisher: Publisher, engine: AsyncEngine
) -> None:
    template = reddit_server.things["t3_1p0a01"]
    reddit_server.things = {"t3_1p0a01": template}
    cfg = {**ONLY_NEW, "limit": 3}
    feed = "new:AcmeBroadband"

    first = reddit(reddit_server, **cfg)
    assert (await fx.make_poller(first, settings, publisher, engine).poll_once()).published == 1
    assert await CursorStore(engine).load("reddit") == {
        feed: {"name": "t3_1p0a01", "created": BASE}
    }

    new = [f"1p0b0{i}" for i in range(8)]
    for i, thing_id in enumerate(new):
        reddit_server.add(template, thing_id, BASE + 3600 + 60 * i)

    # Runner A stops after its first page (the newest three): the saved cursor keeps the
    # walk's place. Runner B dies between publishing its page and saving it.
    run = await fx.restart_midway(lambda: reddit(reddit_server, **cfg), settings, publisher, engine)
    walk = {
        "name": "t3_1p0a01",
        "created": BASE,
        "after": "t3_1p0b05",
        "newest_name": "t3_1p0b07",
        "newest": BASE + 3600 + 420,
    }
    assert run.after_a == run.after_b == {feed: walk}
    # Runner C goes on from the saved walk: repeats B's page (deduped), then the rest down
    # to the cursor's post; only then does the cursor move up to the newest post.
    assert (run.report.published, run.report.duplicates, run.report.pages) == (2, 3, 2)
    assert run.after_c == {feed: {"name": "t3_1p0b07", "created": BASE + 3600 + 420}}

    records = await consume(settings, at_least(9))
    names = sorted(parse(r).external_id for r in records)
    assert names == sorted(["t3_1p0a01", *(f"t3_{n}" for n in new)])  # each exactly once

    afters = [r.arg("after") for r in reddit_server.paths("/r/")]
    assert afters == [None, None, "t3_1p0b05", "t3_1p0b05", "t3_1p0b02"]


async def test_a_walk_whose_last_item_is_gone_starts_again_from_the_top(
    reddit_server: RedditServer,
) -> None:
    source = reddit(reddit_server, **ONLY_NEW)
    walk = {"name": "t3_1p0a00", "created": BASE - 1800, "after": "t3_gone", "newest": BASE}
    page = await source.fetch_page("new:AcmeBroadband", walk, None)
    assert page.items == [] and page.next_token is None
    assert page.cursor == {"name": "t3_1p0a00", "created": BASE - 1800}
    again = await source.fetch_page("new:AcmeBroadband", page.cursor, None)
    assert [t["data"]["id"] for t in again.items] == ["1p0a01", "1p0a02", "1p0a03", "1p0a04"]
    assert again.cursor == {"name": "t3_1p0a04", "created": BASE + 300}
    await source.aclose()


async def test_429_with_retry_after_and_500_are_retried(reddit_server: RedditServer) -> None:
    source = reddit(reddit_server)
    feed = "new:AcmeBroadband"
    page = await fx.fetch_after_429_and_500(reddit_server, source, feed, "/r/AcmeBroadband/new")
    assert len(page.items) == 5
    h = source.health
    # Reddit sends Used and Remaining: the limit is their sum; Reset is seconds from now.
    assert h.requests == 3 and h.quota_remaining == 597 and h.quota_limit == 600
    assert h.quota_reset_at is not None
    assert 400 < (h.quota_reset_at - datetime.now(UTC)).total_seconds() <= 412
    await fx.give_up_when_down(reddit_server, source, feed)
    await source.aclose()


async def test_application_only_oauth_and_a_revoked_token(
    reddit_server: RedditServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDDIT_CLIENT_ID", "acme-app-id")
    monkeypatch.setenv("REDDIT_CLIENT_SECRET", "acme-app-secret")
    oauth = {
        "oauth_url": reddit_server.url,
        "token_url": f"{reddit_server.url}{TOKEN}",
        "client_id_env": "REDDIT_CLIENT_ID",
        "client_secret_env": "REDDIT_CLIENT_SECRET",
    }
    source = reddit(reddit_server, **oauth)
    assert len((await source.fetch_page("new:AcmeBroadband", None, None)).items) == 5
    [grant] = reddit_server.paths(TOKEN)
    assert grant.method == "POST" and grant.form() == {"grant_type": "client_credentials"}
    assert grant.headers["authorization"].startswith("Basic ")
    assert grant.headers["user-agent"] == "server:thirdring:0.1.0 (by /u/acme_ops)"
    listing = reddit_server.paths("/r/")[-1]
    assert listing.path == "/r/AcmeBroadband/new"  # oauth.reddit.com: no .json
    assert listing.headers["authorization"] == "bearer app-token-1"

    await source.fetch_page("new:AcmeBroadband", None, None)  # the token is kept
    assert len(reddit_server.paths(TOKEN)) == 1
    reddit_server.revoke()  # revoked before its time: a new token, once
    assert len((await source.fetch_page("new:AcmeBroadband", None, None)).items) == 5
    assert len(reddit_server.paths(TOKEN)) == 2
    assert reddit_server.paths("/r/")[-1].headers["authorization"] == "bearer app-token-2"

    monkeypatch.setenv("REDDIT_CLIENT_SECRET", "wrong")
    wrong = reddit(reddit_server, **oauth)
    with pytest.raises(SourceError, match="access token: HTTP 401"):
        await wrong.fetch_page("new:AcmeBroadband", None, None)
    await source.aclose()
    await wrong.aclose()
