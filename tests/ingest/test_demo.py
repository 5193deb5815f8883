from __future__ import annotations

import time
from datetime import timedelta

from services.ingest.sources.demo import SCRIPT, DemoSource
from shared.events import RawMention, utcnow

SPEED = 30  # the 15 s script in 0.5 s


async def _collect(source: DemoSource) -> list[tuple[float, RawMention]]:
    start = time.monotonic()
    return [(time.monotonic() - start, m) async for m in source.fetch()]


async def test_demo_script_threads_the_brand_reply_and_keeps_time() -> None:
    before = utcnow()
    timed = await _collect(DemoSource(speed=SPEED))
    posts = [m for _, m in timed]
    assert len({m.external_id for m in posts}) == len(SCRIPT) == 7
    assert all(m.brand == "acme" and m.source == "demo" for m in posts)

    it = next(m for m in posts if "Il servizio non funziona" in m.text)
    et = next(m for m in posts if "Internet ei tööta" in m.text)
    reply = next(m for m in posts if m.is_brand)
    assert [m for m in posts if m.is_brand] == [reply]  # the brand answers only the Italian post
    assert reply.author.id == "acme"
    assert reply.in_reply_to == it.external_id
    assert reply.conversation_id == it.conversation_id
    assert et.conversation_id not in {it.conversation_id}

    # The outage complaint and its follow-up share a conversation that nobody answers.
    outage = [m for m in posts if m.author.id == "dana_k"]
    assert len(outage) == 2 and len({m.conversation_id for m in outage}) == 1
    assert "refund" in outage[0].text and outage[1].in_reply_to == outage[0].external_id

    # Real clock, spaced like the script: the reply comes 8 s (scaled) after the complaint.
    assert all(before <= m.created_at <= utcnow() for m in posts)
    assert [m.created_at for m in posts] == sorted(m.created_at for m in posts)
    assert reply.created_at - it.created_at >= timedelta(seconds=8 / SPEED * 0.9)
    assert timed[-1][0] >= 15 / SPEED * 0.9


async def test_demo_runs_do_not_collide() -> None:
    ids_a = {m.event_id for _, m in await _collect(DemoSource(speed=1000))}
    ids_b = {m.event_id for _, m in await _collect(DemoSource(speed=1000))}
    assert len(ids_a) == len(ids_b) == 7
    assert not ids_a & ids_b
