"""A scripted demo for ``thirdring up`` with no configuration.

Posts for brand "acme" spread over ~15 s from now, timed for the demo SLA policy (P1 20 s,
P2 30 s, P3 40 s, warning at 50%): within a minute a newcomer sees cases open, one answered
in time, and an unanswered outage complaint reach its warning (~10 s) and breach (~20 s).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from services.ingest.sources.base import Source
from shared.events import Author, RawMention, utcnow

BRAND = "acme"


@dataclass(frozen=True)
class DemoPost:
    seq: str  # unique within a run; the external id is "<run>-<seq>"
    at: float  # seconds after the start of the run
    author: str
    text: str
    followers: int | None = None
    reply_to: str | None = None  # seq of the post answered (same conversation)
    is_brand: bool = False


SCRIPT: tuple[DemoPost, ...] = (
    DemoPost(
        "outage",
        0.0,
        "dana_k",
        "@acme Your service has been DOWN for 6 hours and nobody answers. This outage is "
        "unacceptable, I want a refund now!",
        followers=48_200,
    ),
    DemoPost(
        "it",
        2.0,
        "giulia.r",
        "@acme Il servizio non funziona da tre giorni, voglio un rimborso!",
        followers=310,
    ),
    DemoPost("thanks", 4.0, "sam_p", "Thanks @acme, the new app update is great. Love it!"),
    DemoPost(
        "et",
        6.0,
        "kaarel_t",
        "@acme Internet ei tööta juba kaks päeva, palun aidake!",
        followers=95,
    ),
    DemoPost("question", 8.0, "lee.w", "@acme What are your opening hours on Sunday?"),
    DemoPost(
        "it-reply",
        10.0,
        BRAND,
        "@giulia.r Ci scusiamo per il disagio! Ti abbiamo scritto in privato per il rimborso.",
        reply_to="it",
        is_brand=True,
    ),
    DemoPost(
        "outage-again",
        15.0,
        "dana_k",
        "@acme Still down. Is anyone there??",
        followers=48_200,
        reply_to="outage",
    ),
)


class DemoSource(Source):
    name = "demo"
    fingerprint_fields = ("run", "seq")

    def __init__(
        self,
        *,
        brand: str = BRAND,
        speed: float = 1.0,
        run_id: str | None = None,
        script: tuple[DemoPost, ...] = SCRIPT,
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.brand = brand
        self.speed = speed  # >1 plays faster (tests)
        # Part of every external id, so a second demo run is not deduped away.
        self.run_id = run_id or utcnow().strftime("%Y%m%dT%H%M%S%f")
        self.script = script

    def _conversation(self, post: DemoPost) -> str:
        root = post
        by_seq = {p.seq: p for p in self.script}
        while root.reply_to is not None:
            root = by_seq[root.reply_to]
        return f"{self.name}:{self.external_id({'run': self.run_id, 'seq': root.seq})}"

    async def fetch(self) -> AsyncIterator[RawMention]:
        start = time.monotonic()
        for post in sorted(self.script, key=lambda p: p.at):
            # Relative to the start, so slow publishing does not stretch the schedule.
            delay = start + post.at / self.speed - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            yield self.mention(post)

    def mention(self, post: DemoPost) -> RawMention:
        ident = {"run": self.run_id}
        return RawMention(
            source=self.name,
            external_id=self.external_id({**ident, "seq": post.seq}),
            conversation_id=self._conversation(post),
            in_reply_to=(
                self.external_id({**ident, "seq": post.reply_to}) if post.reply_to else None
            ),
            brand=self.brand,
            author=Author(
                id=self.brand if post.is_brand else post.author,
                handle=self.brand if post.is_brand else post.author,
                followers=post.followers,
            ),
            is_brand=post.is_brand,
            text=post.text,
            # The real clock: the SLA runs from the post's own time.
            created_at=utcnow(),
            metadata={"demo": True},
        )
