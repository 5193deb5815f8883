"""A deterministic replay of N posts for the fault test, and what thirdring must make of it.

Conversations of a few kinds, interleaved in one JSONL file (the RawMention contract, as
``thirdring replay`` reads it), each with the case it must end as:

| kind | posts | source | end state |
|---|---|---|---|
| unanswered | 1-2 customer posts | ``faults-fast`` (40 s) | breached: warning, breach, escalation |
| open | 1-3 customer posts | ``faults`` (target 1 h) | open, not breached, nobody paged |
| answered | customer, brand | ``faults`` | answered after the gap |
| reply-first | the brand's reply listed before the post it answers | ``faults`` | answered |
| reopened | customer, brand, customer | ``faults`` | open, second cycle |
| answered-twice | customer, brand, customer, brand | ``faults`` | answered, two cycles |
| brand-only | a brand post | ``faults`` | stored, no case |

Every priority has the same target within a policy, so the expected deadlines do not depend
on what the classifier says. Posts of the fast source are dated up to 20 s before the
replay starts: their warnings (20 s), breaches (40 s) and escalations (45 s) fall due while
the services are being killed and restarted. A part of the conversations goes through the
ingest webhook instead of the file. The file also holds broken lines (bad JSON, a text over
the contract's limit, a time without a zone) that replay must report and never publish.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from shared.events import event_id_for

BRAND = "acme"
SLOW = "faults"
FAST = "faults-fast"
FAST_TARGET = 40.0
SLOW_TARGET = 3600.0
FAST_STAGES = ("warning:0.5", "breach", "escalation:1")

# Words to build posts from: several languages, ~10-25 words, like the posts of real users.
_OPENERS = [
    "@acme my internet has been down since {day} and nobody answers",
    "@acme I was charged twice for order {n}, I want a refund",
    "@acme the app crashes every time I open my bill",
    "@acme il servizio non funziona da {day}, voglio un rimborso",
    "@acme la fibra è lenta da giorni e nessuno risponde",
    "@acme mi pedido {n} no ha llegado y nadie contesta",
    "@acme meine Rechnung {n} ist falsch, bitte korrigieren",
    "@acme ma commande {n} est en retard depuis {day}",
    "@acme internet ei tööta juba kaks päeva, palun aidake",
    "@acme where is my parcel {n}? tracking has not moved since {day}",
    "@acme thanks for the quick fix yesterday, all good now",
    "@acme what are your opening hours on {day}?",
]
_FOLLOW_UPS = [
    "still waiting, this is getting ridiculous",
    "hello?? anyone there? it is urgent",
    "ancora nessuna risposta, pessimo servizio",
    "sigue sin funcionar, quiero hablar con alguien",
    "it happened again this morning",
]
_REPLIES = [
    "@{user} sorry about this! We sent you a DM to sort it out.",
    "@{user} ci scusiamo, ti abbiamo scritto in privato.",
    "@{user} lo sentimos, te escribimos por mensaje directo.",
    "@{user} thanks for telling us, the team is on it now.",
]
_DAYS = ["monday", "tuesday", "yesterday", "last week", "friday", "this morning"]


@dataclass
class Post:
    ext: str
    conversation: str
    source: str
    author: str
    is_brand: bool
    created_at: datetime
    text: str

    @property
    def event_id(self) -> str:
        return event_id_for(self.source, self.ext)

    def contract(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "external_id": self.ext,
            "conversation_id": self.conversation,
            "brand": BRAND,
            "author": {"id": self.author, "followers": 120},
            "is_brand": self.is_brand,
            "text": self.text,
            "url": f"https://social.example/{self.source}/{self.ext}",
            "created_at": self.created_at.isoformat(),
        }


@dataclass
class Conversation:
    id: str
    kind: str
    source: str
    posts: list[Post] = field(default_factory=list)  # in the order they are published
    via: str = "replay"  # or "webhook"

    # What the case must look like in the end.
    @property
    def has_case(self) -> bool:
        return self.kind != "brand-only"

    @property
    def status(self) -> str:
        return "answered" if self.kind in ("answered", "reply-first", "answered-twice") else "open"

    @property
    def cycles(self) -> int:
        return 2 if self.kind in ("reopened", "answered-twice") else 1

    @property
    def breached(self) -> bool:
        return self.kind == "unanswered"

    @property
    def stages(self) -> tuple[str, ...]:
        """The notifications due for it, each to be delivered once."""
        return FAST_STAGES if self.kind == "unanswered" else ()

    def customer_posts(self) -> list[Post]:
        return sorted((p for p in self.posts if not p.is_brand), key=lambda p: p.created_at)

    def response_seconds(self) -> list[float | None]:
        """Per cycle: seconds from the post that opened it to the brand's answer."""
        ordered = sorted(self.posts, key=lambda p: p.created_at)
        out: list[float | None] = []
        start: datetime | None = None
        for p in ordered:
            if not p.is_brand and start is None:
                start = p.created_at
                out.append(None)
            elif p.is_brand and start is not None:
                out[-1] = (p.created_at - start).total_seconds()
                start = None
        return out


@dataclass
class Plan:
    conversations: list[Conversation]
    lines: list[str]  # the replay file, broken lines included
    broken_lines: list[int]  # 1-based line numbers replay must report
    webhook_batches: list[list[Post]]
    fast_target: float = FAST_TARGET  # seconds, every priority, of the fast source

    @property
    def posts(self) -> list[Post]:
        return [p for c in self.conversations for p in c.posts]

    def by_conversation(self) -> dict[str, Conversation]:
        return {c.id: c for c in self.conversations}

    def expected_notifications(self) -> set[tuple[str, str]]:
        return {(c.id, s) for c in self.conversations for s in c.stages}


# kind, weight, source; the mix gives ~2.1 posts per conversation.
_KINDS = [
    ("unanswered", 6, FAST),
    ("open", 22, SLOW),
    ("answered", 30, SLOW),
    ("reply-first", 8, SLOW),
    ("reopened", 12, SLOW),
    ("answered-twice", 10, SLOW),
    ("brand-only", 4, SLOW),
]


def make_plan(
    n_posts: int,
    start: datetime,
    *,
    seed: int = 20261127,
    webhook_share: float = 0.05,
    webhook_batch: int = 10,
    fast_target: float = FAST_TARGET,
) -> Plan:
    """Conversations until there are exactly ``n_posts`` posts; ``start`` is "now". Fast
    posts are dated up to half of ``fast_target`` before ``start``."""
    rng = random.Random(seed)
    kinds = [k for k, _, _ in _KINDS]
    weights = [w for _, w, _ in _KINDS]
    sources = {k: s for k, _, s in _KINDS}
    conversations: list[Conversation] = []
    total = 0
    while total < n_posts:
        kind = rng.choices(kinds, weights)[0]
        conv = _conversation(rng, len(conversations), kind, sources[kind], start, fast_target)
        room = n_posts - total
        if len(conv.posts) > room:  # the last one must fit exactly (room is 1 to 3)
            conv = _conversation(
                rng, len(conversations), "open", SLOW, start, fast_target, posts=room
            )
        conversations.append(conv)
        total += len(conv.posts)

    for conv in conversations:
        if rng.random() < webhook_share:
            conv.via = "webhook"
    file_posts = _interleave(rng, [c.posts for c in conversations if c.via == "replay"])
    hook_posts = _interleave(rng, [c.posts for c in conversations if c.via == "webhook"])
    lines = [json.dumps(p.contract(), ensure_ascii=False) for p in file_posts]
    broken: list[str] = [
        '{"source": "faults", "external_id": "broken-json"',
        json.dumps({**file_posts[0].contract(), "external_id": "too-long", "text": "x" * 20_001}),
        json.dumps(
            {
                **file_posts[0].contract(),
                "external_id": "naive-time",
                "created_at": start.replace(tzinfo=None).isoformat(),
            }
        ),
    ]
    broken_at = sorted(rng.sample(range(len(lines)), len(broken)))
    for offset, (at, line) in enumerate(zip(broken_at, broken, strict=True)):
        lines.insert(at + offset, line)
    numbers = [i + 1 for i, line in enumerate(lines) if line in broken]
    batches = [hook_posts[i : i + webhook_batch] for i in range(0, len(hook_posts), webhook_batch)]
    return Plan(conversations, lines, numbers, batches, fast_target)


def _interleave(rng: random.Random, threads: list[list[Post]]) -> list[Post]:
    """All posts, the threads mixed at random, each thread's own order kept."""
    queue = [list(t) for t in threads if t]
    out: list[Post] = []
    while queue:
        i = rng.randrange(len(queue))
        out.append(queue[i].pop(0))
        if not queue[i]:
            queue[i] = queue[-1]
            queue.pop()
    return out


def _conversation(
    rng: random.Random,
    index: int,
    kind: str,
    source: str,
    start: datetime,
    fast_target: float,
    posts: int | None = None,
) -> Conversation:
    conv = Conversation(f"{source}:c{index:05d}", kind, source)
    user = f"user{rng.randrange(5000)}"
    # Fast cases are dated up to half their target ago (deadlines fall due during the run);
    # the rest 0-10 min ago, far within their hour.
    age = fast_target / 2 if source == FAST else 600
    at = start - timedelta(seconds=rng.uniform(0, age))
    n = 0

    def add(is_brand: bool, gap: float) -> None:
        nonlocal at, n
        at = at + timedelta(seconds=gap)
        if is_brand:
            text = rng.choice(_REPLIES).format(user=user)
        elif n == 0:
            text = rng.choice(_OPENERS).format(day=rng.choice(_DAYS), n=rng.randrange(10**6))
        else:
            text = f"@acme {rng.choice(_FOLLOW_UPS)}"
        conv.posts.append(
            Post(
                f"{index:05d}-{n}", conv.id, source, BRAND if is_brand else user, is_brand, at, text
            )
        )
        n += 1

    def gap() -> float:
        return round(rng.uniform(5, 60), 3)

    if kind == "unanswered":
        add(False, 0)
        if rng.random() < 0.4:
            add(False, round(rng.uniform(0.5, 3), 3))  # a follow-up within the same cycle
    elif kind == "open":
        for i in range(posts or rng.randint(1, 3)):
            add(False, 0 if i == 0 else gap())
    elif kind == "answered":
        add(False, 0)
        add(True, gap())
    elif kind == "reply-first":
        add(False, 0)
        add(True, gap())
        conv.posts.reverse()  # the reply is published first; it answers once the post comes
    elif kind == "reopened":
        add(False, 0)
        add(True, gap())
        add(False, gap())
    elif kind == "answered-twice":
        add(False, 0)
        add(True, gap())
        add(False, gap())
        add(True, gap())
    elif kind == "brand-only":
        add(True, 0)
    return conv
