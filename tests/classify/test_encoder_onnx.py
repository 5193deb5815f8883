"""The int8 ONNX encoder: agrees with torch fp32, batch-invariant, serves without torch."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from services.classify.model.adapter import adapter_for
from services.classify.model.encoder import (
    DEFAULT_BATCH_SIZE,
    ENCODER_TAGS,
    STATIC_TAG,
    Encoder,
    length_batches,
)
from services.classify.model.onnx_export import export_onnx, onnx_filename, onnx_ready

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "sentiment-umsab"
FALLBACK = [
    "Il servizio non funziona da tre giorni, voglio il rimborso!",
    "Internet ei tööta juba kaks päeva, lõpetan lepingu.",
    "Thanks   so much for the quick help 🙏 @brand https://t.co/abc",
    "El pedido llegó roto y nadie responde.",
    "ok",
    "Ich warte seit zwei Wochen auf meine Bestellung und niemand antwortet mir, unglaublich.",
]


def real_tweets(per_language: int = 6) -> list[str]:
    """A few real tweets of each language (UMSAB val files), or fixed texts without the data."""
    texts: list[str] = []
    for lang in ("english", "italian", "spanish", "french", "german", "portuguese", "arabic"):
        path = DATA / lang / "val_text.txt"
        if path.is_file():
            lines = [t for t in path.read_text().splitlines() if t.strip()]
            texts += lines[:per_language]
    return texts or FALLBACK


@pytest.fixture(scope="module")
def onnx_encoder(model_dir: Path) -> Encoder:
    return Encoder(model_dir, backend="onnx", threads=2)


@pytest.fixture(scope="module")
def torch_encoder(model_dir: Path) -> Encoder:
    return Encoder(model_dir, backend="torch", threads=2)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_export_is_there_and_idempotent(model_dir: Path) -> None:
    adapter = adapter_for()  # the shipped fine-tuning adapter, merged into the served file
    assert onnx_ready(model_dir, adapter)
    path = model_dir / onnx_filename(adapter)
    before = path.stat().st_mtime_ns
    assert export_onnx(model_dir, adapter=adapter) == path
    assert path.stat().st_mtime_ns == before
    assert path.stat().st_size < 150 * 2**20  # embeddings quantized too (fp32 would be ~400 MB)


def test_int8_agrees_with_torch_fp32(onnx_encoder: Encoder, torch_encoder: Encoder) -> None:
    texts = real_tweets()
    int8 = onnx_encoder.encode(texts)
    fp32 = torch_encoder.encode(texts)
    assert int8.shape == fp32.shape == (len(texts), 384) and int8.dtype == np.float32
    assert np.allclose(np.linalg.norm(int8, axis=1), 1.0, atol=1e-4)
    cos = cosine(int8, fp32)
    # The rank-16 adapter's int8 file measured min 0.968, mean 0.990 on these tweets (rank 8:
    # above 0.97 / 0.99); what int8 costs in F1 is measured in docs/model-card.md.
    assert cos.min() >= 0.96, cos
    assert cos.mean() >= 0.985, cos.mean()


def test_torch_batches_by_length_equal_one_by_one(torch_encoder: Encoder) -> None:
    texts = real_tweets(3)
    torch_encoder.batch_size = 4  # several batches of mixed lengths
    try:
        batched = torch_encoder.encode(texts)
    finally:
        torch_encoder.batch_size = 64
    single = np.concatenate([torch_encoder.encode([t]) for t in texts])
    assert np.allclose(batched, single, atol=2e-4)


def test_onnx_scores_a_text_the_same_whatever_it_is_scored_with(onnx_encoder: Encoder) -> None:
    # The served file quantizes activations with calibrated constant scales (static_int8), so
    # a text's embedding cannot depend on its batch-mates: batched, alone and reshuffled agree.
    assert onnx_encoder.static and onnx_encoder.tag == STATIC_TAG
    assert onnx_encoder.batch_size == DEFAULT_BATCH_SIZE
    texts = real_tweets(6)
    together = onnx_encoder.encode(texts)
    alone = np.concatenate([onnx_encoder.encode([t]) for t in texts])
    shuffled = onnx_encoder.encode(texts[::-1] + texts[:5])[: len(texts)][::-1]
    assert np.abs(together - alone).max() <= 1e-6
    assert np.abs(together - shuffled).max() <= 1e-6


def test_static_file_has_no_dynamic_quantization_left(model_dir: Path) -> None:
    import onnx

    model = onnx.load(str(model_dir / onnx_filename(adapter_for())), load_external_data=False)
    ops = Counter(n.op_type for n in model.graph.node)
    assert ops["DynamicQuantizeLinear"] == 0 and ops["MatMulInteger"] == 0
    assert ops["QuantizeLinear"] > 0 and ops["MatMulIntegerToFloat"] > 0


def test_dynamic_file_runs_one_text_per_run_unless_asked(model_dir: Path, base_int8: Path) -> None:
    """Without calibrated ranges (the base encoder) activations are quantized per run: one
    text per run by default; batching on request moves embeddings only a little."""
    plain = Encoder(model_dir, backend="onnx", threads=2, adapter=None)
    assert not plain.static and plain.batch_size == 1 and plain.tag == ENCODER_TAGS["onnx"]
    batched = Encoder(model_dir, backend="onnx", threads=2, batch_size=64, adapter=None)
    texts = real_tweets(3)
    cos = cosine(batched.encode(texts), np.concatenate([batched.encode([t]) for t in texts]))
    assert cos.min() >= 0.97, cos
    assert cos.mean() >= 0.99, cos.mean()


def test_length_batches_cover_every_index_once() -> None:
    lengths = np.array([30, 5, 64, 10, 10, 20, 40, 3, 64, 64, 7])
    batches = list(length_batches(lengths, 4, max_tokens=100))
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    for b in batches:
        assert len(b) <= 4
        assert len(b) == 1 or len(b) * lengths[b].max() <= 100
    assert (np.diff(lengths[flat]) >= 0).all()  # shortest first
    assert [len(b) for b in length_batches(lengths, 3)] == [3, 3, 3, 2]


def test_backend_choice(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THIRDRING_ENCODER_BACKEND", "nope")
    with pytest.raises(ValueError, match="unknown encoder backend"):
        Encoder(model_dir)
    assert ENCODER_TAGS == {"torch": "e5-small-q4", "onnx": "e5-small-int8"}


def test_serving_process_never_imports_torch(model_dir: Path, tmp_path: Path) -> None:
    """The classify process loads and scores on the int8 model without torch/transformers."""
    script = f"""
import json, sys
from services.classify.scoring import Classifier
c = Classifier.load({str(model_dir)!r}, threads=1)
s = c.score([("Il servizio non funziona, voglio il rimborso!", None)])[0]
heavy = sorted(m for m in ("torch", "transformers") if m in sys.modules)
print(json.dumps({{"version": c.model_version, "heavy": heavy, "label": s.sentiment.label}}))
"""
    env = {"THIRDRING_ENCODER_BACKEND": "onnx", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["heavy"] == []
    version = r"e5-small-int8s?(\+lora-[0-9a-f]{10})?\+heads-[0-9a-f]{10}"
    assert re.fullmatch(version, out["version"])
