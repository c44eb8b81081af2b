"""Every setting of autologs, read once from `AUTOLOGS_*` environment variables.

One frozen class so that a setting cannot drift between modules; the README lists each one.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AUTOLOGS_", frozen=True, extra="ignore")

    # Kafka
    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers, host:port[,host:port] (default: the project's broker, 127.0.0.1:AUTOLOGS_KAFKA_PORT)")
    topic_prefix: str = Field("autologs", pattern=r"^[A-Za-z0-9._-]{1,100}$", description="Prefix of every topic name; tests use their own")
    topic_partitions: int = Field(4, ge=1, description="Partitions of the topics autologs creates")
    topic_retention_hours: float = Field(720, ge=0, description="Retention of the topics autologs creates (0 = forever); replays reach only this far back")
    event_log_ttl_days: int = Field(0, ge=0, description="Rows of the event log older than this are deleted (0 = kept forever)")
    scenario_log_ttl_days: int = Field(0, ge=0, description="Rows of the scenario log older than this are deleted (0 = kept forever)")
    kafka_port: int = Field(9092, ge=1, le=65535, description="Port of the broker that `autologs broker start` runs")
    kafka_controller_port: int = Field(9093, ge=1, le=65535, description="KRaft controller port of that broker")
    kafka_version: str = Field("4.1.1", description="Apache Kafka version fetched from Maven Central")
    kafka_heap: str = Field("512m", pattern=r"^[1-9][0-9]*[kKmMgG]?$", description="Java heap of the project's broker")
    cache_dir: Path = Field(Path.home() / ".cache" / "autologs", description="Where the broker's jars are cached")

    # ClickHouse
    clickhouse_dsn: SecretStr | None = Field(
        None, description="ClickHouse server DSN, e.g. http://user:pw@host:8123/db; unset = embedded chdb"
    )
    clickhouse_database: str = Field("autologs", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$", description="Database holding the autologs tables")
    data_dir: Path = Field(Path(".autologs"), description="Local state: chdb data, broker data, pid files, logs")

    # Worker
    web_port: int = Field(6066, ge=1, le=65535, description="Port of the worker's web server")
    web_host: str = Field("127.0.0.1", description="Address the worker's web server binds (0.0.0.0 in a container)")
    sink_max_rows: int = Field(20_000, ge=1, description="The worker takes a batch of at most this many messages (one insert per table)...")
    sink_max_delay_ms: int = Field(250, ge=1, description="...or, when fewer are waiting, what arrived after waiting this long for more")
    inbox_batches: int = Field(5, ge=1, description="Fetched messages the worker holds for its agent, in batches of sink_max_rows (fewer: less memory and shorter garbage collections)")
    validation_processes: int = Field(1, ge=0, le=1, description="1: a child process validates the worker's next batches while the current one is derived; 0: the worker's own thread validates")
    sink_retry_max_s: float = Field(30.0, gt=0, description="Longest back-off between retries of a failing insert")
    scenario_lateness_s: float = Field(300.0, ge=0, description="Events late by up to this much (event time) are still applied in order")
    scenario_idle_release_s: float = Field(2.0, gt=0, description="A quiet partition releases its held events after this long")
    commit_interval_s: float = Field(1.0, gt=0, description="How often the worker commits the offsets of written batches")
    gc_interval_s: float = Field(10.0, ge=0, description="The worker and the replay collect cyclic garbage every this many seconds instead of Python's automatic collector (0 = Python's default; see autologs/gcpolicy.py)")
    engine_nice: int = Field(10, ge=0, le=19, description="The embedded engine's threads run at this nice value in the worker and the replay, so the event loop gets the cores first (0 = unchanged; see autologs/cpupolicy.py)")
    session_timeout_s: float = Field(10.0, gt=0, description="Kafka group session timeout: how fast a dead worker's partitions move")

    @property
    def web_url(self) -> str:
        """Where this machine's CLI reaches the worker: the address it binds (its loopback when that is every
        interface), so a worker bound to one address is still found."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.web_host, self.web_host)
        return f"http://{f'[{host}]' if ':' in host else host}:{self.web_port}"

    @model_validator(mode="before")
    @classmethod
    def _bootstrap_follows_the_port(cls, data: Any) -> Any:
        """Unset, the bootstrap is the project's own broker on AUTOLOGS_KAFKA_PORT: setting only the port
        must not leave clients talking to whatever listens on 9092."""
        if isinstance(data, dict) and not data.get("kafka_bootstrap") and data.get("kafka_port"):
            data = {**data, "kafka_bootstrap": f"127.0.0.1:{data['kafka_port']}"}
        return data

    @field_validator("kafka_bootstrap")
    @classmethod
    def _host_and_port(cls, v: str) -> str:
        for server in v.split(","):
            host, colon, port = server.strip().rpartition(":")
            if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError("give host:port[,host:port], e.g. 127.0.0.1:9092")
        return v

    @field_validator("clickhouse_dsn")
    @classmethod
    def _dsn_names_a_server(cls, v: SecretStr | None) -> SecretStr | None:
        if v is None:
            return v
        url = urlsplit(v.get_secret_value())
        if url.scheme not in ("http", "https", "clickhouse", "clickhouses") or not url.hostname:
            raise ValueError("give a URL such as http://user:password@host:8123/database (or leave it unset for "
                             "the embedded engine)")
        return v

    @property
    def chdb_path(self) -> Path:
        return (self.data_dir / "chdb").resolve()

    @property
    def embedded(self) -> bool:
        return self.clickhouse_dsn is None


class BadSettings(ValueError):
    """A setting in the environment is invalid; the message names each variable and what it needs."""


def explain_settings(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors(include_url=False):
        name = "AUTOLOGS_" + "_".join(str(p) for p in err["loc"]).upper()
        shown = "(hidden)" if "DSN" in name else repr(err.get("input"))  # a DSN may hold a password
        lines.append(f"{name}={shown}: {err['msg'].removeprefix('Value error, ')}")
    return "bad configuration: " + "; ".join(lines)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        raise BadSettings(explain_settings(exc)) from None
