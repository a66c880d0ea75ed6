"""The contract's payment service as a process of its own, to be killed with -9.

``python -m tests.client.child BROKER_URL REPLIES_URL PREFIX EFFECTS_FILE COPIES_FILE``:
handles ``<PREFIX>.payment.charge`` as group ``<PREFIX>-payment``, appends each command
it carries out to EFFECTS_FILE (its "side effect", synced before the reply is sent),
keeps in COPIES_FILE how many copies it answered from its memory, and prints ``ready``
once its queue exists.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from orchestrator.client import Emit, Service
from schemas.envelope import Envelope


async def main(broker: str, replies: str, prefix: str, effects: str, copies: str) -> None:
    service = Service("payment", broker, group=f"{prefix}-payment", replies=replies)

    @service.on(f"{prefix}.payment.charge", emits=[f"{prefix}.payment.charged"])
    def charge(data: dict[str, object], env: Envelope) -> Emit:
        with open(effects, "a") as f:
            f.write(env.id + "\n")
            f.flush()
            os.fsync(f.fileno())
        return Emit(f"{prefix}.payment.charged", {"order_id": data["order_id"], "payment_id": "p"})

    async def count() -> None:
        while True:
            await asyncio.sleep(0.02)
            await asyncio.to_thread(Path(copies).write_text, str(service.stats.duplicates))

    await service.start()
    print("ready", flush=True)
    counting = asyncio.ensure_future(count())
    try:
        await service.run()
    finally:
        counting.cancel()
        await service.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
