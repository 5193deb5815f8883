"""What every source is: a name, an async stream of mentions, and what identifies a post.

Like keephq/keep providers, each source declares ``fingerprint_fields``: the fields of its
native records whose values identify one post. They become the contract's ``external_id``,
and (source, external_id) becomes the event id that ingest dedupes on, so a post fetched
twice (a restart, an overlapping page, a replay) is published once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar

from shared.events import RawMention


class Source(ABC):
    #: The contract's ``source`` value (lowercase, ``[a-z0-9_.-]``).
    name: ClassVar[str]
    #: Native fields whose values, joined with ":", make the external id.
    fingerprint_fields: ClassVar[tuple[str, ...]] = ("id",)

    @abstractmethod
    def fetch(self) -> AsyncIterator[RawMention]:
        """Yield mentions until the source is exhausted (a finite source) or forever.

        Implement as an ``async def`` generator. An exception ends this round; the worker
        logs it and calls ``fetch()`` again after a backoff, so keep cursors on ``self``.
        """

    @classmethod
    def external_id(cls, record: Mapping[str, Any]) -> str:
        missing = [f for f in cls.fingerprint_fields if record.get(f) in (None, "")]
        if missing:
            raise ValueError(f"{cls.name}: record lacks fingerprint field(s) {missing}")
        return ":".join(str(record[f]) for f in cls.fingerprint_fields)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"
