"""Raw int8 encoder throughput: static activation scales vs dynamic ones, alone and batched.

    .venv/bin/python -m bench.encoder_modes --texts 800 --runs 3

The served file (shipped adapter, calibrated static scales, length batches of up to 64) is
timed against the same adapter exported with run-time (dynamic) scales, once one text per run
(what served from 2026-11-27 until static scales) and once batched (not batch-invariant).
The dynamic file is exported into a temporary model directory (about 30 s, needs torch). The
three are interleaved run by run, so a load elsewhere on the machine hits each alike. Prints
texts/s per run and the embeddings' mean and minimum cosine between static and dynamic; writes
``bench/results/encoder-modes.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from bench.interleave import interleaved_rates
from bench.pipeline import sample_texts
from services.classify.model import default_model_dir
from services.classify.model.adapter import ADAPTER_FILE, adapter_for
from services.classify.model.encoder import Encoder
from services.classify.model.onnx_export import export_onnx
from services.classify.model.prepare import prepare_encoder

ROOT = Path(__file__).resolve().parents[1]
console = Console()


def dynamic_copy(model_dir: Path, adapter: Path, tmp: Path) -> tuple[Path, Path]:
    """A model dir of links to the base files plus the adapter's dynamic-scale export."""
    served, heads = tmp / "model", tmp / "heads"
    served.mkdir()
    heads.mkdir()
    for item in model_dir.iterdir():
        if not item.name.endswith((".onnx", ".onnx.json")) and item.name != "thirdring-onnx.json":
            (served / item.name).symlink_to(item.resolve())
    copy = heads / ADAPTER_FILE  # no activation-ranges.json beside it: dynamic scales
    shutil.copyfile(adapter, copy)
    warnings.filterwarnings("ignore")  # the TorchScript exporter's notes
    logging.getLogger().setLevel(logging.ERROR)  # quantize_dynamic's "run pre-processing"
    export_onnx(served, adapter=copy)
    return served, copy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=800)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/encoder-modes.json")
    args = parser.parse_args()

    model_dir = prepare_encoder(default_model_dir())
    adapter = adapter_for()
    if adapter is None:
        raise SystemExit("no shipped adapter")
    texts = sample_texts(args.texts)
    with tempfile.TemporaryDirectory(prefix="encoder-modes-") as tmp:
        with console.status("exporting the adapter with dynamic scales"):
            dyn_dir, dyn_adapter = dynamic_copy(model_dir, adapter, Path(tmp))
        encoders = {
            "static scales, batched (served)": Encoder(model_dir, backend="onnx"),
            "dynamic scales, one text per run": Encoder(
                dyn_dir, backend="onnx", adapter=dyn_adapter
            ),
            "dynamic scales, batched": Encoder(
                dyn_dir, backend="onnx", adapter=dyn_adapter, batch_size=64
            ),
        }
        static = encoders["static scales, batched (served)"]
        if not static.static:
            raise SystemExit("no static scales in the served file: `thirdring model calibrate`")
        rates = interleaved_rates(encoders, texts, args.runs, console)
        a = static.encode(texts)
        b = encoders["dynamic scales, one text per run"].encode(texts)
    cos = (a * b).sum(axis=1)
    table = Table(title=f"int8 encoder, {len(texts)} tweets, texts/s per run")
    table.add_column("file, how run")
    table.add_column("batch size", justify="right")
    table.add_column("texts/s", justify="right")
    for name, enc in encoders.items():
        table.add_row(name, str(enc.batch_size), ", ".join(f"{r:.0f}" for r in rates[name]))
    console.print(table)
    console.print(f"cosine static vs dynamic: mean {cos.mean():.4f}, min {cos.min():.4f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "texts": len(texts),
                "texts_per_s": rates,
                "cosine_static_dynamic": {"mean": float(cos.mean()), "min": float(np.min(cos))},
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
