"""The loop around a connector: poll every ``interval_seconds``, page by page.

For each page: map the items (a malformed one goes to the dead-letter topic with the reason
and its original JSON, the rest go on), publish, and only then save the feed's cursor. A
crash between the publish and the save repeats that page after the restart, and the
publisher's event-id dedupe drops the repeats: no post lost, none duplicated.

A failing poll is recorded in the source's health (``/health``, metrics, the
``source_cursors`` row) and retried after a jittered, growing delay; each source has its own
task, so one that keeps failing holds up no other.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from services.ingest import metrics
from services.ingest.cursors import CursorStore
from services.ingest.publisher import Publisher
from services.ingest.sources.http import HttpSource, Page, RateLimited
from shared.events import DeadLetter, RawMention
from shared.kafka import MAX_MESSAGE_BYTES, describe_error

log = logging.getLogger(__name__)

# A failing source waits interval * 2^(failures-1) (jittered), at most this long.
FAILURE_BACKOFF_MAX = 900.0


@dataclass
class DeadItem:
    reason: str
    item: Any


@dataclass
class PollReport:
    source: str
    pages: int = 0
    published: int = 0
    duplicates: int = 0
    filtered: int = 0
    dead: list[DeadItem] = field(default_factory=list)
    # Every mapped mention (a dry run: what would be published).
    mentions: list[RawMention] = field(default_factory=list)


def _original_bytes(item: Any) -> bytes:
    try:
        return json.dumps(item, ensure_ascii=False, default=str).encode()
    except (TypeError, ValueError):
        return repr(item).encode()


class Poller:
    def __init__(
        self,
        source: HttpSource,
        *,
        publisher: Publisher | None = None,
        cursors: CursorStore | None = None,
        dlq_topic: str | None = None,
        raw_topic: str = "mentions.raw",
    ) -> None:
        self.source = source
        self.publisher = publisher
        self.cursors = cursors
        self.dlq_topic = dlq_topic
        self.raw_topic = raw_topic
        self.cursor: dict[str, Any] | None = None
        self.polls = 0

    @property
    def name(self) -> str:
        return self.source.name

    async def _load_cursor(self) -> dict[str, Any]:
        if self.cursor is None:
            self.cursor = await self.cursors.load(self.name) if self.cursors else {}
        return self.cursor

    async def _save_cursor(self) -> None:
        if self.cursors is not None and self.cursor is not None:
            await self.cursors.save(self.name, dict(self.cursor))

    # -- one poll --

    async def poll_once(
        self,
        *,
        dry_run: bool = False,
        on_page: Callable[[str, Page, PollReport], Any] | None = None,
    ) -> PollReport:
        """Every feed from its cursor, up to ``max_pages_per_poll`` pages each.

        ``dry_run``: the first page of each feed only, nothing published or saved (``check``).
        """
        report = PollReport(self.name)
        cursor = await self._load_cursor()
        if dry_run:
            cursor = dict(cursor)
        cfg = self.source.config
        for feed in self.source.feeds():
            current = cursor.get(feed)
            initial = current is None  # the first poll ever: newest page, then history
            limit = 1 if dry_run else (cfg.initial_pages if initial else cfg.max_pages_per_poll)
            token: str | None = None
            pages = 0
            while True:
                page = await self.source.fetch_page(feed, current, token)
                await self._handle(page.items, report, dry_run=dry_run, backfill=False)
                pages += 1
                report.pages += 1
                if page.cursor is not None:
                    current = page.cursor
                    cursor[feed] = current
                # History pages may be cut short by a crash: save the cursor once the walk
                # is done, so the restart walks it again (deduped) instead of skipping it.
                if not dry_run and not initial:
                    await self._save_cursor()
                if on_page is not None:
                    on_page(feed, page, report)
                token = page.older_token if initial else page.next_token
                if not token or pages >= limit:
                    break
            if not dry_run and initial:
                await self._save_cursor()
        self.polls += 1
        return report

    async def backfill(
        self,
        limit: int,
        *,
        on_progress: Callable[[int], Any] | None = None,
    ) -> PollReport:
        """Walk each feed back from the newest item until ``limit`` items (per feed) were
        seen; events carry ``backfill=true``. A feed with no cursor yet starts its polls
        after the newest item seen here."""
        report = PollReport(self.name)
        cursor = await self._load_cursor()
        for feed in self.source.feeds():
            seen = 0
            token: str | None = None
            newest: Any = None
            while seen < limit:
                page = await self.source.fetch_page(feed, None, token)
                # Pages list oldest first: the newest come last.
                items = page.items[-(limit - seen) :] if page.items else []
                await self._handle(items, report, dry_run=False, backfill=True)
                seen += len(items)
                if on_progress is not None:
                    on_progress(len(items))
                if newest is None:
                    newest = page.cursor
                token = page.older_token
                if not token or not page.items:
                    break
            if feed not in cursor and newest is not None:
                cursor[feed] = newest
                await self._save_cursor()
        return report

    async def _handle(
        self, items: list[Any], report: PollReport, *, dry_run: bool, backfill: bool
    ) -> None:
        source = self.source
        health = source.health
        mentions: list[RawMention] = []
        for item in items:
            try:
                mention = source.to_mention(item)
                if mention is not None and backfill:
                    mention = mention.model_copy(update={"backfill": True})
                if mention is not None and len(mention.to_bytes()) > MAX_MESSAGE_BYTES:
                    raise ValueError(f"event too large: over {MAX_MESSAGE_BYTES} bytes")
            except Exception as exc:  # the item's fault: dead-letter it, go on
                reason = f"{source.name}: {describe_error(exc)}"
                report.dead.append(DeadItem(reason, item))
                if not dry_run:
                    await self._dead_letter(reason, item)
                continue
            if mention is None or not source.wanted(mention):
                report.filtered += 1
                if not dry_run:
                    health.filtered += 1
                    metrics.ITEMS.labels(self.name, "filtered").inc()
                continue
            mentions.append(mention)
        report.mentions.extend(mentions)
        if dry_run or not mentions:
            return
        if self.publisher is None:
            raise RuntimeError("a poller that publishes needs a publisher")
        result = await self.publisher.publish(mentions)
        report.published += result.published
        report.duplicates += result.duplicates
        health.items += result.published
        health.duplicates += result.duplicates
        metrics.ITEMS.labels(self.name, "published").inc(result.published)
        metrics.ITEMS.labels(self.name, "duplicate").inc(result.duplicates)
        metrics.observe_lag(self.name, result.mentions)

    async def _dead_letter(self, reason: str, item: Any) -> None:
        letter = DeadLetter(
            reason=reason[:2000],
            stage=f"ingest:{self.name}",
            topic=self.raw_topic,
            original_b64=base64.b64encode(_original_bytes(item)).decode(),
        )
        if self.publisher is not None and self.dlq_topic:
            await self.publisher.producer.send_and_wait(self.dlq_topic, letter.to_bytes())
        self.source.health.dead_lettered += 1
        metrics.ITEMS.labels(self.name, "dead_lettered").inc()
        log.warning("source %s: dead-lettered an item: %s", self.name, reason[:300])

    # -- the loop --

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop`` is set; failures are recorded and retried with backoff."""
        health = self.source.health
        while not stop.is_set():
            started = time.monotonic()
            try:
                report = await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = describe_error(exc)
                health.failed(error)
                delay = self.failure_delay(health.consecutive_failures)
                if isinstance(exc, RateLimited):
                    delay = max(delay, exc.retry_after)
                log.warning(
                    "source %s: poll failed (%d in a row): %s; next try in %.1fs",
                    self.name,
                    health.consecutive_failures,
                    error,
                    delay,
                )
                await self._record(ok=False, error=error)
            else:
                health.succeeded()
                if report.published or report.dead:
                    log.info(
                        "source %s: published %d, duplicates %d, dead-lettered %d",
                        self.name,
                        report.published,
                        report.duplicates,
                        len(report.dead),
                    )
                await self._record(ok=True, error=None)
                delay = max(0.0, self.source.interval - (time.monotonic() - started))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)

    def failure_delay(self, failures: int) -> float:
        interval = self.source.interval
        ceiling = max(interval, min(FAILURE_BACKOFF_MAX, interval * 2 ** (failures - 1)))
        return random.uniform(interval, ceiling)

    async def _record(self, *, ok: bool, error: str | None) -> None:
        if self.cursors is None:
            return
        try:
            await self.cursors.record_poll(
                self.name,
                ok=ok,
                error=error,
                consecutive_failures=self.source.health.consecutive_failures,
            )
        except Exception:
            log.warning("source %s: could not record its health", self.name, exc_info=True)
