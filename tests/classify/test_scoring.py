"""End to end on the real encoder and committed heads: obvious texts, and the JSONL tool."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from services.classify.scoring import Classifier, classify_file
from shared.events import Author

COMPLAINTS = [
    "This is the third time my order is late and nobody answers. "
    "Worst service ever, I want my money back!",
    "Vergognoso! Internet non funziona da una settimana e nessuno risponde. "
    "Pessimo servizio, voglio il rimborso.",
    "Internet ei tööta juba nädal aega ja keegi ei vasta. Kohutav teenindus, tahan raha tagasi!",
]
THANKS = [
    "Thank you so much for the quick help today, your support team is amazing!",
    "Grazie mille per l'aiuto veloce, il vostro servizio clienti è fantastico!",
    "Suur aitäh kiire abi eest, teie klienditugi on suurepärane!",
]


@pytest.mark.parametrize("text", COMPLAINTS)
def test_angry_complaint_is_raised(classifier: Classifier, text: str) -> None:
    [s] = classifier.score([(text, None)])
    assert s.complaint.is_complaint, s
    assert s.urgency.level in ("P1", "P2"), s
    assert "intent:refund" in s.urgency.reasons


VERSION = r"e5-small-(q4|int8s?)(\+lora-[0-9a-f]{10})?\+heads-[0-9a-f]{10}"


@pytest.mark.parametrize(
    "text",
    [
        COMPLAINTS[0],
        COMPLAINTS[1],
        COMPLAINTS[2],  # Estonian: right since the fine-tuned encoder (no Estonian data)
    ],
)
def test_angry_complaint_is_negative(classifier: Classifier, text: str) -> None:
    [s] = classifier.score([(text, None)])
    assert s.sentiment.label == "negative", s


@pytest.mark.parametrize("text", THANKS)
def test_thanks(classifier: Classifier, text: str) -> None:
    [s] = classifier.score([(text, Author(id="a", followers=500_000, vip=True))])
    assert s.sentiment.label == "positive", s
    assert not s.complaint.is_complaint, s
    assert s.urgency.level == "P4", s


def test_score_batch_shape(classifier: Classifier) -> None:
    texts = COMPLAINTS + THANKS + [""]
    scores = classifier.score([(t, None) for t in texts])
    assert [s.lang for s in scores] == ["en", "it", "et", "en", "it", "et", "und"]
    for s in scores:
        assert abs(sum(s.sentiment.scores.values()) - 1.0) < 1e-3
        assert re.fullmatch(
            r"e5-small-(q4|int8s?)(\+lora-[0-9a-f]{10})?\+heads-[0-9a-f]{10}", s.model_version
        )
    assert classifier.score([]) == []


def test_classify_file_survives_broken_lines(
    classifier: Classifier, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inp = tmp_path / "in.jsonl"
    lines = [
        json.dumps({"id": "a", "text": COMPLAINTS[0], "author": {"id": "u1", "followers": 120000}}),
        '{"id": "b", "text": ',  # truncated JSON
        json.dumps({"text": "no id here"}),
        "",  # blank lines are skipped, not errors
        json.dumps({"id": 7, "text": THANKS[1]}),
        json.dumps({"id": "c"}),  # no text
        json.dumps({"id": "d", "text": "hi", "author": {"followers": -1}}),
        json.dumps([1, 2]),
        json.dumps({"id": "e", "text": COMPLAINTS[2]}),
    ]
    inp.write_bytes(("\n".join(lines) + "\n").encode() + b'{"id": "f", "text": "\xff"}\n')
    out = tmp_path / "out.jsonl"

    scored, failed = classify_file(str(inp), str(out), classifier, batch_size=2)

    assert (scored, failed) == (3, 6)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in records] == ["a", 7, "e"]
    first = records[0]
    assert set(first) == {
        "id",
        "lang",
        "sentiment",
        "complaint",
        "urgency",
        "severity",
        "model_version",
    }
    assert set(first["sentiment"]["scores"]) == {"negative", "neutral", "positive"}
    assert "reach 120k followers" in first["urgency"]["reasons"]
    assert first["complaint"]["is_complaint"] is True
    errors = [
        json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")
    ]
    assert [e["line"] for e in errors] == [2, 3, 6, 7, 8, 10]
    assert all(e["error"] for e in errors)


def test_classify_file_stdin_stdout(
    classifier: Classifier, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import io
    import sys

    data = json.dumps({"id": "x", "text": THANKS[0]}) + "\nnot json\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data.encode())))
    assert classify_file("-", "-", classifier) == (1, 1)
    captured = capsys.readouterr()
    [record] = [json.loads(line) for line in captured.out.splitlines()]
    assert record["id"] == "x" and record["sentiment"]["label"] == "positive"
    error = json.loads(captured.err.strip())
    assert error["line"] == 2 and error["error"].startswith("bad JSON")


def test_classify_file_counts_the_wait_when_both_times_are_given(
    classifier: Classifier, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inp = tmp_path / "in.jsonl"
    base = {"text": COMPLAINTS[0], "created_at": "2026-12-05T07:00:00Z"}
    lines = [
        {**base, "id": "late", "ingested_at": "2026-12-05T10:00:00+00:00"},
        {**base, "id": "unknown"},  # no ingested_at: the wait is unknown
        {**base, "id": "replayed", "ingested_at": "2026-12-05T10:00:00Z", "backfill": True},
        {**base, "id": "bad", "ingested_at": "yesterday"},
        {**base, "id": "naive", "ingested_at": "2026-12-05T10:00:00"},
    ]
    inp.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "out.jsonl"

    assert classify_file(str(inp), str(out), classifier) == (3, 2)

    records = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert "waited 3 h before seen" in records["late"]["urgency"]["reasons"]
    for quiet in ("unknown", "replayed"):
        assert not any(r.startswith("waited") for r in records[quiet]["urgency"]["reasons"])
    assert records["late"]["urgency"]["score"] > records["unknown"]["urgency"]["score"]
    errors = [json.loads(line) for line in capsys.readouterr().err.splitlines() if "{" in line]
    assert [e["line"] for e in errors] == [4, 5]
    assert all("invalid 'ingested_at'" in e["error"] for e in errors)
