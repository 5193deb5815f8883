"""The ingest HTTP app: the signed push endpoint ``POST /api/v1/ingest/webhook`` (one event
or a list), ``/healthz``, ``/readyz``, ``/health`` (each polled source) and ``/metrics``.

The body is authenticated before it is parsed: ``X-Thirdring-Signature: sha256=<hex>`` is
the HMAC-SHA256 of the raw bytes with the shared secret (shared/signing.py).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from pydantic import ValidationError

from services.ingest.metrics import observe_lag
from services.ingest.publisher import Publisher
from services.ingest.sources.http import SourceHealth
from shared.events import RawMention
from shared.kafka import MAX_MESSAGE_BYTES, describe_error
from shared.signing import SIGNATURE_HEADER, verify

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/api/v1/ingest/webhook"
MAX_BODY_BYTES = 1_048_576

# Returns None until the worker has a started producer.
PublisherProvider = Callable[[], Publisher | None]


def _error(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


class _TooLarge(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    # Content-Length may be absent (chunked) or lie, so count while reading as well.
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _TooLarge
    return bytes(body)


def _parse(body: bytes) -> list[RawMention]:
    """Raise ValueError with a message that names the field."""
    try:
        data: Any = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"invalid JSON: {exc}") from None
    many = isinstance(data, list)
    mentions = []
    for i, obj in enumerate(data if many else [data]):
        where = f"[{i}] " if many else ""
        if not isinstance(obj, dict):
            raise ValueError(f"{where}expected a JSON object, got {type(obj).__name__}")
        try:
            mention = RawMention.model_validate(obj)
        except ValidationError as exc:
            raise ValueError(where + describe_error(exc)) from None
        if len(mention.to_bytes()) > MAX_MESSAGE_BYTES:
            raise ValueError(f"{where}event too large for the broker")
        mentions.append(mention)
    return mentions


def create_ingest_app(
    publisher_provider: PublisherProvider,
    secret: str | None,
    sources: Callable[[], Sequence[SourceHealth]] | None = None,
) -> FastAPI:
    """The ingest HTTP app. ``secret`` None or empty disables the webhook (503).

    ``sources`` gives the polled sources' health for ``/health``.
    """
    app = FastAPI(title="thirdring ingest", docs_url=None, redoc_url=None, openapi_url=None)
    key = secret or None

    @app.post(WEBHOOK_PATH, status_code=202)
    async def webhook(request: Request) -> JSONResponse:
        if key is None:
            return _error(503, "webhook disabled: set THIRDRING_WEBHOOK_SECRET")
        try:
            body = await _read_body(request, MAX_BODY_BYTES)
        except _TooLarge:
            return _error(413, f"body over {MAX_BODY_BYTES} bytes")
        signature = request.headers.get(SIGNATURE_HEADER)
        # compare_digest refuses non-ASCII str; such a header is simply wrong.
        if not signature or not signature.isascii():
            return _error(401, f"missing or invalid {SIGNATURE_HEADER}")
        if not verify(body, key, signature.strip().lower()):
            log.warning("webhook: bad signature from %s", request.client)
            return _error(401, f"missing or invalid {SIGNATURE_HEADER}")
        try:
            mentions = _parse(body)
        except ValueError as exc:
            return _error(422, str(exc))
        publisher = publisher_provider()
        if publisher is None:
            return _error(503, "ingest is starting, retry shortly")
        try:
            result = await publisher.publish(mentions)
        except Exception as exc:
            # 503 tells the sender to retry; a retry is deduped by event id.
            log.exception("webhook: publish failed")
            return _error(503, f"could not publish: {type(exc).__name__}")
        observe_lag("webhook", result.mentions)
        return JSONResponse(
            {"published": result.published, "duplicates": result.duplicates}, status_code=202
        )

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        publisher = publisher_provider()
        problem = "not started" if publisher is None else await publisher.check()
        if problem:
            return JSONResponse({"status": "unavailable", "reason": problem}, status_code=503)
        return JSONResponse({"status": "ready"})

    @app.get("/health")
    async def health() -> JSONResponse:
        """Each polled source: up, last success and error, failures in a row, requests, quota.

        Always 200 (a failing upstream does not make ingest unready); ``status`` is
        ``degraded`` while any source fails.
        """
        healths = list(sources()) if sources is not None else []
        failing = [h.name for h in healths if h.consecutive_failures > 0]
        return JSONResponse(
            {
                "status": "degraded" if failing else "ok",
                "failing": failing,
                "sources": {h.name: h.as_dict() for h in healths},
            }
        )

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return app
