"""Access tokens for connectors that sign in: one POST to the platform's auth endpoint.

Bluesky opens a session with an app password (``com.atproto.server.createSession``),
Reddit asks for an application-only OAuth token (``/api/v1/access_token``). The POST is
made outside ``HttpSource.request()``'s retry loop: when it fails, the poll fails and the
poller's backoff tries again later. It counts in the source's health and metrics like any
request; a 4xx (wrong credentials) is a ``SourceError``, a 5xx or a network error
``SourceUnavailable``.
"""

from __future__ import annotations

from typing import Any

import httpx

from services.ingest.sources.http import HttpSource, SourceError, SourceUnavailable


async def fetch_token(
    source: HttpSource, url: str, field: str, *, what: str, **request: Any
) -> dict[str, Any]:
    """POST ``request`` (``json=``, ``data=``, ``auth=``) to ``url``; the JSON answer,
    which must hold a non-empty string ``field`` (the token)."""
    try:
        response = await source.client.post(url, **request)
    except httpx.TransportError as exc:
        source._count("error")
        raise SourceUnavailable(f"{what}: {type(exc).__name__}: {exc}") from None
    source._count(str(response.status_code))
    status = response.status_code
    if status >= 400:
        error = SourceUnavailable if status >= 500 else SourceError
        raise error(f"{what}: HTTP {status}: {response.text[:200]}")
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or not answer.get(field) or not isinstance(answer[field], str):
        raise SourceError(f"{what}: the answer has no {field}")
    return answer
