"""Language detection: the languages the product promises, and "und" for noise."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from services.classify.language import detect_language, detect_languages


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("Il servizio clienti non risponde da tre giorni, è una vergogna", "it"),
        ("Internet ei tööta juba kaks päeva ja keegi ei vasta telefonile", "et"),
        ("The delivery is late again and nobody answers the phone", "en"),
        ("@brand El pedido llegó roto y nadie responde https://t.co/x", "es"),
    ],
)
def test_detects(text: str, lang: str) -> None:
    assert detect_language(text) == lang


@pytest.mark.parametrize("text", ["", "   ", "👍👍", "@brand https://t.co/abc #x", "ok", "12345"])
def test_undetermined(text: str) -> None:
    assert detect_language(text) == "und"


def test_batch_keeps_order() -> None:
    texts = [
        "",
        "Grazie mille per l'aiuto di oggi!",
        "Suur aitäh kiire abi eest!",
        "Thank you so much for the help!",
    ]
    assert detect_languages(texts) == ["und", "it", "et", "en"]


@pytest.mark.parametrize(("name", "at_least"), [("estonian", 60), ("estonian-informal", 39)])
def test_our_estonian_posts_are_detected_as_estonian(name: str, at_least: int) -> None:
    # Routing rules match on language ("et" -> the Estonian team), so a post typed without
    # diacritics ("nadalal" for "nädalal") must still be Estonian; Finnish is the look-alike.
    path = Path(__file__).parent / "fixtures" / f"{name}.jsonl"
    texts = [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines()]
    detected = detect_languages(texts)
    assert sum(lang == "et" for lang in detected) >= at_least, Counter(detected)
