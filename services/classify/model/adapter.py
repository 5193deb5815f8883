"""Where the shipped LoRA adapter lives and how it is named; torch-free (serving imports it).

The adapter (``lora.py`` trains and merges it) sits beside the heads it was trained with, as
``<heads dir>/adapter.safetensors``. Its short hash names the int8 ONNX file it is merged into
(``onnx_export.onnx_filename``) and appears in every ``model_version``, so heads are never
served on an encoder tuned for other heads.
"""

from __future__ import annotations

import hashlib
import json
import struct
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


def canonicalize(path: Path) -> None:
    """Rewrite a safetensors file's JSON header with sorted keys, in place.

    safetensors writes its ``__metadata__`` in hash-map order, which changes from one process
    to the next: two training runs with bit-identical weights gave files (and so hashes and
    ``model_version``s) that differed. Sorted, the same weights give the same bytes. The tensor
    data is untouched; its offsets are relative to the end of the header.
    """
    raw = Path(path).read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + size])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data stays 8-byte aligned, as safetensors writes it
    Path(path).write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + size :])
