"""The case and admin HTTP API over a real uvicorn server, on SQLite and PostgreSQL.

The API acts at the real time (``utcnow()``), so the cases here are posted a few minutes
before the test's own "now" and the assertions allow for the seconds a test takes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.alert.access import create_token
from services.alert.api.app import create_api_app
from services.alert.cases.service import CaseSettings, apply_scored
from services.alert.config import AlertingConfig, MemberSpec, RoutingRuleSpec, TeamSpec
from services.alert.routing.sync import sync_teams_and_rules
from services.alert.sla.policies import SlaPolicy
from services.alert.sla.store import sync_policies
from shared.db.engine import make_sessionmaker
from shared.events import ScoredMention, utcnow
from tests.factories import raw, scored
from tests.live_server import live_server

POLICY = SlaPolicy(targets={"P1": 600, "P2": 3600, "P3": 7200, "P4": None}, warn_at=[0.5])
CASES = "/api/v1/cases"


@dataclass
class Api:
    client: httpx.AsyncClient
    sessions: async_sessionmaker[AsyncSession]
    now: datetime  # when the fixture posted the cases
    viewer: dict[str, str]
    agent: dict[str, str]
    admin: dict[str, str]

    async def post_case(self, conversation: str, minutes_ago: float, level: str = "P1") -> int:
        at = self.now - timedelta(minutes=minutes_ago)
        return await self.apply(scored(raw(conversation, at, conversation=conversation), level))

    async def apply(self, event: ScoredMention) -> int:
        async with self.sessions() as s, s.begin():
            outcome = await apply_scored(s, event, CaseSettings(), utcnow())
        assert outcome.case_id is not None
        return outcome.case_id

    async def act(
        self, case_id: int, action: str, body: object = None, **kw: Any
    ) -> httpx.Response:
        headers = kw.pop("headers", self.agent)
        return await self.client.post(
            f"{CASES}/{case_id}/{action}", json=body, headers=headers, **kw
        )


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def api(engine: AsyncEngine) -> AsyncIterator[Api]:
    """Policy, a team (ann, bob; carl in another team), three tokens, and a real server."""
    sessions = make_sessionmaker(engine)
    now = utcnow()
    config = AlertingConfig(
        teams=[
            TeamSpec(name="care", members=[MemberSpec(handle="ann"), MemberSpec(handle="bob")]),
            TeamSpec(name="billing", members=[MemberSpec(handle="carl")]),
        ],
        routing=[RoutingRuleSpec(name="all", team="care")],
    )
    async with sessions() as s, s.begin():
        await sync_policies(s, [POLICY], now)
        await sync_teams_and_rules(s, config, now)
        tokens = {
            "viewer": await create_token(s, "wallboard", "viewer"),
            "agent": await create_token(s, "alice", "agent"),
            "admin": await create_token(s, "root", "admin"),
        }

    async with (
        live_server(create_api_app(sessions), "case API") as base,
        httpx.AsyncClient(base_url=base, timeout=10) as c,
    ):
        yield Api(
            c,
            sessions,
            now,
            _bearer(tokens["viewer"]),
            _bearer(tokens["agent"]),
            _bearer(tokens["admin"]),
        )


def _kinds(detail: dict[str, Any]) -> list[str]:
    return [e["kind"] for e in detail["timeline"]]


def _last(detail: dict[str, Any], kind: str) -> dict[str, Any]:
    return [e for e in detail["timeline"] if e["kind"] == kind][-1]


def _stages(detail: dict[str, Any]) -> dict[str, str]:
    return {d["stage"]: d["status"] for d in detail["deadlines"]}


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def test_tokens_and_roles(api: Api) -> None:
    case_id = await api.post_case("c1", 1)
    assert (await api.client.get("/healthz")).json() == {"status": "ok"}

    missing = await api.client.get(CASES)
    assert missing.status_code == 401
    assert missing.json()["detail"] == "missing API token: send Authorization: Bearer <token>"
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = await api.client.get(CASES, headers=_bearer("tr_not-a-token"))
    assert wrong.status_code == 401
    assert wrong.json()["detail"] == "invalid or revoked API token"
    no_token_action = await api.act(case_id, "acknowledge", headers={})
    assert no_token_action.status_code == 401

    denied = await api.act(case_id, "acknowledge", headers=api.viewer)
    assert denied.status_code == 403
    assert denied.json()["detail"] == (
        "this endpoint needs the agent role; token wallboard has viewer"
    )
    # Reading is the viewer's right; stronger roles may read too.
    for headers in (api.viewer, api.agent, api.admin):
        assert (await api.client.get(f"{CASES}/{case_id}", headers=headers)).status_code == 200


async def test_open_cases_by_time_left(api: Api) -> None:
    p3 = await api.post_case("p3", 1, "P3")  # due in ~119 min
    p4 = await api.post_case("p4", 3, "P4")  # no target
    p1 = await api.post_case("p1", 2, "P1")  # due in ~8 min
    p2 = await api.post_case("p2", 0, "P2")  # due in ~60 min
    gone = await api.post_case("gone", 4, "P1")
    assert (await api.act(gone, "answered", {})).status_code == 200

    r = await api.client.get(CASES, headers=api.viewer)
    assert r.status_code == 200
    rows = r.json()
    assert [c["id"] for c in rows] == [p1, p2, p3, p4]
    left = [c["time_left_seconds"] for c in rows]
    assert 7 * 60 < left[0] <= 8 * 60 and 59 * 60 < left[1] <= 60 * 60
    assert 118 * 60 < left[2] <= 119 * 60 and left[3] is None
    assert rows[3]["due_at"] is None and rows[0]["priority"] == "P1"
    assert {c["team"] for c in rows} == {"care"}

    answered = await api.client.get(CASES, params={"status": "answered"}, headers=api.viewer)
    assert [c["id"] for c in answered.json()] == [gone]
    everything = await api.client.get(CASES, params={"status": "all"}, headers=api.viewer)
    assert len(everything.json()) == 5


async def test_case_detail_shows_deadlines_and_timeline(api: Api) -> None:
    case_id = await api.post_case("c1", 2)
    started = api.now - timedelta(minutes=2)
    r = await api.client.get(f"{CASES}/{case_id}", headers=api.viewer)
    assert r.status_code == 200
    detail = r.json()
    assert (detail["status"], detail["cycle"], detail["cycle_kind"]) == ("open", 1, "first")
    assert _at(detail["opened_at"]) == started
    assert _at(detail["due_at"]) == started + timedelta(minutes=10)
    assert [(d["stage"], _at(d["due_at"]), d["status"]) for d in detail["deadlines"]] == [
        ("warning:0.5", started + timedelta(minutes=5), "pending"),
        ("breach", started + timedelta(minutes=10), "pending"),
    ]
    assert _kinds(detail) == ["opened", "assigned"]
    assert detail["timeline"][1]["data"] == {"member": "ann", "team": "care"}
    assert (detail["team"], detail["assignee"]) == ("care", "ann")
    # The post that opened the cycle, with what each reason added to its urgency.
    post = detail["post"]
    assert post["text"] and post["urgency_score"] == 0.9 and post["reasons"] == ["intent:refund"]
    assert post["contributions"] == [
        {"reason": "intent:refund", "weight": 0.1},
        {"reason": "other signals", "weight": 0.8},
    ]

    missing = await api.client.get(f"{CASES}/999999", headers=api.viewer)
    assert missing.status_code == 404 and "999999" in missing.json()["detail"]


async def test_agent_actions_land_in_the_timeline(api: Api) -> None:
    case_id = await api.post_case("c1", 3)

    r = await api.act(case_id, "claim", {"member": "bob"})
    assert r.status_code == 200, r.text
    detail = r.json()
    assert detail["assignee"] == "bob"
    assert _last(detail, "claimed") | {"at": None} == {
        "at": None,
        "actor": "alice",
        "kind": "claimed",
        "data": {"member": "bob"},
    }
    assert _last(detail, "reassigned")["data"] == {"from": "ann", "to": "bob", "reason": "manual"}

    detail = (await api.act(case_id, "acknowledge")).json()
    assert _last(detail, "acknowledged")["actor"] == "alice"

    until = utcnow() + timedelta(hours=1)
    r = await api.act(case_id, "snooze", {"until": until.isoformat()})
    assert r.status_code == 200, r.text
    detail = r.json()
    assert detail["paused"] and _at(detail["snoozed_until"]) == until
    assert detail["time_left_seconds"] is None
    assert _stages(detail) == {"warning:0.5": "paused", "breach": "paused", "snooze_end": "pending"}
    assert _last(detail, "snoozed")["data"] == {"until": until.isoformat()}

    past = await api.act(
        case_id, "snooze", {"until": (utcnow() - timedelta(minutes=1)).isoformat()}
    )
    assert past.status_code == 409 and past.json()["detail"] == "until must be in the future"
    naive = await api.act(case_id, "snooze", {"until": "2030-01-01T10:00:00"})
    assert naive.status_code == 422 and "time zone" in naive.json()["detail"]

    detail = (await api.act(case_id, "resume")).json()
    assert not detail["paused"] and detail["snoozed_until"] is None
    assert _stages(detail) == {
        "warning:0.5": "pending",
        "breach": "pending",
        "snooze_end": "cancelled",
    }
    not_paused = await api.act(case_id, "resume")
    assert not_paused.status_code == 409 and "not paused" in not_paused.json()["detail"]

    detail = (await api.act(case_id, "wait")).json()
    assert detail["paused"] and detail["waiting_on_customer"]
    assert _stages(detail)["breach"] == "paused"
    detail = (await api.act(case_id, "resume")).json()
    assert not detail["paused"] and not detail["waiting_on_customer"]
    # Paused twice, briefly: the breach moved by those few seconds of wall clock.
    due = _at(detail["due_at"])
    started = api.now - timedelta(minutes=3)
    assert started + timedelta(minutes=10) < due < started + timedelta(minutes=11)

    detail = (await api.act(case_id, "reassign", {"member": "ann"})).json()
    assert detail["assignee"] == "ann"
    assert _last(detail, "reassigned") | {"at": None} == {
        "at": None,
        "actor": "alice",
        "kind": "reassigned",
        "data": {"from": "bob", "to": "ann", "reason": "manual"},
    }
    unknown = await api.act(case_id, "reassign", {"member": "zed"})
    assert unknown.status_code == 422
    assert unknown.json()["detail"] == "no active member 'zed' in team 'care'"
    other_team = await api.act(case_id, "reassign", {"member": "carl"})
    assert other_team.status_code == 422

    detail = (await api.act(case_id, "notes", {"text": "called the courier"})).json()
    assert _last(detail, "note")["data"] == {"text": "called the courier"}

    answered_at = api.now - timedelta(minutes=1)  # two minutes after the post
    r = await api.act(
        case_id,
        "answered",
        {"reply_url": "https://example.invalid/reply", "answered_at": answered_at.isoformat()},
    )
    assert r.status_code == 200, r.text
    detail = r.json()
    assert detail["status"] == "answered" and _at(detail["answered_at"]) == answered_at
    assert detail["reply_url"] == "https://example.invalid/reply"
    assert set(_stages(detail).values()) == {"cancelled"}
    answered = _last(detail, "answered")
    assert answered["actor"] == "alice"
    assert answered["data"]["response_seconds"] == 120 and not answered["data"]["breached"]

    assert _kinds(detail) == [
        "opened",
        "assigned",
        "reassigned",
        "claimed",
        "acknowledged",
        "snoozed",
        "resumed",
        "waiting_on_customer",
        "resumed",
        "reassigned",
        "note",
        "answered",
    ]
    humans = [e for e in detail["timeline"] if e["kind"] not in ("opened", "assigned")]
    assert {e["actor"] for e in humans} == {"alice"}


async def test_conflicts_and_unknown_cases(api: Api) -> None:
    case_id = await api.post_case("c1", 2)
    assert (await api.act(case_id, "answered", {})).status_code == 200
    until = (utcnow() + timedelta(hours=1)).isoformat()
    for action, body in [
        ("claim", None),
        ("acknowledge", None),
        ("answered", {}),
        ("snooze", {"until": until}),
        ("wait", None),
        ("resume", None),
        ("reassign", {"member": "bob"}),
    ]:
        r = await api.act(case_id, action, body)
        assert r.status_code == 409, (action, r.text)
        assert r.json()["detail"].startswith("cannot ") and "it is answered" in r.json()["detail"]
    # A note is fine on any case.
    assert (await api.act(case_id, "notes", {"text": "closed by phone"})).status_code == 200

    for action, body in [("acknowledge", None), ("notes", {"text": "x"})]:
        r = await api.act(999999, action, body)
        assert r.status_code == 404 and r.json()["detail"] == "case 999999 does not exist"


async def test_answered_time_must_be_sane(api: Api) -> None:
    case_id = await api.post_case("c1", 2)
    early = (api.now - timedelta(minutes=3)).isoformat()  # before the customer's post
    r = await api.act(case_id, "answered", {"answered_at": early})
    assert r.status_code == 409 and "between" in r.json()["detail"]
    future = (utcnow() + timedelta(minutes=5)).isoformat()
    assert (await api.act(case_id, "answered", {"answered_at": future})).status_code == 409
    naive = await api.act(case_id, "answered", {"answered_at": "2026-01-01T10:00:00"})
    assert naive.status_code == 422 and "time zone" in naive.json()["detail"]
    detail = (await api.client.get(f"{CASES}/{case_id}", headers=api.viewer)).json()
    assert detail["status"] == "open"

    # Without a time the answer is now: about two minutes after the post.
    detail = (await api.act(case_id, "answered", {"reply_url": None})).json()
    assert detail["status"] == "answered" and detail["reply_url"] is None
    assert 120 <= _last(detail, "answered")["data"]["response_seconds"] < 180


async def test_admin_policies(api: Api) -> None:
    path = "/api/v1/admin/policies"
    listed = (await api.client.get(path, headers=api.admin)).json()
    assert [(p["name"], p["version"], p["active"]) for p in listed] == [("default", 1, True)]

    spec = POLICY.model_copy(update={"targets": {"P1": 300, "P2": 1800, "P3": 3600, "P4": None}})
    r = await api.client.put(
        f"{path}/default", json=spec.model_dump(mode="json"), headers=api.admin
    )
    assert r.status_code == 200, r.text
    created = r.json()
    assert (created["name"], created["version"], created["active"]) == ("default", 2, True)
    assert created["spec"]["targets"]["P1"] == 300

    listed = (await api.client.get(path, headers=api.admin)).json()
    assert [(p["version"], p["spec"]["targets"]["P1"]) for p in listed] == [(2, 300)]
    every = await api.client.get(path, params={"all_versions": "true"}, headers=api.admin)
    assert [(p["version"], p["active"]) for p in every.json()] == [(1, False), (2, True)]

    # The same spec again keeps version 2.
    again = await api.client.put(
        f"{path}/default", json=spec.model_dump(mode="json"), headers=api.admin
    )
    assert again.json()["version"] == 2

    mismatch = await api.client.put(
        f"{path}/other", json=spec.model_dump(mode="json"), headers=api.admin
    )
    assert mismatch.status_code == 422
    assert mismatch.json()["detail"] == "body name 'default' does not match path 'other'"
    bad = await api.client.put(
        f"{path}/default", json={"name": "default", "targets": {"P9": 1}}, headers=api.admin
    )
    assert bad.status_code == 422

    for headers in (api.viewer, api.agent):
        r = await api.client.put(
            f"{path}/default", json=spec.model_dump(mode="json"), headers=headers
        )
        assert r.status_code == 403 and "needs the admin role" in r.json()["detail"]
        assert (await api.client.get(path, headers=headers)).status_code == 403

    # New cases use version 2 (P1: 5 minutes).
    case_id = await api.post_case("c-new", 1)
    detail = (await api.client.get(f"{CASES}/{case_id}", headers=api.viewer)).json()
    assert _at(detail["due_at"]) == api.now + timedelta(minutes=4)


async def test_stats_needs_a_viewer_and_a_sane_range(api: Api) -> None:
    stats = "/api/v1/stats/response-times"
    assert (await api.client.get(stats)).status_code == 401
    case_id = await api.post_case("c1", 2)
    answered_at = (api.now - timedelta(minutes=1)).isoformat()
    assert (await api.act(case_id, "answered", {"answered_at": answered_at})).status_code == 200

    r = await api.client.get(stats, headers=api.viewer)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["answered"] == 1 and body["breaches"] == 0

    backwards = await api.client.get(
        stats,
        params={"since": "2026-11-02T10:00:00Z", "until": "2026-11-01T10:00:00Z"},
        headers=api.viewer,
    )
    assert backwards.status_code == 422 and "since" in backwards.json()["detail"]
    naive = await api.client.get(stats, params={"since": "2026-11-01T10:00:00"}, headers=api.viewer)
    assert naive.status_code == 422 and "since" in naive.json()["detail"]


async def test_admin_teams_and_routing(api: Api) -> None:
    team = {
        "name": "night",
        "capacity": 3,
        "calendar": {"name": "n", "timezone": "UTC", "windows": {"mon": ["00:00-08:00"]}},
        "members": [{"handle": "owl", "role": "agent"}, {"handle": "bat", "role": "lead"}],
    }
    put = await api.client.put("/api/v1/admin/teams/night", json=team, headers=api.admin)
    assert put.status_code == 200, put.text
    assert [m["handle"] for m in put.json()["members"]] == ["owl", "bat"]
    named = {**team, "calendar": "office"}
    bad = await api.client.put("/api/v1/admin/teams/night", json=named, headers=api.admin)
    assert bad.status_code == 422 and "inline" in bad.text
    weak = await api.client.put("/api/v1/admin/teams/night", json=team, headers=api.agent)
    assert weak.status_code == 403

    rules = [
        {"name": "estonian", "when": {"language": ["et"]}, "team": "night"},
        {"name": "rest", "team": "care"},
    ]
    put = await api.client.put("/api/v1/admin/routing", json=rules, headers=api.admin)
    assert put.status_code == 200, put.text
    assert [(r["name"], r["team"]) for r in put.json()] == [("estonian", "night"), ("rest", "care")]
    ghost = [{"name": "x", "team": "ghosts"}]
    bad = await api.client.put("/api/v1/admin/routing", json=ghost, headers=api.admin)
    assert bad.status_code == 422 and "ghosts" in bad.text
    got = await api.client.get("/api/v1/admin/routing", headers=api.admin)
    assert [r["name"] for r in got.json()] == ["estonian", "rest"]  # the bad PUT changed nothing
