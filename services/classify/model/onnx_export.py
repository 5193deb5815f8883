"""Export the prepared ``BertModel`` to ONNX and quantize it to dynamic int8 for serving.

The serving path (``Encoder(backend="onnx")``) runs ``model.int8.onnx`` with onnxruntime and
never imports torch; this module is the only place that needs torch for it, and only at
``thirdring model prepare`` time. The files live in the prepared model directory:

- ``model.int8.onnx``: inputs ``input_ids`` / ``attention_mask`` ``[batch, seq]`` int64, output
  ``last_hidden_state`` ``[batch, seq, hidden]``, dynamic batch and sequence axes; the ``MatMul``
  weights and the word-embedding ``Gather`` quantized to int8 (``quantize_dynamic``,
  per-channel QInt8). Activations are quantized with constant, calibrated scales when
  ranges for the adapter ship beside it (``static_int8``: batching cannot change a score), at
  run time otherwise (the Encoder then scores one text per run).
- ``thirdring-onnx.json``: the recipe, so a changed recipe rebuilds the file.
- ``model.lora-<hash>.int8.onnx`` (+ ``.json``): the same with a fine-tuning adapter
  (``lora.py``) merged into the weights first; the hash is the adapter file's, so heads and
  the encoder tuned with them always go together and several can sit side by side.

The fp32 export is an intermediate in a temporary file (470 MB, not kept). The int8 file is
written to a temporary name and renamed into place, so a crash never leaves a half-written
file that a worker would load; a later run with the file present does nothing.

Measured on the 2-core machine (512 UMSAB val tweets, batches of 32 sorted by length), against
the torch fp32 model: onnxruntime fp32 ~170 texts/s, 945 MB RSS; int8 MatMul only ~360/s,
cosine >= 0.990, 822 MB RSS (1.1 GB peak while loading); int8 MatMul + Gather ~370/s, cosine
>= 0.989, 550 MB RSS (the 384 MB fp32 word-embedding table becomes 96 MB); per-tensor instead
of per-channel weights: cosine 0.977, no faster.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path

from services.classify.model.adapter import short_hash
from services.classify.model.static_int8 import (
    calibration_texts,
    load_ranges,
    measure_ranges,
    ranges_digest,
    save_ranges,
    write_static,
)

ONNX_FP32 = "model.onnx"
ONNX_INT8 = "model.int8.onnx"
ONNX_MARKER = "thirdring-onnx.json"
# Bump when the export or the quantisation recipe changes so old files are rebuilt.
ONNX_FORMAT_VERSION = 3
OPSET = 17
# MatMul: the Linear layers (the speed); Gather: the 250k x 384 word embedding (the memory).
QUANT_OP_TYPES = ("MatMul", "Gather")
PER_CHANNEL = True


def onnx_filename(adapter: Path | None = None) -> str:
    """The int8 model's file name: the base encoder's, or the one with ``adapter`` merged."""
    return ONNX_INT8 if adapter is None else f"model.lora-{short_hash(adapter)}.int8.onnx"


def _marker(model_dir: Path, adapter: Path | None) -> Path:
    return model_dir / (ONNX_MARKER if adapter is None else onnx_filename(adapter) + ".json")


def onnx_ready(model_dir: Path, adapter: Path | None = None) -> bool:
    """True when ``model_dir`` holds the int8 model (with ``adapter``) of the current recipe."""
    try:
        info = json.loads(_marker(model_dir, adapter).read_text())
    except (OSError, ValueError):
        return False
    return (
        info.get("format_version") == ONNX_FORMAT_VERSION
        and (model_dir / onnx_filename(adapter)).is_file()
        and (info.get("activations") or {}).get("ranges") == _current_ranges(adapter)
    )


def _current_ranges(adapter: Path | None) -> str | None:
    ranges = load_ranges(adapter)
    return None if ranges is None else ranges_digest(ranges)


def static_activations(model_dir: Path, adapter: Path | None = None) -> bool:
    """True when the exported file quantizes activations with calibrated constant scales."""
    try:
        info = json.loads(_marker(Path(model_dir), adapter).read_text())
    except (OSError, ValueError):
        return False
    return (info.get("activations") or {}).get("scales") == "static"


def export_in_subprocess(
    model_dir: Path,
    *,
    force: bool = False,
    adapter: Path | None = None,
    calibrate_on: Path | None = None,
) -> Path:
    """:func:`export_onnx` in a child Python, so the caller never imports torch.

    A serving process that prepares its model on first start stays torch-free (and the
    exporter's ~2 GB peak is freed when the child exits).
    """
    import subprocess
    import sys

    model_dir = Path(model_dir)
    target = model_dir / onnx_filename(adapter)
    if not force and calibrate_on is None and onnx_ready(model_dir, adapter):
        return target
    cmd = [sys.executable, "-m", "services.classify.model.onnx_export", str(model_dir)]
    if calibrate_on is not None:
        cmd += ["--calibrate", str(calibrate_on)]
    if force:
        cmd.append("--force")
    if adapter is not None:
        cmd += ["--adapter", str(adapter)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not onnx_ready(model_dir, adapter):
        raise RuntimeError(f"ONNX export failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return target


def _tmp_name(target: Path) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
    os.close(fd)
    return Path(name)


def export_fp32(model_dir: Path, out: Path, adapter: Path | None = None) -> None:
    """``torch.onnx.export`` of the transformers model (TorchScript exporter, opset 17)."""
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(model_dir, attn_implementation="eager").eval()
    if adapter is not None:
        from services.classify.model.lora import merge_into

        merge_into(model, adapter)
    model.config.return_dict = True
    ids = torch.tensor([[0, 41, 42, 43, 2], [0, 41, 42, 2, 1]], dtype=torch.int64)
    mask = (ids != 1).to(torch.int64)

    class _Wrapper(torch.nn.Module):
        def __init__(self, bert: torch.nn.Module) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    with torch.inference_mode():
        torch.onnx.export(
            _Wrapper(model),
            (ids, mask),
            str(out),
            input_names=["input_ids", "attention_mask"],
            output_names=["last_hidden_state"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "seq"},
                "attention_mask": {0: "batch", 1: "seq"},
                "last_hidden_state": {0: "batch", 1: "seq"},
            },
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )


def quantize_int8(src: Path, out: Path) -> None:
    """Dynamic int8 quantisation of the MatMul weights (per output channel)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(src),
        str(out),
        weight_type=QuantType.QInt8,
        per_channel=PER_CHANNEL,
        op_types_to_quantize=list(QUANT_OP_TYPES),
    )


def _token_ids(model_dir: Path, texts: list[str], adapter: Path | None) -> list[list[int]]:
    """The ids the Encoder feeds for ``texts`` (``adapter``'s prefix, truncation), unpadded."""
    from services.classify.model.adapter import encoder_prefix
    from services.classify.model.encoder import load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    prefix = encoder_prefix(adapter)
    return [e.ids for e in tokenizer.encode_batch([prefix + t for t in texts])]


def export_onnx(
    model_dir: Path,
    *,
    force: bool = False,
    adapter: Path | None = None,
    calibrate_on: Path | None = None,
) -> Path:
    """Write the int8 model (``adapter`` merged, if given) into ``model_dir`` (idempotent).

    With ``calibrate_on`` (a data directory like ../shared/data), the activation ranges of
    ``adapter``'s export are measured on its calibration texts and saved beside the adapter
    first, so the file written uses them."""
    model_dir = Path(model_dir)
    int8 = model_dir / onnx_filename(adapter)
    if calibrate_on is not None and adapter is None:
        raise ValueError("calibration ranges belong to an adapter: give one")
    if not force and calibrate_on is None and onnx_ready(model_dir, adapter):
        return int8
    started = time.perf_counter()
    tmp_fp32 = _tmp_name(model_dir / ONNX_FP32)
    tmp_dynamic = _tmp_name(int8.with_suffix(".dynamic"))
    tmp_int8 = _tmp_name(int8)
    try:
        export_fp32(model_dir, tmp_fp32, adapter)
        quantize_int8(tmp_fp32, tmp_dynamic)
        tmp_fp32.unlink()
        if calibrate_on is not None and adapter is not None:
            texts, source = calibration_texts(calibrate_on)
            ranges = measure_ranges(tmp_dynamic, _token_ids(model_dir, texts, adapter))
            save_ranges(adapter, ranges, texts=len(texts), source=source)
        else:
            ranges = load_ranges(adapter)
        if ranges is None:
            tmp_dynamic.replace(tmp_int8)
        else:
            write_static(tmp_dynamic, ranges, tmp_int8)
        tmp_int8.chmod(0o644)
        tmp_int8.replace(int8)
    finally:
        for path in (tmp_fp32, tmp_dynamic, tmp_int8):
            path.unlink(missing_ok=True)
    marker = {
        "format_version": ONNX_FORMAT_VERSION,
        "opset": OPSET,
        "quantization": {
            "method": "onnxruntime.quantization.quantize_dynamic",
            "weight_type": "QInt8",
            "per_channel": PER_CHANNEL,
            "op_types": list(QUANT_OP_TYPES),
        },
        "activations": {
            "scales": "dynamic" if ranges is None else "static",
            "ranges": None if ranges is None else ranges_digest(ranges),
        },
        "adapter": None if adapter is None else {"path": str(adapter), "hash": short_hash(adapter)},
        "seconds": round(time.perf_counter() - started, 1),
    }
    marker_path = _marker(model_dir, adapter)
    tmp_marker = _tmp_name(marker_path)
    tmp_marker.write_text(json.dumps(marker, indent=2) + "\n")
    tmp_marker.chmod(0o644)
    tmp_marker.replace(marker_path)
    return int8


def main() -> None:
    """``python -m services.classify.model.onnx_export [DIR] [--force]``."""
    import argparse

    from services.classify.model import default_model_dir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", nargs="?", type=Path, default=None)
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--adapter", type=Path, default=None, help="LoRA adapter to merge")
    parser.add_argument(
        "--calibrate", type=Path, default=None, help="data dir: measure activation ranges first"
    )
    args = parser.parse_args()
    import warnings

    warnings.filterwarnings("ignore")  # the TorchScript exporter's deprecation/tracer notes
    logging.getLogger().setLevel(logging.ERROR)  # quantize_dynamic's "run pre-processing"
    print(
        export_onnx(
            args.model_dir or default_model_dir(),
            force=args.force,
            adapter=args.adapter,
            calibrate_on=args.calibrate,
        )
    )


if __name__ == "__main__":
    main()
