"""What the encoder reads of a post: its text with the input settings its adapter records.

X-CI's complaints are addressed to real customer-care accounts (@AmazonHelp, @comcastcares),
so a model that reads the handles learns which brands draw complaints rather than what a
complaint says, and scores a new brand's mentions, or a post with no mention at all (a
review, a forum thread), lower. UMSAB already writes every handle as "@user". An adapter
trained with ``handles="@user"`` reads every handle that way, in training and in serving.
"""

from __future__ import annotations

import re

# "@name" not inside a word or an e-mail address ("me@example.com" stays).
HANDLE = re.compile(r"(?<![\w@])@\w+")
_SPACES = re.compile(r"\s{2,}")


def model_text(text: str, prefix: str = "", handles: str | None = None) -> str:
    """``prefix`` + ``text``, each @handle written as ``handles`` (None: left as it is)."""
    if handles is not None:
        text = HANDLE.sub(handles, text)
    return prefix + text


def without_handles(text: str) -> str:
    """``text`` with its @handles taken out: a post as a source without mentions gives it."""
    return _SPACES.sub(" ", HANDLE.sub("", text)).strip()
