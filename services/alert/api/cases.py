"""Case API for the front line: list by time left, details with every deadline and the
timeline, and the actions (claim, acknowledge, answered, snooze, wait, resume, reassign, note).
Reading needs the viewer role; acting needs agent."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.alert.access import Principal, require
from services.alert.cases import actions
from services.alert.cases.timeline import timeline
from shared.db.models import Case, Deadline, Mention, ResponseCycle, Team, TeamMember
from shared.events import Contribution, utcnow

router = APIRouter(prefix="/api/v1/cases", tags=["cases"])
Viewer = Annotated[Principal, Depends(require("viewer"))]
Agent = Annotated[Principal, Depends(require("agent"))]
# Ids are BIGINT: a larger number cannot be a case, and would overflow the database driver.
CaseId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The case's id")]


class DeadlineView(BaseModel):
    stage: str
    due_at: datetime
    status: str
    fired_at: datetime | None


class CaseView(BaseModel):
    id: int
    conversation_id: str
    brand: str
    source: str
    status: str
    priority: str
    opened_at: datetime
    answered_at: datetime | None
    cycle: int
    cycle_kind: str
    due_at: datetime | None
    time_left_seconds: float | None
    breached: bool
    paused: bool
    snoozed_until: datetime | None
    waiting_on_customer: bool
    team: str | None
    assignee: str | None
    incident_id: int | None
    reply_url: str | None


class TimelineEntry(BaseModel):
    at: datetime
    actor: str
    kind: str
    data: dict[str, Any]


class PostView(BaseModel):
    """The post that started the current cycle, and why it got its priority."""

    event_id: str
    text: str
    url: str | None
    lang: str | None
    sentiment: str | None
    complaint_score: float | None
    urgency_score: float | None
    reasons: list[str]
    # What each reason added to urgency_score (then "other signals" and caps); empty for
    # posts stored before contributions were kept.
    contributions: list[Contribution]


class CaseDetail(CaseView):
    post: PostView | None
    deadlines: list[DeadlineView]
    timeline: list[TimelineEntry]


class AnsweredBody(BaseModel):
    reply_url: str | None = Field(default=None, max_length=2048)
    answered_at: datetime | None = Field(default=None, description="Default: now")


class SnoozeBody(BaseModel):
    until: datetime


class ClaimBody(BaseModel):
    member: str | None = Field(default=None, description="Team member handle taking the case")


class ReassignBody(BaseModel):
    member: str = Field(min_length=1)


class NoteBody(BaseModel):
    text: str = Field(min_length=1, max_length=10_000)


async def _view(session: AsyncSession, case: Case, cycle: ResponseCycle) -> dict[str, Any]:
    now = utcnow()
    team = await session.get(Team, case.team_id) if case.team_id else None
    member = await session.get(TeamMember, case.assignee_id) if case.assignee_id else None
    waiting = case.status == "open" and cycle.due_at is not None and cycle.paused_at is None
    return {
        "id": case.id,
        "conversation_id": case.conversation_id,
        "brand": case.brand,
        "source": case.source,
        "status": case.status,
        "priority": cycle.priority,
        "opened_at": case.opened_at,
        "answered_at": case.answered_at,
        "cycle": cycle.seq,
        "cycle_kind": cycle.kind,
        "due_at": cycle.due_at,
        "time_left_seconds": (cycle.due_at - now).total_seconds() if waiting else None,
        "breached": cycle.breached,
        "paused": cycle.paused_at is not None,
        "snoozed_until": case.snoozed_until,
        "waiting_on_customer": case.waiting_on_customer,
        "team": team.name if team else None,
        "assignee": member.handle if member else None,
        "incident_id": case.incident_id,
        "reply_url": case.reply_url,
    }


# PostView's fields that are the stored mention's own columns.
_POST_COLUMNS = ("event_id", "text", "url", "lang", "sentiment", "complaint_score", "urgency_score")


def _post_view(post: Mention) -> PostView:
    return PostView(
        **{name: getattr(post, name) for name in _POST_COLUMNS},
        reasons=post.reason_list,
        contributions=[Contribution.model_validate(c) for c in post.contribution_list],
    )


def _sessions(request: Request):  # type: ignore[no-untyped-def]
    return request.app.state.sessions


@router.get("")
async def list_cases(
    request: Request,
    _: Viewer,
    status: Literal["open", "answered", "all"] = "open",
    team: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[CaseView]:
    """Cases with their current cycle, the least time left first (no target: last)."""
    stmt = select(Case, ResponseCycle).join(
        ResponseCycle, (ResponseCycle.case_id == Case.id) & (ResponseCycle.seq == Case.cycles)
    )
    if status != "all":
        stmt = stmt.where(Case.status == status)
    if team is not None:
        stmt = stmt.join(Team, Team.id == Case.team_id).where(Team.name == team)
    stmt = stmt.order_by(ResponseCycle.due_at.is_(None), ResponseCycle.due_at, Case.id).limit(limit)
    async with _sessions(request)() as session:
        rows = (await session.execute(stmt)).all()
        return [CaseView.model_validate(await _view(session, c, cy)) for c, cy in rows]


@router.get("/{case_id}")
async def get_case(request: Request, case_id: CaseId, _: Viewer) -> CaseDetail:
    """One case with every deadline (fired, pending, paused, cancelled) and its timeline."""
    async with _sessions(request)() as session:
        return await _detail(session, case_id)


async def _detail(session: AsyncSession, case_id: int) -> CaseDetail:
    case = await session.get(Case, case_id)
    if case is None:
        raise HTTPException(404, detail=f"case {case_id} does not exist")
    cycle = await session.scalar(
        select(ResponseCycle).where(
            ResponseCycle.case_id == case.id, ResponseCycle.seq == case.cycles
        )
    )
    assert cycle is not None
    deadlines = await session.scalars(
        select(Deadline).where(Deadline.cycle_id == cycle.id).order_by(Deadline.due_at, Deadline.id)
    )
    events = await timeline(session, case.id)
    post = await session.get(Mention, cycle.started_event_id)
    return CaseDetail.model_validate(
        {
            **await _view(session, case, cycle),
            "post": _post_view(post) if post else None,
            "deadlines": [
                DeadlineView(stage=d.stage, due_at=d.due_at, status=d.status, fired_at=d.fired_at)
                for d in deadlines
            ],
            "timeline": [
                TimelineEntry(at=e.at, actor=e.actor, kind=e.kind, data=e.data) for e in events
            ],
        }
    )


async def _act(
    request: Request, case_id: int, fn: Callable[[AsyncSession], Awaitable[object]]
) -> CaseDetail:
    async with _sessions(request)() as session:
        try:
            async with session.begin():
                await fn(session)
        except actions.CaseNotFound as exc:
            raise HTTPException(404, detail=str(exc)) from None
        except actions.CaseConflict as exc:
            raise HTTPException(409, detail=str(exc)) from None
        except ValueError as exc:  # e.g. an unknown member handle
            raise HTTPException(422, detail=str(exc)) from None
        return await _detail(session, case_id)


@router.post("/{case_id}/claim")
async def claim(
    request: Request, case_id: CaseId, who: Agent, body: ClaimBody | None = None
) -> CaseDetail:
    member = body.member if body else None
    return await _act(
        request, case_id, lambda s: actions.claim(s, case_id, who.name, utcnow(), member)
    )


@router.post("/{case_id}/acknowledge")
async def acknowledge(request: Request, case_id: CaseId, who: Agent) -> CaseDetail:
    """Someone is on it: stops escalation and idle reassignment (not the SLA clock)."""
    return await _act(
        request, case_id, lambda s: actions.acknowledge(s, case_id, who.name, utcnow())
    )


@router.post("/{case_id}/answered")
async def answered(request: Request, case_id: CaseId, who: Agent, body: AnsweredBody) -> CaseDetail:
    """Mark the case answered (the reply was made where ingest does not see it)."""
    if body.answered_at is not None and body.answered_at.tzinfo is None:
        raise HTTPException(422, detail="answered_at must include a time zone")
    return await _act(
        request,
        case_id,
        lambda s: actions.mark_answered(
            s, case_id, who.name, utcnow(), body.reply_url, body.answered_at
        ),
    )


@router.post("/{case_id}/snooze")
async def snooze(request: Request, case_id: CaseId, who: Agent, body: SnoozeBody) -> CaseDetail:
    """Pause the clock until a time; it resumes by itself then."""
    if body.until.tzinfo is None:
        raise HTTPException(422, detail="until must include a time zone")
    return await _act(
        request, case_id, lambda s: actions.snooze(s, case_id, who.name, utcnow(), body.until)
    )


@router.post("/{case_id}/wait")
async def wait(request: Request, case_id: CaseId, who: Agent) -> CaseDetail:
    """Waiting on the customer: the clock pauses until the customer writes again."""
    return await _act(
        request, case_id, lambda s: actions.wait_on_customer(s, case_id, who.name, utcnow())
    )


@router.post("/{case_id}/resume")
async def resume(request: Request, case_id: CaseId, who: Agent) -> CaseDetail:
    return await _act(request, case_id, lambda s: actions.resume(s, case_id, who.name, utcnow()))


@router.post("/{case_id}/reassign")
async def reassign(request: Request, case_id: CaseId, who: Agent, body: ReassignBody) -> CaseDetail:
    return await _act(
        request, case_id, lambda s: actions.reassign(s, case_id, who.name, utcnow(), body.member)
    )


@router.post("/{case_id}/notes")
async def add_note(request: Request, case_id: CaseId, who: Agent, body: NoteBody) -> CaseDetail:
    return await _act(
        request, case_id, lambda s: actions.add_note(s, case_id, who.name, utcnow(), body.text)
    )
