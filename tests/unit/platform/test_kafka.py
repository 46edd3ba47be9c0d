"""Kafka's errors reach the platform as ``BusUnavailable``: transient when a broker was only
unreachable or slow (retried without end), not otherwise (dead-lettered after the retries)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
)

from services.platform.errors import BusUnavailable, is_infrastructure_failure
from services.platform.kafka import KafkaProducer, unavailable


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (KafkaConnectionError("no broker"), True),
        (KafkaTimeoutError(), True),
        (MessageSizeTooLargeError(), False),
    ],
)
def test_kafka_errors_become_bus_unavailable(error: Exception, transient: bool) -> None:
    translated = unavailable(error)
    assert isinstance(translated, BusUnavailable)
    assert translated.transient is transient
    assert translated.__cause__ is error
    assert type(error).__name__ in str(translated)
    assert is_infrastructure_failure(translated) is transient


def test_other_errors_pass_as_they_are() -> None:
    error = ValueError("not Kafka's")
    assert unavailable(error) is error


class _FailingProducer:
    """Stands in for aiokafka's producer: queues, then the broker never acknowledges."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def send(self, topic: str, **_: Any) -> asyncio.Future[object]:
        acknowledged: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        acknowledged.set_exception(self.error)
        return acknowledged

    async def send_and_wait(self, topic: str, **_: Any) -> None:
        raise self.error


async def test_a_failed_acknowledgement_is_bus_unavailable() -> None:
    producer = KafkaProducer(bootstrap_servers="127.0.0.1:9")
    producer._producer = _FailingProducer(KafkaTimeoutError())
    acknowledged = await producer.send("t", value=b"v", key=b"k")
    with pytest.raises(BusUnavailable) as failed:
        await producer.acknowledged([acknowledged])
    assert failed.value.transient
    producer._producer = _FailingProducer(MessageSizeTooLargeError())
    with pytest.raises(BusUnavailable) as refused:
        await producer.send_and_wait("t", b"v")
    assert not refused.value.transient
