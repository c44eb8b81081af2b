"""Fixtures: a real Kafka broker and a real ClickHouse engine, fresh names per pytest run.

Broker: AUTOLOGS_KAFKA_BOOTSTRAP when set; else testcontainers when a Docker engine answers; else
the project's own broker, started once per run. ClickHouse: embedded chdb (one data path per run, a
fresh database), or the server named by AUTOLOGS_CLICKHOUSE_DSN. On CI nothing skips silently.
"""
from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

import pytest

RUN_ID = uuid.uuid4().hex[:8]
REPO = Path(__file__).resolve().parents[1]
_USER_BOOTSTRAP = os.environ.get("AUTOLOGS_KAFKA_BOOTSTRAP")
_TMP = Path(tempfile.mkdtemp(prefix=f"autologs-test-{RUN_ID}-"))

# Settings come from the environment: set this run's names before anything reads them.
os.environ["AUTOLOGS_TOPIC_PREFIX"] = f"test-{RUN_ID}"
# Always this run's own database: the fixtures drop it at the end, so a name from the shell (a server's real
# `autologs`) must never reach them.
os.environ["AUTOLOGS_CLICKHOUSE_DATABASE"] = f"autologs_test_{RUN_ID}"
os.environ["AUTOLOGS_DATA_DIR"] = str(_TMP / "pytest")
os.environ.setdefault("AUTOLOGS_SINK_MAX_DELAY_MS", "200")


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def tmp_root() -> Path:
    return _TMP


@pytest.fixture(scope="session")
def kafka_bootstrap():
    from autologs import broker
    from autologs.config import Settings, get_settings

    if _USER_BOOTSTRAP:
        address, stop = _USER_BOOTSTRAP, None
    elif _docker_answers():
        from testcontainers.kafka import KafkaContainer

        container = KafkaContainer("apache/kafka:4.1.1").with_kraft()
        container.start()
        address, stop = container.get_bootstrap_server(), container.stop
    else:
        # The project's broker, with its state in the repository's data dir (the demo's broker is reused).
        s = Settings(data_dir=REPO / ".autologs")
        already = broker._read_pid(broker.paths(s)) is not None
        try:
            address = broker.start(s)
        except broker.BrokerError as exc:
            pytest.fail(f"the project's Kafka broker could not start: {exc}")
        stop = None if already else (lambda: broker.stop(s))
    os.environ["AUTOLOGS_KAFKA_BOOTSTRAP"] = address
    get_settings.cache_clear()
    if not broker.ping(address, 10.0):
        pytest.fail(f"Kafka at {address} does not answer")
    yield address
    _delete_run_topics(address)
    if stop:
        stop()


def _delete_run_topics(address: str) -> None:
    """Delete this run's topics (all named test-<run id>...): a reused local broker otherwise gathers some
    400 partitions per run, and after a few dozen runs it answers too slowly for the tests."""
    import asyncio

    from aiokafka.admin import AIOKafkaAdminClient

    async def go() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=address)
        await admin.start()
        try:
            mine = sorted(t for t in await admin.list_topics() if t.startswith(f"test-{RUN_ID}"))
            for i in range(0, len(mine), 100):
                await admin.delete_topics(mine[i:i + 100])
        finally:
            await admin.close()

    try:
        asyncio.run(asyncio.wait_for(go(), 120))
    except Exception as exc:  # never fail a run over its cleanup
        print(f"\nnote: the run's topics were not all deleted ({exc!r})")


@pytest.fixture(scope="session")
def settings(kafka_bootstrap):
    from autologs.config import get_settings

    get_settings.cache_clear()
    return get_settings()


@pytest.fixture(scope="session")
def ch():
    """The run's ClickHouse database, migrated; dropped at the end of the run."""
    from autologs import migrate
    from autologs.clickhouse import ClickHouse
    from autologs.config import get_settings

    get_settings.cache_clear()
    db = ClickHouse(get_settings())
    assert db.database.startswith("autologs_test_"), f"refusing to drop {db.database!r}: not a test database"
    db.command("DROP DATABASE IF EXISTS {db}")
    migrate.migrate(db)
    yield db
    db.command("DROP DATABASE IF EXISTS {db}")


@pytest.fixture
def topic_names(settings):
    """Topic names of one test: the run's prefix plus a per-test suffix."""
    from streams.topics import Topics

    return Topics(f"{settings.topic_prefix}-{uuid.uuid4().hex[:6]}")
