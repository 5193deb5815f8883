"""Language detection with lingua, restricted to the languages a brand's feed plausibly holds.

Restricting the candidate set makes lingua both faster and more accurate on tweet-length text
(fewer look-alike languages to confuse) and bounds its memory. The detector is built once per
process and reused: building it loads the n-gram models, the expensive part.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lingua import LanguageDetector

UNDETERMINED = "und"
MIN_LETTERS = 3  # fewer letters than this (after removing links, handles, tags) is "und"

# lingua names -> the ISO 639-1 codes we publish. Norwegian Bokmål/Nynorsk both map to "no".
SUPPORTED: dict[str, str] = {
    "ENGLISH": "en",
    "ITALIAN": "it",
    "ESTONIAN": "et",
    "SPANISH": "es",
    "FRENCH": "fr",
    "GERMAN": "de",
    "PORTUGUESE": "pt",
    "DUTCH": "nl",
    "ARABIC": "ar",
    "HINDI": "hi",
    "POLISH": "pl",
    "SWEDISH": "sv",
    "FINNISH": "fi",
    "DANISH": "da",
    "BOKMAL": "no",
    "NYNORSK": "no",
    "TURKISH": "tr",
    "RUSSIAN": "ru",
    "UKRAINIAN": "uk",
    "LATVIAN": "lv",
    "LITHUANIAN": "lt",
    "JAPANESE": "ja",
    "CHINESE": "zh",
}

_NOISE = re.compile(r"https?://\S+|www\.\S+|[@#][\w.]+|&\w+;|\d+", re.UNICODE)
_detector: LanguageDetector | None = None
_lock = threading.Lock()


def low_accuracy_default() -> bool:
    """Low-accuracy mode unless ``THIRDRING_LANG_ACCURACY=high``.

    Measured on this project's 2-core machine with the 23 languages above: high accuracy
    loads about 570 MB of n-gram models (about 2 s); low accuracy about 30 MB (0.1 s). On the
    UMSAB val tweets high accuracy is 3-11 points better for fr/de/it/pt (e.g. it 98% vs 93%),
    so switch it on where memory allows.
    """
    return os.environ.get("THIRDRING_LANG_ACCURACY", "low").strip().lower() != "high"


def get_detector(low_accuracy: bool | None = None) -> LanguageDetector:
    """The process-wide detector (built on first use, thread-safe)."""
    global _detector
    if _detector is None:
        with _lock:
            if _detector is None:
                from lingua import Language, LanguageDetectorBuilder

                languages = [getattr(Language, name) for name in SUPPORTED]
                builder = LanguageDetectorBuilder.from_languages(*languages)
                if low_accuracy if low_accuracy is not None else low_accuracy_default():
                    builder = builder.with_low_accuracy_mode()
                # Load the models now, so the first message does not pay for it.
                _detector = builder.with_preloaded_language_models().build()
    return _detector


def _letters(text: str) -> int:
    return sum(ch.isalpha() for ch in _NOISE.sub(" ", text))


def _clean(text: str) -> str:
    """Links, handles and hashtags say nothing about the language (and skew short posts)."""
    return _NOISE.sub(" ", text).strip()


def detect_language(text: str) -> str:
    """ISO 639-1 code of ``text``, or ``"und"`` when empty, too short or not recognised."""
    return detect_languages([text])[0]


def detect_languages(texts: Sequence[str]) -> list[str]:
    """Batch version of :func:`detect_language` (lingua spreads the batch over its threads)."""
    out = [UNDETERMINED] * len(texts)
    todo = [(i, _clean(t)) for i, t in enumerate(texts) if t and _letters(t) >= MIN_LETTERS]
    if not todo:
        return out
    detector = get_detector()
    found = detector.detect_languages_in_parallel_of([t for _, t in todo])
    for (i, _), lang in zip(todo, found, strict=True):
        if lang is not None:
            out[i] = SUPPORTED.get(lang.name, lang.iso_code_639_1.name.lower())
    return out
