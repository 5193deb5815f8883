"""The connector framework for sources polled over HTTP (one class per platform).

A connector is one module ``services/ingest/sources/<type>.py`` with one ``HttpSource``
subclass. It declares:

- ``type`` (the ``type:`` of the listening file, also the module name), ``platform`` (the
  key of a brand's ``accounts``/``vip`` maps and the contract's ``source``; defaults to
  ``type``) and ``fingerprint_fields`` (native fields that identify one post);
- ``Config``: a pydantic model (subclass of ``ConnectorConfig``) for its ``settings:``;
- ``feeds()``: the independent streams it follows (one hashtag, one search, the brand's
  notifications…); each feed has its own cursor;
- ``async fetch_page(feed, cursor, page_token) -> Page``: one request's worth of items,
  with the cursor to persist once they are published and the tokens of the next pages;
- ``to_mention(item) -> RawMention | None``: the mapping to the contract. Raise ValueError
  (or let a KeyError/TypeError escape) for a malformed item: it is dead-lettered with the
  reason and the rest of the page goes on. Return None for an item that is not a mention
  (a boost, a deleted post).

The base class gives every connector ``request()`` (429 with Retry-After, 5xx and network
errors retried with exponential backoff and full jitter, bounded attempts, quota headers
read and honoured), the brand's own accounts (``is_brand_author``) and VIPs (``is_vip``),
``conversation_id()``, and a ``SourceHealth`` that ``/health``, metrics and the CLI show.
The loop around it (pages, dead letters, publish, cursor saved after publish, backoff of a
failing source) is ``services.ingest.poller.Poller``: connectors do not write loops.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from abc import abstractmethod
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field

from services.ingest import metrics
from services.ingest.sources.base import Source
from shared.events import Author, RawMention, utcnow

if TYPE_CHECKING:
    from services.ingest.listening import Brand, SourceSpec

log = logging.getLogger(__name__)

USER_AGENT = "thirdring/0.1 (+social listening for customer care)"


class ConnectorConfig(BaseModel):
    """Settings every connector has; a connector's ``Config`` adds its own fields."""

    model_config = ConfigDict(extra="forbid")

    timeout_seconds: float = Field(default=20.0, gt=0)
    # Attempts per request (429/5xx/network errors); the poll fails after the last one.
    max_attempts: int = Field(default=4, ge=1, le=20)
    backoff_base_seconds: float = Field(default=1.0, gt=0)
    backoff_max_seconds: float = Field(default=60.0, gt=0)
    # A Retry-After (or quota reset) longer than this fails the poll instead of sleeping
    # inside it; the runner then waits that long before the next poll.
    max_wait_seconds: float = Field(default=120.0, ge=0)
    # Pages per feed and poll (the rest follows at the next poll, from the saved cursor).
    max_pages_per_poll: int = Field(default=10, ge=1)
    # Pages of history on the very first poll of a feed (no cursor yet).
    initial_pages: int = Field(default=1, ge=1)
    user_agent: str = USER_AGENT


def read_secret(env: str | None, path: Path | None, what: str) -> str | None:
    """A secret named by an environment variable or a file (the file wins)."""
    if path is not None:
        try:
            return path.read_text().strip() or None
        except OSError as exc:
            raise ValueError(f"cannot read {what} file {path}: {exc}") from None
    if env is not None:
        value = os.environ.get(env, "").strip()
        if not value:
            raise ValueError(f"{what}: environment variable {env} is not set")
        return value
    return None


@dataclass
class Page:
    """One fetched page of a feed."""

    items: list[Any]
    # The feed's cursor once these items are published (None: leave it as it is).
    cursor: Any = None
    # Newer items (polls follow it until it is None).
    next_token: str | None = None
    # Older items (the first poll and backfill walk back with it).
    older_token: str | None = None


@dataclass
class SourceHealth:
    name: str
    type: str
    up: bool | None = None  # None until the first poll ends
    last_ok_at: datetime | None = None
    last_poll_at: datetime | None = None
    last_error: str | None = None
    consecutive_failures: int = 0
    requests: int = 0
    quota_limit: float | None = None
    quota_remaining: float | None = None
    quota_reset_at: datetime | None = None
    items: int = 0  # published
    duplicates: int = 0
    dead_lettered: int = 0
    filtered: int = 0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for k, v in out.items():
            if isinstance(v, datetime):
                out[k] = v.isoformat()
        return out

    def succeeded(self) -> None:
        now = utcnow()
        self.up, self.last_ok_at, self.last_poll_at = True, now, now
        self.consecutive_failures = 0
        metrics.SOURCE_UP.labels(self.name).set(1)
        metrics.CONSECUTIVE_FAILURES.labels(self.name).set(0)

    def failed(self, error: str) -> None:
        self.up, self.last_poll_at, self.last_error = False, utcnow(), error[:1000]
        self.consecutive_failures += 1
        metrics.SOURCE_UP.labels(self.name).set(0)
        metrics.CONSECUTIVE_FAILURES.labels(self.name).set(self.consecutive_failures)


class SourceError(Exception):
    """The source answered with an error that retrying will not fix (401, 404…)."""


class SourceUnavailable(Exception):
    """5xx or network errors on every attempt."""


class RateLimited(Exception):
    """The API asked us to wait longer than ``max_wait_seconds``."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# --- header parsing ---------------------------------------------------------------------


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or utcnow())).total_seconds())


def parse_reset(value: str | None, now: datetime | None = None) -> datetime | None:
    """A rate-limit reset: an ISO 8601 time (Mastodon), epoch seconds (X, GitHub) or
    seconds from now (Reddit, IETF RateLimit)."""
    if not value:
        return None
    now = now or utcnow()
    value = value.strip()
    try:
        number = float(value)
    except ValueError:
        try:
            when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return when if when.tzinfo else when.replace(tzinfo=UTC)
    if number > 1_000_000_000:  # an epoch timestamp, not a delay
        return datetime.fromtimestamp(number, UTC)
    return now + timedelta(seconds=number)


def _first_header(headers: httpx.Headers, names: Sequence[str]) -> str | None:
    for name in names:
        if name in headers:
            return headers[name]
    return None


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value.split(",")[0].strip())
    except ValueError:
        return None


_REMAINING = ("x-ratelimit-remaining", "x-rate-limit-remaining", "ratelimit-remaining")
_LIMIT = ("x-ratelimit-limit", "x-rate-limit-limit", "ratelimit-limit")
_RESET = ("x-ratelimit-reset", "x-rate-limit-reset", "ratelimit-reset")


def parse_link_header(value: str | None) -> dict[str, str]:
    """``<url>; rel="next", <url>; rel="prev"`` -> {"next": url, "prev": url} (RFC 8288)."""
    links: dict[str, str] = {}
    if not value:
        return links
    for part in value.split(","):
        section = part.split(";")
        url = section[0].strip()
        if not (url.startswith("<") and url.endswith(">")):
            continue
        for param in section[1:]:
            key, _, val = param.strip().partition("=")
            if key.strip().lower() == "rel":
                for rel in val.strip().strip('"').split():
                    links[rel.lower()] = url[1:-1]
    return links


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with full jitter (attempt counts from 1)."""
    return random.uniform(0, min(cap, base * 2 ** (attempt - 1)))


# --- the base class ---------------------------------------------------------------------


class HttpSource(Source):
    #: The listening file's ``type`` (and the module name under services/ingest/sources).
    type: ClassVar[str]
    #: Key of the brand's accounts/vip maps and the contract's ``source`` (default: type).
    platform: ClassVar[str] = ""
    #: The connector's settings model.
    Config: ClassVar[type[ConnectorConfig]] = ConnectorConfig

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if getattr(cls, "type", None) and not cls.platform:
            cls.platform = cls.type

    def __init__(
        self,
        spec: SourceSpec,
        brand: Brand,
        *,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.name = spec.name  # type: ignore[misc]  # the configured name, per instance
        self.spec = spec
        self.brand = brand
        self.config = self.Config.model_validate(spec.settings)
        self.interval = spec.interval_seconds
        self.health = SourceHealth(spec.name, self.type)
        self._client = client
        self._own_client = client is None
        self._brand_handles = {
            self.normalize_handle(h) for h in brand.accounts.get(self.platform, [])
        }
        self._vip_handles = {self.normalize_handle(h) for h in brand.vip.get(self.platform, [])}

    # -- what a connector implements --

    def feeds(self) -> Sequence[str]:
        """The independent streams this source follows; each has its own cursor."""
        return ("main",)

    @abstractmethod
    async def fetch_page(self, feed: str, cursor: Any, page_token: str | None) -> Page:
        """One page of ``feed``.

        ``page_token`` None: the first page of a poll: with a ``cursor``, the items just
        after it; without one (first poll ever, backfill), the newest items. Otherwise a
        token from a previous Page (``next_token`` or ``older_token``). The returned
        ``cursor`` must never move back: merge with the given one.
        """

    @abstractmethod
    def to_mention(self, item: Any) -> RawMention | None:
        """Map one item to the contract; raise ValueError when it is malformed."""

    def normalize_handle(self, handle: str) -> str:
        """How handles compare (override for platforms with qualified handles)."""
        return handle.strip().lstrip("@").lower()

    # -- helpers for connectors --

    def is_brand_author(self, *handles: str | None) -> bool:
        return any(h and self.normalize_handle(h) in self._brand_handles for h in handles)

    def is_vip(self, *handles: str | None) -> bool:
        return any(h and self.normalize_handle(h) in self._vip_handles for h in handles)

    def conversation_id(self, root_external_id: str) -> str:
        return f"{self.platform}:{root_external_id}"

    def wanted(self, mention: RawMention) -> bool:
        """The brand's language filter (the brand's own posts always pass)."""
        langs = self.brand.languages
        lang = mention.metadata.get("lang")
        return mention.is_brand or not langs or not lang or str(lang).lower()[:2] in langs

    def mention(
        self,
        record: Mapping[str, Any],
        *,
        author_id: str,
        handle: str | None,
        text: str,
        created_at: datetime | str,
        followers: int | None = None,
        url: str | None = None,
        in_reply_to: str | None = None,
        root: str | None = None,
        lang: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> RawMention:
        """A RawMention for ``record`` (its fingerprint fields give the external id), with
        the brand, is_brand and VIP filled in from the listening configuration."""
        external_id = self.external_id(record)
        meta = dict(metadata or {})
        if lang:
            meta["lang"] = lang
        meta["source_name"] = self.name
        return RawMention(
            source=self.platform,
            external_id=external_id,
            conversation_id=self.conversation_id(root or external_id),
            in_reply_to=in_reply_to,
            brand=self.brand.name,
            author=Author(
                id=author_id,
                handle=handle,
                followers=followers,
                vip=self.is_vip(handle, author_id),
            ),
            is_brand=self.is_brand_author(handle, author_id),
            text=text,
            url=url,
            created_at=created_at,  # type: ignore[arg-type]  # validated by pydantic
            metadata=meta,
        )

    # -- HTTP --

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self.config.timeout_seconds,
                headers={"User-Agent": self.config.user_agent},
                follow_redirects=True,
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None and self._own_client:
            await self._client.aclose()
            self._client = None

    async def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """One API call with the retry policy; returns a 2xx/3xx response or raises
        SourceError (4xx), RateLimited (asked to wait too long) or SourceUnavailable."""
        cfg = self.config
        attempt = 0
        while True:
            attempt += 1
            await self._wait_for_quota()
            wait: float | None = None
            try:
                response = await self.client.request(method, url, params=params, headers=headers)
            except httpx.TransportError as exc:
                self._count("error")
                problem = f"{type(exc).__name__}: {exc or 'network error'}"
            else:
                self._count(str(response.status_code))
                self._record_quota(response.headers)
                status = response.status_code
                if status < 400:
                    return response
                problem = f"HTTP {status} from {_where(url)}"
                wait = parse_retry_after(response.headers.get("retry-after"))
                if status == 429:
                    if wait is None:
                        reset = self.health.quota_reset_at
                        if reset is not None:
                            wait = max(0.0, (reset - utcnow()).total_seconds())
                    if wait is not None and wait > cfg.max_wait_seconds:
                        raise RateLimited(f"{problem}: retry after {wait:.0f}s", wait)
                elif status < 500:
                    body = response.text[:200].replace("\n", " ")
                    raise SourceError(f"{problem}: {body}")
            if attempt >= cfg.max_attempts:
                if wait is not None and problem.startswith("HTTP 429"):
                    raise RateLimited(f"{problem} after {attempt} attempts", wait)
                raise SourceUnavailable(f"{problem} (after {attempt} attempts)")
            delay = backoff_delay(attempt, cfg.backoff_base_seconds, cfg.backoff_max_seconds)
            if wait is not None:
                delay = min(max(wait, delay), cfg.max_wait_seconds)
            log.warning(
                "source %s: %s; retry %d/%d in %.1fs",
                self.name,
                problem,
                attempt,
                cfg.max_attempts - 1,
                delay,
            )
            await asyncio.sleep(delay)

    async def get_json(
        self,
        url: str,
        *,
        params: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[Any, httpx.Response]:
        response = await self.request("GET", url, params=params, headers=headers)
        try:
            return response.json(), response
        except ValueError as exc:
            raise SourceUnavailable(f"not JSON from {_where(url)}: {exc}") from None

    def _count(self, status: str) -> None:
        self.health.requests += 1
        metrics.REQUESTS.labels(self.name, status).inc()

    def _record_quota(self, headers: httpx.Headers) -> None:
        remaining = _number(_first_header(headers, _REMAINING))
        if remaining is None:
            return
        self.health.quota_remaining = remaining
        self.health.quota_limit = _number(_first_header(headers, _LIMIT))
        self.health.quota_reset_at = parse_reset(_first_header(headers, _RESET))
        metrics.QUOTA_REMAINING.labels(self.name).set(remaining)

    async def _wait_for_quota(self) -> None:
        """Out of quota: wait for the window to reset rather than collect a 429."""
        h = self.health
        if h.quota_remaining is None or h.quota_remaining >= 1 or h.quota_reset_at is None:
            return
        wait = (h.quota_reset_at - utcnow()).total_seconds()
        h.quota_remaining = None  # one wait per reported exhaustion
        if wait <= 0:
            return
        if wait > self.config.max_wait_seconds:
            raise RateLimited(f"quota exhausted until {h.quota_reset_at.isoformat()}", wait)
        log.info("source %s: quota exhausted, waiting %.1fs", self.name, wait)
        await asyncio.sleep(wait)

    # -- the plain Source interface (one pass over the feeds, no persistence) --

    async def fetch(self) -> AsyncIterator[RawMention]:
        for feed in self.feeds():
            page = await self.fetch_page(feed, None, None)
            for item in page.items:
                try:
                    mention = self.to_mention(item)
                except Exception:
                    continue
                if mention is not None:
                    yield mention

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


def _where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.netloc}{parts.path}"
