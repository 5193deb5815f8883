"""Replay of files: JSONL of the RawMention contract, and the Kaggle "Customer Support on
Twitter" (twcs) CSV layout.

A broken record (bad JSON, a contract violation, a bad date) is reported with its line
number and the rest of the file is ingested. Replaying a file twice publishes nothing the
second time: the publisher dedupes by event id.
"""

from __future__ import annotations

import asyncio
import csv
import json
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from itertools import islice
from pathlib import Path
from typing import Literal, Protocol

from pydantic import ValidationError

from services.ingest.publisher import Publisher
from shared.events import Author, RawMention
from shared.kafka import MAX_MESSAGE_BYTES, describe_error
from shared.progress import progress_bar

log = logging.getLogger(__name__)

Format = Literal["jsonl", "twcs"]
FORMAT_BY_SUFFIX: dict[str, Format] = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "twcs"}
TWCS_SOURCE = "twcs"
TWCS_COLUMNS = (
    "tweet_id",
    "author_id",
    "inbound",
    "created_at",
    "text",
    "response_tweet_id",
    "in_response_to_tweet_id",
)
CHUNK_SIZE = 500


@dataclass(frozen=True)
class ReplayError:
    line: int  # 1-based physical line (CSV: where the record starts)
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


Item = RawMention | ReplayError


@dataclass
class ReplayReport:
    path: str
    format: Format
    read: int = 0  # records read, broken ones included
    published: int = 0
    duplicates: int = 0
    errors: list[ReplayError] = field(default_factory=list)


class Reader(Protocol):
    format: Format

    def count(self) -> int: ...
    def __iter__(self) -> Iterator[Item]: ...


def _finish(mention: RawMention, line: int, backfill: bool) -> Item:
    if backfill:
        mention = mention.model_copy(update={"backfill": True})
    # A record the broker would refuse must fail here, alone, not sink its whole chunk.
    size = len(mention.to_bytes())
    if size > MAX_MESSAGE_BYTES:
        return ReplayError(line, f"event too large: {size} bytes > {MAX_MESSAGE_BYTES}")
    return mention


# --- JSONL ------------------------------------------------------------------------------


class JsonlReader:
    """One RawMention object per line; blank lines are skipped."""

    format: Format = "jsonl"

    def __init__(self, path: Path, *, backfill: bool = False) -> None:
        self.path = path
        self.backfill = backfill

    def count(self) -> int:
        with self.path.open("rb") as f:
            return sum(1 for raw in f if raw.strip())

    def __iter__(self) -> Iterator[Item]:
        # Binary, decoded per line: one line of bad UTF-8 is one broken record.
        with self.path.open("rb") as f:
            for number, raw in enumerate(f, start=1):
                if not raw.strip():
                    continue
                yield self._parse(number, raw)

    def _parse(self, line: int, raw: bytes) -> Item:
        try:
            obj = json.loads(raw.decode("utf-8-sig" if line == 1 else "utf-8"))
        except UnicodeDecodeError as exc:
            return ReplayError(line, f"not UTF-8: {exc.reason} at byte {exc.start}")
        except json.JSONDecodeError as exc:
            return ReplayError(line, f"invalid JSON: {exc.msg} (column {exc.colno})")
        if not isinstance(obj, dict):
            return ReplayError(line, f"expected a JSON object, got {type(obj).__name__}")
        try:
            mention = RawMention.model_validate(obj)
        except ValidationError as exc:
            return ReplayError(line, describe_error(exc))
        return _finish(mention, line, self.backfill)


def read_jsonl(path: str | Path, *, backfill: bool = False) -> Iterator[Item]:
    return iter(JsonlReader(Path(path), backfill=backfill))


# --- twcs CSV ---------------------------------------------------------------------------

_MONTHS = {m: i for i, m in enumerate("Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split(), 1)}
_MENTION = re.compile(r"@(\w{1,64})")
# The Kaggle file went through pandas: ids of optional columns read like "119237.0".
_FLOAT_ID = re.compile(r"^(\d+)\.0+$")


def parse_twitter_time(value: str) -> datetime:
    """``Tue Oct 31 22:10:47 +0000 2017`` (Twitter v1.1), without the locale strptime needs."""
    try:
        _, mon, day, hms, tz, year = value.split()
        h, m, s = (int(x) for x in hms.split(":"))
        if len(tz) != 5 or tz[0] not in "+-":
            raise ValueError
        offset = timedelta(hours=int(tz[1:3]), minutes=int(tz[3:5]))
        zone = timezone(offset if tz[0] == "+" else -offset)
        return datetime(int(year), _MONTHS[mon], int(day), h, m, s, tzinfo=zone).astimezone(UTC)
    except (ValueError, KeyError):
        raise ValueError(
            f"bad created_at {value!r}: expected like 'Tue Oct 31 22:10:47 +0000 2017'"
        ) from None


def _norm_id(value: str) -> str:
    value = value.strip()
    m = _FLOAT_ID.match(value)
    return m.group(1) if m else value


@dataclass(slots=True)
class _Tweet:
    line: int
    tweet_id: str
    author_id: str
    inbound: bool
    created_at: datetime
    text: str
    parent_id: str | None


class TwcsReader:
    """The twcs layout, threaded: reads the whole file, then yields in created_at order.

    The real file is not sorted by time and a reply may come before its parent, so the
    threads (conversation = ``twcs:<root tweet id>``) and each thread's brand are only known
    once everything is read. Rows are kept as small records and turned into events lazily.
    Broken rows are yielded first (in file order), then the events.
    """

    format: Format = "twcs"

    def __init__(self, path: Path, *, backfill: bool = False) -> None:
        self.path = path
        self.backfill = backfill
        self._tweets: list[_Tweet] | None = None
        self._errors: list[ReplayError] = []

    def count(self) -> int:
        tweets = self._load()
        return len(tweets) + len(self._errors)

    def __iter__(self) -> Iterator[Item]:
        tweets = self._load()
        yield from self._errors
        by_id = {t.tweet_id: t for t in tweets}
        roots = _roots(by_id)
        ordered = sorted(tweets, key=lambda t: (t.created_at, t.line))
        # A thread's brand is the first brand account that answers in it.
        thread_brand: dict[str, str] = {}
        for t in ordered:
            if not t.inbound:
                thread_brand.setdefault(roots[t.tweet_id], t.author_id)
        known = {t.author_id.lower(): t.author_id for t in tweets if not t.inbound}
        for t in ordered:
            root = roots[t.tweet_id]
            if t.inbound:
                brand = thread_brand.get(root) or _brand_from_text(t.text, known)
                author = Author(id=t.author_id)
            else:
                brand = t.author_id
                author = Author(id=t.author_id, handle=t.author_id)
            try:
                mention = RawMention(
                    source=TWCS_SOURCE,
                    external_id=t.tweet_id,
                    conversation_id=f"{TWCS_SOURCE}:{root}",
                    in_reply_to=t.parent_id,
                    brand=brand,
                    author=author,
                    is_brand=not t.inbound,
                    text=t.text,
                    created_at=t.created_at,
                )
            except ValidationError as exc:
                yield ReplayError(t.line, describe_error(exc))
                continue
            yield _finish(mention, t.line, self.backfill)

    def _load(self) -> list[_Tweet]:
        if self._tweets is not None:
            return self._tweets
        tweets: list[_Tweet] = []
        with self.path.open(encoding="utf-8-sig", errors="replace", newline="") as f:
            reader = csv.reader(f)
            try:
                header = next(reader)
            except StopIteration:
                header = []
            missing = [c for c in TWCS_COLUMNS if c not in header]
            if missing:
                self._errors.append(ReplayError(1, f"not a twcs CSV: missing columns {missing}"))
                self._tweets = []
                return self._tweets
            col = {name: header.index(name) for name in TWCS_COLUMNS}
            start = reader.line_num + 1
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    break
                except csv.Error as exc:
                    self._errors.append(ReplayError(start, f"bad CSV: {exc}"))
                    start = reader.line_num + 1
                    continue
                line, start = start, reader.line_num + 1
                if not row:
                    continue  # a blank line
                try:
                    tweets.append(_parse_row(row, col, len(header), line))
                except ValueError as exc:
                    self._errors.append(ReplayError(line, str(exc)))
        self._tweets = tweets
        return tweets


def _parse_row(row: list[str], col: dict[str, int], width: int, line: int) -> _Tweet:
    if len(row) != width:
        raise ValueError(f"expected {width} columns, got {len(row)}")
    tweet_id = _norm_id(row[col["tweet_id"]])
    author_id = row[col["author_id"]].strip()
    if not tweet_id or not author_id:
        raise ValueError("tweet_id and author_id are required")
    inbound = row[col["inbound"]].strip().lower()
    if inbound not in ("true", "false"):
        raise ValueError(f"bad inbound {row[col['inbound']]!r}: expected True or False")
    parent = _norm_id(row[col["in_response_to_tweet_id"]])
    return _Tweet(
        line=line,
        tweet_id=tweet_id,
        author_id=author_id,
        inbound=inbound == "true",
        created_at=parse_twitter_time(row[col["created_at"]]),
        text=row[col["text"]],
        parent_id=parent or None,
    )


def _roots(by_id: dict[str, _Tweet]) -> dict[str, str]:
    """Root of each tweet's thread, following in_response_to within the file."""
    roots: dict[str, str] = {}
    for tweet_id in by_id:
        path: list[str] = []
        current = tweet_id
        while current not in roots:
            path.append(current)
            parent = by_id[current].parent_id
            # A parent outside the file, or a cycle in broken data, ends the walk here.
            if parent is None or parent not in by_id or parent in path:
                roots[current] = current
                break
            current = parent
        root = roots[current]
        for t in path:
            roots[t] = root
    return roots


def _brand_from_text(text: str, known: dict[str, str]) -> str:
    mentions = _MENTION.findall(text)
    for handle in mentions:
        if handle.lower() in known:
            return known[handle.lower()]  # the brand's own spelling
    return mentions[0] if mentions else "unknown"


def read_twcs(path: str | Path, *, backfill: bool = False) -> Iterator[Item]:
    return iter(TwcsReader(Path(path), backfill=backfill))


# --- replay -----------------------------------------------------------------------------


def open_reader(path: Path, fmt: str | None, *, backfill: bool = False) -> Reader:
    if fmt is None:
        fmt = FORMAT_BY_SUFFIX.get(path.suffix.lower())
        if fmt is None:
            raise ValueError(
                f"cannot tell the format of {path.name} from its suffix; "
                "use .jsonl/.ndjson or .csv, or name the format (jsonl, twcs)"
            )
    fmt = {"csv": "twcs", "ndjson": "jsonl"}.get(fmt, fmt)
    if fmt == "jsonl":
        return JsonlReader(path, backfill=backfill)
    if fmt == "twcs":
        return TwcsReader(path, backfill=backfill)
    raise ValueError(f"unknown replay format {fmt!r}: use jsonl or twcs")


def _take(items: Iterator[Item], n: int) -> list[Item]:
    return list(islice(items, n))


async def replay_file(
    path: str | Path,
    fmt: str | None,
    publisher: Publisher,
    *,
    backfill: bool = False,
    progress: bool = True,
    chunk_size: int = CHUNK_SIZE,
) -> ReplayReport:
    """Publish every valid record of ``path``; broken ones are listed in the report.

    ``fmt``: "jsonl" or "twcs" ("csv"), or None to go by the suffix.
    """
    path = Path(path)
    reader = open_reader(path, fmt, backfill=backfill)
    report = ReplayReport(path=str(path), format=reader.format)
    # Parsing runs in a thread so a big file does not stall the event loop (the webhook).
    total = await asyncio.to_thread(reader.count)
    items = iter(reader)
    with progress_bar(disable=not progress) as bar:
        task = bar.add_task(f"replay {path.name}", total=total)
        while chunk := await asyncio.to_thread(_take, items, chunk_size):
            mentions = [x for x in chunk if isinstance(x, RawMention)]
            report.errors.extend(x for x in chunk if isinstance(x, ReplayError))
            result = await publisher.publish(mentions)
            report.read += len(chunk)
            report.published += result.published
            report.duplicates += result.duplicates
            bar.advance(task, len(chunk))
    _log_errors(path, report.errors)
    return report


def _log_errors(path: Path, errors: Iterable[ReplayError], limit: int = 10) -> None:
    errors = list(errors)
    for err in errors[:limit]:
        log.warning("%s: %s", path.name, err)
    if len(errors) > limit:
        log.warning("%s: %d more broken records", path.name, len(errors) - limit)
