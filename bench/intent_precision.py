"""How often each urgency intent keyword fires, on complaints and on everything else.

The intent lists (services/classify/urgency.py) are matched on accent-folded text in every
language at once, so one language's keyword can fire inside another language's word (the
French "panne" in "panneaux", the Spanish "humo" in "humor"). This scans labelled data laid
out like ../shared/data and shows, per intent, how many posts it fires on among general
tweets (the sentiment sets: almost none are complaints to a company), complaints and
non-complaints, then the patterns that fire most, with where and a sample of each hit.

    .venv/bin/python -m bench.intent_precision --data ../shared/data [--top 40] [--json F]

A pattern whose hits are mostly general tweets in a language other than its own is the one
to look at first.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from services.classify.model.evaluate import find_datasets
from services.classify.urgency import INTENT_PATTERNS, compile_keywords, fold

SAMPLES = 2  # hits kept per pattern
CONTEXT = 30  # characters kept either side of a hit


def labelled_posts(data_dir: Path) -> list[tuple[str, str, str]]:
    """(group, language, text) per post; group "general", "complaint" or "not a complaint".

    Every split is read, train included: this checks keyword lists, not the model.
    """
    posts: dict[str, tuple[str, str]] = {}
    for ds in find_datasets(data_dir, include_train=True):
        if ds.task == "sentiment":
            for text in ds.texts:
                posts.setdefault(text, ("general", ds.language))
        elif ds.task == "complaint":
            for text, label in zip(ds.texts, ds.labels, strict=True):
                posts[text] = ("complaint" if label else "not a complaint", ds.language)
    return [(group, lang, text) for text, (group, lang) in posts.items()]


def scan(posts: list[tuple[str, str, str]]) -> dict[str, Any]:
    """Hits per intent and group; per pattern, hits by group and by the posts' language."""
    folded = [(group, lang, fold(text)) for group, lang, text in posts]
    groups = Counter(group for group, _, _ in posts)
    by_intent: dict[str, Counter[str]] = {name: Counter() for name in INTENT_PATTERNS}
    patterns: list[dict[str, Any]] = []
    for intent, languages in INTENT_PATTERNS.items():
        whole = compile_keywords(*(p for frags in languages.values() for p in frags))
        for group, _, text in folded:
            if whole.search(text):
                by_intent[intent][group] += 1
        for lang, frags in languages.items():
            for pattern in frags:
                rx = compile_keywords(pattern)
                hits: Counter[str] = Counter()
                languages: Counter[str] = Counter()
                samples: list[str] = []
                for group, post_lang, text in folded:
                    m = rx.search(text)
                    if m is None:
                        continue
                    hits[group] += 1
                    languages[post_lang] += 1
                    if len(samples) < SAMPLES:
                        samples.append(text[max(0, m.start() - CONTEXT) : m.end() + CONTEXT])
                if hits:
                    patterns.append(
                        {
                            "intent": intent,
                            "lang": lang,
                            "pattern": pattern,
                            "hits": dict(hits),
                            "languages": dict(languages),
                            "total": sum(hits.values()),
                            "samples": samples,
                        }
                    )
    patterns.sort(key=lambda p: (-p["total"], p["intent"], p["pattern"]))
    return {
        "posts": dict(groups),
        "intents": {name: dict(c) for name, c in by_intent.items()},
        "patterns": patterns,
    }


def render(report: dict[str, Any], console: Console, top: int) -> None:
    groups = sorted(report["posts"])
    table = Table(title="posts an intent fires on, by kind of post")
    table.add_column("intent")
    for group in groups:
        table.add_column(f"{group} (of {report['posts'][group]})", justify="right")
    for intent, hits in report["intents"].items():
        table.add_row(intent, *(str(hits.get(group, 0)) for group in groups))
    console.print(table)
    ranked = Table(title=f"the {top} patterns that fire most")
    for col in ("hits", "intent", "lang", "pattern", "by kind", "posts' languages", "sample"):
        ranked.add_column(col, overflow="fold")
    for p in report["patterns"][:top]:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(p["hits"].items()))
        langs = ", ".join(f"{k} {v}" for k, v in Counter(p["languages"]).most_common())
        ranked.add_row(
            str(p["total"]), p["intent"], p["lang"], p["pattern"], kinds, langs, p["samples"][0]
        )
    console.print(ranked)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="folder laid out like ../shared/data")
    ap.add_argument("--top", type=int, default=40, help="patterns to list")
    ap.add_argument("--json", type=Path, help="write the whole report here")
    args = ap.parse_args(argv)
    try:
        posts = labelled_posts(args.data)
    except (OSError, ValueError) as exc:  # no folder, a malformed file
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not posts:
        print(f"error: no labelled posts under {args.data}", file=sys.stderr)
        return 2
    report = scan(posts)
    render(report, Console(), args.top)
    if args.json:
        args.json.write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
