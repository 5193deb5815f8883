"""Raw int8 encoder throughput of several fine-tuned adapters (say, 12 blocks against 9).

    .venv/bin/python -m bench.encoder_depth --heads services/classify/model/heads \\
        --heads /tmp/heads-12 --texts 1800 --runs 3

Each ``--heads`` directory holds an ``adapter.safetensors`` (and its ``activation-ranges.json``);
the adapter records how many encoder blocks it was trained on and its input prefix, and its
int8 file is exported into the model directory if missing (about 30 s, needs torch). The
encoders are interleaved run by run, so a load elsewhere on the machine hits each alike.
Prints texts/s per run and the mean tokens per text (the prefix counts); writes
``bench/results/encoder-depth.json``. The 12-block adapter shipped until 2026-12-05 is in git:
``git show 8ce1dbf:services/classify/model/heads/adapter.safetensors`` (and
``activation-ranges.json``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from bench.interleave import interleaved_rates
from bench.pipeline import sample_texts
from services.classify.model import default_model_dir
from services.classify.model.adapter import adapter_for, encoder_depth
from services.classify.model.encoder import Encoder
from services.classify.model.prepare import encoder_blocks, prepare_encoder

ROOT = Path(__file__).resolve().parents[1]
console = Console()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--heads", type=Path, action="append", help="heads directory (repeat; default: shipped)"
    )
    parser.add_argument("--texts", type=int, default=1800)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/encoder-depth.json")
    args = parser.parse_args()

    encoders: dict[str, Encoder] = {}
    for heads in args.heads or [None]:
        adapter = adapter_for(heads)
        if adapter is None:
            raise SystemExit(f"no adapter in {heads or 'the shipped heads'}")
        with console.status(f"preparing the int8 file for {adapter}"):
            model_dir = prepare_encoder(default_model_dir(), adapter=adapter)
        encoders[str(heads or "shipped")] = Encoder(model_dir, backend="onnx", adapter=adapter)
    texts = sample_texts(args.texts)
    rates = interleaved_rates(encoders, texts, args.runs, console)
    table = Table(title=f"int8 encoder, {len(texts)} tweets, texts/s per run")
    for column in ("heads", "blocks", "prefix", "tokens/text", "texts/s"):
        table.add_column(column, justify="left" if column == "heads" else "right")
    report = {}
    for name, enc in encoders.items():
        depth = encoder_depth(enc.adapter) or encoder_blocks(enc.model_dir)
        tokens = float(np.mean(enc.tokenize(texts)[1]))
        table.add_row(
            name,
            str(depth),
            repr(enc.prefix),
            f"{tokens:.1f}",
            ", ".join(f"{r:.0f}" for r in rates[name]),
        )
        report[name] = {
            "blocks": depth,
            "prefix": enc.prefix,
            "tokens_per_text": round(tokens, 2),
            "texts_per_s": rates[name],
        }
    console.print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"texts": len(texts), "encoders": report}, indent=2) + "\n")


if __name__ == "__main__":
    main()
