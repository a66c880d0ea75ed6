"""How long a Kafka fetch may wait for data: short while records flow, longer when idle.

Why two waits. A saga step is a consume -> publish -> consume round trip, and the
consumer's next fetch usually reaches the broker before the step's reply exists.
Apache Kafka answers such a fetch as soon as a record arrives, so its wait only
matters when nothing comes. Tansu (and any broker that parks a fetch for its whole
wait) answers only when the wait is over, so there every step pays up to the wait
at every hop: with 50 ms, the bench's closed loop of sagas ran at 0.52 of the relay
even with a stub in the engine's place, and at 0.66-0.77 with 10 ms. A short wait costs
polls, though: an idle consumer fetching every 10 ms used 5.4% of a core, and its
broker 5.5% (1.6% and 1.8% at 50 ms, measured on Tansu). So a consumer that has seen
records within the last :data:`BUSY_FOR` seconds fetches with the short wait, and an
idle one with the long wait. On Apache Kafka the short wait gains nothing, and costs
only the extra empty fetches of those :data:`BUSY_FOR` seconds after each record.

aiokafka reads the wait from its fetcher (``_fetch_max_wait_ms``) each time it
builds a fetch request; there is no public setter, so this module is the one place
that touches it, and turns itself off (with a warning) if that attribute is gone.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["BUSY_FOR", "FetchWait"]

log = logging.getLogger(__name__)

BUSY_FOR = 0.25
"""Seconds after the last records during which fetches use the short wait. Short, so
that sparse traffic (an event a second) does not keep a consumer polling at the busy
rate; a closed loop of saga steps sees records far more often than this."""


class FetchWait:
    """Switch one consumer's fetch wait between ``busy_ms`` and ``idle_ms``."""

    def __init__(self, idle_ms: int, busy_ms: int) -> None:
        self.idle_ms = idle_ms
        self.busy_ms = min(busy_ms, idle_ms)
        self._fetcher: Any = None
        self._busy_until = float("-inf")
        self.current = idle_ms

    def attach(self, consumer: Any) -> None:
        """Take over the wait of a started ``AIOKafkaConsumer``."""
        fetcher: Any = getattr(consumer, "_fetcher", None)
        if not isinstance(getattr(fetcher, "_fetch_max_wait_ms", None), int):
            log.warning(
                "this aiokafka has no fetcher wait to adjust; every fetch waits up to"
                " fetch_max_wait_ms=%d ms",
                self.idle_ms,
            )
            return
        self._fetcher = fetcher
        fetcher._fetch_max_wait_ms = self.current = self.idle_ms

    def observe(self, got_records: bool, now: float) -> None:
        """Called after every poll: records keep the short wait for :data:`BUSY_FOR`."""
        if got_records:
            self._busy_until = now + BUSY_FOR
        self._set(self.busy_ms if now < self._busy_until else self.idle_ms)

    def _set(self, wait_ms: int) -> None:
        if wait_ms != self.current and self._fetcher is not None:
            self._fetcher._fetch_max_wait_ms = self.current = wait_ms
