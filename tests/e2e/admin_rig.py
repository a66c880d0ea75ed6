"""A real sidecar with its admin API guarded by tokens, the services beside it on the
same broker, and an operator's HTTP client: what :mod:`tests.e2e.test_admin_e2e` drives.

The pieces are the harness's own: ``sagawire run`` as a subprocess
(:class:`~tests.faults.sidecar.SidecarSlot`, which takes the saga module and the
environment), a raw participant client per broker (:mod:`tests.e2e.clients`), and the
services of :mod:`tests.faults.participants`, which act once per command id and count
their effects. A service that never answers some commands is those services with the
replies handed to :class:`Silence`, which keeps them instead of publishing them.

The sidecar loads :mod:`tests.e2e.sagas_admin` (the order saga with steps that wait
ten minutes and a one-second park), and ``SAGAWIRE_ADMIN_TOKEN`` names two operators
(and ``SAGAWIRE_READ_TOKEN`` a viewer), so a test can check that an instance's history
says which one acted.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import nats

from tests.e2e.clients import CONTENT_TYPE, NatsClient, RawClient
from tests.faults.participants import WATCHED, Message, Services
from tests.faults.sidecar import SidecarSlot

__all__ = ["ADMIN_SAGA", "OPERATOR", "Rig", "Silence", "admin_rig"]

ADMIN_SAGA = Path(__file__).with_name("sagas_admin.py")
OPERATOR = "ops-alice"
"""The name of the admin token the tests act with: what histories must name."""
JOB_TIMEOUT = 30.0


class Silence:
    """Where the replies a service never sends go: kept, never published."""

    def __init__(self) -> None:
        self.withheld: list[tuple[str, str]] = []  # (reply type, order id)

    async def lose(self, destination: str, body: bytes, key: str) -> None:
        self.withheld.append((destination, key))


@dataclass
class Rig:
    """One test's sidecar, services and operator client."""

    client: RawClient
    sidecar: SidecarSlot
    services: Services
    silence: Silence
    http: httpx.AsyncClient
    """Carries :data:`OPERATOR`'s token; ``base_url`` is the sidecar's."""
    tokens: dict[str, str]
    """Every token by name: ``ops-alice`` and ``ops-bob`` (admin), ``viewer`` (read)."""

    def bearer(self, name: str) -> dict[str, str]:
        """The headers of a request made with ``name``'s token."""
        return {"authorization": f"Bearer {self.tokens[name]}"}

    # -- the broker side ------------------------------------------------------------------

    async def publish(
        self, destination: str, body: bytes, *, key: str, broker_id: str | None = None
    ) -> None:
        """Publish as a participant would. ``broker_id``: on NATS, the message goes out
        with it as ``Nats-Msg-Id``, so JetStream de-duplicates on it (elsewhere it has
        no effect: no other broker de-duplicates)."""
        if broker_id is not None and isinstance(self.client, NatsClient):
            await publish_with_msg_id(self.client, destination, body, broker_id)
        else:
            await self.client.publish(destination, body, key=key)

    # -- the admin API ----------------------------------------------------------------------

    async def get(self, path: str, **params: Any) -> Any:
        r = await self.http.get(path, params=params)
        assert r.status_code == 200, (path, params, r.status_code, r.text)
        return r.json()

    async def instances(self, **filters: Any) -> list[dict[str, Any]]:
        """Every instance ``GET /sagas`` lists under ``filters`` (all its pages)."""
        found: list[dict[str, Any]] = []
        params = {"saga": "order", "limit": 100, **filters}
        while True:
            page = await self.get("/sagas", **params)
            found += page["instances"]
            if page["next_cursor"] is None:
                return found
            params["cursor"] = page["next_cursor"]

    async def instance(self, oid: str) -> dict[str, Any]:
        detail: dict[str, Any] = await self.get(f"/sagas/order/{oid}")
        return detail

    async def dead_letters(self, **filters: Any) -> list[dict[str, Any]]:
        page = await self.get("/deadletters", limit=1000, **filters)
        rows: list[dict[str, Any]] = page["dead_letters"]
        return rows

    async def bulk(self, action: str, body: dict[str, Any], *, dry_run: bool = False) -> Any:
        params = {"dry_run": "true"} if dry_run else {}
        r = await self.http.post(f"/bulk/{action}", params=params, json=body)
        want = 200 if dry_run else 202
        assert r.status_code == want, (action, body, r.status_code, r.text)
        return r.json()

    async def job_done(self, job_id: str, timeout: float = JOB_TIMEOUT) -> dict[str, Any]:
        """Poll ``GET /bulk/{id}`` until the job stops running; the job then."""
        deadline = time.monotonic() + timeout
        while True:
            job: dict[str, Any] = await self.get(f"/bulk/{job_id}")
            if job["state"] != "running":
                return job
            assert time.monotonic() < deadline, f"bulk job still running after {timeout}s: {job}"
            await asyncio.sleep(0.1)

    # -- waiting -----------------------------------------------------------------------------

    async def until(
        self, done: Callable[[], bool | Awaitable[bool]], what: str, timeout: float = 20.0
    ) -> None:
        """Poll ``done`` (plain, or a coroutine: an API call) until true; fail with
        ``what`` and the sidecar's log if not."""
        deadline = time.monotonic() + timeout
        while not await _value(done()):
            if self.services.error is not None:
                raise AssertionError(f"services failed: {self.services.error!r}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"not within {timeout}s: {what}\nsidecar log:\n{self.sidecar.digest()}"
                )
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        """SIGTERM the sidecar: it must exit 0."""
        code = await self.sidecar.terminate()
        assert code == 0, f"sidecar exited {code} on SIGTERM:\n{self.sidecar.digest()}"


async def _value(result: bool | Awaitable[bool]) -> bool:
    return await result if inspect.isawaitable(result) else result


async def publish_with_msg_id(
    client: NatsClient, destination: str, body: bytes, msg_id: str
) -> None:
    """A JetStream publish with ``Nats-Msg-Id``, on a connection of its own (the raw
    client leaves the id out on purpose: its duplicates must reach the sidecar)."""
    nc = await nats.connect(client.server)
    try:
        ack = await nc.jetstream().publish(
            f"{client.prefix}.{destination}",
            body,
            headers={"content-type": CONTENT_TYPE, "Nats-Msg-Id": msg_id},
        )
        assert not ack.duplicate, f"JetStream took {msg_id!r} for a duplicate"
    finally:
        await nc.close()


@contextlib.asynccontextmanager
async def admin_rig(
    client: RawClient,
    tmp_path: Path,
    store: str,
    *,
    silent: Callable[[Message, str], bool],
    watch: tuple[str, ...] = (),
) -> AsyncIterator[Rig]:
    """Start the sidecar (admin token set) and the services; ``silent(command, order)``
    picks the commands never answered; ``watch``: more destinations the client reads
    (they land in the services' ``strays``). Everything is stopped on the way out."""
    tokens = {name: uuid.uuid4().hex for name in (OPERATOR, "ops-bob", "viewer")}
    admins = ",".join(f"{name}={tokens[name]}" for name in (OPERATOR, "ops-bob"))
    sidecar = SidecarSlot(
        sagas=ADMIN_SAGA,
        broker_url=client.broker_url,
        store_url=store,
        group=client.group,
        log=tmp_path / "sidecar.log",
        env={"SAGAWIRE_ADMIN_TOKEN": admins, "SAGAWIRE_READ_TOKEN": f"viewer={tokens['viewer']}"},
    )
    silence = Silence()
    services = Services(client, lose=silent, loser=silence)
    headers = {"authorization": f"Bearer {tokens[OPERATOR]}"}
    async with httpx.AsyncClient(base_url=sidecar.base, headers=headers, timeout=10.0) as http:
        try:
            sidecar.start()
            await sidecar.wait_ready(http)
            await client.start((*WATCHED, *watch))
            services.start()
            yield Rig(client, sidecar, services, silence, http, tokens)
        finally:
            await services.stop()
            sidecar.close()
