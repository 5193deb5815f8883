"""Calibrated activation ranges: tied to their adapter, complete, and applied to the graph."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from services.classify.model.adapter import adapter_for, short_hash
from services.classify.model.static_int8 import (
    RANGES_FILE,
    calibration_texts,
    load_ranges,
    make_static,
    ranges_digest,
)

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def test_shipped_ranges_belong_to_the_shipped_adapter() -> None:
    adapter = adapter_for()
    assert adapter is not None
    ranges = load_ranges(adapter)
    assert ranges, "activation-ranges.json missing: run `thirdring model calibrate`"
    assert all(lo <= 0.0 <= hi and lo < hi for lo, hi in ranges.values())
    assert ranges_digest(ranges) == ranges_digest(dict(reversed(list(ranges.items()))))


def test_ranges_of_another_adapter_are_ignored(tmp_path: Path) -> None:
    adapter = adapter_for()
    assert adapter is not None
    copy = tmp_path / adapter.name
    copy.write_bytes(adapter.read_bytes() + b" ")  # another adapter file: another hash
    shutil.copy(adapter.parent / RANGES_FILE, tmp_path / RANGES_FILE)
    assert short_hash(copy) != short_hash(adapter)
    assert load_ranges(copy) is None
    assert load_ranges(None) is None


def test_a_missing_range_is_an_error_not_a_guess(base_int8: Path) -> None:
    import onnx

    model = onnx.load(str(base_int8))  # the base encoder's dynamic file
    with pytest.raises(ValueError, match="no calibrated range"):
        make_static(model, {})


def test_the_rewrite_replaces_every_dynamic_quantization(base_int8: Path) -> None:
    import onnx

    model = onnx.load(str(base_int8))
    inputs = [n.input[0] for n in model.graph.node if n.op_type == "DynamicQuantizeLinear"]
    assert inputs
    make_static(model, {name: (-1.0, 1.0) for name in inputs})
    ops = [n.op_type for n in model.graph.node]
    assert "DynamicQuantizeLinear" not in ops and "MatMulInteger" not in ops
    assert ops.count("QuantizeLinear") == len(inputs)
    scales = {i.name: i for i in model.graph.initializer}
    quantize = next(n for n in model.graph.node if n.op_type == "QuantizeLinear")
    scale = onnx.numpy_helper.to_array(scales[quantize.input[1]])
    zero_point = onnx.numpy_helper.to_array(scales[quantize.input[2]])
    assert abs(float(scale) - 2.0 / 255) < 1e-7 and int(zero_point) in (127, 128)  # 0 ~ mid
    onnx.checker.check_model(model)


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data not present")
def test_calibration_texts_cover_every_language() -> None:
    texts, source = calibration_texts(SHARED_DATA, per_language=3)
    languages = json.dumps(source)
    assert len(texts) == 3 * 8 and all(t.strip() for t in texts)
    assert "italian" in languages and "english" in languages
