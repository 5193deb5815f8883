"""Webhook signatures: a round trip works, every kind of wrong one fails quietly."""

from __future__ import annotations

import pytest

from shared.signing import sign, verify

BODY = b'{"event": "mention", "text": "hello"}'
SECRET = "s3cret"


def test_round_trip() -> None:
    sig = sign(BODY, SECRET)
    assert sig.startswith("sha256=") and len(sig) == len("sha256=") + 64
    assert sign(BODY, SECRET) == sig  # deterministic
    assert verify(BODY, SECRET, sig) is True


@pytest.mark.parametrize(
    ("body", "secret", "signature"),
    [
        pytest.param(BODY, "other", sign(BODY, SECRET), id="wrong-secret"),
        pytest.param(BODY + b" ", SECRET, sign(BODY, SECRET), id="tampered-body"),
        pytest.param(BODY, SECRET, None, id="missing"),
        pytest.param(BODY, SECRET, "", id="empty"),
        pytest.param(BODY, SECRET, "sha256=é" + "0" * 63, id="non-ascii"),
        pytest.param(BODY, SECRET, "sha256=\udcff", id="lone-surrogate"),
        pytest.param(BODY, SECRET, sign(BODY, SECRET).upper(), id="case-changed"),
        pytest.param(BODY, SECRET, sign(BODY, SECRET)[7:], id="no-prefix"),
    ],
)
def test_bad_signatures_fail_without_raising(
    body: bytes, secret: str, signature: str | None
) -> None:
    assert verify(body, secret, signature) is False
