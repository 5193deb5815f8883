"""HMAC-SHA256 signatures for webhooks, in and out: ``sha256=<hex>`` over the raw body."""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Thirdring-Signature"


def sign(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(body: bytes, secret: str, signature: str | None) -> bool:
    # compare_digest: the time taken must not tell an attacker how much of the guess was right.
    if not signature:
        return False
    # Bytes, not str: compare_digest refuses non-ASCII str, and a header can hold anything.
    return hmac.compare_digest(sign(body, secret).encode(), signature.encode("utf-8", "replace"))
