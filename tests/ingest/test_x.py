"""The X (API v2) connector against a real HTTP server on 127.0.0.1 answering like the API."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from services.ingest.listening import build_sources, validate_listening
from services.ingest.poller import Poller
from services.ingest.sources.http import RateLimited, SourceError
from services.ingest.sources.x import XSource
from shared.events import DeadLetter
from tests.ingest import fixture_server as fx
from tests.ingest.helpers import at_least, consume, consume_topic, parse
from tests.ingest.x_server import XServer

BRAND = fx.acme("x", "@acme", "bigcorp_it")
BRAND_ID = "2244990000"


def pid(n: int) -> str:
    """Post ids of the fixture: 1861800000000000100…"""
    return f"1861800000000000{n:03d}"


@pytest.fixture
def x_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[XServer]:
    monkeypatch.setenv("THIRDRING_TEST_X_TOKEN", "x-bearer")
    yield from fx.served(XServer.with_fixtures())


def x(server: XServer, name: str = "x", **settings: Any) -> XSource:
    settings.setdefault("token_env", "THIRDRING_TEST_X_TOKEN")
    return fx.make_source(XSource, BRAND, name, base_url=server.url, **settings)


def post_id(item: dict[str, Any]) -> str:
    return str(item["tweet"]["id"])


async def test_maps_posts_threads_authors_and_the_brand(x_server: XServer) -> None:
    source = x(x_server)
    assert source.config_error is None and list(source.feeds()) == ["search", "mentions:acme"]
    assert source.search_query() == (
        '("acme broadband" OR #acme OR (from:acme is:reply)) -is:retweet'
    )
    page = await source.fetch_page("search", None, None)
    assert page.cursor["since_id"] == pid(109) and page.next_token is None
    assert [i["tweet"]["id"] for i in page.items] == [pid(n) for n in range(100, 110)]
    [call] = x_server.paths("/2/tweets/search/recent")
    assert call.headers["authorization"] == "Bearer x-bearer"
    assert call.arg("max_results") == "100" and call.arg("expansions") == "author_id"
    assert "conversation_id" in (call.arg("tweet.fields") or "")
    assert call.arg("user.fields") == "username,name,public_metrics,verified"

    mapped = fx.map_items(source, page.items, post_id)
    got = mapped.mentions
    assert mapped.errors == {pid(105): "Post lacks 'created_at'"}
    assert mapped.skipped == [pid(104), pid(107)]  # a repost; a post in German
    assert source.to_mention(page.items[4]) is None  # the repost is no mention at all
    dana = got[pid(100)]
    assert dana.source == "x" and dana.external_id == pid(100) and dana.brand == "acme"
    assert dana.text == "@acme Your fibre has been down since Monday & nobody answers. #acme"
    assert dana.author.id == "2244990001" and dana.author.handle == "dana_k"
    assert dana.author.followers == 48200 and not dana.author.vip and not dana.is_brand
    assert dana.url == f"https://x.com/dana_k/status/{pid(100)}"
    assert dana.metadata["lang"] == "en" and str(dana.created_at) == "2026-11-27 09:00:00+00:00"
    assert dana.conversation_id == f"x:{pid(100)}"

    complaint, answer, follow_up = got[pid(101)], got[pid(102)], got[pid(103)]
    assert answer.is_brand and answer.author.handle == "acme" and answer.author.followers == 120000
    assert answer.in_reply_to == pid(101) and follow_up.in_reply_to == pid(102)
    assert complaint.conversation_id == answer.conversation_id == follow_up.conversation_id
    assert got[pid(106)].author.vip  # BigCorp_IT, whatever its case
    assert got[pid(108)].text.endswith("I want the outage fixed and the month refunded.")
    assert "lang" not in got[pid(109)].metadata  # "und": no language, not filtered

    mentions = await source.fetch_page("mentions:acme", None, None)
    assert [i["tweet"]["id"] for i in mentions.items] == [pid(100), pid(110)]
    assert mentions.cursor["since_id"] == pid(110)
    await source.fetch_page("mentions:acme", mentions.cursor, None)
    assert len(x_server.paths("/2/users/by/username/")) == 1  # the brand's id, looked up once
    call = x_server.paths(f"/2/users/{BRAND_ID}/mentions")[-1]
    assert call.arg("since_id") == pid(110)
    h = source.health
    assert h.quota_limit == 450 and h.quota_remaining == 450 - 4 and h.quota_reset_at
    assert h.monthly_posts == 12 and h.as_dict()["monthly_posts"] == 12
    await source.aclose()


async def test_poll_publishes_dead_letters_and_saves_since_ids(
    x_server: XServer, ingest: fx.Ingest
) -> None:
    source = x(x_server)
    report = await ingest.poller(source).poll_once()
    # search: 7 published, the repost and the German post filtered, 105 dead-lettered;
    # mentions: 110, and 100 again (already published from search)
    assert (report.published, report.duplicates) == (8, 1)
    assert (report.filtered, len(report.dead)) == (2, 1)
    records = await consume(ingest.settings, at_least(8))
    assert sorted(parse(r).external_id for r in records) == [
        pid(n) for n in (100, 101, 102, 103, 106, 108, 109, 110)
    ]
    keys = {parse(r).external_id: r.key for r in records}
    assert keys[pid(102)] == keys[pid(101)] == f"x:{pid(101)}".encode()
    [letter_record] = await consume_topic(ingest.settings, ingest.settings.topic_dlq, at_least(1))
    letter = DeadLetter.model_validate_json(letter_record.value)
    assert letter.stage == "ingest:x" and "created_at" in letter.reason
    assert json.loads(base64.b64decode(letter.original_b64))["tweet"]["id"] == pid(105)

    saved = await ingest.cursor("x")
    assert saved["search"]["since_id"] == pid(109)
    assert saved["mentions:acme"]["since_id"] == pid(110)
    assert saved["mentions:acme"]["usage"]["posts"] == 12
    again = await ingest.poller(x(x_server)).poll_once()  # a new runner, from the cursors
    assert (again.published, again.duplicates, len(again.dead)) == (0, 0, 0)
    assert x_server.paths("/2/tweets/search/recent")[-1].arg("since_id") == pid(109)
    await source.aclose()


async def test_paging_and_a_restart_midway_lose_and_repeat_nothing(
    x_server: XServer, ingest: fx.Ingest
) -> None:
    cfg = {"max_results": 10, "mentions": False}
    first = x(x_server, **cfg)
    assert (await ingest.poller(first).poll_once()).published == 7

    template = x_server.search[0]
    new = [str(1861800000000001000 + i) for i in range(25)]  # pages of 10, 10 and 5
    for n in new:
        x_server.add_post(template, n, created_at="2026-11-27T10:00:00.000Z")

    run = await ingest.restart_midway(lambda: x(x_server, **cfg))
    # since_id stays until the walk (newest first, back to since_id) is done.
    assert run.after_a["search"]["since_id"] == pid(109)
    assert run.after_a["search"]["walk"]["newest"] == new[-1]
    assert run.after_b == run.after_a
    assert (run.report.published, run.report.duplicates) == (5, 10)
    assert run.after_c["search"]["since_id"] == new[-1] and "walk" not in run.after_c["search"]

    records = await consume(ingest.settings, at_least(32))
    ids = sorted(parse(r).external_id for r in records)
    assert len(ids) == 32 and set(new) <= set(ids)  # every post exactly once
    calls = x_server.paths("/2/tweets/search/recent")
    assert [c.arg("since_id") for c in calls] == [None, *[pid(109)] * 4]
    assert [c.arg("next_token") is not None for c in calls] == [False, False, True, True, True]


async def test_429_rate_limit_reset_and_500_are_retried_and_quota_is_waited_for(
    x_server: XServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    delays = fx.record_backoff(monkeypatch)
    reset = str(int(time.time()) + 60)
    # X answers a spent window with 429 and x-rate-limit-reset (no Retry-After).
    limited = {"x-rate-limit-remaining": "0", "x-rate-limit-reset": reset}
    x_server.fail["/2/tweets/search/recent"] = [(429, limited), (500, {})]
    source = x(x_server, max_wait_seconds=1000)
    page = await source.fetch_page("search", None, None)
    assert len(page.items) == 10 and len(x_server.paths("/2/tweets/search/recent")) == 3
    assert delays[0] > 50  # waited for the reset, not a short backoff
    assert delays[-1] <= 0.1  # the 500: a backoff

    # The window is spent (remaining 0 on a success): the next call waits for the reset
    # instead of collecting a 429, and one that would wait too long fails the poll.
    x_server.remaining = 0
    await source.fetch_page("search", page.cursor, None)
    delays.clear()
    await source.fetch_page("search", page.cursor, None)
    assert len(delays) == 1 and delays[0] > 800  # reset in 900 s, max_wait_seconds is 1000
    impatient = x(x_server, max_wait_seconds=10)
    await impatient.fetch_page("search", None, None)
    requests = len(x_server.requests)
    with pytest.raises(RateLimited, match="quota exhausted") as caught:
        await impatient.fetch_page("search", None, None)
    assert caught.value.retry_after > 800 and len(x_server.requests) == requests

    await fx.give_up_when_down(x_server, source, "search")
    await source.aclose()
    await impatient.aclose()


async def test_without_a_bearer_token_health_says_so_and_nothing_is_asked(
    x_server: XServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = x(x_server, token_env=None)
    assert missing.health.up is False
    assert "no X bearer token configured" in (missing.health.last_error or "")
    with pytest.raises(SourceError, match="no X bearer token configured"):
        await Poller(missing).poll_once(dry_run=True)

    monkeypatch.delenv("THIRDRING_NOT_SET", raising=False)
    unset = x(x_server, token_env="THIRDRING_NOT_SET")
    assert "THIRDRING_NOT_SET is not set" in (unset.health.last_error or "")

    # Loading the listening file does not fail on it either: the other sources still run.
    config = validate_listening(
        {
            "brands": [BRAND.model_dump()],
            "sources": [
                {
                    "name": "x",
                    "type": "x",
                    "brand": "acme",
                    "settings": {"token_env": "THIRDRING_NOT_SET"},
                }
            ],
        }
    )
    [built] = build_sources(config)
    assert isinstance(built, XSource) and built.health.as_dict()["up"] is False
    assert x_server.requests == []


async def test_the_monthly_post_cap_stops_polling_and_survives_a_restart(
    x_server: XServer, ingest: fx.Ingest
) -> None:
    source = x(x_server, max_posts_per_month=22)
    p = ingest.poller(source)
    assert (await p.poll_once()).published == 8
    search, mentions = x_server.paths("/2/tweets/search/recent"), x_server.paths("/2/users/2")
    assert search[-1].arg("max_results") == "22"  # never more than the cap leaves
    assert mentions[-1].arg("max_results") == "12"  # 22 - 10 read by the search
    h = source.health
    assert (h.monthly_posts, h.monthly_cap) == (12, 22) and h.monthly_reset_at is not None

    # Ten new posts: the search reads them (the cap's last 10), then the cap is spent.
    for n in range(10):
        x_server.add_post(x_server.search[0], str(1861800000000002000 + n))
    with pytest.raises(RateLimited, match="monthly post cap spent: 22 of 22") as caught:
        await p.poll_once()
    assert x_server.paths("/2/tweets/search/recent")[-1].arg("max_results") == "10"
    assert caught.value.retry_after > 0 and h.monthly_posts == 22
    assert (await ingest.cursor("x"))["search"]["usage"]["posts"] == 22

    requests = len(x_server.requests)
    with pytest.raises(RateLimited, match="22 of 22"):
        await p.poll_once()
    # A restart reads the count back from the cursor: still spent, nothing asked.
    again = x(x_server, max_posts_per_month=22)
    with pytest.raises(RateLimited, match="22 of 22"):
        await ingest.poller(again).poll_once()
    assert len(x_server.requests) == requests
    assert again.health.as_dict()["monthly_posts"] == 22
    records = await consume(ingest.settings, at_least(18))
    assert len({parse(r).external_id for r in records}) == 18
    await source.aclose()
