"""``thirdring model evaluate`` on the fixture data: per-language macro-F1 and confusions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from services.classify.model.evaluate import (
    BOOTSTRAP_SEED,
    HANDLES_REMOVED,
    confusion_matrix,
    evaluate,
    find_datasets,
    macro_f1_interval,
    scores_from_confusion,
)
from services.classify.model.heads import SENTIMENT_LABELS, SEVERITY_LABELS, Heads, LinearHead
from services.classify.model.inputs import without_handles
from services.classify.scoring import Classifier

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).parent / "fixtures"
THIRDRING = Path(sys.executable).parent / "thirdring"
# Fixture sizes: val splits of english and italian (6 each) + 60 + 41 Estonian posts;
# complaints from the 16-row CSV + the Estonian posts; severity on their complaints.
N_SENTIMENT, N_COMPLAINT, N_SEVERITY = 6 + 6 + 60 + 41, 16 + 60 + 41, 8 + 25 + 17


def _check_report(report: dict, tasks: dict[str, int]) -> None:
    assert set(report["tasks"]) == set(tasks)
    for name, n in tasks.items():
        task = report["tasks"][name]
        matrix = np.asarray(task["confusion"])
        assert matrix.shape == (len(task["labels"]),) * 2
        assert matrix.sum() == task["n"] == n
        assert 0.0 <= task["macro_f1"] <= 1.0
        low, high = task["macro_f1_ci"]
        assert 0.0 <= low <= high <= 1.0
    for ds in report["datasets"]:
        assert np.asarray(ds["confusion"]).sum() == ds["n"]
        low, high = ds["macro_f1_ci"]
        assert low <= high and (low < high or ds["macro_f1"] in (0.0, 1.0))


@pytest.mark.skipif(not THIRDRING.exists(), reason="thirdring entry point not installed")
def test_evaluate_command_on_fixtures(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    proc = subprocess.run(
        [str(THIRDRING), "model", "evaluate", "--data", str(FIXTURES), "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "macro-F1" in proc.stdout and "confusion" in proc.stdout
    assert "complaint head on the sentiment sets" in " ".join(proc.stdout.split())
    report = json.loads(out.read_text())
    tasks = {"sentiment": N_SENTIMENT, "complaint": N_COMPLAINT}
    if Heads.load().severity is not None:
        tasks["severity"] = N_SEVERITY
    _check_report(report, tasks)
    by_lang = report["tasks"]["sentiment"]["by_language"]
    assert set(by_lang) == {"english", "italian", "estonian"}
    assert set(by_lang["english"]) == {"val"}  # train splits are skipped by default
    for splits in by_lang.values():
        for figures in splits.values():
            assert 0.0 <= figures["macro_f1"] <= 1.0
    estonian = report["tasks"]["complaint"]["by_language"]["estonian"]
    assert {split: figures["n"] for split, figures in estonian.items()} == {
        "estonian": 60,
        "estonian-informal": 41,
    }


def test_evaluate_with_a_severity_head(classifier: Classifier) -> None:
    base = classifier.heads
    rng = np.random.default_rng(0)
    heads = Heads(
        sentiment=base.sentiment,
        complaint=base.complaint,
        meta=base.meta,
        short_hash=base.short_hash,
        severity=LinearHead(
            "severity",
            SEVERITY_LABELS,
            rng.normal(size=(4, base.sentiment.weight.shape[1])).astype(np.float32),
            np.zeros(4, dtype=np.float32),
        ),
    )
    report = evaluate(FIXTURES, encoder=classifier.encoder, heads=heads, include_train=True)
    _check_report(
        report, {"sentiment": N_SENTIMENT + 12, "complaint": N_COMPLAINT, "severity": N_SEVERITY}
    )
    train = report["tasks"]["sentiment"]["by_language"]["english"]["train"]
    assert train["seen_in_training"] is True
    assert report["backend"] == classifier.encoder.backend


def test_complaint_flags_on_sentiment_sets_are_the_served_decisions(
    classifier: Classifier,
) -> None:
    report = evaluate(FIXTURES, classifier)
    sets = {(d.language, d.split): d for d in find_datasets(FIXTURES) if d.task == "sentiment"}
    entries = [d for d in report["datasets"] if d["task"] == "sentiment"]
    assert {(e["language"], e["split"]) for e in entries} == set(sets)
    for entry in entries:
        ds = sets[(entry["language"], entry["split"])]
        served = classifier.score([(text, None) for text in ds.texts])
        for k, label in enumerate(SENTIMENT_LABELS):
            mine = [s for s, gold in zip(served, ds.labels, strict=True) if gold == k]
            expected = {"n": len(mine), "flagged": sum(s.complaint.is_complaint for s in mine)}
            assert entry["complaint_flagged"][label] == expected, (entry["language"], label)
    assert not any("complaint_flagged" in d for d in report["datasets"] if d["task"] != "sentiment")
    # The Estonian fixture has both labels: its complaints are negative posts, mostly flagged.
    estonian = next(e for e in entries if e["language"] == "estonian")["complaint_flagged"]
    assert estonian["negative"]["flagged"] > estonian["positive"]["flagged"]


def test_complaint_sets_with_handles_are_scored_again_without_them(
    classifier: Classifier,
) -> None:
    report = evaluate(FIXTURES, classifier)
    copies = [d for d in report["datasets"] if d.get("handles_removed")]
    originals = {
        (d["language"], d["split"]): d
        for d in report["datasets"]
        if d["task"] == "complaint" and not d.get("handles_removed")
    }
    assert copies, "the fixtures have complaint posts with @handles"
    sets = {(d.language, d.split): d for d in find_datasets(FIXTURES) if d.task == "complaint"}
    for copy in copies:
        split = copy["split"].removesuffix(f", {HANDLES_REMOVED}")
        original, ds = originals[(copy["language"], split)], sets[(copy["language"], split)]
        assert copy["task"] == "complaint" and copy["n"] == original["n"]
        served = classifier.score([(without_handles(t), None) for t in ds.texts])
        pred = np.asarray([s.complaint.is_complaint for s in served], dtype=np.int64)
        assert copy["confusion"] == confusion_matrix(np.asarray(ds.labels), pred, 2).tolist()
    # The copies are a second reading of the same posts: the totals count each post once.
    assert report["tasks"]["complaint"]["n"] == sum(d["n"] for d in originals.values())
    assert not any(HANDLES_REMOVED in split for split in _splits(report, "complaint"))


def _splits(report: dict, task: str) -> set[str]:
    return {split for splits in report["tasks"][task]["by_language"].values() for split in splits}


def test_find_datasets_layouts() -> None:
    sets = find_datasets(FIXTURES)
    keys = {(d.task, d.language, d.split) for d in sets}
    assert ("sentiment", "english", "val") in keys and ("sentiment", "english", "train") not in keys
    assert ("complaint", "complaints-xci", "train") in keys
    assert ("severity", "estonian", "estonian") in keys
    estonian = next(d for d in sets if d.task == "sentiment" and d.language == "estonian")
    assert sorted(set(estonian.labels)) == [0, 1, 2] and len(estonian.labels) == 60


def test_scores_from_confusion() -> None:
    matrix = confusion_matrix(np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, 0]), 3)
    assert matrix.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    scores = scores_from_confusion(matrix)
    assert scores["accuracy"] == 0.6
    assert scores["f1_per_class"] == [0.5, 0.8, 0.0]
    assert scores["macro_f1"] == round((0.5 + 0.8) / 3, 4)


def test_macro_f1_interval_matches_a_loop_over_the_same_resamples() -> None:
    rng = np.random.default_rng(1)
    gold = rng.integers(0, 3, size=200)
    pred = np.where(rng.random(200) < 0.7, gold, rng.integers(0, 3, size=200))
    low, high = macro_f1_interval(gold, pred, 3, resamples=300)
    # The reference: the same resamples (same seed, same draw), each scored on its own.
    picks = np.random.default_rng(BOOTSTRAP_SEED).integers(0, 200, size=(300, 200))
    scores = [
        scores_from_confusion(confusion_matrix(gold[p], pred[p], 3))["macro_f1"] for p in picks
    ]
    ref_low, ref_high = np.quantile(scores, [0.025, 0.975])
    assert low == pytest.approx(ref_low, abs=1e-3) and high == pytest.approx(ref_high, abs=1e-3)
    point = scores_from_confusion(confusion_matrix(gold, pred, 3))["macro_f1"]
    assert low < point < high


def test_macro_f1_interval_narrows_with_more_items() -> None:
    gold = np.array([0, 0, 1, 1, 2, 2, 0, 1, 2, 1] * 3)
    pred = np.array([0, 1, 1, 1, 2, 0, 0, 1, 2, 2] * 3)
    small = macro_f1_interval(gold, pred, 3)
    large = macro_f1_interval(np.tile(gold, 20), np.tile(pred, 20), 3)  # same F1, 20x the items
    assert large[1] - large[0] < (small[1] - small[0]) / 3
    assert macro_f1_interval(gold, gold, 3) == (1.0, 1.0)  # nothing to resample away
    assert macro_f1_interval(gold, pred, 3) == small  # seeded: the same every run


def test_missing_data_dir_is_an_error(classifier: Classifier, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        evaluate(tmp_path, classifier)


@pytest.mark.parametrize("label", ["angry", "7", None])
def test_a_bad_sentiment_label_names_itself(tmp_path: Path, label: object) -> None:
    (tmp_path / "bad.jsonl").write_text(json.dumps({"text": "x", "sentiment": label or []}))
    with pytest.raises(ValueError, match="is not 0, 1, 2 or a label name"):
        find_datasets(tmp_path)
