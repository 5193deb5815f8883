"""Training smoke tests for CI: tiny data in, heads that load and score out (not a model)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from services.classify.model.adapter import (
    ADAPTER_FILE,
    encoder_depth,
    encoder_prefix,
    short_hash,
)
from services.classify.model.encoder import DEFAULT_MAX_LENGTH, QUERY_PREFIX, default_backend
from services.classify.model.finetune import (
    XCI_EMOTIONS,
    XCI_SENTIMENTS,
    TuneConfig,
    finetune,
    load_xci,
    sentiment_rows,
)
from services.classify.model.heads import SEVERITY_LABELS, Heads
from services.classify.model.onnx_export import onnx_filename, static_activations
from services.classify.model.static_int8 import load_ranges
from services.classify.model.train import (
    encoder_fingerprint,
    load_sentiment,
    load_severity,
    stratified_folds,
    train_heads,
)
from services.classify.scoring import Classifier

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).parent / "fixtures"
SHARED_DATA = REPO.parent / "shared" / "data"
THIRDRING = Path(sys.executable).parent / "thirdring"


def test_train_heads_on_fixtures_gives_heads_that_load_and_score(
    tmp_path: Path, model_dir: Path
) -> None:
    meta = train_heads(
        FIXTURES,
        tmp_path / "heads",
        model_dir=model_dir,
        cache_dir=tmp_path / "cache",
        progress=False,
        threads=2,
    )
    assert meta["encoder"]["backend"] == default_backend()  # what the service serves
    assert {"complaint_holdout", "severity_holdout", "severity_cv"} <= set(meta["val_macro_f1"])
    assert meta["training_data"]["n_severity_train"] == 8
    heads = Heads.load(tmp_path / "heads")
    assert heads.severity is not None and heads.severity.labels == SEVERITY_LABELS
    assert (tmp_path / "heads" / "heads.safetensors").stat().st_size < 32_000  # small

    classifier = Classifier.load(model_dir, tmp_path / "heads", threads=2)
    texts = ["Worst service ever, I want my money back!", "Thanks, all good!"]
    scores = classifier.score([(t, None) for t in texts])
    # Trained and served on the same backend: the served version names these heads.
    assert [s.model_version for s in scores] == [heads.model_version] * 2
    emb = classifier.encoder.encode(texts)
    severity = heads.predict_severity(emb, p_complaint=np.array([0.9, 0.1]))
    assert severity is not None
    assert 1 <= severity[0].level <= 4 and severity[1].level == 0
    assert set(severity[0].probs) == {"1", "2", "3", "4"}
    assert abs(sum(severity[0].probs.values()) - 1) < 1e-3
    # The cache was filled under tmp and keyed by the fingerprint heads.json records.
    assert any((tmp_path / "cache" / "embeddings").iterdir())


def test_heads_without_severity_still_load(tmp_path: Path) -> None:
    heads = Heads.load()  # the committed heads may predate the severity head
    heads.severity = None
    heads.save(tmp_path)
    again = Heads.load(tmp_path)
    assert again.severity is None
    assert again.predict_severity(np.zeros((1, 384), dtype=np.float32)) is None


@pytest.mark.skipif(not THIRDRING.exists(), reason="thirdring entry point not installed")
def test_train_refuses_more_blocks_than_the_encoder_has(tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(THIRDRING), "model", "train", "--layers", "13", "--out", str(tmp_path / "heads")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "13 blocks asked for, the encoder has 12" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "heads").exists()  # refused before anything was written


@pytest.mark.skipif(not THIRDRING.exists(), reason="thirdring entry point not installed")
@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data not present")
def test_train_command_smoke_is_served_with_its_adapter(model_dir: Path, tmp_path: Path) -> None:
    """`thirdring model train` (LoRA fine-tuning) on 20 rows per file, one epoch; then the
    adapter's activation ranges are calibrated, it is merged and exported to int8 ONNX with
    static scales, and served with its heads."""
    # A model directory of its own (links to the base files), so the export stays in tmp.
    served_dir = tmp_path / "model"
    served_dir.mkdir()
    for item in model_dir.iterdir():
        if not item.name.endswith((".onnx", ".onnx.json")) and item.name != "thirdring-onnx.json":
            (served_dir / item.name).symlink_to(item.resolve())
    proc = subprocess.run(
        [
            *(str(THIRDRING), "model", "train", "--data", str(SHARED_DATA)),
            *("--limit", "20", "--epochs", "1", "--out", str(tmp_path / "heads")),
        ],
        cwd=REPO,
        env={**os.environ, "THIRDRING_MODEL_DIR": str(served_dir)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    heads = Heads.load(tmp_path / "heads")
    assert heads.severity is not None
    assert heads.meta["training_data"]["limit"] == 20
    assert set(heads.meta["val_macro_f1"]) == {"sentiment", "complaint", "severity"}
    # The recipe trains the three served heads only (the auxiliary tasks are off).
    assert set(heads.meta["history"][0]["loss"]) == {"sentiment", "complaint", "severity"}
    adapter = tmp_path / "heads" / ADAPTER_FILE
    assert heads.meta["adapter"]["hash"] == short_hash(adapter)
    ranges = load_ranges(adapter)  # measured for this adapter, beside it
    assert ranges and all(lo <= 0.0 <= hi and lo < hi for lo, hi in ranges.values())

    # The recipe's cut and prefix travel with the adapter into the int8 file and the encoder.
    recipe = TuneConfig()
    assert encoder_depth(adapter) == recipe.layers and encoder_prefix(adapter) == recipe.prefix
    assert heads.meta["encoder"]["layers"] == recipe.layers

    exported = served_dir / onnx_filename(adapter)
    assert exported.is_file() and static_activations(served_dir, adapter)
    graph = onnx.load(str(exported), load_external_data=False).graph
    # Six int8 linear layers per block kept (query, key, value, attention out, FFN in, out).
    assert sum(n.op_type == "MatMulIntegerToFloat" for n in graph.node) == 6 * recipe.layers
    before = exported.stat().st_mtime_ns
    classifier = Classifier.load(served_dir, tmp_path / "heads", threads=2, warm_up=False)
    assert exported.stat().st_mtime_ns == before  # training left it ready to serve
    assert classifier.encoder.static and classifier.encoder.batch_size > 1
    assert classifier.encoder.prefix == recipe.prefix
    assert classifier.model_version.startswith(f"e5-small-int8s+lora-{short_hash(adapter)}+heads-")
    (scores,) = classifier.score([("The app crashed again and I lost my order", None)])
    assert scores.model_version == classifier.model_version
    assert abs(sum(scores.sentiment.scores.values()) - 1.0) < 1e-3


def test_fingerprint_includes_the_backend(model_dir: Path, tmp_path: Path) -> None:
    torch_fp = encoder_fingerprint(model_dir, DEFAULT_MAX_LENGTH, QUERY_PREFIX, "torch")
    onnx_fp = encoder_fingerprint(model_dir, DEFAULT_MAX_LENGTH, QUERY_PREFIX, "onnx")
    assert torch_fp != onnx_fp and "onnx" in onnx_fp
    # torch keeps the pre-backend fingerprint, so existing caches and heads.json stay valid
    assert torch_fp == encoder_fingerprint(model_dir, DEFAULT_MAX_LENGTH, QUERY_PREFIX)
    committed = Heads.load().meta["encoder"]
    if committed.get("backend", "torch") == "torch":  # heads trained before the int8 export
        assert committed["fingerprint"] == torch_fp
    # a different ONNX export is a different cache
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.int8.onnx").write_bytes(b"a")
    first = encoder_fingerprint(tmp_path, DEFAULT_MAX_LENGTH, QUERY_PREFIX, "onnx")
    (tmp_path / "model.int8.onnx").write_bytes(b"b")
    assert encoder_fingerprint(tmp_path, DEFAULT_MAX_LENGTH, QUERY_PREFIX, "onnx") != first


def test_stratified_folds_partition_every_class() -> None:
    labels = np.array([0] * 7 + [1] * 5 + [2] * 3 + [3] * 11)
    folds = stratified_folds(labels, 5)
    joined = np.sort(np.concatenate(folds))
    assert (joined == np.arange(len(labels))).all()
    for cls in range(4):
        counts = [int((labels[f] == cls).sum()) for f in folds]
        assert max(counts) - min(counts) <= 1


def test_load_severity_limit_keeps_every_level() -> None:
    split = load_severity(FIXTURES, limit=1)
    assert sorted(split.labels.tolist()) == [0, 1, 2, 3]
    assert len(load_severity(FIXTURES).labels) == 8


def _write_xci(root: Path, header: str, rows: list[str]) -> Path:
    (root / "complaints-xci").mkdir(parents=True)
    (root / "complaints-xci" / "train.csv").write_text("\n".join([header, *rows]) + "\n")
    return root


def test_load_xci_reads_the_auxiliary_columns_when_present(tmp_path: Path) -> None:
    data = _write_xci(
        tmp_path,
        "id,text,complaint,severity,sentiment,emotion",
        [
            "1,my parcel is lost again,1,3,Negative,anger",
            "2,thanks for the help,0,0,Positive,joy",
            "3,where is my refund,1,2,Neutral,fear",  # a rare emotion counts as "other"
        ],
    )
    xci = load_xci(data)
    assert xci.severity.tolist() == [3, 0, 2]
    assert xci.emotion is not None and xci.sentiment is not None
    assert [XCI_EMOTIONS[i] for i in xci.emotion] == ["anger", "joy", "other"]
    assert [XCI_SENTIMENTS[i] for i in xci.sentiment] == ["Negative", "Positive", "Neutral"]
    # The evaluation format needs only text, complaint and severity: no auxiliary tasks then.
    bare = load_xci(FIXTURES)
    assert bare.emotion is None and bare.sentiment is None and len(bare.texts) == 16


def test_load_xci_names_the_row_with_an_unknown_sentiment(tmp_path: Path) -> None:
    data = _write_xci(tmp_path, "id,text,complaint,severity,sentiment", ["7,meh,0,0,Mixed"])
    with pytest.raises(ValueError, match="row 7: sentiment 'Mixed'"):
        load_xci(data)


def test_auxiliary_tasks_train_but_are_not_served(model_dir: Path, tmp_path: Path) -> None:
    """With ``aux_passes`` X-CI's emotion and sentiment train heads of their own, which are
    dropped: the saved heads are the served three. A skipped language is still validated.
    Two blocks and 4 rows a file keep it quick."""
    meta = finetune(
        SHARED_DATA,
        model_dir,
        tmp_path,
        config=TuneConfig(epochs=1, layers=2, aux_passes=1, skip_languages=("hindi",), threads=2),
        limit=4,
        log=lambda _: None,
    )
    losses = meta["history"][0]["loss"]
    assert set(losses) == {"sentiment", "complaint", "severity", "xci_emotion", "xci_sentiment"}
    assert all(np.isfinite(v) for v in losses.values())
    assert set(meta["val_macro_f1"]) == {"sentiment", "complaint", "severity"}
    assert "hindi" in meta["val_macro_f1"]["sentiment"]  # not trained on, still validated
    heads = Heads.load(tmp_path)
    assert heads.severity is not None and heads.meta["config"]["aux_passes"] == 1
    assert encoder_depth(tmp_path / ADAPTER_FILE) == 2


def test_sentiment_rows_leave_out_the_skipped_languages() -> None:
    sentiment = load_sentiment(FIXTURES)
    langs = sorted(sentiment)
    assert len(langs) >= 2
    texts, labels, groups = sentiment_rows(sentiment, "train")
    assert sorted(set(groups)) == langs and len(texts) == len(labels) == len(groups)
    texts, labels, groups = sentiment_rows(sentiment, "train", skip=[langs[0]])
    assert langs[0] not in groups and sorted(set(groups)) == langs[1:]
    assert texts == [t for lang in langs[1:] for t in sentiment[lang]["train"].texts]
    with pytest.raises(ValueError, match="no sentiment train rows"):
        sentiment_rows(sentiment, "train", skip=langs)
