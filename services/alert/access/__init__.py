"""API tokens for the alert HTTP API: create, revoke, authenticate, and the FastAPI guard."""

from services.alert.access.deps import Principal, require
from services.alert.access.tokens import (
    TokenInfo,
    authenticate,
    create_token,
    list_tokens,
    revoke_token,
    role_allows,
)

__all__ = [
    "Principal",
    "TokenInfo",
    "authenticate",
    "create_token",
    "list_tokens",
    "require",
    "revoke_token",
    "role_allows",
]
