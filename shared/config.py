"""Configuration: environment variables (prefix ``THIRDRING_``), files for secrets, defaults.

Everything has an embedded default so ``thirdring up`` runs with no configuration at all.
Secrets are read from ``*_FILE`` paths or the environment and are never logged (SecretStr).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="THIRDRING_", env_file=None, extra="ignore", populate_by_name=True
    )

    # Where the embedded mode keeps its database, broker data and prepared model.
    data_dir: Path = Path("var")

    # Kafka: empty means "start an embedded Tansu broker" (thirdring up).
    kafka_bootstrap_servers: str = Field(default="", validation_alias="KAFKA_BOOTSTRAP_SERVERS")
    topic_raw: str = "mentions.raw"
    topic_scored: str = "mentions.scored"
    topic_dlq: str = "mentions.dlq"
    partitions: int = Field(default=12, ge=1, le=1000)
    broker_durable: bool = False
    consumer_group_prefix: str = "thirdring"

    # Database: empty means SQLite in data_dir (the embedded default).
    database_url: str = ""
    # The URL holds the password: containers can pass it as a file instead (the file wins).
    database_url_file: Path | None = None

    # HTTP
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    ingest_host: str = "127.0.0.1"
    ingest_port: int = 8001
    classify_host: str = "127.0.0.1"
    classify_port: int = 8002  # health only
    metrics_allow: str = "127.0.0.1/32"  # networks that may scrape /metrics without a token

    # Secrets: the value itself or a file that holds it (the file wins; for containers).
    webhook_secret: SecretStr | None = None
    webhook_secret_file: Path | None = None
    notify_webhook_url: str | None = None
    notify_webhook_secret: SecretStr | None = None
    notify_webhook_secret_file: Path | None = None

    # Alerting: calendars, SLA policies, teams, routing, channels (YAML; see docs/sla.md).
    alerting_file: Path | None = None
    # Listening: brands, accounts, keywords, VIPs and sources (YAML; see docs/sources.md).
    listening_file: Path | None = None
    demo: bool = False

    # Alert timers: how often the scheduler looks for due deadlines (seconds).
    scheduler_interval: float = Field(default=0.25, gt=0)
    outbox_interval: float = Field(default=0.25, gt=0)
    notify_max_attempts: int = Field(default=8, ge=1)
    notify_backoff_base: float = Field(default=1.0, gt=0)
    notify_backoff_max: float = Field(default=300.0, gt=0)
    # A notification claimed by a replica that then dies is retried after this many seconds.
    notify_lease_seconds: float = Field(default=60.0, gt=10)

    # Stats: PostgreSQL work_mem of each report's transaction (its exact percentiles sort
    # every value of the range; larger sorts spill to disk). A number of kB or with a unit.
    stats_work_mem: str = Field(default="256MB", pattern=r"^[0-9]+ ?(kB|MB|GB|TB)?$")

    # Classifier. model_dir: the prepared encoder's own directory (new, or prepared before):
    # preparing replaces it whole, so one holding other files is refused.
    model_dir: Path | None = None
    # 256: fewer, fuller length-sorted batches (bench/classify: ~250-400 vs ~190-270 posts/s at 64).
    classify_batch_size: int = Field(default=256, ge=1)
    classify_threads: int | None = None

    log_level: str = "INFO"
    log_format: str = "text"  # text for people, json for containers

    @model_validator(mode="after")
    def _read_secret_files(self) -> Settings:
        for name in ("webhook_secret", "notify_webhook_secret"):
            path: Path | None = getattr(self, f"{name}_file")
            if path is not None:
                try:
                    value = path.read_text().strip()
                except OSError as exc:
                    raise ValueError(f"cannot read {name}_file {path}: {exc}") from exc
                setattr(self, name, SecretStr(value))
        if self.database_url_file is not None:
            try:
                self.database_url = self.database_url_file.read_text().strip()
            except OSError as exc:
                raise ValueError(
                    f"cannot read database_url_file {self.database_url_file}: {exc}"
                ) from exc
        return self

    @property
    def display_database_url(self) -> str:
        """The database URL with its password hidden, for logs and banners."""
        from sqlalchemy.engine import make_url

        return make_url(self.resolved_database_url).render_as_string(hide_password=True)

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'thirdring.db').resolve()}"

    def group(self, service: str) -> str:
        return f"{self.consumer_group_prefix}-{service}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
