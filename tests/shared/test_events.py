"""Event contracts: ids, defaults, time zones, round trips and strictness."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from shared.events import (
    RAW_SCHEMA,
    SCORED_SCHEMA,
    Author,
    RawMention,
    ScoredMention,
    event_id_for,
)
from tests.factories import raw, scored

AT = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


def _mention(**over: object) -> RawMention:
    fields: dict[str, object] = {
        "source": "x",
        "external_id": "123",
        "brand": "acme",
        "author": {"id": "u1"},
        "text": "hello",
        "created_at": AT,
    }
    fields.update(over)
    return RawMention.model_validate(fields)


def test_event_id_is_stable_and_depends_on_source() -> None:
    assert event_id_for("x", "123") == event_id_for("x", "123")
    assert event_id_for("x", "123") != event_id_for("reddit", "123")
    # Two separately built mentions of the same post share the id.
    assert _mention().event_id == _mention(text="edited").event_id == event_id_for("x", "123")
    assert _mention(source="reddit").event_id != _mention().event_id


def test_matching_event_id_is_accepted_and_wrong_one_refused() -> None:
    assert _mention(event_id=event_id_for("x", "123")).event_id == event_id_for("x", "123")
    with pytest.raises(ValidationError, match="does not match"):
        _mention(event_id=event_id_for("x", "999"))


def test_conversation_id_defaults_to_source_and_external_id() -> None:
    assert _mention().conversation_id == "x:123"
    assert _mention().key == b"x:123"
    assert _mention(conversation_id="thread-9").conversation_id == "thread-9"


def test_naive_datetime_is_refused_with_a_message() -> None:
    with pytest.raises(ValidationError, match="time zone"):
        _mention(created_at=datetime(2026, 11, 27, 10, 0))
    with pytest.raises(ValidationError, match="time zone"):
        _mention(created_at="2026-11-27T10:00:00")


def test_created_at_is_normalised_to_utc() -> None:
    plus2 = timezone(timedelta(hours=2))
    m = _mention(created_at=datetime(2026, 11, 27, 12, 0, tzinfo=plus2))
    assert m.created_at == AT
    assert m.created_at.utcoffset() == timedelta(0)
    assert m.ingested_at.utcoffset() == timedelta(0)
    m2 = _mention(created_at="2026-11-27T05:00:00-05:00")
    assert m2.created_at == AT and m2.created_at.utcoffset() == timedelta(0)


def test_raw_mention_round_trips_through_bytes() -> None:
    m = raw("e1", AT, conversation="conv", text="naïve ünïcode 🚀").model_copy(
        update={"metadata": {"lang_hint": "de", "n": 3}}
    )
    data = m.to_bytes()
    assert json.loads(data)["schema"] == RAW_SCHEMA
    back = RawMention.model_validate_json(data)
    assert back == m
    assert back.event_id == m.event_id
    assert back.created_at == AT and back.created_at.tzinfo is not None


def test_schema_field_values() -> None:
    m = _mention()
    assert m.schema_ == RAW_SCHEMA == "thirdring.mention.raw/v1"
    s = scored(m)
    assert s.schema_ == SCORED_SCHEMA == "thirdring.mention.scored/v1"
    assert json.loads(s.to_bytes())["schema"] == SCORED_SCHEMA
    # A consumer refuses a shape it does not know.
    with pytest.raises(ValidationError):
        _mention(schema="thirdring.mention.raw/v2")


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError, match="surprise"):
        _mention(surprise=1)
    payload = json.loads(scored(_mention()).to_bytes())
    payload["surprise"] = True
    with pytest.raises(ValidationError, match="surprise"):
        ScoredMention.model_validate(payload)


def test_author_ignores_unknown_fields() -> None:
    # Authors come from many platforms: extra profile fields are dropped, not fatal.
    assert Author.model_validate({"id": "u1", "bio": "hi"}).id == "u1"


def test_scored_key_is_the_conversation_id() -> None:
    m = raw("e2", AT, conversation="thread-42")
    s = scored(m)
    assert s.key == b"thread-42" == m.key
    back = ScoredMention.model_validate_json(s.to_bytes())
    assert back.key == b"thread-42"
    assert back.mention == m
