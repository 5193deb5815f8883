"""Evaluate the served classifier on labelled data: macro-F1 per language and task, confusions.

``thirdring model evaluate --data DIR [--heads DIR] [--json PATH]``

Embeddings come from the service's own ``Classifier`` (its ``Encoder``, backend included) and
the decisions are the served ones (sentiment = arg max, complaint = P >= the scoring
threshold, severity = :meth:`Heads.predict_severity`), so the figures measure what is served.

What is read under ``DIR`` (recursively; the layout of ``../shared/data`` works as is):

* a folder with ``<split>_text.txt`` / ``<split>_labels.txt`` (one item a line, labels 0
  negative, 1 neutral, 2 positive): sentiment, language = the folder name. Every split found
  is evaluated except ``train`` (``include_train=True`` adds it, marked as seen in training).
* a ``*.csv`` with ``text`` and ``complaint`` columns: complaint (0/1), and severity over
  levels 1-4 on the rows that are complaints when a ``severity`` column exists. Language =
  a ``lang`` column, else the folder name. A file whose hash the heads' metadata records as
  training data is evaluated but flagged ``seen_in_training`` (its figures are optimistic).
* a ``*.jsonl`` with ``text`` and any of ``sentiment`` (label or 0-2), ``complaint`` (0/1 or
  bool), ``severity`` (0-4): each task present; language = ``lang``, else the file name.

Severity is scored the way it was trained and published (given that the post is a
complaint: gold complaint rows only, levels 1-4).

A complaint set whose posts name @handles is scored a second time with them taken out (its
own row, not in the totals): a source without mentions, or a brand the model never saw,
reads like that copy.

Sentiment sets also say how often the complaint head fires on each gold sentiment class
(``complaint_flagged``): there are complaint labels in English only, and a positive post
flagged as a complaint is a false case in any language, so this is the one multilingual
check of the complaint head the sentiment data allows.

Every macro-F1 comes with a 95% bootstrap interval (the texts resampled with replacement,
:data:`BOOTSTRAP_RESAMPLES` times, seeded): the val sets hold 324 tweets a language and the
severity holdout 184 complaints, so a point or two between two models is often noise, and the
interval says how much.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from services.classify.model.heads import (
    COMPLAINT_LABELS,
    SENTIMENT_LABELS,
    SEVERITY_LABELS,
    Heads,
)
from services.classify.model.inputs import HANDLE, without_handles
from services.classify.model.train import encoder_backend, files_sha256, stratified_holdout

if TYPE_CHECKING:
    from services.classify.model.encoder import Encoder
    from services.classify.scoring import Classifier

HANDLES_REMOVED = "@handles removed"
TASK_LABELS: dict[str, tuple[str, ...]] = {
    "sentiment": SENTIMENT_LABELS,
    "complaint": COMPLAINT_LABELS,
    "severity": tuple(f"{i + 1} {name}" for i, name in enumerate(SEVERITY_LABELS)),
}


@dataclass
class Dataset:
    """Gold labels for one task on one (language, split) of one source file or folder."""

    task: str
    language: str
    split: str
    source: str
    texts: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    seen_in_training: bool = False
    # A copy of a complaint set with the posts' @handles taken out (not in the task's totals).
    handles_removed: bool = False


# --------------------------------------------------------------------------- reading
def _read_lines(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def _sentiment_label(value: Any) -> int:
    if isinstance(value, str) and value.strip().lower() in SENTIMENT_LABELS:
        return SENTIMENT_LABELS.index(value.strip().lower())
    try:
        label = int(value)
    except (TypeError, ValueError):
        label = -1
    if label not in (0, 1, 2):
        raise ValueError(f"sentiment label {value!r} is not 0, 1, 2 or a label name")
    return label


def _flag(value: Any) -> int:
    if isinstance(value, str):
        value = value.strip().lower()
        if value in ("true", "yes"):
            return 1
        if value in ("false", "no"):
            return 0
    return int(bool(int(value)))


def _add(sets: dict[tuple[str, str, str, str], Dataset], key: tuple[str, str, str, str]) -> Dataset:
    if key not in sets:
        task, language, split, source = key
        sets[key] = Dataset(task, language, split, source)
    return sets[key]


def find_datasets(
    data_dir: Path,
    *,
    include_train: bool = False,
    training_hashes: set[str] | None = None,
    holdout: dict[str, Any] | None = None,
) -> list[Dataset]:
    """Every labelled set under ``data_dir`` (see the module docstring for the layouts).

    ``holdout`` (``{"fraction", "seed"}``, from heads trained on part of a CSV): the rows of a
    CSV seen in training are split again exactly as training split them (stratified by
    severity, 0 for non-complaints); the held-out rows form the ``holdout`` split, unseen.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"no data folder {data_dir}")
    training_hashes = training_hashes or set()
    sets: dict[tuple[str, str, str, str], Dataset] = {}

    for text_file in sorted(data_dir.rglob("*_text.txt")):
        split = text_file.name[: -len("_text.txt")]
        label_file = text_file.with_name(f"{split}_labels.txt")
        if not label_file.is_file() or (split == "train" and not include_train):
            continue
        texts = _read_lines(text_file)
        labels = [_sentiment_label(x) for x in _read_lines(label_file)]
        if len(texts) != len(labels):
            raise ValueError(f"{text_file}: {len(texts)} texts, {len(labels)} labels")
        rel = str(text_file.parent.relative_to(data_dir))
        ds = _add(sets, ("sentiment", text_file.parent.name, split, rel))
        ds.texts, ds.labels, ds.seen_in_training = texts, labels, split == "train"

    for csv_file in sorted(data_dir.rglob("*.csv")):
        with csv_file.open(encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            columns = set(reader.fieldnames or ())
            if not {"text", "complaint"} <= columns:
                continue
            rows = list(reader)
        seen = files_sha256([csv_file]) in training_hashes
        rel = str(csv_file.relative_to(data_dir))
        levels = [
            (int(r["severity"]) if "severity" in columns and r["severity"] else 0)
            * _flag(r["complaint"])
            for r in rows
        ]
        held: set[int] = set()
        if seen and holdout:
            _, hold_idx = stratified_holdout(
                np.asarray(levels, dtype=np.int64), holdout["fraction"], seed=holdout["seed"]
            )
            held = {int(i) for i in hold_idx}
        for i, row in enumerate(rows):
            lang = (row.get("lang") or row.get("language") or "").strip() or csv_file.parent.name
            complaint = _flag(row["complaint"])
            split = "holdout" if i in held else csv_file.stem
            row_seen = seen and i not in held
            if row_seen and held and not include_train:
                continue  # the trained-on part of a split file: only with --include-train
            ds = _add(sets, ("complaint", lang, split, rel))
            ds.texts.append(row["text"])
            ds.labels.append(complaint)
            ds.seen_in_training = row_seen
            if complaint and 1 <= levels[i] <= 4:
                sev = _add(sets, ("severity", lang, split, rel))
                sev.texts.append(row["text"])
                sev.labels.append(levels[i] - 1)
                sev.seen_in_training = row_seen

    for jsonl_file in sorted(data_dir.rglob("*.jsonl")):
        rel = str(jsonl_file.relative_to(data_dir))
        for line_no, raw in enumerate(jsonl_file.read_text(encoding="utf-8").split("\n"), 1):
            if not raw.strip():
                continue
            obj = json.loads(raw)
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                raise ValueError(f"{jsonl_file}:{line_no}: a line needs a 'text' string")
            lang = str(obj.get("lang") or jsonl_file.stem)
            text = obj["text"]
            if obj.get("sentiment") is not None:
                ds = _add(sets, ("sentiment", lang, jsonl_file.stem, rel))
                ds.texts.append(text)
                ds.labels.append(_sentiment_label(obj["sentiment"]))
            if obj.get("complaint") is not None:
                complaint = _flag(obj["complaint"])
                ds = _add(sets, ("complaint", lang, jsonl_file.stem, rel))
                ds.texts.append(text)
                ds.labels.append(complaint)
                level = int(obj.get("severity") or 0)
                if complaint and 1 <= level <= 4:
                    sev = _add(sets, ("severity", lang, jsonl_file.stem, rel))
                    sev.texts.append(text)
                    sev.labels.append(level - 1)

    order = list(TASK_LABELS)
    return sorted(
        (ds for ds in sets.values() if ds.texts),
        key=lambda d: (order.index(d.task), d.language, d.split, d.source),
    )


# --------------------------------------------------------------------------- metrics
def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts ``[true, predicted]``."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return matrix


def _f1_per_class(matrix: np.ndarray) -> np.ndarray:
    """Per-class F1 of a confusion matrix ``[n, n]`` or of a stack of them ``[..., n, n]``."""
    tp = np.diagonal(matrix, axis1=-2, axis2=-1)
    denom = matrix.sum(axis=-2) + matrix.sum(axis=-1)  # = 2tp + fp + fn
    return np.divide(2 * tp, denom, out=np.zeros(tp.shape), where=denom > 0)


def scores_from_confusion(matrix: np.ndarray) -> dict[str, Any]:
    """Macro-F1 over all classes (the papers' metric), accuracy and per-class F1."""
    matrix = np.asarray(matrix, dtype=np.float64)
    tp = np.diag(matrix)
    f1 = _f1_per_class(matrix)
    total = matrix.sum()
    return {
        "macro_f1": round(float(f1.mean()), 4),
        "accuracy": round(float(tp.sum() / total), 4) if total else 0.0,
        "f1_per_class": [round(float(v), 4) for v in f1],
    }


BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 20260127


def flagged_by_class(gold: np.ndarray, flagged: np.ndarray) -> dict[str, dict[str, int]]:
    """Per gold sentiment label: how many posts, and how many of them were flagged (1)."""
    return {
        label: {"n": int((gold == k).sum()), "flagged": int(flagged[gold == k].sum())}
        for k, label in enumerate(SENTIMENT_LABELS)
    }


def macro_f1_interval(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    n_classes: int,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of macro-F1: resample the items, recount, take quantiles.

    Resamples are counted a block at a time: item ``i`` of resample ``r`` adds one to cell
    ``(r, true, predicted)`` of a ``[block, n, n]`` stack of confusion matrices.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if len(y_true) == 0:
        return (0.0, 0.0)
    rng = np.random.default_rng(seed)
    cells_per_matrix = n_classes * n_classes
    block = max(1, 4_000_000 // len(y_true))  # bounds memory on large sets
    scores: list[np.ndarray] = []
    for start in range(0, resamples, block):
        count = min(block, resamples - start)
        picks = rng.integers(0, len(y_true), size=(count, len(y_true)))
        cells = y_true[picks] * n_classes + y_pred[picks]
        cells += (np.arange(count) * cells_per_matrix)[:, None]
        stack = np.bincount(cells.ravel(), minlength=count * cells_per_matrix)
        stack = stack.reshape(count, n_classes, n_classes).astype(np.float64)
        scores.append(_f1_per_class(stack).mean(axis=1))
    f1 = np.concatenate(scores)
    tail = (1 - level) / 2
    low, high = np.quantile(f1, [tail, 1 - tail])
    return (round(float(low), 4), round(float(high), 4))


# ------------------------------------------------------------------------ evaluation
def _without_handles(ds: Dataset) -> list[Dataset]:
    """A complaint set whose posts name @handles, again without them (else nothing).

    X-CI's tweets are addressed to brands' care accounts, and a model can learn the brands
    instead of the complaints; posts from a source without mentions (a review, a forum) and
    mentions of a brand it never saw read like these copies.
    """
    if ds.task != "complaint" or not any(HANDLE.search(t) for t in ds.texts):
        return []
    return [
        Dataset(
            ds.task,
            ds.language,
            f"{ds.split}, {HANDLES_REMOVED}",
            ds.source,
            [without_handles(t) for t in ds.texts],
            list(ds.labels),
            ds.seen_in_training,
            handles_removed=True,
        )
    ]


def _training_hashes(heads: Heads) -> set[str]:
    data = heads.meta.get("training_data", {})
    return {str(v) for k, v in data.items() if k.endswith("_sha256")}


def evaluate(
    data_dir: Path,
    classifier: Classifier | None = None,
    *,
    encoder: Encoder | None = None,
    heads: Heads | None = None,
    include_train: bool = False,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Evaluate ``classifier`` (or ``encoder`` + ``heads``) on every labelled set in ``data_dir``.

    Returns ``{"model_version", "backend", "heads_backend", "data_dir", "datasets": [...],
    "tasks": {task: {"labels", "confusion", "n", "macro_f1", "accuracy", "by_language":
    {language: {split: {...}}}}}}``; each dataset entry has task, language, split, source,
    n, macro_f1, macro_f1_ci (95% bootstrap interval), accuracy, f1_per_class, labels,
    confusion and seen_in_training; a sentiment entry also has complaint_flagged
    (:func:`flagged_by_class`); a complaint set with @handles is followed by a copy without
    them (``handles_removed``: true, split "... @handles removed", not in the task's totals).
    """
    from services.classify.scoring import COMPLAINT_THRESHOLD

    if classifier is not None:
        encoder, heads = classifier.encoder, classifier.heads
    if encoder is None or heads is None:
        raise ValueError("give a classifier, or an encoder and heads")
    datasets = find_datasets(
        data_dir,
        include_train=include_train,
        training_hashes=_training_hashes(heads),
        holdout=heads.meta.get("training_data", {}).get("complaint_holdout"),
    )
    if not datasets:
        raise FileNotFoundError(f"no labelled data found under {data_dir}")
    if any(ds.task == "severity" for ds in datasets) and heads.severity is None:
        datasets = [ds for ds in datasets if ds.task != "severity"]
    datasets = [copy for ds in datasets for copy in (ds, *_without_handles(ds))]

    texts = list(dict.fromkeys(t for ds in datasets for t in ds.texts))
    row = {t: i for i, t in enumerate(texts)}
    emb = encoder.encode(texts, progress=progress)
    p_sent = heads.sentiment.predict_proba(emb)
    p_comp = heads.complaint.predict_proba(emb)[:, 1]
    severity = heads.predict_severity(emb)  # conditional on a complaint: levels 1..4
    predicted = {
        "sentiment": np.argmax(p_sent, axis=1),
        "complaint": (p_comp >= COMPLAINT_THRESHOLD).astype(np.int64),
        "severity": np.asarray([s.level - 1 for s in severity or []], dtype=np.int64),
    }

    results: list[dict[str, Any]] = []
    tasks: dict[str, dict[str, Any]] = {}
    pairs: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {}
    for ds in datasets:
        labels = TASK_LABELS[ds.task]
        idx = np.asarray([row[t] for t in ds.texts], dtype=np.int64)
        gold, pred = np.asarray(ds.labels, dtype=np.int64), predicted[ds.task][idx]
        matrix = confusion_matrix(gold, pred, len(labels))
        entry = {
            "task": ds.task,
            "language": ds.language,
            "split": ds.split,
            "source": ds.source,
            "n": len(ds.labels),
            **scores_from_confusion(matrix),
            "macro_f1_ci": list(macro_f1_interval(gold, pred, len(labels))),
            "labels": list(labels),
            "confusion": matrix.tolist(),
            "seen_in_training": ds.seen_in_training,
        }
        if ds.task == "sentiment":
            entry["complaint_flagged"] = flagged_by_class(gold, predicted["complaint"][idx])
        results.append(entry)
        if ds.handles_removed:
            entry["handles_removed"] = True
            continue  # a second reading of the same posts: not counted twice in the totals
        pairs.setdefault(ds.task, ([], []))[0].append(gold)
        pairs[ds.task][1].append(pred)
        # "confusion" is filled in below; its place keeps the report's key order.
        task = tasks.setdefault(
            ds.task, {"labels": list(labels), "confusion": None, "by_language": {}}
        )
        keys = ("n", "macro_f1", "macro_f1_ci", "accuracy", "seen_in_training")
        task["by_language"].setdefault(ds.language, {})[ds.split] = {k: entry[k] for k in keys}
    for name, task in tasks.items():  # over every set of the task: all its pairs at once
        gold, pred = (np.concatenate(parts) for parts in pairs[name])
        matrix = confusion_matrix(gold, pred, len(task["labels"]))
        task.update(n=int(matrix.sum()), **scores_from_confusion(matrix))
        task["macro_f1_ci"] = list(macro_f1_interval(gold, pred, len(task["labels"])))
        task["confusion"] = matrix.tolist()

    if classifier is not None:
        version = classifier.model_version
    else:
        tag = getattr(encoder, "tag", None)  # as Classifier names the served model
        version = f"{tag}+heads-{heads.short_hash}" if tag else heads.model_version
    return {
        "model_version": version,
        "backend": encoder_backend(encoder),
        "heads_backend": heads.meta.get("encoder", {}).get("backend", "torch"),
        "data_dir": str(data_dir),
        "n_texts": len(texts),
        "datasets": results,
        "tasks": tasks,
    }


def _interval(ci: list[float]) -> str:
    return f"{100 * ci[0]:.1f}–{100 * ci[1]:.1f}"


def _share(counts: dict[str, int]) -> str:
    if not counts["n"]:
        return "–"
    return f"{100 * counts['flagged'] / counts['n']:.1f}% ({counts['flagged']}/{counts['n']})"


def render(report: dict[str, Any], console: Any) -> None:
    """Rich tables: macro-F1 per task, language and split, then a confusion matrix per task."""
    from rich.table import Table

    if report["backend"] != report["heads_backend"]:
        console.print(
            f"[yellow]warning:[/] heads trained on the {report['heads_backend']} backend, "
            f"evaluated on {report['backend']}"
        )
    table = Table(title=f"macro-F1 ({report['model_version']}, backend {report['backend']})")
    for col, justify in (
        ("task", "left"),
        ("language", "left"),
        ("split", "left"),
        ("n", "right"),
        ("macro-F1", "right"),
        ("95% interval", "right"),
        ("accuracy", "right"),
    ):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for d in report["datasets"]:
        note = " (seen in training)" if d["seen_in_training"] else ""
        table.add_row(
            d["task"],
            d["language"],
            d["split"] + note,
            str(d["n"]),
            f"{100 * d['macro_f1']:.1f}",
            _interval(d["macro_f1_ci"]),
            f"{100 * d['accuracy']:.1f}",
        )
    for name, t in report["tasks"].items():
        table.add_row(
            name,
            "all",
            "",
            str(t["n"]),
            f"{100 * t['macro_f1']:.1f}",
            _interval(t["macro_f1_ci"]),
            f"{100 * t['accuracy']:.1f}",
            style="bold",
        )
    console.print(table)
    for name, t in report["tasks"].items():
        cm = Table(title=f"{name}: confusion (rows gold, columns predicted), n={t['n']}")
        cm.add_column("gold \\ predicted")
        for label in t["labels"]:
            cm.add_column(label, justify="right")
        for label, counts in zip(t["labels"], t["confusion"], strict=True):
            cm.add_row(label, *(str(c) for c in counts))
        console.print(cm)
    flagged = [d for d in report["datasets"] if "complaint_flagged" in d]
    if flagged:
        ft = Table(
            title="complaint head on the sentiment sets: share flagged as a complaint, "
            "by gold sentiment (a flagged positive post is a false case)"
        )
        ft.add_column("language")
        ft.add_column("split")
        for label in SENTIMENT_LABELS:
            ft.add_column(label, justify="right")
        for d in flagged:
            ft.add_row(
                d["language"],
                d["split"],
                *(_share(d["complaint_flagged"][label]) for label in SENTIMENT_LABELS),
            )
        console.print(ft)
    if any(d["seen_in_training"] for d in report["datasets"]):
        console.print(
            "[yellow]note:[/] sets marked 'seen in training' are the heads' own training data; "
            "their figures are optimistic."
        )
