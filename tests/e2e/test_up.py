"""`thirdring up` as a newcomer runs it: the demo shows cases, a warning, a breach and the
figures, and Ctrl-C stops everything cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.classify.model import default_model_dir
from shared.ports import free_port

pytestmark = pytest.mark.slow

THIRDRING = str(Path(sys.executable).parent / "thirdring")


def test_up_runs_the_demo_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "THIRDRING_DATA_DIR": str(tmp_path / "var"),
        "THIRDRING_MODEL_DIR": str(default_model_dir().resolve()),
        "THIRDRING_API_PORT": str(free_port()),
        "THIRDRING_INGEST_PORT": str(free_port()),
        "THIRDRING_CLASSIFY_PORT": str(free_port()),
        "KAFKA_BOOTSTRAP_SERVERS": "",
        "COLUMNS": "200",
    }
    log = tmp_path / "up.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [THIRDRING, "up"], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path
        )
        try:
            deadline = time.monotonic() + 150
            while "demo figures" not in log.read_text() and time.monotonic() < deadline:
                assert proc.poll() is None, log.read_text()[-3000:]
                time.sleep(1)
            time.sleep(3)
            # Still serving after the demo: only Ctrl-C stops it.
            assert proc.poll() is None, log.read_text()[-3000:]
            proc.send_signal(signal.SIGINT)
            code = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = log.read_text()
    tail = text[-4000:]  # shown when an assertion fails
    assert "thirdring is up" in text and "API token" in text, tail
    assert "ALERT WARNING" in text and "ALERT BREACH" in text, tail
    assert "demo figures" in text and "answered 1" in text, tail
    assert code == 0 and "thirdring stopped" in text, tail
    assert "Traceback" not in text, tail
