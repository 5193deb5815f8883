from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.ingest.publisher import Publisher
from services.ingest.sources.replay import (
    ReplayError,
    open_reader,
    parse_twitter_time,
    read_jsonl,
    read_twcs,
    replay_file,
)
from shared.config import Settings
from shared.events import RawMention
from tests.ingest.helpers import consume, has_external_id, mention, mention_dict, parse, ts

JSONL_LINES = [
    json.dumps(mention_dict("1", conversation_id="conv-a")),  # 1
    '{"source": "test", "external_id": ',  # 2: broken JSON
    "",  # 3: blank, skipped
    json.dumps(mention_dict("2") | {"schema": "thirdring.mention.raw/v1"}),  # 4
    json.dumps(mention_dict("3") | {"author": {"handle": "nobody"}}),  # 5: no author.id
    json.dumps(mention_dict("4", conversation_id="conv-a", in_reply_to="1")),  # 6
    json.dumps(mention_dict("1", conversation_id="conv-a")),  # 7: same event as line 1
]


@pytest.fixture
def jsonl_file(tmp_path: Path) -> Path:
    path = tmp_path / "mentions.jsonl"
    path.write_text("\n".join(JSONL_LINES) + "\n")
    return path


async def test_replay_jsonl_reports_broken_lines_and_publishes_the_rest(
    jsonl_file: Path, publisher: Publisher, settings: Settings
) -> None:
    report = await replay_file(jsonl_file, None, publisher, progress=False)

    assert [e.line for e in report.errors] == [2, 5]
    assert report.errors[0].reason.startswith("invalid JSON")
    assert "author.id" in report.errors[1].reason
    assert (report.read, report.published, report.duplicates) == (6, 3, 1)

    records = await consume(settings, lambda rs: len(rs) >= 3)
    by_id = {parse(r).external_id: r for r in records}
    assert sorted(by_id) == ["1", "2", "4"]
    assert {k: r.key for k, r in by_id.items()} == {
        "1": b"conv-a",
        "2": b"test:2",  # no conversation_id: the post is its own conversation
        "4": b"conv-a",
    }
    assert parse(by_id["4"]).in_reply_to == "1"
    assert not any(parse(r).backfill for r in records)

    # The same file again: everything is a duplicate, nothing reaches the topic.
    again = await replay_file(jsonl_file, "jsonl", publisher, progress=False)
    assert (again.published, again.duplicates, len(again.errors)) == (0, 4, 2)
    await publisher.publish([mention("sentinel")])
    records = await consume(settings, has_external_id("sentinel"))
    assert sorted(parse(r).external_id for r in records) == ["1", "2", "4", "sentinel"]


def test_jsonl_reader_backfill_and_validation(tmp_path: Path) -> None:
    path = tmp_path / "m.ndjson"
    path.write_text(
        json.dumps(mention_dict("1"))
        + "\n"
        + json.dumps(mention_dict("2", created_at="2026-11-27T10:00:00"))  # naive time
        + "\n[1, 2]\n"
    )
    items = list(read_jsonl(path, backfill=True))
    assert isinstance(items[0], RawMention) and items[0].backfill is True
    assert isinstance(items[1], ReplayError) and items[1].line == 2
    assert "created_at" in items[1].reason
    assert items[2] == ReplayError(3, "expected a JSON object, got list")


# The real twcs layout: unsorted, ids of the optional column written as floats by pandas,
# a quoted multi-line text (physical lines differ from record numbers).
TWCS = """\
tweet_id,author_id,inbound,created_at,text,response_tweet_id,in_response_to_tweet_id
2,sprintcare,False,Tue Oct 31 22:10:47 +0000 2017,@115712 Please send us a Private Message so we can help.,3,1.0
1,115712,True,Tue Oct 31 22:05:10 +0000 2017,"@115713 told me to ask: @sprintcare is the worst
customer service, no signal for 2 days",2,
3,115712,True,Tue Oct 31 22:15:00 +0000 2017,@sprintcare I did. Nobody answered.,,2.0
4,115714,True,Wed Nov 01 08:00:00 +0000 2017,@applesupport my battery dies in an hour,,
5,115715,True,not a date,@sprintcare hello,,
6,115716,True,Wed Nov 01 09:30:00 +0100 2017,no mention at all here,,
7,AppleSupport,False,Wed Nov 01 10:00:00 +0000 2017,@115717 We're sorry to hear that. DM us.,,99.0
8,115718,True,Wed Nov 01 11:00:00 +0000 2017,"He said ""hi"" to @AppleSupport",,
"""  # noqa: E501 (the real rows are long)


@pytest.fixture
def twcs_file(tmp_path: Path) -> Path:
    path = tmp_path / "twcs.csv"
    path.write_text(TWCS)
    return path


def test_twcs_threads_brands_and_times(twcs_file: Path) -> None:
    items = list(read_twcs(twcs_file))
    errors = [i for i in items if isinstance(i, ReplayError)]
    assert [e.line for e in errors] == [7]  # tweet 5: its record starts on physical line 7
    assert "created_at" in errors[0].reason

    mentions = [i for i in items if isinstance(i, RawMention)]
    # Emitted in created_at order, not file order.
    assert [m.external_id for m in mentions] == ["1", "2", "3", "4", "6", "7", "8"]
    m = {x.external_id: x for x in mentions}
    assert all(x.source == "twcs" for x in mentions)

    # Thread 1 -> 2 (brand reply) -> 3 (customer follow-up).
    assert {m[i].conversation_id for i in "123"} == {"twcs:1"}
    assert (m["1"].in_reply_to, m["2"].in_reply_to, m["3"].in_reply_to) == (None, "1", "2")
    assert [m[i].is_brand for i in "123"] == [False, True, False]
    # Brand of a customer tweet: the brand that replies in the thread, not the first @mention.
    assert [m[i].brand for i in "123"] == ["sprintcare"] * 3
    assert m["2"].author.id == "sprintcare"
    assert m["1"].text.endswith("no signal for 2 days")

    # No reply in the thread: the first @mention, in the brand's own spelling if known.
    assert m["4"].brand == "AppleSupport" and m["4"].conversation_id == "twcs:4"
    assert m["8"].brand == "AppleSupport" and m["8"].text == 'He said "hi" to @AppleSupport'
    assert m["6"].brand == "unknown"
    # A parent outside the file: the tweet is its own root.
    assert m["7"].conversation_id == "twcs:7" and m["7"].in_reply_to == "99"
    assert m["7"].is_brand and m["7"].brand == "AppleSupport"

    assert m["1"].created_at == ts("2017-10-31T22:05:10+00:00")
    assert m["6"].created_at == ts("2017-11-01T08:30:00+00:00")  # +0100 converted to UTC


async def test_twcs_replay_backfill_keeps_thread_order(
    twcs_file: Path, publisher: Publisher, settings: Settings
) -> None:
    report = await replay_file(twcs_file, None, publisher, backfill=True, progress=False)
    assert (report.read, report.published, len(report.errors)) == (8, 7, 1)

    records = await consume(settings, lambda rs: len(rs) >= 7)
    assert all(parse(r).backfill for r in records)
    thread = [r for r in records if r.key == b"twcs:1"]
    assert len({r.partition for r in thread}) == 1
    # Same key, same partition: the complaint, the brand's reply and the follow-up in order.
    assert [parse(r).external_id for r in sorted(thread, key=lambda r: r.offset)] == [
        "1",
        "2",
        "3",
    ]


def test_twcs_missing_columns_is_one_error(tmp_path: Path) -> None:
    path = tmp_path / "other.csv"
    path.write_text("id,text\n1,hello\n")
    items = list(read_twcs(path))
    assert len(items) == 1 and isinstance(items[0], ReplayError) and items[0].line == 1
    assert "tweet_id" in items[0].reason


def test_format_detection(tmp_path: Path) -> None:
    assert open_reader(tmp_path / "a.ndjson", None).format == "jsonl"
    assert open_reader(tmp_path / "a.CSV", None).format == "twcs"
    assert open_reader(tmp_path / "a.txt", "csv").format == "twcs"
    with pytest.raises(ValueError, match="suffix"):
        open_reader(tmp_path / "a.txt", None)


def test_parse_twitter_time() -> None:
    assert parse_twitter_time("Tue Oct 31 22:10:47 -0230 2017") == ts("2017-11-01T00:40:47+00:00")
    with pytest.raises(ValueError, match="bad created_at"):
        parse_twitter_time("2017-10-31 22:10:47")
