"""Publishing JSON events to Kafka, keyed so that one contact's events stay in one partition."""
from __future__ import annotations

import asyncio
from typing import Callable, Iterable

from aiokafka import AIOKafkaProducer

from autologs.config import Settings


def new_producer(settings: Settings) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=20,
        max_batch_size=1024 * 1024,
        max_request_size=10 * 1024 * 1024,
        compression_type=None,
    )


async def publish(settings: Settings, topic: str, messages: Iterable[tuple[bytes | None, bytes | None]],
                  progress: Callable[[int], None] | None = None, window: int = 20_000,
                  headers_for: Callable[[int], list[tuple[str, bytes]]] | None = None) -> int:
    """Send (key, value) pairs and wait until every one is acknowledged; returns how many were sent."""
    producer = new_producer(settings)
    await producer.start()
    sent = 0
    try:
        pending: list[asyncio.Future] = []
        for n, (key, value) in enumerate(messages):
            headers = headers_for(n) if headers_for else None
            pending.append(await producer.send(topic, value=value, key=key, headers=headers))
            if len(pending) >= window:
                await asyncio.gather(*pending)
                sent += len(pending)
                if progress:
                    progress(len(pending))
                pending = []
        if pending:
            await asyncio.gather(*pending)
            sent += len(pending)
            if progress:
                progress(len(pending))
    finally:
        await producer.stop()
    return sent
