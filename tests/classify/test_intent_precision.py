"""``bench/intent_precision``: per-intent and per-pattern keyword hits on labelled data."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from bench.intent_precision import labelled_posts, main, scan
from services.classify.urgency import match_intents

FIXTURES = Path(__file__).parent / "fixtures"


def test_scan_counts_what_the_served_matcher_matches() -> None:
    posts = labelled_posts(FIXTURES)
    groups = Counter(group for group, _, _ in posts)
    # Estonian posts carry complaint labels, so they count as complaints or not, not general.
    assert groups["complaint"] == 8 + 25 + 17
    assert groups["not a complaint"] == 8 + 35 + 24
    assert groups["general"] > 0
    report = scan(posts)
    for intent, hits in report["intents"].items():
        expected = Counter(group for group, _, text in posts if intent in match_intents(text))
        assert hits == dict(expected), intent
    # Every pattern's hits add up, and each names the posts' languages.
    for p in report["patterns"]:
        assert p["total"] == sum(p["hits"].values()) == sum(p["languages"].values())
        assert p["samples"]
    totals = [p["total"] for p in report["patterns"]]
    assert totals == sorted(totals, reverse=True)


def test_a_word_of_another_language_is_not_a_hit() -> None:
    report = scan(
        [
            ("general", "italian", "La Moringa aiuta l'Africa grazie alle sue proprietà"),
            ("complaint", "english", "Fix it or I will sue you"),
        ]
    )
    assert report["intents"]["legal"] == {"complaint": 1}
    legal = [p for p in report["patterns"] if p["intent"] == "legal"]
    assert legal and all(p["languages"] == {"english": 1} for p in legal)
    assert all("sue you" in p["samples"][0] for p in legal)


def test_command_writes_the_report(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "intents.json"
    assert main(["--data", str(FIXTURES), "--top", "5", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report) == {"posts", "intents", "patterns"}
    assert "posts an intent fires on" in " ".join(capsys.readouterr().out.split())


def test_a_missing_or_empty_data_folder_is_a_clear_error(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["--data", str(tmp_path / "nowhere")]) == 2
    assert "no data folder" in capsys.readouterr().err
    assert main(["--data", str(tmp_path)]) == 2
    assert "no labelled posts" in capsys.readouterr().err
