"""The classifier's model: a prepared multilingual-e5-small encoder plus small linear heads."""

from __future__ import annotations

import os
from pathlib import Path

MODEL_DIR_ENV = "THIRDRING_MODEL_DIR"
DEFAULT_MODEL_DIR = Path("var/models/multilingual-e5-small")


def default_model_dir() -> Path:
    """Where the prepared encoder lives: ``$THIRDRING_MODEL_DIR`` or ``var/models/...``.

    Relative to the working directory so the embedded mode keeps everything under ``var/``.
    """
    value = os.environ.get(MODEL_DIR_ENV, "").strip()
    return Path(value) if value else DEFAULT_MODEL_DIR


__all__ = ["DEFAULT_MODEL_DIR", "MODEL_DIR_ENV", "default_model_dir"]
