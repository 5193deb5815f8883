"""Fine-tune the encoder with LoRA adapters and the three heads together (multi-task).

``thirdring model train`` (the default method) runs this: the prepared base e5-small in fp32
torch, cut to its first 9 of 12 blocks (``TuneConfig.layers``; the cut is recorded in the
adapter, so serving rebuilds the same network), gets rank-16 adapters on every linear layer
of those blocks (``adapter.py``; word embeddings and all base weights frozen), and the
sentiment, complaint and severity heads sit on its mean-pooled, L2-normalised embedding (the
serving recipe). Texts go in as they are: e5's ``"query: "`` prefix is 3 of a tweet's ~29
tokens, and once the encoder is tuned it adds nothing the val scores can see. One epoch
visits every sentiment batch of the 8 UMSAB languages once and the complaint and severity
batches several times each (``TuneConfig.complaint_passes``/``severity_passes``: they are
small), in one shuffled order of length-bucketed batches of 32; AdamW, linear warm-up then
linear decay. Optionally (``TuneConfig.aux_passes``, off by default: measured, no gain) X-CI's
``emotion`` and ``sentiment`` columns train two more heads on the same rows, dropped at the
end so only their pull on the shared encoder stays.

Validation (never trained on): the UMSAB ``val`` files per language, and a seeded 20% of
X-CI ``train.csv`` stratified by severity level (complaint: all of it; severity: its complaint
rows). Scores are measured after every epoch in fp32 and recorded in ``heads.json``; the shipped
numbers of the served int8 model come from ``thirdring model evaluate``.

Output, beside each other in the heads directory: ``adapter.safetensors`` (4.0 MB) and the
heads (``heads.safetensors``/``heads.json``, the logit scale folded into the weights so
serving stays ``softmax(x @ W.T + b)``).
"""

from __future__ import annotations

import csv
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from services.classify.model import lora
from services.classify.model.encoder import STATIC_TAG
from services.classify.model.heads import (
    COMPLAINT_LABELS,
    SENTIMENT_LABELS,
    SEVERITY_LABELS,
    Heads,
    LinearHead,
)
from services.classify.model.inputs import model_text, without_handles
from services.classify.model.train import (
    HOLDOUT_FRACTION,
    SEED,
    Split,
    files_sha256,
    load_sentiment,
    macro_f1,
    stratified_holdout,
)

# Logits are this times the cosine-like score of a unit embedding: without it a head on
# L2-normalised inputs needs huge weights to be confident. Folded into the saved weights.
LOGIT_SCALE = 20.0


@dataclass(frozen=True)
class TuneConfig:
    """The training recipe; recorded in ``heads.json`` so a run can be reproduced."""

    epochs: int = 2
    batch_size: int = 32
    max_length: int = 64
    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.1
    lr_adapter: float = 8e-4
    lr_heads: float = 3e-3
    weight_decay: float = 0.01
    warmup_fraction: float = 0.06
    # Visits per epoch of the small X-CI tasks' batches (sentiment's are visited once).
    complaint_passes: int = 3
    severity_passes: int = 3
    # Visits per epoch of X-CI's emotion and sentiment columns, trained as auxiliary tasks
    # on their own heads (not served; 0: off). Their rows are the complaint task's. Off:
    # two seeds with them (2026-12-05) moved severity +4.4 and -3.9, lost 0.4 and 1.2 of
    # the sentiment mean, and found 7 fewer of 25 Estonian complaints each (model card).
    aux_passes: int = 0
    # The encoder's first `layers` blocks (0: all 12) and the text put before every input.
    # 9 blocks and no e5 "query: " prefix (2026-12-05): the same val F1 as all 12 with the
    # prefix, at ~0.68 of the work per post (a quarter fewer blocks, a tenth fewer tokens).
    layers: int = 9
    prefix: str = ""
    # What every @handle is written as, in training and (recorded in the adapter) in serving;
    # None: left as it is. And the share of X-CI training rows whose handles are taken out
    # instead, as a source without mentions gives a post (services/classify/model/inputs.py).
    # Tried with "@user" and 0.5 (2026-12-05): complaint on the holdout 89.6 with handles and
    # 89.1 without, against the shipped 91.3 and 87.7, but French sentiment fell below XLM-T
    # (68.6) and Estonian sentiment lost 8 of 101 posts; "@user" alone: complaint 87.3. Not
    # adopted (model card, "The complaint head and @handles").
    handles: str | None = None
    drop_handles: float = 0.0
    # UMSAB languages left out of sentiment training (they are still validated). Leaving out
    # Hindi (at chance either way) was measured on 2026-12-05: no clear gain, complaint -1.5.
    skip_languages: tuple[str, ...] = ()
    seed: int = SEED
    threads: int = 0  # 0: every core


@dataclass
class TaskData:
    """Token ids and labels of one task's training or validation rows."""

    name: str
    ids: list[list[int]]
    labels: np.ndarray
    groups: list[str]  # language for sentiment, the task name otherwise


# X-CI's auxiliary columns as class indices. The three rare emotions (19 rows of 2,585
# together) join "other"; sentiment uses UMSAB's order.
XCI_EMOTIONS = ("other", "anger", "sadness", "joy")
XCI_SENTIMENTS = ("Negative", "Neutral", "Positive")


@dataclass
class XciRows:
    """X-CI ``train.csv`` as training targets, one entry per row."""

    texts: list[str]
    severity: np.ndarray  # 0 = no complaint, 1..4
    # Indices into XCI_EMOTIONS / XCI_SENTIMENTS; None where the file lacks the column
    # (the format only requires text, complaint and severity).
    emotion: np.ndarray | None
    sentiment: np.ndarray | None


def _xci_index(row: dict[str, str], column: str, values: tuple[str, ...], other: int | None) -> int:
    """``row[column]``'s index in ``values``; ``other`` for a value not there (None: an error)."""
    value = row[column]
    if value in values:
        return values.index(value)
    if other is None:
        raise ValueError(
            f"X-CI row {row.get('id', '?')}: {column} {value!r} is not one of {values}"
        )
    return other


def load_xci(data_dir: Path, limit: int | None = None) -> XciRows:
    """X-CI ``train.csv``: texts, severity 0..4 (0 = no complaint), emotion and sentiment."""
    with (data_dir / "complaints-xci" / "train.csv").open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        # column -> (its values, the index of a value not among them: rare emotions are "other")
        known = {"emotion": (XCI_EMOTIONS, 0), "sentiment": (XCI_SENTIMENTS, None)}
        aux = {col: spec for col, spec in known.items() if col in (reader.fieldnames or ())}
        rows = [
            (
                r["text"],
                int(r["severity"]) if int(r["complaint"]) else 0,
                {col: _xci_index(r, col, *spec) for col, spec in aux.items()},
            )
            for r in reader
        ]
    if limit is not None:  # every level even in a smoke subset
        rows = [r for lvl in range(5) for r in [x for x in rows if x[1] == lvl][:limit]]

    def column(name: str) -> np.ndarray | None:
        return np.asarray([r[2][name] for r in rows], dtype=np.int64) if name in aux else None

    return XciRows(
        texts=[r[0] for r in rows],
        severity=np.asarray([r[1] for r in rows], dtype=np.int64),
        emotion=column("emotion"),
        sentiment=column("sentiment"),
    )


def sentiment_rows(
    sentiment: dict[str, dict[str, Split]], split: str, skip: Sequence[str] = ()
) -> tuple[list[str], np.ndarray, list[str]]:
    """One split of every UMSAB language but ``skip``: texts, labels and each row's language."""
    texts: list[str] = []
    labels: list[np.ndarray] = []
    groups: list[str] = []
    for lang, splits in sentiment.items():
        if lang in skip:
            continue
        texts += splits[split].texts
        labels.append(splits[split].labels)
        groups += [lang] * len(splits[split].texts)
    if not texts:
        raise ValueError(f"no sentiment {split} rows left after skipping {list(skip)}")
    return texts, np.concatenate(labels), groups


# The served heads, then the training-only auxiliary ones: task -> number of classes.
SERVED_TASKS = {
    "sentiment": len(SENTIMENT_LABELS),
    "complaint": len(COMPLAINT_LABELS),
    "severity": len(SEVERITY_LABELS),
}
AUX_TASKS = {"xci_emotion": len(XCI_EMOTIONS), "xci_sentiment": len(XCI_SENTIMENTS)}


class MultiTaskModel(nn.Module):
    """The adapted encoder and one linear head per task on its pooled embedding."""

    def __init__(self, encoder: nn.Module, dim: int, tasks: dict[str, int]) -> None:
        super().__init__()
        self.encoder = encoder
        self.heads = nn.ModuleDict({task: nn.Linear(dim, n) for task, n in tasks.items()})

    def embed(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=mask).last_hidden_state
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return nn.functional.normalize(pooled, dim=-1)

    def forward(self, task: str, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.heads[task](self.embed(input_ids, mask) * LOGIT_SCALE)


def pad(ids: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A right-padded batch and its attention mask."""
    width = max(len(x) for x in ids)
    batch = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for row, x in enumerate(ids):
        batch[row, : len(x)] = torch.tensor(x)
        mask[row, : len(x)] = 1
    return batch, mask


def bucketed_batches(
    lengths: Sequence[int], batch_size: int, rng: random.Random
) -> list[list[int]]:
    """Shuffled batches of similar length: shuffle, sort within windows of 50 batches, cut."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch_size * 50
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return batches


def class_weights(labels: np.ndarray, n_classes: int) -> torch.Tensor:
    """Inverse-frequency weights (mean 1), the same balancing as the linear heads."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    weights = counts.sum() / np.maximum(counts, 1.0) / n_classes
    return torch.tensor(weights, dtype=torch.float32)


@torch.inference_mode()
def predict(model: MultiTaskModel, task: str, data: TaskData, pad_id: int) -> np.ndarray:
    """Argmax predictions of one head over ``data`` (eval mode, batches of 64 by length)."""
    model.eval()
    order = sorted(range(len(data.ids)), key=lambda i: len(data.ids[i]))
    out = np.zeros(len(order), dtype=np.int64)
    for start in range(0, len(order), 64):
        idx = order[start : start + 64]
        batch, mask = pad([data.ids[i] for i in idx], pad_id)
        out[idx] = model(task, batch, mask).argmax(-1).numpy()
    model.train()
    return out


def validate(
    model: MultiTaskModel, val: dict[str, TaskData], pad_id: int
) -> dict[str, dict[str, float]]:
    """Macro-F1 (%) per task and group: ``{"sentiment": {"english": 70.1, ...}, ...}``."""
    scores: dict[str, dict[str, float]] = {}
    for task, data in val.items():
        pred = predict(model, task, data, pad_id)
        n = int(model.heads[task].out_features)
        groups = sorted(set(data.groups))
        scores[task] = {}
        for group in groups:
            sel = np.asarray([g == group for g in data.groups])
            scores[task][group] = round(100 * macro_f1(data.labels[sel], pred[sel], n), 1)
    return scores


def finetune(
    data_dir: Path,
    base_dir: Path,
    out_dir: Path,
    *,
    config: TuneConfig | None = None,
    limit: int | None = None,
    log: Callable[[str], None] = print,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Train adapters and heads; write them to ``out_dir``; return the heads' meta."""
    from tokenizers import Tokenizer
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    cfg = config or TuneConfig()
    hf_logging.disable_progress_bar()
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)

    tokenizer = Tokenizer.from_file(str(base_dir / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=cfg.max_length)
    tokenizer.no_padding()
    pad_id = int(tokenizer.token_to_id("<pad>"))

    def tok(texts: list[str]) -> list[list[int]]:
        inputs = [model_text(t, cfg.prefix, cfg.handles) for t in texts]
        return [e.ids for e in tokenizer.encode_batch(inputs)]

    train: dict[str, TaskData] = {}
    val: dict[str, TaskData] = {}
    sentiment = load_sentiment(data_dir, limit=limit)
    for split, target in (("train", train), ("val", val)):
        # Skipped languages are still validated: the val scores show what skipping costs.
        skip = cfg.skip_languages if split == "train" else ()
        texts, labels, groups = sentiment_rows(sentiment, split, skip)
        target["sentiment"] = TaskData("sentiment", tok(texts), labels, groups)

    xci = load_xci(data_dir, limit=limit)
    severity = xci.severity
    # The holdout is drawn with the data seed, not the run's: runs of other seeds are scored
    # on the same rows and never train on each other's holdout (or a soup of them would).
    fit_idx, hold_idx = stratified_holdout(severity, HOLDOUT_FRACTION, seed=SEED)
    xci_ids = tok(xci.texts)
    if cfg.drop_handles:  # training rows only: the holdout is scored as it was written
        drop = {int(i) for i in fit_idx if rng.random() < cfg.drop_handles}
        dropped = tok([without_handles(xci.texts[i]) for i in sorted(drop)])
        for i, ids in zip(sorted(drop), dropped, strict=True):
            xci_ids[i] = ids
    for idx, target in ((fit_idx, train), (hold_idx, val)):
        comp = (severity[idx] > 0).astype(np.int64)
        ids = [xci_ids[i] for i in idx]
        target["complaint"] = TaskData("complaint", ids, comp, ["xci"] * len(ids))
        sev_rows = [j for j, i in enumerate(idx) if severity[i] > 0]
        target["severity"] = TaskData(
            "severity",
            [ids[j] for j in sev_rows],
            severity[idx][sev_rows] - 1,
            ["xci"] * len(sev_rows),
        )
    if cfg.aux_passes:  # training rows only: the holdout stays unseen by every head
        fit_ids = [xci_ids[i] for i in fit_idx]
        for task, labels in (("xci_emotion", xci.emotion), ("xci_sentiment", xci.sentiment)):
            if labels is None:
                log(f"{task}: no such column in complaints-xci/train.csv, task skipped")
                continue
            train[task] = TaskData(task, fit_ids, labels[fit_idx], ["xci"] * len(fit_ids))

    encoder = lora.cut(AutoModel.from_pretrained(base_dir), cfg.layers or None)
    adapted = lora.inject(encoder, rank=cfg.rank, alpha=cfg.alpha, dropout=cfg.dropout)
    dim = int(encoder.config.hidden_size)
    model = MultiTaskModel(
        encoder, dim, {task: n for task, n in (SERVED_TASKS | AUX_TASKS).items() if task in train}
    )
    model.train()
    losses = {
        task: nn.CrossEntropyLoss(
            weight=class_weights(data.labels, model.heads[task].out_features)
            if task != "sentiment"
            else None
        )
        for task, data in train.items()
    }
    adapter_params = [p for n, p in model.named_parameters() if "lora_" in n]
    head_params = list(model.heads.parameters())
    optimizer = torch.optim.AdamW(
        [
            {"params": adapter_params, "lr": cfg.lr_adapter},
            {"params": head_params, "lr": cfg.lr_heads},
        ],
        weight_decay=cfg.weight_decay,
    )

    def epoch_plan() -> list[tuple[str, list[int]]]:
        plan: list[tuple[str, list[int]]] = []
        for task, data in train.items():
            passes = {
                "complaint": cfg.complaint_passes,
                "severity": cfg.severity_passes,
                "xci_emotion": cfg.aux_passes,
                "xci_sentiment": cfg.aux_passes,
            }.get(task, 1)
            lengths = [len(x) for x in data.ids]
            for _ in range(passes):
                plan += [(task, b) for b in bucketed_batches(lengths, cfg.batch_size, rng)]
        rng.shuffle(plan)
        return plan

    steps_per_epoch = len(epoch_plan())
    total = steps_per_epoch * cfg.epochs
    warmup = max(1, int(total * cfg.warmup_fraction))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min((s + 1) / warmup, max(0.0, (total - s) / max(1, total - warmup))),
    )
    n_trainable = sum(p.numel() for p in adapter_params)
    log(
        f"fine-tuning: {adapted} adapted layers, {n_trainable:,} adapter weights, "
        f"{total} steps ({cfg.epochs} epochs x {steps_per_epoch})"
    )

    def write(target: Path) -> dict[str, Any]:
        """Adapter and heads (with the history so far) into ``target``; returns the meta."""
        target.mkdir(parents=True, exist_ok=True)
        adapter_hash = lora.save(
            encoder,
            target / lora.ADAPTER_FILE,
            rank=cfg.rank,
            alpha=cfg.alpha,
            prefix=cfg.prefix,
            handles=cfg.handles,
        )

        def head(name: str, labels: tuple[str, ...]) -> LinearHead:
            linear = model.heads[name]
            return LinearHead(
                name=name,
                labels=labels,
                weight=(linear.weight.detach() * LOGIT_SCALE).numpy().astype(np.float32),
                bias=linear.bias.detach().numpy().astype(np.float32),
            )

        meta = {
            "method": "LoRA fine-tuning of the encoder with multi-task linear heads (finetune.py)",
            "adapter": {"file": lora.ADAPTER_FILE, "hash": adapter_hash, "layers": adapted},
            "encoder": {
                "tag": STATIC_TAG,  # served on the int8 export with calibrated scales
                "backend": "onnx",
                "max_length": cfg.max_length,
                "layers": len(encoder.encoder.layer),
                "prefix": cfg.prefix,
                "pooling": "mean, L2-normalised",
            },
            "config": asdict(cfg),
            "history": list(history),
            "val_macro_f1": history[-1]["val_macro_f1"] if history else {},
            "training_data": {
                "sentiment": "sentiment-umsab/*/train_*.txt (all languages)",
                "sentiment_sha256": files_sha256(sources[:-1]),
                "complaint": "complaints-xci/train.csv less the holdout",
                "complaint_sha256": files_sha256(sources[-1:]),
                "limit": limit,
                # `thirdring model evaluate` re-creates this split to report it as unseen.
                "complaint_holdout": {
                    "fraction": HOLDOUT_FRACTION,
                    "seed": SEED,
                    "stratified_by": "severity (0 = no complaint)",
                },
            },
            "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        heads = Heads(
            sentiment=head("sentiment", SENTIMENT_LABELS),
            complaint=head("complaint", COMPLAINT_LABELS),
            severity=head("severity", SEVERITY_LABELS),
            meta=meta,
        )
        heads.save(target)
        return heads.meta

    sources = sorted((data_dir / "sentiment-umsab").rglob("train_*.txt"))
    sources.append(data_dir / "complaints-xci" / "train.csv")
    history: list[dict[str, Any]] = []
    step = 0
    started = time.monotonic()
    for epoch in range(1, cfg.epochs + 1):
        running = {task: [] for task in train}
        for task, batch_idx in epoch_plan():
            data = train[task]
            batch, mask = pad([data.ids[i] for i in batch_idx], pad_id)
            target = torch.from_numpy(data.labels[batch_idx])
            loss = losses[task](model(task, batch, mask), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(adapter_params + head_params, 1.0)
            optimizer.step()
            scheduler.step()
            running[task].append(loss.item())
            step += 1
            if progress is not None:
                progress(step, total)
        scores = validate(model, val, pad_id)
        entry = {
            "epoch": epoch,
            "loss": {t: round(float(np.mean(v)), 4) for t, v in running.items() if v},
            "val_macro_f1": scores,
            "minutes": round((time.monotonic() - started) / 60, 1),
        }
        history.append(entry)
        log(f"epoch {epoch}: {entry}")
        if epoch < cfg.epochs:  # a checkpoint per epoch, to compare or to fall back on
            write(out_dir / f"epoch-{epoch}")
    meta = write(out_dir)
    minutes = (time.monotonic() - started) / 60
    log(f"wrote {out_dir} ({meta['model_version']}) in {minutes:.0f} min")
    return meta
