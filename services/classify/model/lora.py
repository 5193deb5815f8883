"""Low-rank adapters (LoRA, Hu et al. 2021) for the e5 encoder: injected, saved, merged.

Fine-tuning the whole encoder beats a frozen one by several points of macro-F1, but a tuned
copy of e5-small is ~470 MB: too big for the repository. A LoRA adapter learns, for each
linear layer ``W`` of the encoder, a low-rank update ``W + (alpha / r) * B @ A`` with
``A: [r, in]`` and ``B: [out, r]``; at rank 16 (the shipped recipe) on every linear layer of
the 9 blocks kept (:func:`cut`) that is ~1.0 M numbers (4.0 MB), so the adapter is committed
beside the heads (``heads/adapter.safetensors``) and merged into the base weights when the
model is prepared.
After merging, the encoder is an ordinary ``BertModel`` (the ONNX export and the int8
quantization see no difference) and serving costs nothing extra.

Written by hand rather than with ``peft``: injection, saving and merging are ~100 lines here,
and serving then needs no training library.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from services.classify.model.adapter import ADAPTER_FILE, canonicalize, short_hash

__all__ = ["ADAPTER_FILE", "LoRALinear", "cut", "inject", "merge_into", "save"]
# The linear layers of a BERT block that get an adapter (module name suffixes).
TARGETS = (
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
)


class LoRALinear(nn.Module):
    """``base(x) + scale * dropout(x) @ A.T @ B.T``; ``base`` stays frozen.

    ``B`` starts at zero, so the wrapped layer starts exactly as the base layer.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float) -> None:
        super().__init__()
        self.base = base
        self.rank = rank
        self.scale = alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout)
        for p in self.base.parameters():
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = self.dropout(x) @ self.lora_A.T @ self.lora_B.T
        return self.base(x) + update * self.scale

    def delta(self) -> torch.Tensor:
        """The weight update this adapter stands for: ``[out, in]``."""
        return (self.lora_B @ self.lora_A) * self.scale


def _targets(model: nn.Module) -> Iterator[tuple[str, nn.Module, str, nn.Linear]]:
    """(full name, parent, attribute, linear) for every adapted layer of ``model``."""
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and name.endswith(TARGETS) and ".layer." in f".{name}":
            parent_name, _, attr = name.rpartition(".")
            yield name, model.get_submodule(parent_name), attr, module


def inject(model: nn.Module, *, rank: int = 8, alpha: float = 16.0, dropout: float = 0.1) -> int:
    """Freeze ``model`` and wrap its target layers with adapters; returns how many."""
    for p in model.parameters():
        p.requires_grad_(False)
    count = 0
    for _, parent, attr, linear in _targets(model):
        setattr(parent, attr, LoRALinear(linear, rank, alpha, dropout))
        count += 1
    if not count:
        raise ValueError("no adaptable linear layers found (is this a BERT encoder?)")
    return count


def adapter_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trained ``A``/``B`` matrices by layer name (what :func:`save` writes)."""
    out: dict[str, torch.Tensor] = {}
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear):
            out[f"{name}.lora_A"] = module.lora_A.detach().clone().contiguous()
            out[f"{name}.lora_B"] = module.lora_B.detach().clone().contiguous()
    return out


def cut(model: nn.Module, depth: int | None) -> nn.Module:
    """Keep the first ``depth`` blocks of a ``BertModel`` (None or its full depth: no change).

    The lower blocks of a pre-trained encoder carry most of what a fine-tuned head needs; each
    block dropped takes a twelfth of e5-small's work per token away.
    """
    blocks = model.encoder.layer
    if depth is None or depth == len(blocks):
        return model
    if not 1 <= depth < len(blocks):
        raise ValueError(f"cannot cut a {len(blocks)}-block encoder to {depth} blocks")
    model.encoder.layer = blocks[:depth]
    model.config.num_hidden_layers = depth
    return model


def save(
    model: nn.Module,
    path: Path,
    *,
    rank: int,
    alpha: float,
    prefix: str | None = None,
    handles: str | None = None,
) -> str:
    """Write the adapter of ``model`` to ``path``; returns its short hash.

    Beside rank and alpha it records the encoder's depth (its number of blocks) and, if given,
    the ``prefix`` put before every text in training and what every @handle was written as
    (``handles``), so serving rebuilds the same input and network
    (``adapter.encoder_depth``/``encoder_prefix``/``encoder_handles``).
    """
    from safetensors.torch import save_file

    tensors = adapter_tensors(model)
    meta = {
        "rank": str(rank),
        "alpha": str(alpha),
        "targets": json.dumps(TARGETS),
        "depth": str(len(model.encoder.layer)),
    }
    if prefix is not None:
        meta["prefix"] = json.dumps(prefix)
    if handles is not None:
        meta["handles"] = json.dumps(handles)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp), metadata=meta)
    canonicalize(tmp)  # same weights, same bytes, same hash
    tmp.chmod(0o644)  # committed and shipped
    tmp.replace(path)
    return short_hash(path)


def merge_into(model: nn.Module, path: Path) -> dict[str, Any]:
    """Add the adapter in ``path`` to the weights of a plain (un-injected) ``model`` in place.

    Layer names are those of the model the adapter was trained on, minus any wrapper prefix
    (training wraps the ``BertModel``, serving loads it bare). An adapter trained on a cut
    encoder (its recorded ``depth``) cuts ``model`` the same way first. Every adapted layer
    must be found and every tensor used: a mismatch raises instead of serving a half-tuned
    encoder.
    """
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    if meta.get("depth"):
        cut(model, int(meta["depth"]))
    scale = float(meta["alpha"]) / float(meta["rank"])
    layers = {name: linear for name, _, _, linear in _targets(model)}
    pairs = sorted(k[: -len(".lora_A")] for k in tensors if k.endswith(".lora_A"))
    if len(pairs) * 2 != len(tensors):
        raise ValueError(f"{path}: unpaired adapter tensors")
    merged = 0
    with torch.no_grad():
        for key in pairs:
            name = next((n for n in layers if key == n or key.endswith("." + n)), None)
            if name is None:
                raise ValueError(f"{path}: adapter layer {key!r} is not in the model")
            a, b = tensors[f"{key}.lora_A"], tensors[f"{key}.lora_B"]
            linear = layers[name]
            linear.weight += (b @ a).to(linear.weight.dtype) * scale
            merged += 1
    if merged != len(layers):
        raise ValueError(f"{path}: adapter covers {merged} of {len(layers)} layers")
    return {"layers": merged, "rank": int(meta["rank"]), "alpha": float(meta["alpha"])}
