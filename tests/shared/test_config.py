"""Settings: secrets from files, env, and the embedded defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from shared.config import Settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "THIRDRING_WEBHOOK_SECRET",
        "THIRDRING_WEBHOOK_SECRET_FILE",
        "THIRDRING_NOTIFY_WEBHOOK_SECRET",
        "THIRDRING_NOTIFY_WEBHOOK_SECRET_FILE",
        "THIRDRING_DATABASE_URL",
        "THIRDRING_DATA_DIR",
        "THIRDRING_SLA_POLICY_FILE",
        "KAFKA_BOOTSTRAP_SERVERS",
        "THIRDRING_STATS_WORK_MEM",
    ):
        monkeypatch.delenv(name, raising=False)


def test_secret_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THIRDRING_WEBHOOK_SECRET", "from-env")
    s = Settings()
    assert s.webhook_secret is not None
    assert s.webhook_secret.get_secret_value() == "from-env"


def test_secret_file_wins_over_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("from-file\n")
    monkeypatch.setenv("THIRDRING_WEBHOOK_SECRET", "from-env")
    monkeypatch.setenv("THIRDRING_WEBHOOK_SECRET_FILE", str(secret))
    s = Settings()
    assert s.webhook_secret is not None
    assert s.webhook_secret.get_secret_value() == "from-file"  # stripped of the newline


def test_unreadable_secret_file_names_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-secret"
    monkeypatch.setenv("THIRDRING_WEBHOOK_SECRET_FILE", str(missing))
    with pytest.raises(ValidationError) as exc:
        Settings()
    assert "webhook_secret_file" in str(exc.value)
    assert str(missing) in str(exc.value)


def test_stats_work_mem_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().stats_work_mem == "256MB"
    monkeypatch.setenv("THIRDRING_STATS_WORK_MEM", "1GB")
    assert Settings().stats_work_mem == "1GB"
    monkeypatch.setenv("THIRDRING_STATS_WORK_MEM", "65536")  # kB, as PostgreSQL reads it
    assert Settings().stats_work_mem == "65536"
    monkeypatch.setenv("THIRDRING_STATS_WORK_MEM", "lots")
    with pytest.raises(ValidationError) as exc:
        Settings()
    assert "stats_work_mem" in str(exc.value)


def test_secrets_never_shown(tmp_path: Path) -> None:
    notify = tmp_path / "notify"
    notify.write_text("hunter2-notify")
    s = Settings(webhook_secret="hunter2-inbound", notify_webhook_secret_file=notify)
    assert s.notify_webhook_secret is not None
    assert s.notify_webhook_secret.get_secret_value() == "hunter2-notify"
    for text in (repr(s), str(s), str(s.model_dump()), s.model_dump_json()):
        assert "hunter2" not in text


def test_kafka_bootstrap_servers_env(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().kafka_bootstrap_servers == ""
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka-1:9092,kafka-2:9092")
    assert Settings().kafka_bootstrap_servers == "kafka-1:9092,kafka-2:9092"


def test_default_sqlite_url_under_data_dir(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path / "var")
    url = s.resolved_database_url
    assert url == f"sqlite+aiosqlite:///{(tmp_path / 'var' / 'thirdring.db').resolve()}"
    assert Settings(database_url="postgresql+asyncpg://h/db").resolved_database_url == (
        "postgresql+asyncpg://h/db"
    )
