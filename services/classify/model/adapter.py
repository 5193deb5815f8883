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


def adapter_metadata(path: Path) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors adapter, read from its header (no torch)."""
    with Path(path).open("rb") as fh:
        (size,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(size))
    return dict(header.get("__metadata__") or {})


def encoder_depth(adapter: Path | None) -> int | None:
    """How many of the base encoder's blocks ``adapter`` was trained on (None: all of them).

    A cut encoder (its first N blocks) does less work per post; the adapter records the cut so
    that every path that serves it (int8 export, torch backend) rebuilds the same network.
    Adapters written before the cut existed record nothing and mean the whole encoder.
    """
    if adapter is None:
        return None
    value = adapter_metadata(adapter).get("depth")
    return int(value) if value else None


def encoder_handles(adapter: Path | None) -> str | None:
    """What every @handle was written as when ``adapter`` was trained (None: left as is)."""
    if adapter is None:
        return None
    value = adapter_metadata(adapter).get("handles")
    return None if value is None else str(json.loads(value))


def encoder_prefix(adapter: Path | None) -> str:
    """The text put before every input when ``adapter`` was trained (e5's ``"query: "`` when
    it records none)."""
    from services.classify.model.encoder import QUERY_PREFIX

    if adapter is None:
        return QUERY_PREFIX
    value = adapter_metadata(adapter).get("prefix")
    return QUERY_PREFIX if value is None else str(json.loads(value))
