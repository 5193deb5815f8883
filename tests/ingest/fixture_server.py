"""What the connector tests share: a JSON API server on 127.0.0.1 and the poller scaffolding.

``FixtureServer`` is a real ``http.server`` on a free loopback port. A platform's server
subclasses it and implements ``answer(request)`` with the documented shapes; the base
records every request (``requests``, ``paths``), answers queued failures first (``fail``:
path prefix -> [(status, headers)], e.g. a 429 with Retry-After, then a 500) and fails
everything with 500 while ``down`` is set. ``rate_headers()`` adds the platform's quota
headers to every answer but those of ``down``. An answer's body is JSON, or ``bytes`` sent
as they are (a feed's XML, its Content-Type among the answer's headers); a 304 has none.

The rest builds the tests' brand, a connector and its ``Poller`` the way ingest does, the
pieces of the "restart mid-way" tests (a crash after the first page, a cursor store that
loses its saves) and the checks of the retry policy (a 429 then a 500; a server down).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self, TypeVar
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ingest.cursors import CursorStore
from services.ingest.listening import Brand, SourceSpec
from services.ingest.poller import Poller, PollReport
from services.ingest.publisher import Publisher
from services.ingest.sources.http import HttpSource, Page, SourceUnavailable
from shared.config import Settings
from shared.events import RawMention

FIXTURES = Path(__file__).parent / "fixtures"

Answer = tuple[int, dict[str, str], Any]
S = TypeVar("S", bound=HttpSource)


def load_fixture(platform: str, name: str) -> Any:
    return json.loads((FIXTURES / platform / name).read_text())


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    at: float
    body: bytes = b""

    def arg(self, name: str, default: str | None = None) -> str | None:
        """The first value of a query parameter."""
        return self.query.get(name, [default])[0]

    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.body.decode()).items()}

    def json(self) -> Any:
        return json.loads(self.body or b"null")


@dataclass
class FixtureServer:
    # path prefix -> queued answers (status, headers) given before normal service
    fail: dict[str, list[tuple[int, dict[str, str]]]] = field(default_factory=dict)
    down: bool = False
    requests: list[Request] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- what a platform's server implements --

    def answer(self, request: Request) -> Answer:
        raise NotImplementedError

    def rate_headers(self) -> dict[str, str]:
        return {}

    # -- test helpers --

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def host(self) -> str:
        return urlsplit(self.url).netloc

    def paths(self, prefix: str = "") -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path.startswith(prefix)]

    # -- serving --

    def _dispatch(self, request: Request) -> Answer:
        if self.down:
            return 500, {}, {"error": "Internal Server Error"}
        for prefix, queue in self.fail.items():
            if request.path.startswith(prefix) and queue:
                status, extra = queue.pop(0)
                return status, {**self.rate_headers(), **extra}, {"error": f"HTTP {status}"}
        return self.answer(request)

    def start(self) -> Self:
        state = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass  # quiet tests

            def _serve(self) -> None:
                parts = urlsplit(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                request = Request(
                    self.command,
                    parts.path,
                    parse_qs(parts.query),
                    {k.lower(): v for k, v in self.headers.items()},
                    time.monotonic(),
                    body,
                )
                with state._lock:
                    state.requests.append(request)
                    status, extra, answer = state._dispatch(request)
                # bytes go as they are (a feed's XML: its Content-Type comes in ``extra``)
                if isinstance(answer, bytes):
                    payload, ctype = answer, "application/octet-stream"
                else:
                    payload, ctype = json.dumps(answer).encode(), "application/json; charset=utf-8"
                if status == 304:  # Not Modified has no body
                    payload = b""
                self.send_response(status)
                if not any(k.lower() == "content-type" for k in extra):
                    self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                for k, v in extra.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _serve

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()


Server = TypeVar("Server", bound=FixtureServer)


def served(server: Server) -> Iterator[Server]:
    """The body of a server fixture: ``yield from served(MyServer.with_fixtures())``."""
    server.start()
    try:
        yield server
    finally:
        server.stop()


# --- connectors and pollers as ingest builds them ---------------------------------------


def acme(platform: str, account: str, vip: str) -> Brand:
    """The brand of the connector tests: one account and one VIP on ``platform``; it
    follows "acme broadband" and #acme, in English and Italian."""
    return Brand(
        name="acme",
        accounts={platform: [account]},
        keywords=["acme broadband"],
        hashtags=["#acme"],
        languages=["en", "it"],
        vip={platform: [vip]},
    )


def make_source(connector: type[S], brand: Brand, name: str, **settings: Any) -> S:
    """A connector instance with fast retries (backoff 0.05 s, 3 attempts)."""
    spec = SourceSpec(
        name=name,
        type=connector.type,
        brand=brand.name,
        interval_seconds=0.2,
        settings={"backoff_base_seconds": 0.05, "max_attempts": 3, **settings},
    )
    return connector(spec, brand)


def make_poller(
    source: HttpSource, settings: Settings, publisher: Publisher, engine: AsyncEngine
) -> Poller:
    return Poller(
        source,
        publisher=publisher,
        cursors=CursorStore(engine),
        dlq_topic=settings.topic_dlq,
        raw_topic=settings.topic_raw,
    )


@dataclass
class Ingest:
    """Ingest as a connector test meets it (the ``ingest`` fixture): settings (the test's
    own topics), a publisher to the real broker, and the database of the cursors."""

    settings: Settings
    publisher: Publisher
    engine: AsyncEngine

    def poller(self, source: HttpSource) -> Poller:
        return make_poller(source, self.settings, self.publisher, self.engine)

    async def cursor(self, source: str) -> dict[str, Any]:
        return await CursorStore(self.engine).load(source)

    async def restart_midway(
        self, new_source: Callable[[], HttpSource], between: Callable[[], Any] | None = None
    ) -> Restart:
        return await restart_midway(
            new_source, self.settings, self.publisher, self.engine, between=between
        )


@dataclass
class Mapped:
    """Items mapped as the poller maps them, nothing published."""

    mentions: dict[str, RawMention] = field(default_factory=dict)  # wanted, by external id
    errors: dict[str, str] = field(default_factory=dict)  # item key -> why (dead-lettered)
    skipped: list[str] = field(default_factory=list)  # keys: no mention, or filtered


def map_items(source: HttpSource, items: Iterable[Any], key: Callable[[Any], str]) -> Mapped:
    out = Mapped()
    for item in items:
        try:
            m = source.to_mention(item)
        except ValueError as exc:
            out.errors[key(item)] = str(exc)
            continue
        if m is not None and source.wanted(m):
            out.mentions[m.external_id] = m
        else:
            out.skipped.append(key(item))
    return out


class Crash(Exception):
    """The runner dies (raised from ``on_page``)."""


def crash_after_first_page(*_: object) -> None:
    raise Crash


class LosingStore(CursorStore):
    """The database goes away between a page's publish and its cursor's save."""

    async def save(self, source: str, cursor: dict[str, Any]) -> None:
        raise ConnectionError("database went away")


@dataclass
class Restart:
    after_a: dict[str, Any]  # the cursor runner A saved before it crashed
    after_b: dict[str, Any]  # the cursor left when runner B could not save its own
    report: PollReport  # runner C's poll, from the saved cursor
    after_c: dict[str, Any]


async def restart_midway(
    new_source: Callable[[], HttpSource],
    settings: Settings,
    publisher: Publisher,
    engine: AsyncEngine,
    *,
    between: Callable[[], Any] | None = None,
) -> Restart:
    """Three runners, one after the other, on one cursor store: A crashes after its first
    page (published, cursor saved); ``between()`` (new posts arriving meanwhile); B dies
    between publishing its next page and saving its cursor; C starts from what was saved
    and polls to the end."""
    a = make_poller(new_source(), settings, publisher, engine)
    with pytest.raises(Crash):
        await a.poll_once(on_page=crash_after_first_page)
    store = CursorStore(engine)
    after_a = await store.load(a.name)
    if between is not None:
        between()
    b = Poller(new_source(), publisher=publisher, cursors=LosingStore(engine))
    with pytest.raises(ConnectionError):
        await b.poll_once()
    after_b = await store.load(a.name)
    report = await make_poller(new_source(), settings, publisher, engine).poll_once()
    return Restart(after_a, after_b, report, await store.load(a.name))


# --- the retry policy, seen from the server ---------------------------------------------


async def fetch_after_429_and_500(
    server: FixtureServer, source: HttpSource, feed: str, prefix: str
) -> Page:
    """The feed's first page through a 429 (Retry-After: 7 s) and a 500: three requests,
    the first retry after the Retry-After, the second after a short backoff. The sleeps are
    recorded, not slept (``record_backoff``): nothing here is timed."""
    server.fail[prefix] = [(429, {"Retry-After": "7"}), (500, {})]
    with pytest.MonkeyPatch.context() as patch:
        delays = record_backoff(patch)
        page = await source.fetch_page(feed, None, None)
    assert len(server.paths(prefix)) == 3
    assert delays[0] == 7.0  # waited as Retry-After said
    assert delays[-1] < 1.0  # the 500: a backoff (base 0.05 s)
    return page


async def give_up_when_down(server: FixtureServer, source: HttpSource, feed: str) -> None:
    """Every request fails with 500: the page fails after ``max_attempts`` requests."""
    before = source.health.requests
    server.down = True
    with pytest.raises(SourceUnavailable, match="HTTP 500"):
        await source.fetch_page(feed, None, None)
    assert source.health.requests == before + source.config.max_attempts


def record_backoff(monkeypatch: Any) -> list[float]:
    """The delays ``HttpSource.request`` sleeps between attempts, recorded instead of
    slept, so a test can check that Retry-After was honoured without timing anything."""
    import asyncio
    from types import SimpleNamespace

    from services.ingest.sources import http

    delays: list[float] = []

    async def sleep(delay: float) -> None:
        delays.append(delay)
        await asyncio.sleep(0)

    # Only the framework's own sleeps (retries, quota waits): asyncio itself is untouched.
    monkeypatch.setattr(http, "asyncio", SimpleNamespace(sleep=sleep))
    return delays
