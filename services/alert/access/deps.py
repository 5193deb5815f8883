"""The FastAPI guard: ``Depends(require("viewer"))`` on a route admits tokens of that role or
stronger, and hands the route a ``Principal`` (who is calling, e.g. for a case event's actor).

The sessionmaker comes from ``request.app.state.sessions`` so the guard needs no globals.
Tokens are never logged: not here, and uvicorn's access log does not print headers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import HTTPException, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.alert.access.tokens import authenticate, check_role, role_allows

TOKEN_HEADER = "X-Thirdring-Token"
MISSING = "missing API token: send Authorization: Bearer <token>"
INVALID = "invalid or revoked API token"
CHALLENGE = {"WWW-Authenticate": "Bearer"}

# Declared as security schemes so /docs shows them and its "Authorize" button works;
# auto_error=False because either one will do, and we word the errors ourselves.
_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <token>")
_header = APIKeyHeader(name=TOKEN_HEADER, auto_error=False, description="The token itself")


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's name and role."""

    name: str
    role: str


def require(role: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency admitting tokens whose role is ``role`` or stronger.

    An unknown ``role`` raises ValueError here, when the routes are declared, not per request.
    """
    check_role(role)

    async def dependency(
        request: Request,
        bearer: HTTPAuthorizationCredentials | None = Security(_bearer),
        header: str | None = Security(_header),
    ) -> Principal:
        token = bearer.credentials if bearer else (header or "").strip()
        if not token:
            raise HTTPException(401, detail=MISSING, headers=CHALLENGE)
        sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
        async with sessions() as session:
            row = await authenticate(session, token)
            if row is None:
                raise HTTPException(401, detail=INVALID, headers=CHALLENGE)
            principal = Principal(name=row.name, role=row.role)
            await session.commit()  # last_used_at, when it changed
        if not role_allows(principal.role, role):
            raise HTTPException(
                403,
                detail=(
                    f"this endpoint needs the {role} role; "
                    f"token {principal.name} has {principal.role}"
                ),
            )
        return principal

    dependency.__name__ = f"require_{role}"
    return dependency
