"""A real sidecar and the simulated services, on an event loop of their own.

The browser tests are synchronous (Playwright's sync API drives Chromium from the test's
thread), while the sidecar is asyncio. So :class:`ConsoleSidecar` runs
:class:`~orchestrator.sidecar.service.Sidecar` (``car.run()``, the whole life of the
process: HTTP, engine, stuck watcher, orderly stop) and the simulated inventory, payment
and shipping services of :mod:`orchestrator.tooling.participants` together in one
background thread with its own loop: the memory broker lives inside one loop, and the
services must share it with the engine. Everything else talks to it as a browser does,
over HTTP on a free port of 127.0.0.1, with the bearer tokens it was started with.

What happens to an order is a pure function of the seed and the order id (see
:mod:`orchestrator.tooling.fates`), so :data:`SEED` and :data:`BEHAVIOUR` fix the
outcome of every order the fixture places: some complete, some are compensated, some
end in ``compensation_failed`` and some wait at shipping (``running``, soon stuck) for
the session; :meth:`ConsoleSidecar.place_waiting_orders` picks ids of that last kind.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx

from orchestrator.sidecar.service import Sidecar
from orchestrator.sidecar.settings import Settings
from orchestrator.tooling.fates import Behaviour, order_placed
from orchestrator.tooling.participants import Participants, start_participants

__all__ = ["BEHAVIOUR", "SAGAS", "SEED", "ConsoleSidecar"]

SAGAS = Path(__file__).with_name("sagas_console.py")
SEED = 7
BEHAVIOUR = Behaviour(refuse=0.12, silent=0.08, undo_silent=0.45, delay=(0.02, 0.2))
"""More refusals and silences than the demo's, so a few dozen orders show every ending."""
SOURCE = "tests/console"
"""The CloudEvents ``source`` of the orders the rig places."""
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0

T = TypeVar("T")


class ConsoleSidecar:
    """``sagawire run`` in this process: memory broker, SQLite store in ``directory``,
    an admin and a read token, the simulated services answering per :data:`SEED`.

    ``start()`` returns once ``/readyz`` says ready; ``stop()`` asks for the orderly
    stop a SIGTERM would, and raises if the sidecar or the services failed meanwhile.
    """

    def __init__(
        self, directory: Path, *, seed: int = SEED, behaviour: Behaviour = BEHAVIOUR
    ) -> None:
        self.seed = seed
        self.behaviour = behaviour
        self.admin_token = secrets.token_urlsafe(18)
        self.read_token = secrets.token_urlsafe(18)
        self.settings = Settings(
            sagas=str(SAGAS),
            broker=f"memory://console-{uuid.uuid4().hex[:12]}",
            store=f"sqlite:///{directory / 'console.db'}",
            port=0,
            admin_token=self.admin_token,
            read_token=self.read_token,
        )
        self.car: Sidecar | None = None
        self.participants: Participants | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._exit_code: int | None = None
        self._ids = itertools.count(1)

    # -- the life of the background loop ---------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> None:
        self._thread = threading.Thread(target=self._main, name="console-sidecar", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as http:
            while time.monotonic() < deadline:
                self._raise_if_dead()
                car = self.car
                if car is not None and car.address:
                    try:
                        if http.get(f"{self.base_url}/readyz").status_code == 200:
                            return
                    except httpx.TransportError:
                        pass
                time.sleep(0.05)
        phase = self.car.phase if self.car is not None else "not started"
        self.stop()
        raise TimeoutError(f"the console's sidecar was not ready within {timeout:g}s ({phase})")

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        thread, loop, car = self._thread, self._loop, self.car
        if thread is None:
            return
        if loop is not None and car is not None and thread.is_alive():
            loop.call_soon_threadsafe(car.request_stop, "console tests done")
        thread.join(timeout)
        self._thread = None
        if thread.is_alive():
            raise TimeoutError(f"the console's sidecar did not stop within {timeout:g}s")
        self._raise_if_dead()
        if self._exit_code not in (None, 0):
            raise RuntimeError(f"the console's sidecar exited with {self._exit_code}")

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # kept for the test thread: a thread's error is lost
            self._error = exc

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        # The services first: their queues exist before the engine sends a command.
        self.participants = await start_participants(
            self.settings.broker, seed=self.seed, behaviour=self.behaviour
        )
        try:
            self.car = Sidecar(self.settings)
            self._exit_code = await self.car.run()
        finally:
            await self.participants.close()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        """Run ``coro`` on the sidecar's loop, where its broker, store and engine live
        (the memory broker's queues belong to that loop); its result."""
        if self._loop is None or self._thread is None:
            coro.close()
            raise RuntimeError("the console's sidecar is not running (start() first)")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _raise_if_dead(self) -> None:
        if self._error is not None:
            raise RuntimeError(
                f"the console's sidecar failed: {type(self._error).__name__}: {self._error}"
            ) from self._error

    # -- talking to it ---------------------------------------------------------------

    @property
    def base_url(self) -> str:
        if self.car is None or not self.car.address:
            raise RuntimeError("the console's sidecar is not listening (start() first)")
        return f"http://{self.car.address}"

    @contextmanager
    def client(self, *, admin: bool = False) -> Iterator[httpx.Client]:
        """An HTTP client of the sidecar, with the read token (``admin``: the admin one)."""
        token = self.admin_token if admin else self.read_token
        headers = {"authorization": f"Bearer {token}"}
        with httpx.Client(base_url=self.base_url, headers=headers, timeout=10.0) as http:
            yield http

    def get(self, path: str, **params: Any) -> Any:
        """``GET path`` with the read token; the JSON answer (raises on an error status)."""
        with self.client() as http:
            r = http.get(path, params=params)
            r.raise_for_status()
            return r.json()

    def place_orders(self, n: int, *, prefix: str = "ord") -> list[str]:
        """Place ``n`` orders through ``POST /events`` with the admin token; their ids.
        Ids are ``<prefix>-<n>``, numbered for the whole session, so never reused."""
        return self._place([f"{prefix}-{next(self._ids):03d}" for _ in range(n)])

    def place_waiting_orders(self, n: int, *, prefix: str = "wait") -> list[str]:
        """Place ``n`` orders whose inventory and payment succeed at once and whose
        shipping command goes unanswered: each stays ``running`` in ``shipping`` for
        ten minutes (:data:`~tests.console.sagas_console.SHIPPING_TIMEOUT`)."""
        ids: list[str] = []
        while len(ids) < n:
            oid = f"{prefix}-{next(self._ids):03d}"
            if self._waits_at_shipping(oid):
                ids.append(oid)
        return self._place(ids)

    def _place(self, ids: list[str]) -> list[str]:
        with self.client(admin=True) as http:
            for oid in ids:
                body = order_placed(oid, source=SOURCE, customer_id=f"cust-{oid}").body
                r = http.post(
                    "/events",
                    content=body,
                    headers={"content-type": "application/cloudevents+json"},
                )
                if r.status_code != 202:
                    raise RuntimeError(f"POST /events for {oid}: {r.status_code} {r.text}")
        return ids

    def _waits_at_shipping(self, order_id: str) -> bool:
        """What the simulated services will answer ``order_id``'s first commands: a
        pure function of the seed (the services' own decision, asked, not copied)."""
        if self.participants is None:
            raise RuntimeError("the simulated services are not running (start() first)")
        by_kind = {k: p for p in self.participants.services for k in p.replies}

        def first_answer(kind: str) -> str | None:
            reply, _ = by_kind[kind]._decide(kind, {"order_id": order_id}, 1)
            return None if reply is None else reply.type

        return (
            first_answer("inventory.reserve") == "inventory.reserved"
            and first_answer("payment.charge") == "payment.charged"
            and first_answer("shipping.schedule") is None
        )

    def statuses(self, saga: str = "order") -> dict[str, int]:
        """``saga``'s instances by status, and ``"<state>/running"`` by state, from the
        store itself (``GET /overview`` reads a census cached for a few seconds)."""
        counts: dict[str, int] = {}
        for row in self._all(saga):
            counts[row["status"]] = counts.get(row["status"], 0) + 1
            if row["status"] == "running":
                key = f"{row['state']}/running"
                counts[key] = counts.get(key, 0) + 1
        return counts

    def _all(self, saga: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        cursor: str | None = None
        with self.client() as http:
            while True:
                params: dict[str, str | int] = {"saga": saga, "limit": 1000}
                if cursor is not None:
                    params["cursor"] = cursor
                r = http.get("/sagas", params=params)
                r.raise_for_status()
                page = r.json()
                rows += page["instances"]
                cursor = page["next_cursor"]
                if cursor is None:
                    return rows

    def wait_until(self, what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
        """Poll ``check`` until true; a TimeoutError naming ``what`` otherwise."""
        deadline = time.monotonic() + timeout
        while not check():
            self._raise_if_dead()
            if time.monotonic() > deadline:
                raise TimeoutError(f"not within {timeout:g}s: {what}")
            time.sleep(0.2)
