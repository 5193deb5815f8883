"""Static activation scales for the int8 encoder, so that batching cannot change a score.

``quantize_dynamic`` leaves a ``DynamicQuantizeLinear`` before every int8 ``MatMul``: it
quantizes the activations with one scale per run, taken from the min/max of the whole batch.
A text batched with others therefore got (slightly) different scores than alone. Here each of
those nodes becomes a ``QuantizeLinear`` with a constant scale and zero point, from the
activation ranges measured on calibration texts (each text run alone, so no padding enters the
ranges), and each ``MatMulInteger -> Cast -> Mul`` becomes one fused ``MatMulIntegerToFloat``
(with the Linear's bias folded in); onnxruntime does not fuse it by itself once the scale
product is a constant. Every row is then quantized with the same numbers whatever else is in
the batch: a text's embedding is the same alone or batched, and batching (~1.35x on 2 cores)
is back.

Measured on the 2-core machine (experiment on branch ``exp-nbits``; docs/model-card.md): the
same F1 as the dynamic file within the val sets' noise, cosine to fp32 0.9935 (dynamic 0.994),
and as fast as the dynamic file batched. Traps found on the way: with int8 (not uint8)
activations ``MatMulInteger`` is several times slower in this onnxruntime build, and its
automatic ``MatMulIntegerToFloat`` fusion gave wrong results with per-row scales.

The ranges ship beside the adapter (``activation-ranges.json``, a few kB): a fresh clone has
no calibration data, and the same ranges give the same file. ``thirdring model calibrate``
(and ``model train``) measure them anew.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

RANGES_FILE = "activation-ranges.json"
RANGES_FORMAT = 1
# UMSAB train texts per language (8 languages, 960 texts). 40 per language (the experiment)
# gave the same F1 but Hindi 31.1 against 34.0; wider ranges from more texts clip less.
CALIBRATION_PER_LANGUAGE = 120
MS_DOMAIN = "com.microsoft"

Ranges = dict[str, tuple[float, float]]


def ranges_path(adapter: Path) -> Path:
    """Where the ranges for ``adapter`` live: beside it (and its heads)."""
    return Path(adapter).parent / RANGES_FILE


def ranges_digest(ranges: Ranges) -> str:
    """A short hash of the ranges, recorded in the export's marker (new ranges, new file)."""
    text = json.dumps(sorted((k, [float(v) for v in r]) for k, r in ranges.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def load_ranges(adapter: Path | None) -> Ranges | None:
    """The calibrated ranges for ``adapter``, or None (no file, or measured for another one)."""
    from services.classify.model.adapter import short_hash

    if adapter is None or not ranges_path(adapter).is_file():
        return None
    info = json.loads(ranges_path(adapter).read_text())
    if info.get("format") != RANGES_FORMAT or info.get("adapter") != short_hash(adapter):
        return None
    return {name: (float(lo), float(hi)) for name, (lo, hi) in info["ranges"].items()}


def save_ranges(adapter: Path, ranges: Ranges, *, texts: int, source: str) -> Path:
    """Write ``activation-ranges.json`` beside ``adapter`` (sorted, so reruns give equal bytes)."""
    from services.classify.model.adapter import short_hash

    info = {
        "format": RANGES_FORMAT,
        "adapter": short_hash(adapter),
        "calibration": {"texts": texts, "source": source, "each_text_alone": True},
        "ranges": {k: [float(lo), float(hi)] for k, (lo, hi) in sorted(ranges.items())},
    }
    path = ranges_path(adapter)
    path.write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")
    return path


def calibration_texts(
    data_dir: Path, per_language: int = CALIBRATION_PER_LANGUAGE
) -> tuple[list[str], str]:
    """The first ``per_language`` UMSAB train texts of every language, and a description."""
    root = Path(data_dir) / "sentiment-umsab"
    found = root.iterdir() if root.is_dir() else ()
    languages = sorted(p.name for p in found if (p / "train_text.txt").is_file())
    if not languages:
        raise FileNotFoundError(f"no sentiment-umsab/*/train_text.txt under {data_dir}")
    texts: list[str] = []
    for lang in languages:
        lines = (root / lang / "train_text.txt").read_text(encoding="utf-8").splitlines()
        texts += [line for line in lines if line.strip()][:per_language]
    return texts, f"sentiment-umsab train, first {per_language} of {', '.join(languages)}"


def _dynamic_nodes(model: Any) -> list[Any]:
    return [n for n in model.graph.node if n.op_type == "DynamicQuantizeLinear"]


def measure_ranges(int8_path: Path, token_ids: Sequence[Sequence[int]]) -> Ranges:
    """Min and max (widened to include 0) of every dynamically quantized activation of the
    int8 file, over the texts given as token ids, each run alone."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    model = onnx.load(str(int8_path))
    names = [n.input[0] for n in _dynamic_nodes(model)]
    for name in names:  # expose the activations as outputs
        model.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    lo = np.zeros(len(names), np.float64)
    hi = np.zeros(len(names), np.float64)
    for ids in token_ids:
        row = np.asarray([ids], np.int64)
        outs = session.run(names, {"input_ids": row, "attention_mask": np.ones_like(row)})
        for j, value in enumerate(outs):
            lo[j] = min(lo[j], float(value.min()))
            hi[j] = max(hi[j], float(value.max()))
    return {name: (float(lo[j]), float(hi[j])) for j, name in enumerate(names)}


def _uint8_params(lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """Scale and zero point of uint8 quantization over [lo, hi] (as DynamicQuantizeLinear)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = np.float32((hi - lo) / 255.0 or 1.0)
    zero_point = np.uint8(np.clip(np.round(-lo / scale), 0, 255))
    return np.array(scale, np.float32), np.array(zero_point, np.uint8)


def make_static(model: Any, ranges: Ranges) -> Any:
    """Rewrite a ``quantize_dynamic`` model (in place) to constant activation scales; returns
    it. Raises ``ValueError`` when an activation has no range or the graph is not the expected
    ``DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul`` shape."""
    from onnx import helper, numpy_helper

    graph = model.graph
    nodes = list(graph.node)
    producer = {out: n for n in nodes for out in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in nodes:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    initializers = {i.name: i for i in graph.initializer}
    replace: dict[int, list[Any]] = {}
    drop: set[int] = set()
    for dql in _dynamic_nodes(model):
        x = dql.input[0]
        if x not in ranges:
            raise ValueError(f"no calibrated range for activation {x!r}: calibrate again")
        xq, xs, xzp = dql.output
        scale, zero_point = _uint8_params(*ranges[x])
        graph.initializer.extend(
            [numpy_helper.from_array(scale, xs), numpy_helper.from_array(zero_point, xzp)]
        )
        replace[id(dql)] = [
            helper.make_node("QuantizeLinear", [x, xs, xzp], [xq], name=f"{dql.name}_static")
        ]
        for matmul in consumers.get(xq, []):
            replace[id(matmul)], fused = _fused_matmul(matmul, xq, xs, xzp, consumers, producer)
            drop.update(fused)
            # The Linear's bias, when the only consumer is an Add of a 1-D constant: fused too.
            out = replace[id(matmul)][0].output[0]
            after = consumers.get(out, [])
            if len(after) == 1 and after[0].op_type == "Add":
                bias = [i for i in after[0].input if i != out and i in initializers]
                if len(bias) == 1 and len(initializers[bias[0]].dims) == 1:
                    node = replace[id(matmul)][0]
                    node.input.append(bias[0])
                    node.output[0] = after[0].output[0]
                    drop.add(id(after[0]))
    new_nodes: list[Any] = []
    for n in nodes:
        if id(n) not in drop:
            new_nodes += replace.get(id(n), [n])
    del graph.node[:]
    graph.node.extend(new_nodes)
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return model


def _fused_matmul(
    matmul: Any,
    xq: str,
    xs: str,
    xzp: str,
    consumers: dict[str, list[Any]],
    producer: dict[str, Any],
) -> tuple[list[Any], tuple[int, ...]]:
    """``MatMulInteger -> Cast -> Mul(., Mul(x_scale, w_scale))`` as one MatMulIntegerToFloat."""
    from onnx import helper

    def only(name: str, op: str) -> Any:
        found = consumers.get(name, [])
        if len(found) != 1 or found[0].op_type != op:
            raise ValueError(f"unexpected int8 graph after {matmul.name}: wanted one {op}")
        return found[0]

    if matmul.op_type != "MatMulInteger":
        raise ValueError(f"{xq} feeds a {matmul.op_type}, not MatMulInteger")
    cast = only(matmul.output[0], "Cast")
    mul = only(cast.output[0], "Mul")
    scales = producer[mul.input[1]]
    if scales.op_type != "Mul" or scales.input[0] != xs:
        raise ValueError(f"unexpected scale product after {matmul.name}")
    w, w_zp = matmul.input[1], matmul.input[3]
    fused = helper.make_node(
        "MatMulIntegerToFloat",
        [xq, w, xs, scales.input[1], xzp, w_zp],
        [mul.output[0]],
        domain=MS_DOMAIN,
        name=f"{matmul.name}_i2f",
    )
    return [fused], (id(cast), id(mul), id(scales))


def write_static(dynamic_path: Path, ranges: Ranges, out: Path) -> None:
    """Read the dynamic int8 file, rewrite it with ``ranges``, write it to ``out``."""
    import onnx

    model = make_static(onnx.load(str(dynamic_path)), ranges)
    onnx.save(model, str(out))
