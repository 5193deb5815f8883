"""Batched sentence embeddings from the prepared multilingual-e5-small, on the CPU."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from services.classify.model import default_model_dir

QUERY_PREFIX = "query: "  # e5 was trained with it; classification inputs are "queries"
DEFAULT_MAX_LENGTH = 64  # tweets rarely exceed it; attention cost grows with the square
DEFAULT_BATCH_SIZE = 32


def default_threads() -> int:
    """``$THIRDRING_CLASSIFY_THREADS`` or every core: one worker process owns the machine."""
    value = os.environ.get("THIRDRING_CLASSIFY_THREADS", "").strip()
    return int(value) if value else max(1, os.cpu_count() or 1)


class Encoder:
    """Mean-pooled, L2-normalised e5 embeddings (the recipe the model card prescribes).

    Texts are tokenized in one call, sorted by length and batched so that padding is minimal;
    results come back in input order.
    """

    def __init__(
        self,
        model_dir: Path | None = None,
        *,
        max_length: int = DEFAULT_MAX_LENGTH,
        batch_size: int = DEFAULT_BATCH_SIZE,
        threads: int | None = None,
        prefix: str = QUERY_PREFIX,
    ) -> None:
        from tokenizers import Tokenizer
        from transformers import AutoModel
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        self.model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
        if not (self.model_dir / "config.json").is_file():
            raise FileNotFoundError(
                f"no prepared model in {self.model_dir}: run "
                "`python -m services.classify.model.prepare` first"
            )
        self.max_length = max_length
        self.batch_size = batch_size
        self.prefix = prefix
        self.threads = threads or default_threads()
        torch.set_num_threads(self.threads)
        # The raw `tokenizers` object is what AutoTokenizer wraps (the test checks they agree);
        # using it directly skips per-call Python overhead.
        self.tokenizer = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=max_length)
        self.tokenizer.no_padding()
        self.pad_id = self.tokenizer.token_to_id("<pad>")
        self.model = AutoModel.from_pretrained(self.model_dir).eval()
        self.dim = int(self.model.config.hidden_size)

    def encode(
        self, texts: Sequence[str], *, progress: Callable[[int], None] | None = None
    ) -> np.ndarray:
        """Embeddings ``[len(texts), dim]`` float32; ``progress(n)`` is called after each batch."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        encodings = self.tokenizer.encode_batch([self.prefix + t for t in texts])
        ids = [e.ids for e in encodings]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                width = len(ids[idx[-1]])
                batch = np.full((len(idx), width), self.pad_id, dtype=np.int64)
                mask = np.zeros((len(idx), width), dtype=np.int64)
                for row, i in enumerate(idx):
                    batch[row, : len(ids[i])] = ids[i]
                    mask[row, : len(ids[i])] = 1
                input_ids = torch.from_numpy(batch)
                attention = torch.from_numpy(mask)
                hidden = self.model(input_ids=input_ids, attention_mask=attention).last_hidden_state
                weights = attention.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
                out[idx] = pooled.numpy()
                if progress is not None:
                    progress(len(idx))
        return out
