"""The Faust topic objects, built from the one registry (streams.topics). Kafka carries raw JSON bytes."""
from __future__ import annotations

from streams.app import app, settings
from streams.topics import topics

_names = topics(settings)


def _raw(*names: str):
    return app.topic(*names, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw",
                     allow_empty=True, partitions=settings.topic_partitions)


# Events and commands in one stream: a removal is ordered with the contact's events.
sources_topic = _raw(_names.events, _names.commands)
dead_letters_topic = _raw(_names.dead_letters)
