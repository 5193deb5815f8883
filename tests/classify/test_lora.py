"""LoRA adapters: what is trained is what is served once merged into the base weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertModel

from services.classify.model import lora


def tiny_bert(layers: int = 2) -> BertModel:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=50,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=16,
    )
    return BertModel(config).eval()


def hidden(model: BertModel, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state


def test_merged_base_equals_adapted_model(tmp_path: Path) -> None:
    ids = torch.tensor([[1, 5, 7, 9, 2]])
    base = tiny_bert()
    before = hidden(base, ids)
    adapted = tiny_bert()
    count = lora.inject(adapted, rank=4, alpha=8.0, dropout=0.0)
    assert count == 2 * len(lora.TARGETS)  # every target layer of both blocks
    trainable = [n for n, p in adapted.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)  # the base stays frozen
    with torch.no_grad():
        for module in adapted.modules():
            if isinstance(module, lora.LoRALinear):
                module.lora_B.normal_(0, 0.5)  # as if trained (B starts at zero)
    tuned = hidden(adapted, ids)
    assert not torch.allclose(tuned, before, atol=1e-3)

    path = tmp_path / lora.ADAPTER_FILE
    lora.save(adapted, path, rank=4, alpha=8.0)
    served = tiny_bert()
    info = lora.merge_into(served, path)
    assert info == {"layers": count, "rank": 4, "alpha": 8.0}
    assert torch.allclose(hidden(served, ids), tuned, atol=1e-5)


def test_merge_refuses_an_adapter_for_another_model(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    adapted = tiny_bert(layers=1)
    lora.inject(adapted, rank=2)
    # An adapter of the format before depths were recorded: nothing says to cut the model.
    old = tmp_path / "old.safetensors"
    save_file(lora.adapter_tensors(adapted), str(old), metadata={"rank": "2", "alpha": "16.0"})
    with pytest.raises(ValueError, match="covers 6 of 12 layers"):
        lora.merge_into(tiny_bert(layers=2), old)
    # One trained on a deeper encoder than the one given.
    deeper = tiny_bert(layers=3)
    lora.inject(deeper, rank=2)
    path = tmp_path / lora.ADAPTER_FILE
    lora.save(deeper, path, rank=2, alpha=16.0)
    with pytest.raises(ValueError, match="cannot cut a 2-block encoder to 3 blocks"):
        lora.merge_into(tiny_bert(layers=2), path)


def test_an_adapter_trained_on_a_cut_encoder_cuts_the_served_one(tmp_path: Path) -> None:
    """Training on the first N blocks records N (and the prefix); merging rebuilds that net."""
    from services.classify.model.adapter import encoder_depth, encoder_handles, encoder_prefix

    ids = torch.tensor([[1, 5, 7, 9, 2]])
    adapted = lora.cut(tiny_bert(layers=3), 2)
    assert len(adapted.encoder.layer) == 2 and adapted.config.num_hidden_layers == 2
    lora.inject(adapted, rank=2, alpha=4.0, dropout=0.0)
    with torch.no_grad():
        for module in adapted.modules():
            if isinstance(module, lora.LoRALinear):
                module.lora_B.normal_(0, 0.5)
    tuned = hidden(adapted, ids)
    path = tmp_path / lora.ADAPTER_FILE
    lora.save(adapted, path, rank=2, alpha=4.0, prefix="", handles="@user")
    assert encoder_depth(path) == 2
    assert encoder_prefix(path) == ""  # recorded, even when empty
    assert encoder_handles(path) == "@user"

    served = tiny_bert(layers=3)  # the full base, as `prepare` leaves it
    info = lora.merge_into(served, path)
    assert info["layers"] == 2 * len(lora.TARGETS)
    assert len(served.encoder.layer) == 2
    assert torch.allclose(hidden(served, ids), tuned, atol=1e-5)
    assert lora.cut(tiny_bert(layers=3), None).config.num_hidden_layers == 3  # None: no cut


def test_adapters_without_a_recorded_cut_mean_the_whole_encoder_and_e5_prefix() -> None:
    from services.classify.model.adapter import encoder_depth, encoder_handles, encoder_prefix
    from services.classify.model.encoder import QUERY_PREFIX

    assert encoder_depth(None) is None
    assert encoder_prefix(None) == QUERY_PREFIX
    assert encoder_handles(None) is None  # handles are read as written


def test_same_weights_give_the_same_file_whatever_the_metadata_order(tmp_path: Path) -> None:
    """safetensors writes metadata in hash-map order; the adapter's hash names the model."""
    from safetensors.torch import load_file, save_file

    from services.classify.model.adapter import adapter_for, canonicalize, short_hash

    tensors = {"b.lora_B": torch.ones(4, 2), "a.lora_A": torch.arange(8.0).reshape(2, 4)}
    first, second = tmp_path / "first.safetensors", tmp_path / "second.safetensors"
    save_file(tensors, str(first), metadata={"rank": "2", "alpha": "4.0", "targets": "[]"})
    save_file(tensors, str(second), metadata={"targets": "[]", "alpha": "4.0", "rank": "2"})
    for path in (first, second):
        canonicalize(path)
    assert first.read_bytes() == second.read_bytes()
    assert short_hash(first) == short_hash(second)
    loaded = load_file(str(first))
    assert all(torch.equal(loaded[k], v) for k, v in tensors.items())
    # The shipped adapter is stored canonically too.
    shipped = adapter_for()
    assert shipped is not None
    before = shipped.read_bytes()
    copy = tmp_path / "shipped.safetensors"
    copy.write_bytes(before)
    canonicalize(copy)
    assert copy.read_bytes() == before
