"""The pipeline as separate OS processes, as it runs in production: ``thirdring run
ingest|classify|alert`` and ``thirdring replay`` each in a process group of its own (so a
``kill -9`` takes the whole process), configured through the environment only, on a Tansu
broker with durable storage and a real database.

Used by the fault and scaling tests (tests/e2e) and by ``bench/scaling.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db.engine import make_engine
from shared.db.migrate import upgrade_async
from shared.ports import free_port

THIRDRING = [str(Path(sys.executable).with_name("thirdring"))]


def base_env(**values: str) -> dict[str, str]:
    """The parent's environment without any THIRDRING_* or Kafka setting, plus ``values``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("THIRDRING_") and k != "KAFKA_BOOTSTRAP_SERVERS"
    }
    env.update(values)
    return env


@dataclass
class Proc:
    """One ``thirdring`` command as a process group, logging to ``log`` (appended to over
    restarts, so the log of a whole run is one file per service)."""

    name: str
    args: list[str]
    env: dict[str, str]
    log: Path
    health_port: int | None = None
    cwd: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    kills: int = 0
    starts: int = 0
    exits: list[int] = field(default_factory=list)  # exit codes of runs that ended
    stopped_by_us: bool = False

    def start(self) -> Proc:
        assert not self.running, f"{self.name} is already running"
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [*THIRDRING, *self.args],
                env=self.env,
                cwd=self.cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: killpg reaches all of it
            )
        self.starts += 1
        self.stopped_by_us = False
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        """``kill -9`` the process group: no handler runs, nothing is flushed or committed."""
        assert self.proc is not None and self.running, f"{self.name} is not running"
        self.stopped_by_us = True
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.kills += 1

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM (what Kubernetes and Compose send) and wait; returns the exit code."""
        assert self.proc is not None
        self.stopped_by_us = True
        if self.running:
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
            raise AssertionError(f"{self.name} ignored SIGTERM for {timeout}s") from None
        self.exits.append(code)
        return code

    def ensure_stopped(self) -> None:
        """Clean-up: whatever state it is in, gone when this returns."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def exited_on_its_own(self) -> int | None:
        """The exit code if the process ended without us stopping it, else None."""
        if self.proc is None or self.stopped_by_us:
            return None
        return self.proc.poll()

    def tail(self, lines: int = 60) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"--- {self.name} ({self.log}) ---\n" + "\n".join(text.splitlines()[-lines:])

    async def ready(self, client: httpx.AsyncClient) -> bool:
        if not self.running:
            raise AssertionError(
                f"{self.name} exited with {self.proc and self.proc.returncode}\n" + self.tail()
            )
        if self.health_port is None:
            return True
        try:
            resp = await client.get(f"http://127.0.0.1:{self.health_port}/readyz", timeout=2)
        except httpx.HTTPError:
            return False
        return resp.status_code == 200


async def wait_ready(procs: list[Proc], timeout: float = 120.0) -> None:
    """Until every process answers ``/readyz`` with 200 (its consumer has joined)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with httpx.AsyncClient() as client:
        for p in procs:
            while not await p.ready(client):
                if loop.time() > deadline:
                    raise AssertionError(f"{p.name} not ready within {timeout}s\n" + p.tail())
                await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def database(postgres_url: str | None, workdir: Path) -> AsyncIterator[str]:
    """A fresh migrated database: its own database on the PostgreSQL server of
    ``postgres_url``, or a SQLite file under ``workdir``; dropped afterwards."""
    if not postgres_url:
        url = f"sqlite+aiosqlite:///{workdir / 'thirdring.db'}"
        await upgrade_async(url)
        yield url
        return
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = make_engine(postgres_url)
    async with admin.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.exec_driver_sql(f"CREATE DATABASE {name}")
    url = f"{postgres_url.rsplit('/', 1)[0]}/{name}"
    try:
        await upgrade_async(url)
        yield url
    finally:
        await drop_database(admin, name)
        await admin.dispose()


async def drop_database(admin: AsyncEngine, name: str, attempts: int = 20) -> None:
    """``DROP DATABASE … WITH (FORCE)``, retried: FORCE may not end an autovacuum worker
    that just started on the fresh database (a non-superuser may not signal it), and the
    worker leaves on its own within moments."""
    for attempt in range(attempts):
        try:
            async with admin.connect() as conn:
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                await conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            return
        except DBAPIError:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.5)


@dataclass
class Pipeline:
    """The services of one run: a common environment, and a process per service replica."""

    workdir: Path
    env: dict[str, str]
    procs: dict[str, Proc] = field(default_factory=dict)

    def add(self, name: str, *args: str, port_var: str | None = None) -> Proc:
        """A service replica ``name`` running ``thirdring *args``; ``port_var`` is the
        THIRDRING_*_PORT its health endpoints listen on (a free port is given)."""
        env = dict(self.env)
        port = None
        if port_var is not None:
            port = free_port()
            env[port_var] = str(port)
        proc = Proc(name, list(args), env, self.workdir / f"{name}.log", port, self.workdir)
        self.procs[name] = proc
        return proc

    async def start(self, *procs: Proc, timeout: float = 120.0) -> None:
        """Start ``procs`` together and wait until each answers ``/readyz``."""
        for p in procs:
            p.start()
        await wait_ready(list(procs), timeout)

    def crashed(self) -> list[str]:
        """Services that exited without being told to (with the end of their log)."""
        return [
            f"{p.name} exited with {code}\n{p.tail()}"
            for p in self.procs.values()
            if p.args[0] == "run" and (code := p.exited_on_its_own()) is not None
        ]

    def stop(self) -> dict[str, int]:
        """SIGTERM every service still running; their exit codes."""
        codes = {}
        for p in self.procs.values():
            if p.running:
                codes[p.name] = p.terminate()
        return codes

    def ensure_stopped(self) -> None:
        for p in self.procs.values():
            p.ensure_stopped()

    @contextlib.contextmanager
    def running(self) -> Iterator[Pipeline]:
        try:
            yield self
        finally:
            self.ensure_stopped()


def service_env(bootstrap: str, database_url: str, workdir: Path, **extra: str) -> dict[str, str]:
    """The environment every service of a run shares (what a ConfigMap would hold), with
    the prepared model (prepared here if it is not yet) and JSON logs."""
    from services.classify.model import default_model_dir
    from services.classify.model.prepare import prepare_encoder

    return base_env(
        KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        THIRDRING_DATABASE_URL=database_url,
        THIRDRING_DATA_DIR=str(workdir / "var"),
        THIRDRING_MODEL_DIR=str(prepare_encoder(default_model_dir()).resolve()),
        THIRDRING_LOG_FORMAT="json",
        PYTHONUNBUFFERED="1",
        **extra,
    )


async def metric(proc: Proc, name: str, **labels: str) -> float | None:
    """One sample of the process's ``/metrics`` (None if absent or unreachable)."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        async with httpx.AsyncClient(timeout=5) as client:
            resp = await client.get(f"http://127.0.0.1:{proc.health_port}/metrics")
    except httpx.HTTPError:
        return None
    for family in text_string_to_metric_families(resp.text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None


async def held_partitions(procs: list[Proc], consumer: str) -> list[float]:
    """Partitions each process's consumer holds now (its own report, on ``/metrics``)."""
    name = "thirdring_consumer_assigned_partitions"
    return [await metric(p, name, consumer=consumer) or 0.0 for p in procs]


async def wait_split(procs: list[Proc], consumer: str, partitions: int, timeout: float) -> None:
    """Until every process holds some partitions and together they hold all of them."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        held = await held_partitions(procs, consumer)
        if all(held) and sum(held) == partitions:
            return
        if loop.time() > deadline:
            raise AssertionError(f"{consumer}: partitions held {held} after {timeout}s")
        await asyncio.sleep(0.5)
