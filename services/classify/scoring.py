"""Score posts: one encoder call per list, then the heads, language and urgency.

``Classifier`` is what the classify worker and the ``thirdring classify`` command share, so a
file scored offline gets the same scores as the live pipeline gave (the int8 encoder's
activation scales are calibrated constants, so neither batch size nor batch-mates change a
post's scores).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import IO, Any, NamedTuple

import numpy as np
from pydantic import TypeAdapter, ValidationError

from services.classify.language import detect_languages
from services.classify.model import default_model_dir
from services.classify.model.adapter import short_hash
from services.classify.model.encoder import Encoder
from services.classify.model.heads import SENTIMENT_LABELS, Heads
from services.classify.urgency import assess_urgency, waited_before_seen
from shared.events import (
    Author,
    AwareDatetime,
    Complaint,
    Contribution,
    Scores,
    Sentiment,
    Severity,
    Urgency,
)

COMPLAINT_THRESHOLD = 0.5
log = logging.getLogger(__name__)


class Classifier:
    """Encoder + heads + language + urgency, loaded once per process."""

    def __init__(self, encoder: Encoder, heads: Heads) -> None:
        if tuple(heads.sentiment.labels) != SENTIMENT_LABELS:
            raise ValueError(
                f"sentiment head labels {heads.sentiment.labels} != {SENTIMENT_LABELS}"
            )
        self.encoder = encoder
        self.heads = heads
        # The encoder backend is part of the version: int8 and fp32 embeddings differ a little.
        tag = getattr(encoder, "tag", "e5-small-q4")
        adapter = getattr(encoder, "adapter", None)
        expected = (heads.meta.get("adapter") or {}).get("hash")
        served = short_hash(adapter) if adapter is not None else None
        if expected != served:
            raise ValueError(
                f"the heads were trained with adapter {expected} but the encoder runs {served}"
            )
        lora = f"+lora-{served}" if served else ""
        self.model_version = f"{tag}{lora}+heads-{heads.short_hash}"
        # The backend, not the tag: fine-tuned heads are fitted in fp32 for the onnx backend,
        # whichever activation scales its int8 export uses.
        trained = heads.meta.get("encoder") or {}
        trained_for = trained.get("backend", "torch") if trained else None
        served_by = getattr(encoder, "backend", None)
        if trained_for and served_by and trained_for != served_by:
            log.warning(
                "heads were trained for the %s backend but the encoder serves %s: scores shift "
                "slightly; retrain the heads on the served backend",
                trained_for,
                served_by,
            )

    @classmethod
    def load(
        cls,
        model_dir: Path | None = None,
        heads_dir: Path | None = None,
        threads: int | None = None,
        *,
        backend: str | None = None,
        warm_up: bool = True,
    ) -> Classifier:
        """Prepare the encoder if needed (offline, idempotent), load it and the heads.

        ``backend``: ``onnx`` (int8, the default) or ``torch``; ``None`` reads
        ``$THIRDRING_ENCODER_BACKEND``. The onnx path never imports torch.
        """
        from services.classify.model.adapter import adapter_for
        from services.classify.model.prepare import prepare_encoder

        heads = Heads.load(heads_dir)
        # The encoder tuned with these heads (None for heads on the frozen encoder).
        adapter = adapter_for(heads_dir) if heads.meta.get("adapter") else None
        if heads.meta.get("adapter") and adapter is None:
            raise FileNotFoundError(f"heads in {heads_dir} name an adapter that is not there")
        model_dir = prepare_encoder(
            model_dir if model_dir is not None else default_model_dir(), adapter=adapter
        )
        encoder = Encoder(model_dir, threads=threads, backend=backend, adapter=adapter)
        classifier = cls(encoder, heads)
        if warm_up:
            classifier.warm_up()
        return classifier

    def warm_up(self) -> None:
        """Score a few texts: builds lingua and runs the model once before real traffic."""
        from services.classify.language import get_detector
        from services.classify.model.encoder import WARM_UP_TEXTS

        get_detector()
        self.score([(text, None) for text in WARM_UP_TEXTS])

    def score(
        self,
        items: list[tuple[str, Author | None]],
        waited: Sequence[float | None] | None = None,
    ) -> list[Scores]:
        """Scores for each (text, author) in order; one encoder call for the list.

        ``waited``: per item, the seconds it waited before thirdring saw it (None: unknown).
        """
        if not items:
            return []
        if waited is not None and len(waited) != len(items):
            raise ValueError(f"{len(waited)} waits for {len(items)} posts")
        texts = [text for text, _ in items]
        emb = self.encoder.encode(texts)
        p_sent = self.heads.sentiment.predict_proba(emb)
        p_comp = self.heads.complaint.predict_proba(emb)[:, 1]
        severities = self.heads.predict_severity(emb, p_complaint=p_comp)
        langs = detect_languages(texts)
        out: list[Scores] = []
        for i, (text, author) in enumerate(items):
            probs = {
                label: round(float(p), 4)
                for label, p in zip(SENTIMENT_LABELS, p_sent[i], strict=True)
            }
            label = SENTIMENT_LABELS[int(np.argmax(p_sent[i]))]
            complaint = round(float(p_comp[i]), 4)
            severity = severities[i] if severities else None
            urgency = assess_urgency(
                text,
                p_negative=float(p_sent[i][0]),
                p_complaint=float(p_comp[i]),
                sentiment_label=label,
                author=author,
                severity=severity.level if severity else None,
                waited_s=waited[i] if waited is not None else None,
            )
            out.append(
                Scores(
                    lang=langs[i],
                    sentiment=Sentiment(label=label, scores=probs),  # type: ignore[arg-type]
                    complaint=Complaint(
                        is_complaint=complaint >= COMPLAINT_THRESHOLD, score=complaint
                    ),
                    urgency=Urgency(
                        score=urgency.score,
                        level=urgency.level,
                        reasons=urgency.reasons,
                        contributions=[Contribution(**c) for c in urgency.contributions],
                    ),
                    severity=Severity(level=severity.level, probs=severity.probs)
                    if severity
                    else None,
                    model_version=self.model_version,
                )
            )
        return out


class InputError(ValueError):
    """A JSONL line that cannot be scored (reported, then skipped)."""


class InputPost(NamedTuple):
    """One line of ``thirdring classify``'s input."""

    ident: Any
    text: str
    author: Author | None
    # Seconds it waited before ingestion, from optional created_at and ingested_at (the
    # event's own field names, so a dump of mentions.raw scores as the service scored it).
    waited_s: float | None


_TIMESTAMP = TypeAdapter(AwareDatetime)


def _timestamp(obj: dict[str, Any], key: str) -> datetime | None:
    if obj.get(key) is None:
        return None
    try:
        return _TIMESTAMP.validate_python(obj[key])
    except ValidationError:
        raise InputError(
            f"invalid '{key}' (an ISO 8601 time with a time zone, e.g. 2026-12-05T10:00:00Z)"
        ) from None


def parse_line(raw: bytes) -> InputPost:
    """One JSONL line as a post, or :class:`InputError` saying what is wrong.

    The time already waited is known only when the line has both ``created_at`` and
    ``ingested_at`` (and no ``"backfill": true``, as in the service); otherwise it adds
    nothing to urgency.
    """
    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8: {exc.reason} at byte {exc.start}") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"bad JSON: {exc.msg} (column {exc.colno})") from None
    if not isinstance(obj, dict):
        raise InputError("a line must be a JSON object")
    ident = obj.get("id")
    if ident is None or isinstance(ident, bool) or not isinstance(ident, str | int) or ident == "":
        raise InputError("missing or invalid 'id' (a non-empty string or an integer)")
    text = obj.get("text")
    if not isinstance(text, str):
        raise InputError("missing or invalid 'text' (a string)")
    author_obj = obj.get("author")
    author: Author | None = None
    if author_obj is not None:
        try:
            author = Author.model_validate(author_obj)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            raise InputError(
                f"invalid 'author'{f' ({where})' if where else ''}: {first['msg']}"
            ) from None
    created, ingested = _timestamp(obj, "created_at"), _timestamp(obj, "ingested_at")
    backfill = obj.get("backfill") is True
    waited = (
        waited_before_seen(created, ingested, backfill=backfill) if created and ingested else None
    )
    return InputPost(ident, text, author, waited)


def scored_record(ident: Any, scores: Scores) -> dict[str, Any]:
    """The output line of ``classify_file`` for one post."""
    return {"id": ident, **scores.model_dump(mode="json")}


def _lines(stream: IO[bytes]) -> Iterator[bytes]:
    yield from stream


def classify_file(
    inp: str, out: str, classifier: Classifier, batch_size: int = 64
) -> tuple[int, int]:
    """Score a JSONL file (``-`` = stdin/stdout); returns (scored, failed).

    A broken line never stops the run: ``{"line": N, "error": "..."}`` goes to stderr and the
    next line is read. A progress bar is shown on stderr when the input is a file.
    """
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    scored = failed = 0
    pending: list[InputPost] = []
    with ExitStack() as stack:
        src: IO[bytes] = sys.stdin.buffer if inp == "-" else stack.enter_context(open(inp, "rb"))
        dst: IO[str] = (
            sys.stdout if out == "-" else stack.enter_context(open(out, "w", encoding="utf-8"))
        )
        err_console = Console(file=sys.stderr, highlight=False, soft_wrap=True)
        bar = Progress(
            TextColumn("[bold]classify"),
            BarColumn(),
            DownloadColumn(),
            TextColumn("{task.fields[n]} posts"),
            TimeRemainingColumn(),
            console=err_console,
            disable=inp == "-",
        )
        stack.enter_context(bar)
        total = None if inp == "-" else Path(inp).stat().st_size
        task = bar.add_task("classify", total=total, n=0)

        def report(line_no: int, message: str) -> None:
            bar.console.out(json.dumps({"line": line_no, "error": message}, ensure_ascii=False))

        def flush() -> None:
            nonlocal scored
            if not pending:
                return
            results = classifier.score(
                [(p.text, p.author) for p in pending], waited=[p.waited_s for p in pending]
            )
            for post, scores in zip(pending, results, strict=True):
                dst.write(json.dumps(scored_record(post.ident, scores), ensure_ascii=False) + "\n")
            dst.flush()
            scored += len(pending)
            bar.update(task, n=scored)
            pending.clear()

        for line_no, raw in enumerate(_lines(src), start=1):
            bar.advance(task, len(raw))
            if not raw.strip():
                continue
            try:
                pending.append(parse_line(raw))
            except InputError as exc:
                failed += 1
                report(line_no, str(exc))
                continue
            if len(pending) >= batch_size:
                flush()
        flush()
    return scored, failed
