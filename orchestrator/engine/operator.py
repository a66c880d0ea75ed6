"""The engine's side of an operator's action on one instance: abort, retry, resume.

The admin API (and its bulk actions) call :meth:`Operator.act`. The action is decided
by :func:`orchestrator.engine.operate.operate` as a synthetic event routed to the
instance, through the same pipeline as a delivery, under the engine's lock: it waits for
the batch in flight, is decided on the stored instance (not a cached copy another
replica may have overtaken), and commits its history entry, its commands (outbox) and
its timers in one unit. Another replica moving the instance meanwhile is a version
conflict; the action is then judged again on the instance as it now stands.

The answer says what happened: applied (the instance after it), refused (why, for the
API's 409), or no such instance.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from adapters.base import HEADER_ORIGIN, HEADER_REASON
from orchestrator.engine.batch import Batch, Item
from orchestrator.engine.clock import Clock
from orchestrator.engine.config import EngineConfig
from orchestrator.engine.correlate import Routed, Router
from orchestrator.engine.model import Instance
from orchestrator.engine.operate import ACTIONS, refusal
from orchestrator.engine.persist import instance_from_record
from orchestrator.engine.pipeline import Pipeline
from orchestrator.engine.relay import Relay
from orchestrator.engine.working import WorkingSet
from orchestrator.store.base import DeadLetterRecord, OutboxRecord, Store
from schemas.envelope import Envelope

__all__ = ["ActionResult", "Operator"]


@dataclass(frozen=True, slots=True)
class ActionResult:
    """``instance`` as it stands after the action (None: no such instance); ``refused``
    says why the action did not apply (None: it did)."""

    instance: Instance | None
    refused: str | None = None


class Operator:
    """Applies operators' actions to instances, one at a time with the engine's work."""

    def __init__(
        self,
        router: Router,
        store: Store,
        pipeline: Pipeline,
        working: WorkingSet,
        lock: asyncio.Lock,
        config: EngineConfig,
        relay: Relay,
        clock: Clock,
    ) -> None:
        self.router = router
        self.store = store
        self.pipeline = pipeline
        self.working = working
        self.lock = lock
        self.config = config
        self.relay = relay
        self.clock = clock

    async def instance(self, saga: str, correlation_id: str) -> Instance | None:
        records = await self.store.load([(saga, correlation_id)])
        record = records.get((saga, correlation_id))
        return None if record is None else instance_from_record(self.router.sagas[saga], record)

    async def act(
        self,
        saga: str,
        correlation_id: str,
        action: str,
        *,
        reason: str = "",
        by: str = "operator",
        compensate: bool = True,
    ) -> ActionResult:
        """Apply ``action`` (``abort``, ``retry``, ``resume``) to one instance."""
        definition = self.router.sagas[saga]
        data: dict[str, object] = {"reason": reason, "by": by, "compensate": compensate}
        inst = await self.instance(saga, correlation_id)
        for _ in range(self.config.conflict_retries):
            if inst is None:
                return ActionResult(None)
            why = refusal(definition, inst, action, compensate=compensate)
            if why is not None:
                return ActionResult(inst, why)
            if action == "resume" and definition.flow is None:
                data["state"] = await self._failed_in(inst)
            env = Envelope.new(
                ACTIONS[action],
                data,
                # one action on one version: a client that retries after a store error
                # (the commit may have happened) meets the inbox, not a second action
                id=f"{action}:{saga}:{correlation_id}:{inst.version}",
                source="sagawire/admin",
                correlationid=correlation_id,
            )
            routed = Routed(definition, None, env, correlation_id, data)
            async with self.lock:
                await self.pipeline.drain()
                self.working.forget(routed.key)  # decide on the stored state, not a copy
                batch = Batch()
                await self.pipeline.decide_items([Item(routed)], batch)
                await self.pipeline.complete(batch, wait=False)
            after = await self.instance(saga, correlation_id)
            if after is not None and after.version > inst.version:
                # Found by its entry's version, not by position: the lock is free again,
                # so the reply to a command the action sent may have moved the instance
                # on between the two reads (its entry is then the last, not the action's).
                history = await self.store.history((saga, correlation_id))
                if any(h.message_id == env.id and h.seq > inst.version for h in history):
                    return ActionResult(after)
            inst = after  # another replica moved it first (a conflict): judge again
        return ActionResult(
            inst,
            f"the {action} of {saga!r} instance {correlation_id!r} did not take: another"
            " sidecar kept moving it; try again",
        )

    async def unsent(self, ids: Sequence[str]) -> list[OutboxRecord]:
        """The outbox rows among ``ids`` not published yet: the store's pending rows, less
        those this engine published and marks with its next commit."""
        published = set(self.working.published)
        return [o for o in await self.store.outbox_rows(ids) if o.id not in published]

    async def redrive(self, record: DeadLetterRecord, by: str) -> bool:
        """Send dead letter ``record``'s original bytes and headers to its original
        destination again, once: who and when, the deletion of the inbox marks its first
        handling left (so the copy is handled, not skipped as a duplicate) and the
        copy's outbox row commit together, and the relay publishes it. The copy goes out
        under a broker message id of its own: a de-duplicating broker (JetStream) took
        the first. False if it already was redriven."""
        headers = tuple(
            (k, v) for k, v in record.headers if k not in (HEADER_REASON, HEADER_ORIGIN)
        )
        copy = OutboxRecord(
            id=f"{record.message_id or 'dead-letter'}:redrive:{record.id}",
            destination=record.destination,
            key=record.key,
            body=record.body,
            headers=headers,
            created_at=self.clock.now(),
        )
        sagas = self.router.sagas.values()
        marks = [(s.name, record.message_id) for s in sagas if record.type in s.events]
        if not await self.store.mark_redriven(record.id, copy.created_at, by, marks, copy):
            return False
        self.relay.needed()
        return True

    async def _failed_in(self, inst: Instance) -> str:
        """The state a ``compensation_failed`` state machine was compensating in: the
        source of the history entry that ended it there."""
        for h in reversed(await self.store.history((inst.saga, inst.correlation_id))):
            if h.to_state == inst.state and h.from_state != inst.state:
                return h.from_state
        return ""

    async def stop(self, saga: str, correlation_id: str, reason: str = "") -> Instance | None:
        """Abort without compensating (``aborted`` where it stands); the instance as it
        stands after (unchanged if it had already finished)."""
        result = await self.act(saga, correlation_id, "abort", reason=reason, compensate=False)
        return result.instance
