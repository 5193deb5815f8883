"""bench/classify runs end to end (a small run): it wraps the service's scorer, so a change
of ``Classifier.score``'s signature broke it once without any test noticing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_bench_classify_measures_both_paths(tmp_path: Path) -> None:
    out = tmp_path / "classify.json"
    cmd = [sys.executable, "-m", "bench.classify", "--backends", "onnx", "--posts", "40"]
    done = subprocess.run(
        [*cmd, "--batch", "16", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    runs = json.loads(out.read_text())["runs"]
    assert {r["path"] for r in runs} == {"service", "offline"}
    for r in runs:
        assert r["posts"] == 40 and r["posts_per_s"] > 0 and r["peak_rss_mb"] > 0, r
    [service] = [r for r in runs if r["path"] == "service"]
    assert service["exit_code"] == 0  # the worker stopped cleanly on SIGTERM
