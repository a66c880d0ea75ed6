"""An operator's action is judged by what it wrote, even when the instance moved on at once.

Found end to end (tests/e2e/test_admin_e2e.py): a bulk abort on a real broker counted
some instances as refused although it had aborted them. The action commits, releases
the engine's lock, then reads the instance and its history to see whether its entry is
there; the participant's reply to the compensation it sent could be handled between
those two reads, and the action's entry, no longer the newest, was not looked at. The
action was then judged again on the moved instance and refused.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from orchestrator import Status
from orchestrator.store.base import HistoryRecord, InstanceKey, Store
from orchestrator.testing import SagaHarness
from sagas.order import order
from tests.sagas.test_order import placed


class ReplyBeforeHistory:
    """The store, except that its first ``history`` read lets ``meanwhile`` run first:
    what the engine handles between the operator's two reads."""

    def __init__(self, store: Store, meanwhile: Callable[[], Awaitable[None]]) -> None:
        self._store = store
        self._meanwhile: Callable[[], Awaitable[None]] | None = meanwhile

    async def history(self, key: InstanceKey) -> list[HistoryRecord]:
        if self._meanwhile is not None:
            run, self._meanwhile = self._meanwhile, None
            await run()
        return await self._store.history(key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


async def test_an_abort_answered_at_once_still_counts_as_applied() -> None:
    async with SagaHarness(order) as h:
        await h.send("order.placed", placed())
        await h.send("inventory.reserved", {"order_id": "o-1", "reservation_id": "r-1"})

        async def released() -> None:
            await h.send("inventory.released", {"order_id": "o-1"})

        operator = h.engine.operator
        operator.store = ReplyBeforeHistory(operator.store, released)  # type: ignore[assignment]
        result = await operator.act("order", "o-1", "abort", reason="fraud", by="ops")
        assert result.refused is None, result.refused
        assert result.instance is not None and result.instance.state == "compensating:inventory"
        assert (await h.instance("o-1")).status is Status.COMPENSATED
        aborts = [e for e in await h.history("o-1") if e.message_type == "sagawire.abort"]
        assert [e.note for e in aborts] == ["operator abort by ops: fraud"]
