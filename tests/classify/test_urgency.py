"""Urgency: intents in several languages, the gate for non-complaints, levels and reasons."""

from __future__ import annotations

import pytest

from services.classify.urgency import assess_urgency, level_for, match_intents
from shared.events import Author


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Voglio il rimborso, il servizio non funziona da ieri!", {"refund", "outage"}),
        (
            "Ennesimo disservizio, mando la disdetta e chiamo l'avvocato",
            {"outage", "cancel", "legal"},
        ),
        ("Internet ei tööta juba kaks päeva, tahan raha tagasi", {"outage", "refund"}),
        ("Jälle rike! Lõpetan lepingu ja pöördun advokaadi poole", {"outage", "cancel", "legal"}),
        ("Internet ei toota, ma tahan raha tagasi", {"outage", "refund"}),  # typed without ö
        (
            "Your app is down again. I want a refund or I cancel my subscription",
            {"outage", "refund", "cancel"},
        ),
        ("My charger caught fire and burned my hand", {"safety"}),
        ("I will sue you, my lawyer is on it", {"legal"}),
        ("La luz no funciona y quiero un reembolso", {"outage", "refund"}),
        ("Le réseau est en panne, je vais résilier", {"outage", "cancel"}),
        ("Das Internet funktioniert nicht, ich kündige", {"outage", "cancel"}),
        ("Está sem internet, quero o estorno", {"outage", "refund"}),
    ],
)
def test_intents(text: str, expected: set[str]) -> None:
    assert set(match_intents(text)) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Thanks for the great brand experience!",
        "Sono arrivato in ritardo a causa del traffico",  # "causa" is not legal
        "Das Gericht war lecker",  # "Gericht" is also a dish
        "Aitäh, kõik toimib suurepäraselt",
    ],
)
def test_no_false_intents(text: str) -> None:
    assert match_intents(text) == []


def test_angry_complaint_with_intent_is_high_and_explained() -> None:
    r = assess_urgency(
        "Il servizio non funziona e voglio il rimborso, chiamo l'avvocato",
        p_negative=0.92,
        p_complaint=0.88,
        sentiment_label="negative",
    )
    assert r.level == "P1"
    assert r.reasons[:3] == ["intent:legal", "intent:outage", "intent:refund"]
    assert "complaint 0.88" in r.reasons and "negative sentiment 0.92" in r.reasons


def test_vip_and_reach_raise_a_complaint() -> None:
    plain = assess_urgency(
        "delivery late again", p_negative=0.8, p_complaint=0.8, sentiment_label="negative"
    )
    vip = assess_urgency(
        "delivery late again",
        p_negative=0.8,
        p_complaint=0.8,
        sentiment_label="negative",
        author=Author(id="a", followers=120_000, vip=True),
    )
    assert vip.score > plain.score
    assert "vip customer" in vip.reasons and "reach 120k followers" in vip.reasons
    assert level_for(vip.score) < level_for(plain.score) or vip.level == "P1"


def test_non_complaint_positive_or_neutral_is_p4_even_for_a_vip() -> None:
    vip = Author(id="v", followers=2_000_000, vip=True)
    thanks = assess_urgency(
        "Thanks for the quick refund!",
        p_negative=0.02,
        p_complaint=0.1,
        sentiment_label="positive",
        author=vip,
    )
    assert thanks.level == "P4" and thanks.score <= 0.3
    neutral = assess_urgency(
        "What time do you open?",
        p_negative=0.1,
        p_complaint=0.2,
        sentiment_label="neutral",
        author=vip,
    )
    assert neutral.level == "P4"


def test_levels() -> None:
    assert [level_for(s) for s in (0.95, 0.8, 0.79, 0.6, 0.35, 0.34, 0.0)] == [
        "P1",
        "P1",
        "P2",
        "P2",
        "P3",
        "P4",
        "P4",
    ]
