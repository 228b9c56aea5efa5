"""Faust's aiokafka transport, reading with ``isolation.level=read_committed``.

rollguard's worker writes its internal topics in transactions (agents/checkpoint.py); a
reader that saw messages of an aborted transaction would count them twice. Faust's
aiokafka driver reads committed data only in its own ``exactly_once`` mode, which rollguard
does not use (see agents/checkpoint.py), so this subclass sets the isolation level itself:
the driver builds an un-started aiokafka consumer, whose isolation level is read when it
starts. For topics nobody writes transactionally it changes nothing.
"""

from __future__ import annotations

from typing import Any

import faust
from faust.transport.drivers import aiokafka as driver


class ReadCommittedConsumerThread(driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._isolation_level = "read_committed"
        return consumer


class ReadCommittedConsumer(driver.Consumer):
    def _new_consumer_thread(self) -> ReadCommittedConsumerThread:
        return ReadCommittedConsumerThread(self, loop=self.loop, beacon=self.beacon)


class ReadCommittedTransport(driver.Transport):
    Consumer = ReadCommittedConsumer


class RollguardApp(faust.App):
    """A Faust app whose consumer reads committed messages only."""

    def _new_transport(self) -> ReadCommittedTransport:
        return ReadCommittedTransport(self.conf.broker_consumer, self)
