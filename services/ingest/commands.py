"""``thirdring sources list|check|backfill``: the configured sources, seen from the CLI.

- ``list``: each configured source with its cursor and the last polls' health, as the
  running ingest recorded them in the database;
- ``check``: one poll of each source (the first page of each feed, from the saved cursor),
  nothing published and no cursor moved; prints what would be ingested and what would be
  dead-lettered. Exit code 1 when a source fails;
- ``backfill``: publish history (newest first, back to ``--limit`` items per feed) with
  ``backfill=true``, behind a progress bar.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from services.ingest.listening import ListeningConfig, ListeningError, build_sources, load_listening
from shared.config import Settings

err = Console(stderr=True)


class CommandError(Exception):
    """A problem to print as one line, exit code 2."""


def listening(settings: Settings, path: Path | None) -> ListeningConfig:
    path = path or settings.listening_file
    if path is None:
        raise CommandError("no listening file: set THIRDRING_LISTENING_FILE or pass --file")
    try:
        return load_listening(path)
    except ListeningError as exc:
        raise CommandError(str(exc)) from None


def _sources(config: ListeningConfig, names: list[str] | None) -> list[Any]:
    try:
        return build_sources(config, names or None)
    except ListeningError as exc:
        raise CommandError(str(exc)) from None


def _ago(value: Any) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S}" if value is not None else "never"


def _short(text: str, n: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


async def list_sources(settings: Settings, path: Path | None, out: Console) -> None:
    from services.ingest.cursors import CursorStore
    from shared.db.engine import make_engine

    config = listening(settings, path)
    engine = make_engine(settings.resolved_database_url)
    try:
        rows = {r.source: r for r in await CursorStore(engine).all()}
    except Exception as exc:
        err.print(f"[yellow]cannot read cursors from the database:[/] {exc}", highlight=False)
        rows = {}
    finally:
        await engine.dispose()
    table = Table("source", "type", "brand", "enabled", "every", "cursor", "last ok", "failing",
                  "last error", caption="times in UTC")  # fmt: skip
    for spec in config.sources:
        row = rows.pop(spec.name, None)
        table.add_row(
            spec.name,
            spec.type,
            spec.brand,
            "yes" if spec.enabled else "no",
            f"{spec.interval_seconds:g}s",
            "\n".join(f"{k}: {v}" for k, v in row.cursor.items()) if row else "",
            _ago(row.last_ok_at) if row else "never",
            str(row.consecutive_failures) if row else "",
            _short(row.last_error or "", 60) if row else "",
        )
    for name, row in rows.items():
        table.add_row(name, "?", "?", "not configured", "", str(row.cursor), _ago(row.last_ok_at),
                      str(row.consecutive_failures), _short(row.last_error or "", 60))  # fmt: skip
    out.print(table)


async def check_sources(
    settings: Settings, path: Path | None, names: list[str] | None, out: Console
) -> int:
    from services.ingest.cursors import CursorStore
    from services.ingest.poller import Poller
    from shared.db.engine import make_engine
    from shared.kafka import describe_error

    config = listening(settings, path)
    sources = _sources(config, names)
    if not sources:
        err.print("no enabled sources in the listening config")
        return 0
    engine = make_engine(settings.resolved_database_url)
    cursors: CursorStore | None = CursorStore(engine)
    failed = 0
    try:
        try:
            await cursors.all()  # type: ignore[union-attr]
        except Exception as exc:
            err.print(f"[yellow]no saved cursors ({type(exc).__name__}); from the newest[/]")
            cursors = None
        for source in sources:
            poller = Poller(source, cursors=cursors)
            try:
                report = await poller.poll_once(dry_run=True)
            except Exception as exc:
                failed += 1
                out.print(f"[red]✗ {source.name}[/]: {describe_error(exc)}", highlight=False)
                continue
            finally:
                await source.aclose()
            h = source.health
            quota = f", quota left {h.quota_remaining:g}" if h.quota_remaining is not None else ""
            out.print(
                f"[green]✓ {source.name}[/] ({source.type}): feeds {list(source.feeds())}, "
                f"{len(report.mentions)} to ingest, {report.filtered} filtered, "
                f"{len(report.dead)} malformed; {h.requests} requests{quota}",
                highlight=False,
            )
            if report.mentions:
                table = Table("created (UTC)", "author", "brand?", "vip", "conversation", "text")
                for m in report.mentions:
                    table.add_row(
                        f"{m.created_at:%Y-%m-%d %H:%M}",
                        m.author.handle or m.author.id,
                        "yes" if m.is_brand else "",
                        "yes" if m.author.vip else "",
                        m.conversation_id,
                        _short(m.text),
                    )
                out.print(table)
            for dead in report.dead:
                out.print(f"  [yellow]would dead-letter:[/] {dead.reason}", highlight=False)
    finally:
        await engine.dispose()
    return 1 if failed else 0


async def backfill_sources(
    settings: Settings, path: Path | None, names: list[str] | None, limit: int
) -> int:
    from services.ingest.cursors import CursorStore
    from services.ingest.poller import Poller
    from services.ingest.publisher import Publisher
    from shared.db.engine import make_engine
    from shared.kafka import describe_error, ensure_topics, make_producer
    from shared.progress import progress_bar

    config = listening(settings, path)
    sources = _sources(config, names)
    await ensure_topics(
        settings.kafka_bootstrap_servers,
        [settings.topic_raw, settings.topic_dlq],
        settings.partitions,
    )
    engine = make_engine(settings.resolved_database_url)
    producer = make_producer(settings.kafka_bootstrap_servers)
    await producer.start()
    failed = 0
    try:
        publisher = Publisher(settings, engine, producer)
        cursors = CursorStore(engine)
        with progress_bar() as bar:
            for source in sources:
                task = bar.add_task(source.name, total=limit * max(1, len(source.feeds())))
                poller = Poller(
                    source,
                    publisher=publisher,
                    cursors=cursors,
                    dlq_topic=settings.topic_dlq,
                    raw_topic=settings.topic_raw,
                )
                try:
                    report = await poller.backfill(
                        limit, on_progress=lambda n, t=task: bar.advance(t, n)
                    )
                except Exception as exc:
                    failed += 1
                    bar.console.print(f"[red]✗ {source.name}[/]: {describe_error(exc)}")
                    continue
                finally:
                    await source.aclose()
                bar.update(task, completed=bar.tasks[task].total)
                bar.console.print(
                    f"{source.name}: published {report.published}, duplicates "
                    f"{report.duplicates}, dead-lettered {len(report.dead)}, "
                    f"filtered {report.filtered}",
                    highlight=False,
                )
    finally:
        await producer.stop()
        await engine.dispose()
    return 1 if failed else 0


def run(coro: Any) -> int:
    """Run a command coroutine; a CommandError is one red line and exit code 2."""
    try:
        result = asyncio.run(coro)
    except CommandError as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False)
        return 2
    return int(result or 0)
