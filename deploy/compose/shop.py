"""The shop of the compose demo: places orders and prints how each order saga ended.

``docker compose up`` runs three programs on the sidecar's image: the sidecar
(``sagawire run``), the inventory, payment and shipping services (``sagawire simulate``)
and this shop. Without it nothing would happen, since a saga starts only when an
``order.placed`` event arrives. It is written on the client library as any service
would be: a :class:`~orchestrator.client.Publisher` sends ``order.placed`` straight to
the broker (not through the sidecar's HTTP API, which a token may guard) and a
:class:`~orchestrator.client.Service` follows ``order.completed`` and
``order.cancelled``, so the compose log shows each saga's end beside its start::

    shop  | placed order-3f2a9c1e (2 x sku-1, 30.00)
    shop  | order-3f2a9c1e completed: shipped as <tracking id>

``--count N`` places N orders, waits for all of their ends (at most ``--wait`` seconds)
and exits 0, or 1 naming the orders still open: what the deployment tests run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import uuid
from collections.abc import Sequence

from orchestrator.client import Publisher, Service
from orchestrator.sidecar.logs import redact_text
from sagas.order import OrderCancelled, OrderCompleted
from schemas.envelope import Envelope
from schemas.errors import SagawireError

ENDS = ("order.completed", "order.cancelled")


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class Shop:
    """Places orders on ``broker`` and remembers which of them have not ended yet."""

    def __init__(self, broker: str) -> None:
        self.open: set[str] = set()
        self.ended = asyncio.Event()
        self.publisher = Publisher(broker, source="demo/shop", declares=("order.placed",))
        self.outcomes = Service("shop", broker, source="demo/shop")
        self.outcomes.add("order.completed", self._completed, OrderCompleted)
        self.outcomes.add("order.cancelled", self._cancelled, OrderCancelled)

    def _end(self, order_id: str, line: str) -> None:
        if order_id not in self.open:
            return  # an order of an earlier run, or a copy of an end already seen
        self.open.discard(order_id)
        _say(line)
        if not self.open:
            self.ended.set()

    def _completed(self, data: OrderCompleted, _: Envelope) -> None:
        self._end(data.order_id, f"{data.order_id} completed: shipped as {data.tracking_id}")

    def _cancelled(self, data: OrderCancelled, _: Envelope) -> None:
        self._end(data.order_id, f"{data.order_id} cancelled: {data.reason}")

    async def place(self, n: int) -> None:
        order_id = f"order-{uuid.uuid4().hex[:8]}"
        qty = 1 + n % 3
        data = {
            "order_id": order_id,
            "customer_id": f"customer-{n % 7}",
            "items": [{"sku": "sku-1", "qty": qty}],
            "amount_cents": 1500 * qty,
        }
        self.open.add(order_id)
        self.ended.clear()
        await self.publisher.publish("order.placed", data, correlationid=order_id)
        _say(f"placed {order_id} ({qty} x sku-1, {data['amount_cents'] / 100:.2f})")


async def run(broker: str, every: float, count: int, wait: float) -> int:
    shop = Shop(broker)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with shop.outcomes, shop.publisher:
        following = asyncio.create_task(shop.outcomes.run())
        try:
            _say(f"shop: an order every {every:g}s on {redact_text(broker)}")
            n = 0
            while not stop.is_set() and (count == 0 or n < count):
                await shop.place(n)
                n += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), every)
            if count == 0 or stop.is_set():
                return 0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(shop.ended.wait(), wait)
            if shop.open:
                _say(f"still open after {wait:g}s: {', '.join(sorted(shop.open))}")
                return 1
            return 0
        finally:
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await following


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--broker",
        default=os.environ.get("SAGAWIRE_BROKER", "nats://127.0.0.1:4222"),
        help="broker URL (env SAGAWIRE_BROKER)",
    )
    parser.add_argument(
        "--every",
        type=float,
        default=os.environ.get("SHOP_EVERY", "3"),
        help="seconds between orders (env SHOP_EVERY)",
    )
    parser.add_argument("--count", type=int, default=0, help="orders to place; 0: until stopped")
    parser.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the ends")
    args = parser.parse_args(argv)
    if args.every < 0 or args.count < 0 or args.wait < 0:
        parser.error("--every, --count and --wait take numbers >= 0")
    try:
        return asyncio.run(run(args.broker, args.every, args.count, args.wait))
    except SagawireError as exc:
        sys.stderr.write(f"shop: error: {redact_text(str(exc))}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
