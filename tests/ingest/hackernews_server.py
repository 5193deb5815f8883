"""A real HTTP server on 127.0.0.1 answering like the Algolia HN Search API (fixtures/hackernews).

``GET /api/v1/search_by_date`` as documented at https://hn.algolia.com/api: hits newest
first (``created_at_i``), ``query`` (here: every word in the hit's texts, any case),
``tags`` (``story``, ``comment`` and the OR form ``(story,comment)``), ``numericFilters``
on ``created_at_i`` (``>``, ``>=``, ``<``, ``<=``, ``=``; comma = AND), ``page`` (from 0)
and ``hitsPerPage`` (default 20, at most 1000); the answer carries ``hits``, ``nbHits``,
``page``, ``nbPages`` and ``hitsPerPage``.
"""

from __future__ import annotations

import copy
import math
import operator
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tests.ingest.fixture_server import Answer, FixtureServer, Request, load_fixture

OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "=": operator.eq}
FILTER = re.compile(r"^\s*created_at_i\s*(>=|<=|>|<|=)\s*(\d+)\s*$")
TEXTS = ("title", "story_text", "comment_text", "story_title")


@dataclass
class HackerNewsServer(FixtureServer):
    hits: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def with_fixtures(cls) -> HackerNewsServer:
        return cls(hits=load_fixture("hackernews", "search_by_date.json")["hits"])

    @property
    def api(self) -> str:
        return f"{self.url}/api/v1"

    def add_comment(self, template: dict[str, Any], object_id: int, at: int) -> dict[str, Any]:
        with self._lock:
            hit = copy.deepcopy(template)
            created = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            hit.update(objectID=str(object_id), created_at_i=at, created_at=created)
            self.hits.append(hit)
            return hit

    def answer(self, request: Request) -> Answer:
        if request.path != "/api/v1/search_by_date":
            return 404, {}, {"message": "Not Found", "status": 404}
        words = (request.arg("query") or "").lower().split()
        tags = (request.arg("tags") or "").strip("()").split(",")
        filters = [f for f in (request.arg("numericFilters") or "").split(",") if f]
        checks = []
        for f in filters:
            m = FILTER.match(f)
            if not m:
                return 400, {}, {"message": f"invalid numericFilters: {f}", "status": 400}
            checks.append((OPS[m.group(1)], int(m.group(2))))
        per_page = min(int(request.arg("hitsPerPage", "20") or 20), 1000)
        page = int(request.arg("page", "0") or 0)

        def matches(h: dict[str, Any]) -> bool:
            text = " ".join(str(h.get(k) or "") for k in TEXTS).lower()
            return (
                all(w in text for w in words)
                and (not tags or any(t in h.get("_tags", []) for t in tags if t))
                and all(op(h["created_at_i"], value) for op, value in checks)
            )

        found = sorted(
            (h for h in self.hits if matches(h)),
            key=lambda h: (h["created_at_i"], h["objectID"]),
            reverse=True,
        )
        return (
            200,
            {},
            {
                "hits": found[page * per_page : (page + 1) * per_page],
                "nbHits": len(found),
                "page": page,
                "nbPages": math.ceil(len(found) / per_page),
                "hitsPerPage": per_page,
                "exhaustiveNbHits": True,
                "query": request.arg("query") or "",
                "processingTimeMS": 1,
            },
        )
