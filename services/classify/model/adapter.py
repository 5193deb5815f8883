"""Where the shipped LoRA adapter lives and how it is named; torch-free (serving imports it).

The adapter (``lora.py`` trains and merges it) sits beside the heads it was trained with, as
``<heads dir>/adapter.safetensors``. Its short hash names the int8 ONNX file it is merged into
(``onnx_export.onnx_filename``) and appears in every ``model_version``, so heads are never
served on an encoder tuned for other heads.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

ADAPTER_FILE = "adapter.safetensors"


def adapter_for(heads_dir: Path | None = None) -> Path | None:
    """The adapter beside the heads in ``heads_dir`` (default: the shipped heads), or None."""
    from services.classify.model.heads import DEFAULT_HEADS_DIR

    path = Path(heads_dir if heads_dir is not None else DEFAULT_HEADS_DIR) / ADAPTER_FILE
    return path if path.is_file() else None


def short_hash(path: Path) -> str:
    """The first 10 hex digits of the file's sha256."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:10]
