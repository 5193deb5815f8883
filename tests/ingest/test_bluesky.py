"""The Bluesky connector against a real HTTP server on 127.0.0.1 serving documented shapes."""

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
from services.ingest.sources.bluesky import BlueskySource
from services.ingest.sources.http import SourceError
from shared.config import Settings
from shared.events import DeadLetter, RawMention
from tests.ingest import fixture_server as fx
from tests.ingest.bluesky_server import AUTHOR_FEED, SEARCH, SESSION, BlueskyServer
from tests.ingest.helpers import at_least, consume, consume_topic, parse

BRAND = fx.acme("bluesky", "@acme.bsky.social", "bigcorp.example.com")
DIDS = {
    "dana": "did:plc:dana2k7xq4l5mxw3bzr6vyae",
    "acme": "did:plc:acme5upp7rt2mlx3bz6vyaek",
    "noor": "did:plc:noor6x7rt2mlx3bz6vyaeiqt",
    "sam": "did:plc:sam3p7rt2mlx3bz6vyaeiqtu",
    "lee": "did:plc:lee4w7rt2mlx3bz6vyaeiqtu",
}
FEEDS = ["search:acme broadband", "tag:acme", "mentions:acme.bsky.social"]
REPLIES = "replies:acme.bsky.social"


def uri(who: str, n: str) -> str:
    """Post URIs of the fixture: rkeys 3mdqbcaaaa<n>2a."""
    return f"at://{DIDS[who]}/app.bsky.feed.post/3mdqbcaaaa{n}2a"


@pytest.fixture
def bluesky_server() -> Iterator[BlueskyServer]:
    yield from fx.served(BlueskyServer.with_fixtures())


def bluesky(server: BlueskyServer, name: str = "bsky", **settings: Any) -> BlueskySource:
    return fx.make_source(BlueskySource, BRAND, name, service=server.url, **settings)


def by_rkey(mentions: list[RawMention]) -> dict[str, RawMention]:
    return {m.external_id.rsplit("/", 1)[1][10]: m for m in mentions}


async def test_maps_posts_threads_and_recognises_the_brand(bluesky_server: BlueskyServer) -> None:
    source = bluesky(bluesky_server)
    assert list(source.feeds()) == [*FEEDS, REPLIES]
    pages = {f: await source.fetch_page(f, None, None) for f in source.feeds()}
    assert pages[REPLIES].cursor == {"since": "2026-11-27T09:02:00.000Z"}
    assert pages["search:acme broadband"].cursor == {"since": "2026-11-27T09:06:00.000Z"}
    # The brand's author feed: its reply only (not its repost, not its top-level post).
    assert [p["uri"] for p in pages[REPLIES].items] == [uri("acme", "c")]

    items = [item for page in pages.values() for item in page.items]
    result = fx.map_items(source, items, key=lambda item: item["uri"])
    [(bad, reason)] = result.errors.items()
    assert bad == uri("sam", "f") and "created_at" in reason
    assert result.skipped == [uri("lee", "g")]  # German
    got = by_rkey(list(result.mentions.values()))
    # g is German (the brand follows en and it); f is malformed
    assert sorted(got) == ["a", "b", "c", "d", "e", "h"]

    dana = got["a"]
    assert dana.source == "bluesky" and dana.brand == "acme"
    assert dana.external_id == uri("dana", "a")
    assert dana.text.startswith("@acme.bsky.social my acme broadband has been down")
    assert dana.author.id == DIDS["dana"] and dana.author.handle == "dana.bsky.social"
    assert dana.url == "https://bsky.app/profile/dana.bsky.social/post/3mdqbcaaaaa2a"
    assert dana.metadata["lang"] == "en" and dana.metadata["bluesky"]["like_count"] == 14
    assert str(dana.created_at) == "2026-11-27 09:00:00+00:00"
    assert not dana.is_brand and not dana.author.vip and dana.in_reply_to is None
    assert got["e"].author.vip  # bigcorp.example.com is a VIP of the brand
    assert got["b"].metadata["lang"] == "it" and got["b"].text.endswith("#acme")

    # The brand's reply answers Dana: is_brand, in her conversation; her follow-up (a
    # reply to the brand's reply) stays in it: the root comes with every reply.
    answer, follow_up = got["c"], got["d"]
    assert answer.is_brand and answer.author.handle == "acme.bsky.social"
    assert answer.in_reply_to == dana.external_id and follow_up.in_reply_to == uri("acme", "c")
    assert dana.conversation_id == f"bluesky:{uri('dana', 'a')}"
    assert answer.conversation_id == dana.conversation_id == follow_up.conversation_id
    # A reply to a post never seen joins its root's conversation; a handle that no longer
    # resolves ("handle.invalid") leaves the DID in the URL.
    noor = got["h"]
    root = "at://did:plc:old2x7rt2mlx3bz6vyaeiqtu/app.bsky.feed.post/3mdpzzzzzzz2a"
    assert noor.conversation_id == f"bluesky:{root}" and noor.in_reply_to == root
    assert noor.author.handle is None
    assert noor.url == f"https://bsky.app/profile/{DIDS['noor']}/post/3mdqbcaaaah2a"

    [mentions] = bluesky_server.paths(SEARCH)[2:3]
    assert mentions.query["q"] == ["@acme.bsky.social"]
    assert mentions.query["mentions"] == ["acme.bsky.social"]
    assert bluesky_server.paths(SEARCH)[1].query["q"] == ["#acme"]
    assert bluesky_server.paths(AUTHOR_FEED)[0].query["filter"] == ["posts_with_replies"]
    await source.aclose()


async def test_poll_publishes_dead_letters_and_saves_cursors(
    bluesky_server: BlueskyServer, settings: Settings, publisher: Publisher, engine: AsyncEngine
) -> None:
    source = bluesky(bluesky_server, overlap_seconds=60)
    p = fx.make_poller(source, settings, publisher, engine)
    report = await p.poll_once()
    # a is found by the search and the mentions: published once
    assert (report.published, report.duplicates, report.filtered) == (6, 1, 1)
    assert [d.item["uri"] for d in report.dead] == [uri("sam", "f")]

    records = await consume(settings, at_least(6))
    got = by_rkey([parse(r) for r in records])
    assert len(records) == 6 and sorted(got) == ["a", "b", "c", "d", "e", "h"]
    conversation = got["a"].conversation_id.encode()
    assert {r.key for r in records if parse(r).external_id[-3] in "acd"} == {conversation}

    [letter_record] = await consume_topic(settings, settings.topic_dlq, at_least(1))
    letter = DeadLetter.model_validate_json(letter_record.value)
    assert letter.stage == "ingest:bsky" and "created_at" in letter.reason
    original = json.loads(base64.b64decode(letter.original_b64))
    assert original["uri"] == uri("sam", "f") and original["record"]["createdAt"] == "last tuesday"
    assert source.health.dead_lettered == 1 and source.health.items == 6

    saved = await CursorStore(engine).load("bsky")
    assert saved == {
        "search:acme broadband": {"since": "2026-11-27T09:06:00.000Z"},
        "tag:acme": {"since": "2026-11-27T09:01:00.000Z"},
        "mentions:acme.bsky.social": {"since": "2026-11-27T09:07:00.000Z"},
        REPLIES: {"since": "2026-11-27T09:02:00.000Z"},
    }
    # From the cursors, less the overlap: what is seen again is dropped as a repeat.
    again = await p.poll_once()
    # tag: b, mentions: h, replies: c (its top-level post is below the cursor); the
    # search sees f (dead-lettered again) and g (filtered) again
    assert (again.published, again.duplicates, again.filtered, len(again.dead)) == (0, 3, 1, 1)
    last = bluesky_server.paths(SEARCH)[-1]
    assert last.query["since"] == ["2026-11-27T09:06:00.000Z"] and "until" not in last.query
    assert await CursorStore(engine).load("bsky") == saved
    await source.aclose()


async def test_paging_and_a_restart_midway_lose_and_repeat_nothing(
    bluesky_server: BlueskyServer, settings: Settings, publisher: Publisher, engine: AsyncEngine
) -> None:
    first_uri = uri("dana", "a")
    template = bluesky_server.posts[first_uri]
    bluesky_server.posts = {first_uri: template}
    cfg = {"hashtags": [], "mentions": False, "brand_replies": False, "limit": 3}
    cfg["overlap_seconds"] = 0
    feed = "search:acme broadband"

    first = bluesky(bluesky_server, **cfg)
    assert (await fx.make_poller(first, settings, publisher, engine).poll_once()).published == 1
    assert await CursorStore(engine).load("bsky") == {feed: {"since": "2026-11-27T09:00:00.000Z"}}

    new = [f"3mdqbdaaaa{c}2a" for c in "abcdefgh"]
    for i, rkey in enumerate(new):
        bluesky_server.add_post(template, rkey, f"2026-11-27T10:0{i}:00.000Z")

    # Runner A stops after its first page (the newest three): the saved cursor keeps the
    # window still to walk. Runner B dies between publishing its page and saving it.
    run = await fx.restart_midway(
        lambda: bluesky(bluesky_server, **cfg), settings, publisher, engine
    )
    window = {
        "since": "2026-11-27T09:00:00.000Z",
        "newest": "2026-11-27T10:07:00.000Z",
        "until": "2026-11-27T10:05:00.000Z",
    }
    assert run.after_a == run.after_b == {feed: window}
    # Runner C goes on below the saved window: repeats B's page (deduped), then the rest,
    # down to the cursor; only then does the cursor move up to the newest post.
    assert (run.report.published, run.report.duplicates, run.report.pages) == (3, 4, 3)
    assert run.after_c == {feed: {"since": "2026-11-27T10:07:00.000Z"}}

    records = await consume(settings, at_least(9))
    rkeys = sorted(parse(r).external_id.rsplit("/", 1)[1] for r in records)
    assert rkeys == sorted(["3mdqbcaaaaa2a", *new])  # every post exactly once

    # The queries: since the cursor; the API's cursor within a walk, until below a window.
    calls = [
        (r.arg("since"), r.arg("until"), r.arg("cursor")) for r in bluesky_server.paths(SEARCH)
    ]
    since, below = "2026-11-27T09:00:00.000Z", "2026-11-27T10:05:00.001Z"
    assert calls == [
        (None, None, None),  # the first poll
        (since, None, None),  # A
        (since, below, None),  # B
        (since, below, None),  # C
        (since, below, "3"),
        (since, below, "6"),
    ]


async def test_429_with_retry_after_and_500_are_retried(bluesky_server: BlueskyServer) -> None:
    source = bluesky(bluesky_server)
    feed = "search:acme broadband"
    page = await fx.fetch_after_429_and_500(bluesky_server, source, feed, SEARCH)
    assert len(page.items) == 5
    h = source.health  # RateLimit-* headers: the reset is an epoch
    assert h.requests == 3 and h.quota_limit == 3000 and h.quota_remaining == 2997
    assert h.quota_reset_at is not None and h.quota_reset_at > datetime.now(UTC)
    await fx.give_up_when_down(bluesky_server, source, feed)
    await source.aclose()


async def test_an_app_password_session_and_its_renewal(
    bluesky_server: BlueskyServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    bluesky_server.require_auth = True
    anonymous = bluesky(bluesky_server)
    with pytest.raises(SourceError, match=r"HTTP 403.*AuthMissing"):
        await anonymous.fetch_page("tag:acme", None, None)

    monkeypatch.setenv("BSKY_APP_PASSWORD", "app-pass-1234")
    auth = {"identifier": "acme.bsky.social", "app_password_env": "BSKY_APP_PASSWORD"}
    # No service: the calls go to the PDS that opened the session.
    source = fx.make_source(BlueskySource, BRAND, "bsky", pds=bluesky_server.url, **auth)
    assert source.service == bluesky_server.url
    assert len((await source.fetch_page("tag:acme", None, None)).items) == 1
    [session] = bluesky_server.paths(SESSION)
    assert session.json() == {"identifier": "acme.bsky.social", "password": "app-pass-1234"}
    assert bluesky_server.paths(SEARCH)[-1].headers["authorization"] == "Bearer jwt-1"

    bluesky_server.expire_tokens()  # the access token expires: a new session, once
    assert len((await source.fetch_page("tag:acme", None, None)).items) == 1
    assert len(bluesky_server.paths(SESSION)) == 2
    assert bluesky_server.paths(SEARCH)[-1].headers["authorization"] == "Bearer jwt-2"

    monkeypatch.setenv("BSKY_APP_PASSWORD", "wrong")
    wrong = fx.make_source(BlueskySource, BRAND, "bsky", pds=bluesky_server.url, **auth)
    with pytest.raises(SourceError, match="createSession: HTTP 401"):
        await wrong.fetch_page("tag:acme", None, None)
    for s in (anonymous, source, wrong):
        await s.aclose()
