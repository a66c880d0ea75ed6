"""The bench yardsticks' feeder: two lots through a window, the second timed."""

from __future__ import annotations

import asyncio

import pytest

from orchestrator.tooling.bench_lots import Lots


async def _accept(first: int, count: int) -> None:
    """A feeder's publish that takes every input (and yields, as a broker call would)."""
    await asyncio.sleep(0)


async def test_the_timed_lot_starts_from_empty_and_the_window_holds() -> None:
    sent: list[tuple[int, int, int]] = []  # (first, count, finished when sent)
    queue: asyncio.Queue[int] = asyncio.Queue()

    async def publish(first: int, count: int) -> None:
        sent.append((first, count, lots.finished))
        for n in range(first, first + count):
            queue.put_nowait(n)

    lots = Lots(warmup=10, measured=50, window=8, max_batch=3, publish=publish)

    async def consume() -> None:
        while not lots.complete:
            await queue.get()
            await asyncio.sleep(0)
            lots.done(1)

    await lots.run(consume)
    assert [n for first, count, _ in sent for n in range(first, first + count)] == list(range(60))
    assert all(count <= 3 for _, count, _ in sent)
    assert all(first + count - finished <= 8 for first, count, finished in sent)  # window
    assert all(finished >= 10 for first, _, finished in sent if first >= 10)  # from empty
    assert lots.began > 0 and lots.rate() > 0


async def test_a_failing_feeder_stops_the_run_at_once() -> None:
    async def publish(first: int, count: int) -> None:
        raise RuntimeError("broker gone")

    async def consume() -> None:
        await asyncio.Event().wait()  # would wait forever for inputs

    lots = Lots(warmup=0, measured=5, window=5, max_batch=5, publish=publish)
    with pytest.raises(RuntimeError, match="broker gone"):
        await asyncio.wait_for(lots.run(consume), 5)


async def test_a_failing_consumer_stops_the_feeder() -> None:
    async def consume() -> None:
        raise ValueError("bad batch")

    lots = Lots(warmup=2, measured=5, window=5, max_batch=5, publish=_accept)
    with pytest.raises(ValueError, match="bad batch"):
        await asyncio.wait_for(lots.run(consume), 5)


async def test_the_rate_ends_when_the_last_input_finishes() -> None:
    """Closing the stream afterwards (a Kafka group leave, a final commit) is not timed."""

    lots = Lots(warmup=0, measured=4, window=4, max_batch=4, publish=_accept)

    async def consume() -> None:
        await asyncio.sleep(0.01)
        lots.done(4)
        await asyncio.sleep(0.3)  # closing its stream

    await lots.run(consume)
    assert 0 < lots.ended - lots.began < 0.2
    assert lots.rate() > 4 / 0.2


async def test_a_run_where_nothing_finishes_is_called_stalled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("orchestrator.tooling.bench_lots.STALL_SECONDS", 0.2)

    async def consume() -> None:
        await asyncio.Event().wait()  # takes the inputs, never finishes one

    lots = Lots(warmup=0, measured=5, window=5, max_batch=5, publish=_accept)
    with pytest.raises(RuntimeError, match=r"bench stalled: nothing finished in 0.2s; 5 in flight"):
        await asyncio.wait_for(lots.run(consume), 5)


async def test_a_consumer_ending_early_is_an_error() -> None:
    async def consume() -> None:
        lots.done(2)  # then returns with three still unfinished

    lots = Lots(warmup=0, measured=5, window=5, max_batch=5, publish=_accept)
    with pytest.raises(RuntimeError, match="the engine stopped before every input finished"):
        await asyncio.wait_for(lots.run(consume, "the engine"), 5)
